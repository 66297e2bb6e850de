"""Flite text-to-speech through Debian's ``libflite`` and ctypes (embedded-stack.md §4, §7D).

Flite speaks clearer English than espeak-ng and is the voice pocketsphinx understands best
(§0.5: 1.25% WER on ``rms``), but it comes from the system: ``apt-get install flite`` (or just
``libflite1``). Nothing is imported or loaded until an engine is created;
:meth:`FliteTextToSpeech.available` says whether the libraries are there.

Synthesis is sentence by sentence, each sentence one flite utterance whose per-utterance
features carry the voice's pitch shift, the speed (``duration_stretch``) and a
``streaming_info`` callback. The clustergen voices call it every ~100 ms of audio while they
resynthesise, so chunks stream within a sentence (first audio of a 15-word sentence after 15-25
ms on an idle machine, 30-50 ms on a busy one; RTF about 0.011). The library runs under one
process-wide lock (its voices are shared C structures); the lock is taken per sentence, so
concurrent requests interleave.

OpenAI voices map onto the four 16 kHz English voices Debian ships, with pitch shifts
(``f0_shift``, a factor on the voice's mean pitch) to tell apart those sharing one:

=========  =========  ========
voice      flite      f0 shift
=========  =========  ========
alloy      ``rms``    (none)
ash        ``awb``    0.88
ballad     ``awb``    1.00
echo       ``awb``    1.12
cedar      ``kal16``  0.88
verse      ``kal16``  1.10
coral      ``slt``    1.00
sage       ``slt``    0.90
shimmer    ``slt``    1.20
marin      ``slt``    1.10
=========  =========  ========

``rms`` takes its pitch from its own accent model (spamf0), which ignores ``f0_shift``, so it
appears once. Median pitch of the test sentence: rms 103 Hz; awb 115/131/147; kal16 79/99;
slt 157/174/191/209.

The flite voice names themselves (``rms``, ``slt``, ``awb``, ``kal16``) select that voice
unchanged; any other name speaks as alloy. ``speed`` (0.25-1.5) sets ``duration_stretch`` to
``1 / speed``.
"""

from __future__ import annotations

import ctypes
import re
import threading
import unicodedata
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from openrealtime.backends._bridge import Emitter, iterate_in_thread
from openrealtime.backends.base import SynthesisRequest
from openrealtime.backends.errors import BackendError

SAMPLE_RATE = 16000
"""The rate of every voice offered here."""
STREAM_SAMPLES = 1600
"""Samples per streaming callback: 100 ms."""
ERROR_CODE = "engine_error"
INSTALL_HINT = "flite is not installed: apt-get install flite (the libflite1 libraries)"
MIN_SPEED, MAX_SPEED = 0.25, 1.5

_CORE_LIBRARIES = ("libflite.so.1", "libflite_usenglish.so.1", "libflite_cmulex.so.1")
_STREAM_CONTINUE, _STREAM_STOP = 0, -1
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n\s*\n")
_ASCII = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": ", ",
        "\u2026": "...",
    }
)


@dataclass(frozen=True)
class FliteVoice:
    """One flite voice setting: a Debian voice (``rms``, ``slt``, ``awb``, ``kal16``), pitch."""

    name: str
    f0_shift: float = 1.0


VOICES: Mapping[str, FliteVoice] = {
    "alloy": FliteVoice("rms"),
    "ash": FliteVoice("awb", 0.88),
    "ballad": FliteVoice("awb"),
    "echo": FliteVoice("awb", 1.12),
    "cedar": FliteVoice("kal16", 0.88),
    "verse": FliteVoice("kal16", 1.10),
    "coral": FliteVoice("slt"),
    "sage": FliteVoice("slt", 0.90),
    "shimmer": FliteVoice("slt", 1.20),
    "marin": FliteVoice("slt", 1.10),
    "rms": FliteVoice("rms"),
    "slt": FliteVoice("slt"),
    "awb": FliteVoice("awb"),
    "kal16": FliteVoice("kal16"),
}
"""Voice name -> flite setting (see the module docstring)."""
DEFAULT_VOICE = "alloy"


