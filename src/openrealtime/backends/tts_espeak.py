"""espeak-ng text-to-speech, in-process through ctypes (embedded-stack.md §4, §7C; decision 8).

The library comes from the ``espeakng-loader`` wheel (self-contained ``libespeak-ng.so`` plus
its ``espeak-ng-data``; pip only), or, when that package is missing, from Debian's
``libespeak-ng1``. It runs in synchronous mode: ``espeak_Synth`` returns when the text is
spoken, calling our synth callback with each buffer of 22 050 Hz PCM16 as it goes (first audio
after about 0.3 ms, RTF about 0.001). The callback hands buffers to the event loop as they
come, so the first chunk of a long text arrives long before its synthesis ends.

Output is not bit-exact between calls (the synthesiser carries some wave state from one text
to the next; lengths vary by up to ~20 ms), so compare audio by its features, not its bytes.

The C library keeps global state (voice, parameters, callback) and is not thread-safe: one
process-wide lock serialises every synthesis, which at RTF 0.001 costs nothing noticeable.

OpenAI voices are mapped to distinct espeak-ng voices (language + variant) and pitch settings
(``pitch`` is the base pitch and ``range`` the intonation range, both 0-100, espeak's
defaults being 50):

=========  ===================  =====  =====
voice      espeak-ng voice      pitch  range
=========  ===================  =====  =====
alloy      ``en-us``            50     50
ash        ``en-us+m3``         42     45
ballad     ``en-gb-x-rp+m2``    48     60
coral      ``en-us+f2``         55     55
echo       ``en-us+m2``         45     40
sage       ``en-us+f4``         50     45
shimmer    ``en-us+f1``         62     65
verse      ``en-us+m4``         52     70
marin      ``en-us+f3``         50     50
cedar      ``en-us+m7``         35     40
=========  ===================  =====  =====

Any other voice name speaks with alloy's settings. ``speed`` (0.25-1.5) sets the rate to
175 words per minute times ``speed``, within espeak's 80-450.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from openrealtime.backends._bridge import Emitter, iterate_in_thread
from openrealtime.backends.base import SynthesisRequest
from openrealtime.backends.errors import BackendError

log = logging.getLogger(__name__)

SAMPLE_RATE = 22050
"""espeak-ng's output rate."""
BASE_RATE = 175
"""Words per minute at ``speed`` 1.0 (espeak-ng's default)."""
RATE_MIN = 80
RATE_MAX = 450
BUFFER_MS = 100
"""Audio per synth callback, so per yielded chunk (clause ends flush shorter ones)."""
ERROR_CODE = "engine_error"
SYSTEM_LIBRARY = "libespeak-ng.so.1"
INSTALL_HINT = (
    "espeak-ng is not available: pip install 'espeakng-loader>=0.2.4' "
    "(or apt-get install libespeak-ng1)"
)

# espeak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE = 1, 3, 4

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclass(frozen=True)
class EspeakVoice:
    """One espeak-ng voice setting: ``name`` (language, optionally ``+variant``), pitch, range."""

    name: str
    pitch: int = 50
    range: int = 50


VOICES: Mapping[str, EspeakVoice] = {
    "alloy": EspeakVoice("en-us", 50, 50),
    "ash": EspeakVoice("en-us+m3", 42, 45),
    "ballad": EspeakVoice("en-gb-x-rp+m2", 48, 60),
    "coral": EspeakVoice("en-us+f2", 55, 55),
    "echo": EspeakVoice("en-us+m2", 45, 40),
    "sage": EspeakVoice("en-us+f4", 50, 45),
    "shimmer": EspeakVoice("en-us+f1", 62, 65),
    "verse": EspeakVoice("en-us+m4", 52, 70),
    "marin": EspeakVoice("en-us+f3", 50, 50),
    "cedar": EspeakVoice("en-us+m7", 35, 40),
}
"""OpenAI voice name -> espeak-ng setting (see the module docstring)."""
DEFAULT_VOICE = "alloy"
LANGUAGE_VOICES: Mapping[str, str] = {"zh": "cmn", "no": "nb", "jw": "jv"}
"""ISO 639-1 codes whose espeak-ng voice has another name; the others are the code itself."""


def rate_for(speed: float) -> int:
    """espeak-ng words per minute for an OpenAI ``speed``: 175 x speed within 80-450."""
    return max(RATE_MIN, min(RATE_MAX, round(BASE_RATE * speed)))


def _locate() -> tuple[str, str | None]:
    """``(library path, data path or None for the library's built-in default)``."""
    try:
        loader: Any = importlib.import_module("espeakng_loader")
    except ImportError:
        return SYSTEM_LIBRARY, None  # Debian's libespeak-ng1, with its built-in data path
    return str(loader.get_library_path()), str(loader.get_data_path())


