"""The rules of a prepared answer (runtime/speculation.py), with the fake engines.

Which ``Generate`` may take it, in what order its held results come out, and that a stale one
stops its engine work.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from openrealtime.backends.base import ChatMessage, Engines, GenerationRequest
from openrealtime.backends.fake import (
    FakeLanguageModel,
    FakeSpeechToText,
    FakeTextToSpeech,
    FakeVad,
    Faults,
)
from openrealtime.core import backend_events as be
from openrealtime.core.commands import Generate, Speculate
from openrealtime.core.languages import language_instruction
from openrealtime.runtime.pipeline import Heard
from openrealtime.runtime.speculation import Speculation

TEMPLATE = Generate(
    response_id="",
    request=GenerationRequest((ChatMessage("system", "Be brief."),), session_key="sess_1"),
    modality="audio",
    voice="alloy",
    speed=1.0,
)


def engines(llm: FakeLanguageModel | None = None) -> Engines:
    return Engines(
        vad=FakeVad(),
        stt=FakeSpeechToText(),
        llm=llm or FakeLanguageModel(),
        tts=FakeTextToSpeech(),
    )


def the_turn(text: str, **changes: object) -> Generate:
    """The Generate the core issues once the turn ended with ``text`` heard."""
    messages = (*TEMPLATE.messages, ChatMessage("user", text))
    return replace(TEMPLATE.with_messages(messages), response_id="resp_9", **changes)  # type: ignore[arg-type]


async def heard(text: str | None, language: str | None) -> Heard | None:
    return Heard(text, language) if text is not None else None


async def prepared(
    text: str | None,
    llm: FakeLanguageModel | None = None,
    *,
    language: str | None = None,
    template: Generate = TEMPLATE,
) -> Speculation:
    forwarded: list[be.BackendEvent] = []

    async def forward(event: be.BackendEvent) -> None:
        forwarded.append(event)

    spec = Speculation(
        Speculate("item_1", template), engines(llm), lambda: heard(text, language), forward
    )
    spec.forwarded = forwarded  # type: ignore[attr-defined]
    for _ in range(50):  # let the fake pipeline run until it holds its results
        await asyncio.sleep(0)
    return spec


async def test_the_same_request_takes_the_held_results_in_order() -> None:
    spec = await prepared("what time is it")
    assert spec.matches(the_turn("what time is it"))
    delivered: list[be.BackendEvent] = []
    spec.adopt(the_turn("what time is it"), delivered.append)
    await spec.task
    events = delivered + spec.forwarded  # type: ignore[attr-defined]
    assert {getattr(e, "response_id", None) for e in events} == {"resp_9"}
    assert isinstance(events[0], be.ResponseFirstToken)
    assert isinstance(events[-1], be.ResponseGenerated)
    text = "".join(e.text for e in events if isinstance(e, be.ResponseText))
    assert text.strip() == "You said: what time is it"
    assert any(isinstance(e, be.ResponseAudio) for e in events)


async def test_any_difference_refuses_it() -> None:
    spec = await prepared("what time is it")
    assert not spec.matches(the_turn("what time is it now"))
    assert not spec.matches(the_turn("what time is it", voice="echo"))
    assert not spec.matches(the_turn("what time is it", modality="text"))
    required = the_turn("what time is it")
    required = replace(required, request=replace(required.request, tool_choice="required"))
    assert not spec.matches(required)
    other = (ChatMessage("system", "Be long."), ChatMessage("user", "what time is it"))
    assert not spec.matches(the_turn("x").with_messages(other))
    spec.cancel()


async def test_nothing_heard_prepares_nothing() -> None:
    llm = FakeLanguageModel()
    spec = await prepared(None, llm)
    assert spec.transcript is None
    assert not spec.matches(the_turn(""))
    assert llm.requests == []


async def test_a_failed_answer_is_not_used() -> None:
    spec = await prepared("hello", FakeLanguageModel(faults=Faults(fail_before_first=True)))
    assert not spec.matches(the_turn("hello"))


async def test_cancel_stops_the_engine_work() -> None:
    # A slow model: each word takes 50 ms, so the answer is still being generated.
    llm = FakeLanguageModel(reply="one two three four five six", faults=Faults(chunk_delay_s=0.05))
    spec = await prepared("hello", llm)
    assert not spec.task.done()
    spec.cancel()
    await asyncio.sleep(0)
    assert spec.task.cancelled()
    assert not spec.matches(the_turn("hello"))


async def test_speech_in_another_language_than_the_template_prepares_nothing() -> None:
    """The turn is answered in the language it was spoken in (core.languages), so an answer
    prepared in the last turn's language would be thrown away: none is made."""
    llm = FakeLanguageModel()
    spec = await prepared("quelle heure est-il", llm, language="fr")
    assert await spec.heard() == Heard("quelle heure est-il", "fr")
    assert spec.generate is None
    assert llm.requests == []


async def test_speech_in_the_templates_language_is_prepared() -> None:
    french = replace(TEMPLATE, language="fr")
    llm = FakeLanguageModel()
    spec = await prepared("quelle heure est-il", llm, language="fr", template=french)
    assert spec.matches(the_turn("quelle heure est-il", language="fr"))
    # the model was told the language after the instructions and again last
    told = language_instruction("fr")
    (asked,) = llm.requests
    assert asked.messages == (
        TEMPLATE.messages[0],
        told,
        ChatMessage("user", "quelle heure est-il"),
        told,
    )
    assert not spec.matches(the_turn("quelle heure est-il"))
    spec.cancel()
    # English counts as no language: an English turn after an English one is prepared.
    spec = await prepared("what time is it", language="en")
    assert spec.matches(the_turn("what time is it"))
    spec.cancel()
