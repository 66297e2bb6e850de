"""The language an answer is given in (core/languages.py, issue 11 item 4).

Configured ``audio.input.transcription.language`` first, else the language the STT engine heard
in the latest spoken item; English changes nothing. ``Generate.language`` carries it; the model
is told it (``with_language``: after the instructions and again last) and the speech engine
speaks it.
"""

from __future__ import annotations

from typing import Any

from openrealtime.chat import ChatMessage
from openrealtime.core import backend_events as be
from openrealtime.core.commands import Generate, Transcribe
from openrealtime.core.languages import language_instruction, reply_language, with_language
from tests.core.sim import Sim, speak


def answered(sim: Sim, transcript: str, language: str | None) -> Generate:
    """Speak a turn, report its transcript in ``language``; return the answer's Generate."""
    speak(sim, 10, 10, 7)
    sim.events()
    (transcribe,) = [c for c in sim.commands() if isinstance(c, Transcribe)]
    sim.backend(be.TranscriptionCompleted(transcribe.item_id, transcript, 1.0, language))
    (generate,) = [c for c in sim.commands() if isinstance(c, Generate)]
    sim.backend(be.ResponseGenerated(generate.response_id, "stop", 1, 1))
    sim.events()
    return generate


def session(transcription: dict[str, Any] | None = None) -> Sim:
    audio: dict[str, Any] = {"input": {"transcription": transcription or {"model": "whisper-1"}}}
    return Sim(session={"instructions": "Be brief.", "audio": audio})


def test_reply_language_rules() -> None:
    assert reply_language(None) is None
    assert reply_language("") is None
    assert reply_language("en") is None
    assert reply_language("EN-us") is None
    assert reply_language("fr") == "fr"
    assert reply_language("pt_BR") == "pt"
    assert language_instruction("de").content == (
        "The user speaks German. Always answer in German, never in English."
    )
    assert "xx" in language_instruction("xx").content  # an unknown code is named as it is


def test_the_heard_language_is_the_answers() -> None:
    sim = session()
    generate = answered(sim, "Was ist die Hauptstadt von Deutschland?", "de")
    assert generate.language == "de"
    roles = [(m.role, m.content) for m in generate.messages]
    assert roles == [("system", "Be brief."), ("user", "Was ist die Hauptstadt von Deutschland?")]


def test_the_model_is_told_after_the_instructions_and_last() -> None:
    told = language_instruction("it")
    messages = (ChatMessage("system", "Be brief."), ChatMessage("user", "Ciao"))
    assert with_language(messages, "it") == (messages[0], told, messages[1], told)
    assert with_language((ChatMessage("user", "Ciao"),), "it") == (
        told,
        ChatMessage("user", "Ciao"),
        told,
    )


def test_english_or_no_language_changes_nothing() -> None:
    for language in ("en", None):
        sim = session()
        generate = answered(sim, "What is the capital of France?", language)
        assert generate.language is None
        assert [m.role for m in generate.messages] == ["system", "user"]  # nothing added


def test_the_latest_spoken_language_wins() -> None:
    sim = session()
    assert answered(sim, "Bonjour", "fr").language == "fr"
    assert answered(sim, "Guten Tag", "de").language == "de"


def test_the_configured_language_wins_over_what_is_heard() -> None:
    sim = session({"model": "whisper-1", "language": "it"})
    assert answered(sim, "Ciao come stai", "es").language == "it"


def test_the_paused_turns_template_carries_the_last_language() -> None:
    """What a prepared answer is checked against: the last turn's language, so a turn in the
    same language can take it."""
    sim = session()
    answered(sim, "Bonjour", "fr")
    template = sim.session._responses.speculation()
    assert template is not None
    assert template.language == "fr"
