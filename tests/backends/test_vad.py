from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from openrealtime.audio.resample import resample
from openrealtime.backends.base import VadStream, VoiceActivityDetector
from openrealtime.backends.vad_energy import EnergyVad
from openrealtime.backends.vad_silero import SileroVad, SileroVadStream
from openrealtime.models import resolve_model

RATE = 24000
PAD = RATE  # 1 s of silence on each side
CHUNK = 480  # 20 ms
FRAME = 768


class Clip:
    def __init__(self, pcm16: bytes, speech_start: int, speech_end: int) -> None:
        self.pcm16 = pcm16
        self.speech_start = speech_start  # first/last loud sample of the speech, in samples
        self.speech_end = speech_end

    def chunks(self) -> list[bytes]:
        step = 2 * CHUNK
        return [self.pcm16[i : i + step] for i in range(0, len(self.pcm16), step)]


def _with_padding(speech: npt.NDArray[np.int16], seed: int) -> Clip:
    rng = np.random.default_rng(seed)
    total = PAD + len(speech) + PAD
    noise = rng.normal(0.0, 60.0, total)  # faint noise, about -55 dBFS
    signal = noise.copy()
    signal[PAD : PAD + len(speech)] += speech
    pcm = np.clip(np.rint(signal), -32768, 32767).astype("<i2")
    loud = np.flatnonzero(np.abs(speech.astype(np.int32)) > 1000)
    return Clip(pcm.tobytes(), PAD + int(loud[0]), PAD + int(loud[-1]))


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    if shutil.which("flite") is None:
        pytest.fail("flite is required (apt-get install flite)")
    wav_path = tmp_path_factory.mktemp("speech") / "x.wav"
    subprocess.run(
        ["flite", "-voice", "rms", "-t", "What is the capital of France?", "-o", str(wav_path)],
        check=True,
        capture_output=True,
    )
    with wave.open(str(wav_path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        rate = w.getframerate()
        raw = w.readframes(w.getnframes())
    speech = np.frombuffer(resample(raw, rate, RATE), "<i2")
    return _with_padding(speech, seed=1)


@pytest.fixture(scope="session")
def silero() -> SileroVad:
    return SileroVad(resolve_model("silero-vad", progress=False))


def _run(stream: VadStream, clip: Clip) -> list[float]:
    probs: list[float] = []
    for chunk in clip.chunks():
        probs.extend(stream.feed(chunk))
    stream.close()
    return probs


def _regions(clip: Clip, probs: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (speech frames, leading-silence frames, trailing-silence frames) probabilities."""
    p = np.array(probs)
    starts = np.arange(len(p)) * FRAME
    inside = (starts >= clip.speech_start) & (starts + FRAME <= clip.speech_end)
    before = starts + FRAME <= clip.speech_start - RATE // 10
    after = starts >= clip.speech_end + RATE // 4  # allow the model's hangover
    return p[inside], p[before], p[after]


def test_protocols(silero: SileroVad) -> None:
    for vad in (silero, EnergyVad()):
        assert isinstance(vad, VoiceActivityDetector)
        stream = vad.open_stream()
        assert isinstance(stream, VadStream)
        assert stream.frame_samples == FRAME
        stream.close()
    assert silero.name == "silero"
    assert EnergyVad().name == "energy"


def test_silero_detects_speech(silero: SileroVad, speech: Clip) -> None:
    probs = _run(silero.open_stream(), speech)
    n_windows = len(speech.pcm16) // 2 // FRAME
    # Every window is scored except at most the last one, still inside the resampler.
    assert n_windows - 1 <= len(probs) <= n_windows
    inside, before, after = _regions(speech, probs)
    assert len(inside) > 30 and len(before) > 20 and len(after) > 20
    assert np.mean(inside > 0.5) >= 0.8
    assert np.mean(before < 0.2) >= 0.95
    assert np.mean(after < 0.2) >= 0.95


def test_energy_detects_speech(speech: Clip) -> None:
    probs = _run(EnergyVad().open_stream(), speech)
    assert len(probs) == len(speech.pcm16) // 2 // FRAME
    inside, before, after = _regions(speech, probs)
    assert np.mean(inside > 0.5) >= 0.7
    assert np.mean(before < 0.2) >= 0.95
    assert np.mean(after < 0.2) >= 0.95


def test_energy_levels() -> None:
    stream = EnergyVad(threshold_dbfs=-45.0).open_stream()
    t = np.arange(FRAME * 3)
    # -45 dBFS RMS exactly -> 0.5; digital silence -> ~0; a loud tone -> ~1.
    level = 10 ** (-45 / 20) * 32768 * np.sqrt(2)
    quiet = np.rint(level * np.sin(2 * np.pi * 1000 * t / RATE))
    audio = np.concatenate([np.zeros(FRAME), quiet[:FRAME], 16000 * np.sin(t[:FRAME])])
    pcm = np.rint(audio).astype("<i2").tobytes()
    assert stream.feed(pcm[:100]) == []
    probs = stream.feed(pcm[100:])
    assert len(probs) == 3
    assert probs[0] < 1e-6
    assert probs[1] == pytest.approx(0.5, abs=0.02)
    assert probs[2] > 0.9999


def test_silero_frame_mapping_is_exact(silero: SileroVad, monkeypatch: pytest.MonkeyPatch) -> None:
    """The i-th model frame holds session samples [768 i, 768 (i + 1))."""
    frames: list[np.ndarray] = []
    real = silero.run_batch

    def recording(inputs: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames.extend(inputs[:, 64:].copy())
        return real(inputs, state)

    monkeypatch.setattr(silero, "run_batch", recording)
    for window in (0, 3, 17, 40):
        for offset in (5, 384, 760):
            frames.clear()
            x = np.zeros(FRAME * 50, np.int16)
            x[window * FRAME + offset] = 30000
            stream = silero.open_stream()
            pcm = x.tobytes()
            for i in range(0, len(pcm), 2 * CHUNK):
                stream.feed(pcm[i : i + 2 * CHUNK])
            peaks = [float(np.max(np.abs(f))) for f in frames]
            assert int(np.argmax(peaks)) == window
            # The impulse lands at 2/3 of its session offset within the 512-sample frame.
            assert abs(int(np.argmax(np.abs(frames[window]))) - offset * 2 // 3) <= 1


def test_silero_batched_equals_single(silero: SileroVad, speech: Clip) -> None:
    rng = np.random.default_rng(7)
    base = np.frombuffer(speech.pcm16, "<i2")
    clips = [
        speech.pcm16,
        np.roll(base, 12345).tobytes(),
        (base // 3).astype("<i2").tobytes(),
        np.rint(rng.normal(0, 300, len(base))).astype("<i2").tobytes(),
    ]
    step = 2 * CHUNK
    single = []
    for clip in clips:
        stream = silero.open_stream()
        out: list[float] = []
        for i in range(0, len(clip), step):
            out.extend(stream.feed(clip[i : i + step]))
        single.append(out)

    streams = [silero.open_stream() for _ in clips]
    batched: list[list[float]] = [[] for _ in clips]
    sizes: set[int] = set()
    for i in range(0, len(clips[0]), step):
        # Streams get different chunk sizes now and then, so batches vary in size.
        for k, (stream, clip) in enumerate(zip(streams, clips, strict=True)):
            if (i // step + k) % 5 != 0:
                stream.push(clip[i : i + step])
            else:
                stream.push(clip[i : i + step // 2])
                stream.push(clip[i + step // 2 : i + step])
        while True:
            ready: list[SileroVadStream] = [s for s in streams if s.frames_ready]
            if not ready:
                break
            sizes.add(len(ready))
            for s, p in zip(ready, silero.infer_batch(ready), strict=True):
                batched[streams.index(s)].append(p)
    assert max(sizes) == len(clips)
    for a, b in zip(single, batched, strict=True):
        assert len(a) == len(b) > 100
        assert a == b  # bit-identical


def test_silero_run_batch_shapes(silero: SileroVad) -> None:
    inputs = np.zeros((3, 576), np.float32)
    state = np.zeros((2, 3, 128), np.float32)
    probs, new_state = silero.run_batch(inputs, state)
    assert probs.shape == (3,)
    assert new_state.shape == (2, 3, 128)
    assert np.all((probs >= 0) & (probs <= 1))


def test_silero_from_cache_and_errors(tmp_path: Path, silero: SileroVad) -> None:
    vad = SileroVad.from_cache(local_path=silero.model_path)
    assert vad.model_path == silero.model_path
    stream = vad.open_stream()
    stream.close()
    with pytest.raises(RuntimeError):
        stream.feed(b"\x00\x00")
    other = vad.open_stream()
    other.push(b"\x00\x00" * 2000)
    with pytest.raises(ValueError):
        silero.infer_batch([other])
    assert silero.infer_batch([]) == []
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    from openrealtime.backends.errors import ModelFileError

    with pytest.raises(ModelFileError, match="bad.onnx"):
        SileroVad(bad)


def test_silero_split_framing_and_scoring_equals_feed(silero: SileroVad, speech: Clip) -> None:
    """take_inputs (the event loop's side) + infer_inputs (the worker's) == feed, bit for bit."""
    single = silero.open_stream()
    expected = [p for chunk in speech.chunks() for p in single.feed(chunk)]
    split = silero.open_stream()
    got: list[float] = []
    for chunk in speech.chunks():
        split.push(chunk)
        for row in split.take_inputs():  # one frame per model call for a stream, in order
            got.extend(silero.infer_inputs([split], row[np.newaxis, :]))
    assert split.take_inputs() == []
    assert len(got) == len(expected) > 100
    assert got == expected


def test_silero_states_survive_growth_and_freed_slots_start_from_zero(
    silero: SileroVad, speech: Clip
) -> None:
    """Streams keep their state while the shared state array grows; a new stream on a freed
    column scores exactly as a fresh one."""
    chunks = speech.chunks()
    fresh = silero.open_stream()
    reference = [p for chunk in chunks[:60] for p in fresh.feed(chunk)]
    early = silero.open_stream()
    first_half = [p for chunk in chunks[:30] for p in early.feed(chunk)]
    columns = silero._states.shape[1]
    crowd: list[SileroVadStream] = []
    while silero._states.shape[1] == columns:  # until the state array has grown
        crowd.append(silero.open_stream())
        crowd[-1].feed(chunks[40])
    second_half = [p for chunk in chunks[30:60] for p in early.feed(chunk)]
    assert first_half + second_half == reference
    del crowd  # their columns go back to the free list ...
    reused = silero.open_stream()  # ... and one of them is zeroed for a new stream
    assert [p for chunk in chunks[:60] for p in reused.feed(chunk)] == reference
