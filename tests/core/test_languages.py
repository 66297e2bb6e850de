"""The language an answer is given in (core/languages.py, issue 11 item 4).

Configured ``audio.input.transcription.language`` first, else the language the STT engine heard
in the latest spoken item; English changes nothing. The model is told the language in one
system message after the instructions, and the speech engine gets it on ``Generate``.
"""

from __future__ import annotations

from typing import Any

from openrealtime.core import backend_events as be
from openrealtime.core.commands import Generate, Transcribe
from openrealtime.core.languages import language_instruction, reply_language
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
    assert roles == [
        ("system", "Be brief."),
        ("system", language_instruction("de").content),
        ("user", "Was ist die Hauptstadt von Deutschland?"),
    ]


def test_english_or_no_language_changes_nothing() -> None:
    for language in ("en", None):
        sim = session()
        generate = answered(sim, "What is the capital of France?", language)
        assert generate.language is None
        assert [m.role for m in generate.messages] == ["system", "user"]


def test_the_latest_spoken_language_wins() -> None:
    sim = session()
    assert answered(sim, "Bonjour", "fr").language == "fr"
    second = answered(sim, "Guten Tag", "de")
    assert second.language == "de"
    assert [m.content for m in second.messages if m.role == "system"][1].startswith(
        "The user speaks German."
    )


def test_the_configured_language_wins_over_what_is_heard() -> None:
    sim = session({"model": "whisper-1", "language": "it"})
    generate = answered(sim, "Ciao come stai", "es")
    assert generate.language == "it"
    assert generate.messages[1].content.startswith("The user speaks Italian.")


def test_the_paused_turns_template_carries_the_last_language() -> None:
    """What a prepared answer is checked against: the last turn's language, so a turn in the
    same language can take it."""
    sim = session()
    answered(sim, "Bonjour", "fr")
    template = sim.session._responses.speculation()
    assert template is not None
    assert template.language == "fr"
    assert template.messages[1].content.startswith("The user speaks French.")
