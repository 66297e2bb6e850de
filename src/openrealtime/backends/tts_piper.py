"""Piper (VITS) text-to-speech: an embedded neural voice on onnxruntime, without piper-tts.

The voice is the pinned ``piper-joe`` model (``en_US-joe-medium``: VITS exported to ONNX,
22 050 Hz, MIT), resolved through :func:`openrealtime.models.resolve_model`, with its Piper
voice config (``<model>.onnx.json``) beside it. Neither ``piper-tts`` nor ``piper-phonemize``
(both GPL) is used: phonemes come from the same libespeak-ng the espeak engine loads through
ctypes (:mod:`openrealtime.backends.tts_espeak`, sharing its process-wide lock), and the steps
around it follow Piper's reference (``piper-phonemize`` ``phonemize.cpp`` and
``phoneme_ids.cpp``, ``piper1-gpl`` ``phonemize_espeak.py`` and ``phoneme_ids.py``):

1. **Clauses.** ``espeak_TextToPhonemes`` (IPA, UTF-8) is called clause by clause in the
   config's ``espeak.voice`` (``en-us``). Piper reads each clause's terminator from
   ``espeak_TextToPhonemesWithTerminator``, an addition of its espeak-ng fork that the
   ``espeakng-loader`` build (1.52.0) does not export; :func:`clause_end` recovers it from the
   text the clause consumed, following espeak's ``ReadClause``. ``. ? !`` end a sentence and
   are kept as phonemes; ``, : ;`` (and en/em dashes, which espeak treats as ``;``) are kept,
   followed by a space; an ellipsis or a clause espeak broke for its length adds nothing and
   goes on with the sentence; a blank line or the end of the text adds nothing and ends it (so
   does a mark followed by a blank line, as in espeak). Language-switch flags such as ``(fr)``
   are removed, and the phonemes are NFD-decomposed into code points (``ç`` -> ``c`` + U+0327).
2. **Ids.** Per sentence: ``^`` ``_``, then each phoneme's id followed by the pad ``_``, then
   ``$``; phonemes missing from ``phoneme_id_map`` are skipped.
3. **Audio.** The model runs once per sentence (``input`` [1, n], ``input_lengths`` [n],
   ``scales`` [noise_scale, length_scale, noise_w], plus ``sid`` for multi-speaker voices); the
   float output is peak-normalised to PCM16 per sentence, as Piper does.

**Streaming.** Each sentence is synthesised on the engine's worker thread, never on the event
loop, and yielded (in 100 ms chunks) as soon as it is ready, so the first audio of a long
answer comes after its first sentence alone. Sentences of concurrent requests take turns on
the one worker. Measured on the 2-core development machine (shared with other work): RTF
0.05-0.09 with 2 threads (0.08 with 1 when idle), first audio of a two-sentence answer after
100-160 ms (its first sentence), phonemes 0.25 ms; the model loads in about 0.4 s. VITS samples
noise, so the same text never gives quite the same audio twice.

**Voices.** The joe voice has a single speaker: every OpenAI voice name (alloy, ash, ballad,
coral, echo, sage, shimmer, verse, marin, cedar and any other) speaks with it. For a
multi-speaker voice config (``num_speakers`` > 1) the voice name is looked up in its
``speaker_id_map`` (speaker 0 when absent) and passed as ``sid``.

**Speed.** ``length_scale`` is the config's ``length_scale / speed``, ``speed`` held within
0.25-4.0 (the Realtime API allows 0.25-1.5, ``/v1/audio/speech`` 0.25-4.0).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import re
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from openrealtime.backends.base import SynthesisRequest
from openrealtime.backends.errors import BackendError, ModelFileError
from openrealtime.backends.tts_espeak import _CHARS_UTF8, EspeakTextToSpeech, _Espeak

MODEL = "piper-joe"
"""The pinned voice in :data:`openrealtime.models.MODELS`."""
SAMPLE_RATE = 22050
"""The joe voice's output rate (each instance takes its config's ``audio.sample_rate``)."""
CHUNK_MS = 100
"""Audio per yielded chunk."""
DEFAULT_THREADS = 2
"""onnxruntime intra-op threads per inference (RTF 0.05 with 2, 0.08 with 1, on 2 idle cores)."""
SPEED_MIN, SPEED_MAX = 0.25, 4.0
ERROR_CODE = "engine_error"

PAD, BOS, EOS = "_", "^", "$"
"""Piper's padding, beginning- and end-of-sentence symbols."""

