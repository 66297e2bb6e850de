"""The language an answer is given in: one place for that decision (issue 11, item 4).

A response is answered in the session's ``audio.input.transcription.language`` when it is set,
else in the language the STT engine heard in the user's latest spoken item (Whisper detects
it). English is the engines' own language: an English answer changes nothing (no instruction,
the voice as configured), so sessions on English-only engines run exactly as before. Any other
language travels on ``Generate.language``: the language model is told it (:func:`with_language`:
a system message after the instructions and the same one again last, which SmolLM2-135M
followed in 12 of 12 questions against 10-12 with either alone) and the speech engine speaks it.
"""

from __future__ import annotations

from openrealtime.chat import ChatMessage

NAMES: dict[str, str] = {
    "af": "Afrikaans", "am": "Amharic", "ar": "Arabic", "as": "Assamese", "az": "Azerbaijani",
    "ba": "Bashkir", "be": "Belarusian", "bg": "Bulgarian", "bn": "Bengali", "bo": "Tibetan",
    "br": "Breton", "bs": "Bosnian", "ca": "Catalan", "cs": "Czech", "cy": "Welsh",
    "da": "Danish", "de": "German", "el": "Greek", "en": "English", "es": "Spanish",
    "et": "Estonian", "eu": "Basque", "fa": "Persian", "fi": "Finnish", "fo": "Faroese",
    "fr": "French", "gl": "Galician", "gu": "Gujarati", "ha": "Hausa", "haw": "Hawaiian",
    "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "ht": "Haitian Creole", "hu": "Hungarian",
    "hy": "Armenian", "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese",
    "jw": "Javanese", "ka": "Georgian", "kk": "Kazakh", "km": "Khmer", "kn": "Kannada",
    "ko": "Korean", "la": "Latin", "lb": "Luxembourgish", "ln": "Lingala", "lo": "Lao",
    "lt": "Lithuanian", "lv": "Latvian", "mg": "Malagasy", "mi": "Maori", "mk": "Macedonian",
    "ml": "Malayalam", "mn": "Mongolian", "mr": "Marathi", "ms": "Malay", "mt": "Maltese",
    "my": "Burmese", "ne": "Nepali", "nl": "Dutch", "nn": "Norwegian Nynorsk", "no": "Norwegian",
    "oc": "Occitan", "pa": "Punjabi", "pl": "Polish", "ps": "Pashto", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "sa": "Sanskrit", "sd": "Sindhi", "si": "Sinhala",
    "sk": "Slovak", "sl": "Slovenian", "sn": "Shona", "so": "Somali", "sq": "Albanian",
    "sr": "Serbian", "su": "Sundanese", "sv": "Swedish", "sw": "Swahili", "ta": "Tamil",
    "te": "Telugu", "tg": "Tajik", "th": "Thai", "tk": "Turkmen", "tl": "Tagalog",
    "tr": "Turkish", "tt": "Tatar", "uk": "Ukrainian", "ur": "Urdu", "uz": "Uzbek",
    "vi": "Vietnamese", "yi": "Yiddish", "yo": "Yoruba", "yue": "Cantonese", "zh": "Chinese",
}  # fmt: skip
"""ISO 639-1 code (Whisper's set) -> the language's English name, as the model is told it."""


def reply_language(code: str | None) -> str | None:
    """The language an answer is asked in for a heard or configured ``code``.

    ``None`` for English and for no language; a locale (``"fr-CA"``) counts as its language.

    Args:
        code: an ISO 639-1 code, as the transcription config or an STT engine gives it.

    Returns:
        The lower-case code, or ``None`` when nothing changes.
    """
    if not code:
        return None
    base = code.strip().lower().replace("_", "-").split("-", 1)[0]
    return None if base in ("", "en") else base


def with_language(messages: tuple[ChatMessage, ...], code: str) -> tuple[ChatMessage, ...]:
    """``messages`` with :func:`language_instruction` after the system messages and last.

    Said twice: after the instructions, and at the end, where a small model heeds it most.
    """
    told = language_instruction(code)
    head = 0
    while head < len(messages) and messages[head].role == "system":
        head += 1
    return (*messages[:head], told, *messages[head:], told)


def language_instruction(code: str) -> ChatMessage:
    """The system message that asks the model to answer in ``code``'s language."""
    name = NAMES.get(code, code)
    return ChatMessage(
        "system", f"The user speaks {name}. Always answer in {name}, never in English."
    )