class _Wave(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_char_p),
        ("sample_rate", ctypes.c_int),
        ("num_samples", ctypes.c_int),
        ("num_channels", ctypes.c_int),
        ("samples", ctypes.c_void_p),
    ]


_StreamCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(_Wave), ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p
)


class _StreamingInfo(ctypes.Structure):
    _fields_ = [
        ("min_buffsize", ctypes.c_int),
        ("asc", _StreamCallback),
        ("utt", ctypes.c_void_p),
        ("item", ctypes.c_void_p),
        ("userdata", ctypes.c_void_p),
    ]


def split_sentences(text: str) -> list[str]:
    """Split text into the units flite speaks one at a time (sentences, roughly)."""
    clean = unicodedata.normalize("NFKD", text.translate(_ASCII))
    clean = clean.encode("ascii", "ignore").decode("ascii")
    return [part.strip() for part in _SENTENCE_END.split(clean) if part.strip()]


class _Flite:
    """The process-wide libraries, loaded once and used under :attr:`lock`."""

    lock = threading.Lock()
    _instance: _Flite | None = None

    @classmethod
    def get(cls) -> _Flite:
        with cls.lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self) -> None:
        try:
            libraries = [ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL) for name in _CORE_LIBRARIES]
        except OSError as exc:
            raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
        lib = libraries[0]
        pointer = ctypes.c_void_p
        signatures: dict[str, tuple[Any, list[Any]]] = {
            "flite_init": (ctypes.c_int, []),
            "new_utterance": (pointer, []),
            "utt_set_input_text": (None, [pointer, ctypes.c_char_p]),
            "utt_init": (pointer, [pointer, pointer]),
            "utt_synth": (pointer, [pointer]),
            "utt_wave": (ctypes.POINTER(_Wave), [pointer]),
            "delete_utterance": (None, [pointer]),
            "feat_set_float": (None, [pointer, ctypes.c_char_p, ctypes.c_float]),
            "feat_set": (None, [pointer, ctypes.c_char_p, pointer]),
            "new_audio_streaming_info": (ctypes.POINTER(_StreamingInfo), []),
            "audio_streaming_info_val": (pointer, [ctypes.POINTER(_StreamingInfo)]),
        }
        for function, (restype, argtypes) in signatures.items():
            getattr(lib, function).restype = restype
            getattr(lib, function).argtypes = argtypes
        lib.flite_init()
        self._lib = lib
        self._keep = libraries
        self._voices: dict[str, int] = {}

    def voice(self, name: str) -> int:
        """The ``cst_voice *`` of a Debian voice, registered on first use (under the lock)."""
        if name not in self._voices:
            if not re.fullmatch(r"[a-z0-9_]+", name):
                raise BackendError(f"invalid flite voice name {name!r}", code=ERROR_CODE)
            try:
                voice_lib = ctypes.CDLL(f"libflite_cmu_us_{name}.so.1", mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                raise BackendError(
                    f"flite voice {name!r} is not installed ({exc})", code=ERROR_CODE
                ) from exc
            register = getattr(voice_lib, f"register_cmu_us_{name}")
            register.restype = ctypes.c_void_p
            register.argtypes = [ctypes.c_char_p]
            address = register(None)
            if not address:
                raise BackendError(f"flite could not register voice {name!r}", code=ERROR_CODE)
            self._keep.append(voice_lib)
            self._voices[name] = address
        return self._voices[name]

    def synthesize(
        self, sentence: str, voice: FliteVoice, stretch: float, sink: Callable[[bytes], bool]
    ) -> bool:
        """Speak one sentence, passing ~100 ms chunks to ``sink``; False if ``sink`` stopped."""
        lib = self._lib
        state = {"streamed": False, "go_on": True, "error": ""}

        def on_audio(wave: Any, start: int, size: int, last: int, info: Any) -> int:
            try:
                state["streamed"] = True
                w = wave.contents
                if w.sample_rate != SAMPLE_RATE:
                    state["error"] = f"voice {voice.name} speaks at {w.sample_rate} Hz"
                    return _STREAM_STOP
                if size > 0 and not sink(ctypes.string_at(w.samples + 2 * start, 2 * size)):
                    state["go_on"] = False
                    return _STREAM_STOP
                return _STREAM_CONTINUE
            except BaseException as exc:  # never raise through C
                state["error"] = repr(exc)
                return _STREAM_STOP

        callback = _StreamCallback(on_audio)
        with self.lock:
            voice_address = self.voice(voice.name)
            utterance = lib.new_utterance()
            try:
                lib.utt_set_input_text(utterance, sentence.encode("ascii"))
                lib.utt_init(utterance, voice_address)
                features = ctypes.cast(utterance, ctypes.POINTER(ctypes.c_void_p))[0]
                lib.feat_set_float(features, b"duration_stretch", stretch)
                lib.feat_set_float(features, b"f0_shift", voice.f0_shift)
                info = lib.new_audio_streaming_info()
                info.contents.min_buffsize = STREAM_SAMPLES
                info.contents.asc = callback
                lib.feat_set(features, b"streaming_info", lib.audio_streaming_info_val(info))
                if not lib.utt_synth(utterance):
                    raise BackendError(f"flite could not speak {sentence!r}", code=ERROR_CODE)
                if state["error"]:
                    raise BackendError(f"flite failed: {state['error']}", code=ERROR_CODE)
                if not state["streamed"]:  # a voice without streaming support
                    wave = lib.utt_wave(utterance)
                    if wave:
                        w = wave.contents
                        if w.sample_rate != SAMPLE_RATE:
                            raise BackendError(
                                f"flite voice {voice.name} speaks at {w.sample_rate} Hz",
                                code=ERROR_CODE,
                            )
                        audio = ctypes.string_at(w.samples, 2 * w.num_samples)
                        state["go_on"] = not audio or sink(audio)
            finally:
                lib.delete_utterance(utterance)  # frees the streaming info too
        return bool(state["go_on"])


class FliteTextToSpeech:
    """Flite speech at 16 kHz (implements ``TextToSpeech``); needs Debian's flite libraries.

    Create once and share. The libraries load on construction; each voice on first use.

    Args:
        voices: extra or replacement entries for :data:`VOICES`.
        threads: worker threads; requests interleave sentence by sentence.

    Raises:
        ImportError: the flite libraries are not installed (``apt-get install flite``).
    """

    name = "flite"
    sample_rate = SAMPLE_RATE

    def __init__(self, voices: Mapping[str, FliteVoice] | None = None, threads: int = 2) -> None:
        self.voices: dict[str, FliteVoice] = {**VOICES, **(voices or {})}
        self._flite = _Flite.get()
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="flite")

    @classmethod
    def available(cls) -> bool:
        """Whether the flite libraries load (loads them if so; cheap)."""
        try:
            _Flite.get()
        except ImportError:
            return False
        return True

    def voice_for(self, voice: str) -> FliteVoice:
        """The flite setting for a voice name; alloy's (``rms``) for unknown names."""
        return self.voices.get(voice, self.voices[DEFAULT_VOICE])

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        """Speak ``request.text`` sentence by sentence, yielding ~100 ms PCM16 chunks as made.

        Stop iterating to abandon the rest (synthesis stops at the next chunk).

        Raises:
            BackendError: ``engine_error`` when flite fails or a voice is missing.
        """
        sentences = split_sentences(request.text)
        if not sentences:
            return
        voice = self.voice_for(request.voice)
        stretch = 1.0 / max(MIN_SPEED, min(MAX_SPEED, request.speed))

        def speak(emit: Emitter[bytes]) -> None:
            for sentence in sentences:
                if not self._flite.synthesize(sentence, voice, stretch, emit):
                    return

        async for chunk in iterate_in_thread(
            self._executor, speak, engine="flite", code=ERROR_CODE
        ):
            yield chunk

    def close(self) -> None:
        """Stop the worker threads; call once at shutdown (the libraries stay loaded)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