class _Espeak:
    """The process-wide library: loaded and initialised once, used under :attr:`lock`."""

    lock = threading.Lock()
    _instance: _Espeak | None = None

    @classmethod
    def get(cls) -> _Espeak:
        with cls.lock:
            if cls._instance is None:
                cls._instance = cls(*_locate())
            return cls._instance

    def __init__(self, library_path: str, data_path: str | None) -> None:
        try:
            lib = ctypes.CDLL(library_path)
        except OSError as exc:
            raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        data = data_path.encode() if data_path is not None else None
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, BUFFER_MS, data, 0)
        if rate != SAMPLE_RATE:
            raise BackendError(
                f"espeak_Initialize failed (returned {rate}; data path {data_path})",
                code=ERROR_CODE,
            )
        self.library_path = library_path
        self._lib = lib
        self._voice: EspeakVoice | None = None
        self._sink: Callable[[bytes], bool] | None = None
        self._callback = _SynthCallback(self._on_audio)  # kept alive as long as the library
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav: Any, samples: int, events: Any) -> int:
        """The synth callback: 0 to go on, 1 to abort. Must never raise."""
        try:
            if samples > 0 and wav and self._sink is not None:
                return 0 if self._sink(ctypes.string_at(wav, 2 * samples)) else 1
            return 0
        except BaseException:
            return 1

    def has_voice(self, name: str) -> bool:
        """Whether espeak-ng has a voice called ``name`` (it becomes the current one if so)."""
        with self.lock:
            self._voice = None
            return bool(self._lib.espeak_SetVoiceByName(name.encode()) == 0)

    def synthesize(
        self, text: str, voice: EspeakVoice, rate: int, sink: Callable[[bytes], bool]
    ) -> None:
        """Speak ``text``, passing each buffer to ``sink`` (which returns False to abort)."""
        with self.lock:
            if voice != self._voice:
                if self._lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                    raise BackendError(f"espeak-ng has no voice {voice.name!r}", code=ERROR_CODE)
                self._voice = voice
            for parameter, value in ((_RATE, rate), (_PITCH, voice.pitch), (_RANGE, voice.range)):
                self._lib.espeak_SetParameter(parameter, value, 0)
            data = text.encode("utf-8") + b"\0"
            self._sink = sink
            try:
                result = self._lib.espeak_Synth(
                    data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
                )
            finally:
                self._sink = None
            if result != 0:
                raise BackendError(f"espeak_Synth failed with error {result}", code=ERROR_CODE)


class EspeakTextToSpeech:
    """espeak-ng speech at 22 050 Hz (implements ``TextToSpeech``).

    Create once and share; the library loads on construction (about 20 ms).

    Args:
        voices: extra or replacement entries for :data:`VOICES`.

    Raises:
        ImportError: neither ``espeakng-loader`` nor Debian's ``libespeak-ng1`` is installed.
    """

    name = "espeak"
    sample_rate = SAMPLE_RATE

    def __init__(self, voices: Mapping[str, EspeakVoice] | None = None) -> None:
        self.voices: dict[str, EspeakVoice] = {**VOICES, **(voices or {})}
        self._espeak = _Espeak.get()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")
        self._languages: dict[str, str | None] = {}

    @classmethod
    def available(cls) -> bool:
        """Whether espeak-ng loads (``espeakng-loader`` or the Debian library); loads it if so."""
        try:
            _Espeak.get()
        except (ImportError, BackendError):
            return False
        return True

    def voice_for(self, voice: str, language: str | None = None) -> EspeakVoice:
        """The espeak-ng setting for an OpenAI voice name; alloy's for unknown names.

        With a ``language`` (ISO 639-1) that espeak-ng speaks, the same variant, pitch and range
        in that language (``ash`` in French: ``fr+m3``); a language it lacks keeps English.
        """
        setting = self.voices.get(voice, self.voices[DEFAULT_VOICE])
        name = self._language_voice(language) if language else None
        if name is None:
            return setting
        variant = setting.name.partition("+")[2]
        return replace(setting, name=f"{name}+{variant}" if variant else name)

    def _language_voice(self, language: str) -> str | None:
        """espeak-ng's voice for ``language``, or None (checked once per language)."""
        code = language.lower()
        if code not in self._languages:
            name = LANGUAGE_VOICES.get(code, code)
            found = self._espeak.has_voice(name)
            if not found:
                log.warning("espeak-ng has no voice for language %r; speaking English", code)
            self._languages[code] = name if found else None
        return self._languages[code]

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        """Speak ``request.text``, yielding PCM16 chunks (about 100 ms each) as they are made.

        Stop iterating to abandon the rest (the synthesis is aborted at the next buffer).

        Raises:
            BackendError: ``engine_error`` when espeak-ng fails.
        """
        if not request.text.strip():
            return
        rate = rate_for(request.speed)

        def speak(emit: Emitter[bytes]) -> None:
            # in the worker: finding a language's voice takes the library's lock
            voice = self.voice_for(request.voice, request.language)
            self._espeak.synthesize(request.text, voice, rate, emit)

        async for chunk in iterate_in_thread(
            self._executor, speak, engine="espeak-ng", code=ERROR_CODE
        ):
            yield chunk

    def close(self) -> None:
        """Stop the worker thread; call once at shutdown (the library stays loaded)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