_PHONEMES_IPA = 0x02  # espeakPHONEMES_IPA
_LANGUAGE_FLAG = re.compile(r"\([^)]+\)")
_QUESTION_EXCLAMATION = {"?": "?", "!": "!", "\u203c": "!", "\u2047": "?"}
"""Characters espeak reads as question or exclamation marks, and the phoneme Piper keeps."""
_CLAUSE_PUNCTUATION = {
    ".": (".", True),
    ",": (", ", False),
    ":": (": ", False),
    ";": ("; ", False),
    "\u2013": ("; ", False),  # en dash: espeak's CLAUSE_SEMICOLON
    "\u2014": ("; ", False),  # em dash
}
"""Clause-ending punctuation -> (phonemes Piper appends, whether the sentence ends)."""

_F32 = npt.NDArray[np.float32]
T = TypeVar("T")


# --------------------------------------------------------------------------- voice config


@dataclass(frozen=True)
class PiperVoiceConfig:
    """The parts of a Piper voice config (``<model>.onnx.json``) synthesis needs."""

    sample_rate: int
    espeak_voice: str
    phoneme_id_map: Mapping[str, tuple[int, ...]]
    noise_scale: float
    length_scale: float
    noise_w: float
    num_speakers: int = 1
    speaker_id_map: Mapping[str, int] | None = None

    @classmethod
    def load(cls, path: Path) -> PiperVoiceConfig:
        """Read a voice config file.

        Raises:
            ModelFileError: the file is missing, unreadable or not an espeak-phonemized voice.
        """
        try:
            raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("phoneme_type", "espeak") != "espeak":
                raise ValueError(f"phoneme_type {raw['phoneme_type']!r} (only espeak is supported)")
            inference = raw.get("inference", {})
            id_map = {str(k): tuple(int(i) for i in v) for k, v in raw["phoneme_id_map"].items()}
            for symbol in (PAD, BOS, EOS):
                if symbol not in id_map:
                    raise ValueError(f"phoneme_id_map has no {symbol!r}")
            return cls(
                sample_rate=int(raw["audio"]["sample_rate"]),
                espeak_voice=str(raw["espeak"]["voice"]),
                phoneme_id_map=id_map,
                noise_scale=float(inference.get("noise_scale", 0.667)),
                length_scale=float(inference.get("length_scale", 1.0)),
                noise_w=float(inference.get("noise_w", 0.8)),
                num_speakers=int(raw.get("num_speakers", 1)),
                speaker_id_map={str(k): int(v) for k, v in raw.get("speaker_id_map", {}).items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelFileError(f"cannot read Piper voice config {path}: {exc}") from exc


# --------------------------------------------------------------------------- phonemes


def clause_end(consumed: str, at_end: bool) -> tuple[str, bool]:
    """What ended one espeak clause: ``(phonemes Piper appends, whether the sentence ends)``.

    Recovers what ``espeak_TextToPhonemesWithTerminator`` reports, from the text the clause
    consumed (espeak reads one character past a clause that is not the last).

    Args:
        consumed: the text from where the previous clause left the text pointer to where this
            one left it (to the end of the text for the last clause).
        at_end: whether this was the last clause (espeak returned a null text pointer).
    """
    body = consumed if at_end else consumed[:-1]
    text = body.rstrip()
    if not at_end and body[len(text) :].count("\n") >= 2:
        return "", True  # a blank line: CLAUSE_PARAGRAPH, no punctuation kept
    if text.endswith(("...", "\u2026")):
        return "", False  # an ellipsis: a clause with no terminator Piper keeps
    if text and text[-1] in _QUESTION_EXCLAMATION:
        start = len(text)
        while start > 0 and text[start - 1] in _QUESTION_EXCLAMATION:
            start -= 1
        return _QUESTION_EXCLAMATION[text[start]], True  # espeak keeps the first of "?!"
    if text and text[-1] in _CLAUSE_PUNCTUATION:
        return _CLAUSE_PUNCTUATION[text[-1]]
    return "", at_end  # the end of the text, or a clause espeak broke for its length


def sentences_from_clauses(clauses: Iterable[tuple[str, str, bool]]) -> list[list[str]]:
    """Group espeak clauses into Piper's sentences of phonemes (one code point each).

    Args:
        clauses: ``(IPA phonemes, consumed text, last)`` per clause, as espeak returned them.

    Returns:
        One list of phonemes per non-empty sentence.
    """
    sentences: list[list[str]] = []
    current: list[str] = []
    for phonemes, consumed, last in clauses:
        punctuation, sentence_ends = clause_end(consumed, last)
        text = _LANGUAGE_FLAG.sub("", phonemes) + punctuation
        current.extend(unicodedata.normalize("NFD", text))
        if sentence_ends:
            if current:
                sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def phoneme_ids(phonemes: Sequence[str], id_map: Mapping[str, Sequence[int]]) -> list[int]:
    """Piper's model input for one sentence: ``^ _``, each phoneme then ``_``, then ``$``.

    Phonemes missing from ``id_map`` are skipped.
    """
    pad = id_map[PAD]
    ids = [*id_map[BOS], *pad]
    for phoneme in phonemes:
        mapped = id_map.get(phoneme)
        if mapped is None:
            continue
        ids.extend(mapped)
        ids.extend(pad)
    ids.extend(id_map[EOS])
    return ids


def espeak_clauses(espeak: _Espeak, voice: str, text: str) -> list[tuple[str, str, bool]]:
    """Phonemize ``text`` with espeak-ng clause by clause: ``(IPA, consumed text, last)`` each.

    Holds the espeak library's process-wide lock throughout (about 0.1 ms per clause).

    Raises:
        BackendError: espeak-ng has no such voice.
    """
    lib: Any = espeak._lib
    data = text.encode("utf-8") + b"\0"
    buffer = ctypes.create_string_buffer(data, len(data))
    base = ctypes.addressof(buffer)
    pointer = ctypes.c_void_p(base)
    clauses: list[tuple[str, str, bool]] = []
    with espeak.lock:
        to_phonemes = lib.espeak_TextToPhonemes
        to_phonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        to_phonemes.restype = ctypes.c_char_p
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise BackendError(f"espeak-ng has no voice {voice!r}", code=ERROR_CODE)
        espeak._voice = None  # the espeak engine must select its own voice again
        start = 0
        for _ in range(len(data) + 1):  # each call consumes text; bounded all the same
            if pointer.value is None:
                break
            raw: bytes | None = to_phonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEMES_IPA)
            phonemes = raw.decode("utf-8", "replace") if raw else ""
            last = pointer.value is None
            end = len(data) - 1 if last else max(start, pointer.value - base)
            consumed = data[start:end].decode("utf-8", "replace")
            clauses.append((phonemes, consumed, last))
            start = end
    return clauses


# --------------------------------------------------------------------------- engine


class PiperTextToSpeech:
    """A Piper VITS voice at its config's rate, 22 050 Hz for joe (implements ``TextToSpeech``).

    Create once and share; the model loads on construction (about 0.4 s).

    Args:
        model_path: the voice's ``.onnx`` file, its ``.onnx.json`` config beside it; the pinned
            ``piper-joe`` voice from the model cache (fetched once if missing) when ``None``.
        cache_dir: the model cache directory; the default one when ``None``.
        threads: onnxruntime intra-op threads per inference.

    Raises:
        ImportError: espeak-ng is not available (see :mod:`openrealtime.backends.tts_espeak`).
        ModelFileError: the model or its config is missing, cannot be fetched or is invalid.
    """

    name = "piper"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model_path: Path | str | None = None,
        *,
        cache_dir: Path | None = None,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        from openrealtime.models import resolve_model

        path = resolve_model(MODEL, cache_dir=cache_dir, local_path=model_path)
        self.model_path = path
        self.config = PiperVoiceConfig.load(path.with_name(path.name + ".json"))
        self.sample_rate = self.config.sample_rate
        self._espeak = _Espeak.get()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # no busy-waiting between runs: the CPU is shared with the LLM and the other sessions
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                os.fspath(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelFileError(f"cannot load Piper voice {path}: {exc}") from exc
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="piper")

    @classmethod
    def available(cls) -> bool:
        """Whether espeak-ng (for the phonemes) loads; loads it if so."""
        return EspeakTextToSpeech.available()

    def speaker_for(self, voice: str) -> int | None:
        """The ``sid`` for an OpenAI voice name: None for a single-speaker voice (joe)."""
        if self.config.num_speakers <= 1:
            return None
        return (self.config.speaker_id_map or {}).get(voice, 0)

    def phonemize(self, text: str) -> list[list[str]]:
        """Piper's phonemes of ``text``, one list per sentence (blocking; any thread)."""
        return sentences_from_clauses(espeak_clauses(self._espeak, self.config.espeak_voice, text))

    def phoneme_ids(self, phonemes: Sequence[str]) -> list[int]:
        """The model input for one sentence's phonemes."""
        return phoneme_ids(phonemes, self.config.phoneme_id_map)

    def infer(self, ids: Sequence[int], speed: float = 1.0, speaker: int | None = None) -> bytes:
        """Run the model on one sentence's ids; PCM16, peak-normalised (blocking; any thread)."""
        speed = min(SPEED_MAX, max(SPEED_MIN, speed))
        config = self.config
        feed: dict[str, npt.NDArray[Any]] = {
            "input": np.asarray([ids], dtype=np.int64),
            "input_lengths": np.asarray([len(ids)], dtype=np.int64),
            "scales": np.asarray(
                [config.noise_scale, config.length_scale / speed, config.noise_w],
                dtype=np.float32,
            ),
        }
        if speaker is not None and "sid" in self._inputs:
            feed["sid"] = np.asarray([speaker], dtype=np.int64)
        audio: _F32 = np.asarray(self._session.run(None, feed)[0], dtype=np.float32).reshape(-1)
        peak = max(0.01, float(np.max(np.abs(audio)))) if audio.size else 1.0
        pcm = np.clip(audio * (32767.0 / peak), -32767.0, 32767.0).astype("<i2")
        return bytes(pcm.tobytes())

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, function, *args)
        except RuntimeError as exc:  # the executor was shut down
            raise BackendError(f"piper engine is closed: {exc}", code=ERROR_CODE) from exc
        try:
            return await future
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"piper failed: {exc}", code=ERROR_CODE) from exc

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        """Speak ``request.text``, yielding PCM16 chunks (100 ms each) sentence by sentence.

        Each sentence is synthesised when the previous one has been taken; stop iterating to
        abandon the rest (a sentence already running finishes on the worker, unheard).

        Raises:
            BackendError: ``engine_error`` when espeak-ng or the model fails, or after close().
        """
        if not request.text.strip():
            return
        sentences = await self._run(self.phonemize, request.text)
        speaker = self.speaker_for(request.voice)
        chunk = 2 * self.sample_rate * CHUNK_MS // 1000
        for phonemes in sentences:
            ids = self.phoneme_ids(phonemes)
            pcm = await self._run(self.infer, ids, request.speed, speaker)
            for start in range(0, len(pcm), chunk):
                yield pcm[start : start + chunk]

    def close(self) -> None:
        """Stop the worker thread; call once at shutdown."""
        self._executor.shutdown(wait=False, cancel_futures=True)
