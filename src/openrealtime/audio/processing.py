"""Echo cancellation and noise suppression of a session's input (WebRTC's audio processing module).

:class:`VoiceProcessor` is the :class:`~openrealtime.core.input_processing.InputProcessor` the
server gives every realtime session. It runs WebRTC's audio processing module (APM) as shipped in
the ``livekit`` real-time SDK's manylinux wheel (``livekit.rtc.AudioProcessingModule``): AEC3
for echo, its noise suppressor, high-pass filter and adaptive gain; the choice and its
measurements are in docs/decisions.md ("Echo and noise") and docs/benchmarks.md.

**The far end.** An echo canceller needs what the loudspeaker played, in step with what the
microphone heard. The processor keeps the assistant's audio in a queue and hands the canceller
10 ms of it for every 10 ms of input it cleans, so the far end advances with the microphone:

* over the WebSocket the session pushes every audio delta it sends; the client plays them in
  real time from about when they arrive, so the queue, consumed at the microphone's pace, is
  the client's playback; what remains (network, the client's buffers and sound card) is a
  delay AEC3's own estimator finds (tested up to 400 ms);
* over WebRTC the runtime pushes each frame the call's track actually sent, in real time, so the
  queue stays a few frames long.

A client that sent no microphone audio for a while as the assistant spoke (push-to-talk) comes
back to a queue the wall clock has overtaken: what finished playing more than the echo's reach
(500 ms) ago is dropped first, so a later turn is never compared with a stale answer. A client
that keeps streaming is never skipped ahead, even when its audio arrives late or in bursts: the
lockstep keeps the echo's lag constant, which is what AEC3 needs. Barge-in and truncation empty
the queue (the client stopped playing).

**Cost.** The canceller runs only while there is far-end audio and for a short tail after it
(echo still arriving); the suppressor runs while ``noise_reduction`` is set. Otherwise the audio
goes through untouched, so sessions that play nothing pay nothing (about 70 µs per 10 ms for the
canceller, 24 µs for the suppressor, at 24 kHz on this machine).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Literal

import numpy as np

NoiseReductionType = Literal["near_field", "far_field"] | None

RATE = 24_000
FRAME_SAMPLES = RATE // 100
FRAME_BYTES = FRAME_SAMPLES * 2
"""The APM processes 10 ms frames."""
ECHO_TAIL_FRAMES = 150
"""Frames (1.5 s) the canceller keeps running after the far end went quiet: the echo of its
last samples arrives up to the delay later, and AEC3 keeps its filter warm meanwhile."""
MIC_GAP_MS = 500
"""Input that resumes after a gap this long (no appends while the far end played) first drops
the far-end audio that played meanwhile."""
MAX_ECHO_MS = 500
"""How late an echo can come back (the echo-path detector's range)."""

log = logging.getLogger(__name__)


def _apm(**flags: bool) -> Any:
    from livekit import rtc  # noqa: PLC0415 - loads a native library; only when needed

    return rtc.AudioProcessingModule(**flags)


def _frame(data: bytearray) -> Any:
    from livekit import rtc  # noqa: PLC0415

    return rtc.AudioFrame(data, RATE, 1, FRAME_SAMPLES)


class _FarEnd:
    """Assistant audio waiting to reach the microphone, as a queue paced by the input."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._offset = 0
        self.queued = 0
        """Bytes waiting."""
        self._ends_ms = 0
        """Wall time at which the queued audio will have finished playing."""

    def push(self, pcm16: bytes, now_ms: int) -> None:
        if not pcm16:
            return
        self._chunks.append(pcm16)
        self.queued += len(pcm16)
        self._ends_ms = max(self._ends_ms, now_ms) + len(pcm16) // (2 * RATE // 1000)

    def take(self, nbytes: int) -> bytearray:
        """The next ``nbytes`` of far-end audio, padded with silence."""
        out = bytearray()
        while self._chunks and len(out) < nbytes:
            head = self._chunks[0]
            part = head[self._offset : self._offset + nbytes - len(out)]
            out += part
            self._offset += len(part)
            if self._offset >= len(head):
                self._chunks.popleft()
                self._offset = 0
        self.queued -= len(out)
        if len(out) < nbytes:
            out += bytes(nbytes - len(out))
        return out

    def catch_up(self, now_ms: int) -> None:
        """Drop audio that, by the wall clock, finished playing before the last echo's reach."""
        behind_ms = self.queued // (2 * RATE // 1000) - (self._ends_ms - now_ms)
        if behind_ms > MAX_ECHO_MS:
            self.skip((behind_ms - MAX_ECHO_MS) * (2 * RATE // 1000))

    def skip(self, nbytes: int) -> None:
        nbytes = min(nbytes - nbytes % 2, self.queued)
        while nbytes > 0 and self._chunks:
            head = self._chunks[0]
            step = min(nbytes, len(head) - self._offset)
            self._offset += step
            nbytes -= step
            self.queued -= step
            if self._offset >= len(head):
                self._chunks.popleft()
                self._offset = 0

    def clear(self) -> None:
        self._chunks.clear()
        self._offset = 0
        self.queued = 0


class _Pace:
    """Whether input audio arrives in real time, as a microphone's does.

    Audio streamed faster than real time (a file, a test, a benchmark at 8x) cannot hold the
    echo of what is playing: pairing it with the far end 10 ms for 10 ms would only let the
    canceller's suppressor eat the words. An append's lateness (wall time of arrival minus the
    audio time it ends at) has a floor for a microphone: audio cannot arrive before it was
    recorded, so a live stream's lateness only jitters above its best case, and a backlog
    (a stalled network or event loop catching up) comes back down to that floor, never under
    it. A faster stream's lateness keeps falling. Input whose lateness is more than
    :data:`AHEAD_MS` under the floor (the least lateness of appends older than
    :data:`SETTLE_MS`, or the first append's until then) is taken as not live.
    """

    def __init__(self) -> None:
        self._audio_ms = 0.0
        self._recent: deque[tuple[int, float]] = deque()
        self._floor: float | None = None
        self.best: float | None = None
        """The least lateness seen (ms): ``now - best`` is the latest audio time the
        microphone can have reached at wall time ``now``."""

    def live(self, nbytes: int, now_ms: int) -> bool:
        self._audio_ms += nbytes / (2 * RATE / 1000)
        lateness = now_ms - self._audio_ms
        self.best = lateness if self.best is None else min(self.best, lateness)
        if self._floor is None:
            self._floor = lateness
        while self._recent and self._recent[0][0] < now_ms - SETTLE_MS:
            self._floor = min(self._floor, self._recent.popleft()[1])
        self._recent.append((now_ms, lateness))
        return lateness >= self._floor - AHEAD_MS


AHEAD_MS = 250
MAX_ANCHOR_MS = 500
SETTLE_MS = 1_000


class VoiceProcessor:
    """Echo cancellation (from what the server played) and optional noise suppression.

    Args:
        echo_cancellation: run the canceller while there is far-end audio (the server's
            ``--echo-cancellation``); off, far-end audio is ignored.
    """

    def __init__(self, *, echo_cancellation: bool = True) -> None:
        self.echo_cancellation = echo_cancellation
        self._far = _FarEnd()
        self._aec: Any = None
        """The canceller's APM, created with the first far-end audio and kept (its filter
        converges over the session)."""
        self._ns: Any = None
        self._noise: NoiseReductionType = None
        self._tail = 0
        """Frames left to cancel after the far-end queue ran dry."""
        self._pending = b""
        """Input short of one frame, held back while processing."""
        self.frames_cancelled = 0
        self.frames_suppressed = 0
        self.echo_path = EchoPath()
        self._pace = _Pace()
        self._input_samples = 0
        self._last_input_ms: int | None = None
        self._live = True
        """Whether the input arrives in real time (a microphone), so it can hold an echo."""

    # ------------------------------------------------------------------ InputProcessor

    def set_noise_reduction(self, kind: NoiseReductionType) -> None:
        """Run the suppressor for ``near_field`` or ``far_field`` (plus gain), none for ``None``."""
        if kind == self._noise:
            return
        self._noise = kind
        if kind is None:
            self._ns = None
            return
        # near_field: a close microphone; far_field: a distant one (laptop, conference
        # room), which also gets the adaptive digital gain.
        self._ns = _apm(
            noise_suppression=True, high_pass_filter=True, auto_gain_control=kind == "far_field"
        )

    def far_end(self, pcm16: bytes, now_ms: int) -> None:
        """Queue assistant audio the microphone may hear back (ignored without cancellation)."""
        if not self.echo_cancellation:
            return
        if not self._far.queued and self._pace.best is not None:
            pcm16 = self._anchor(pcm16, now_ms)
        self._far.push(pcm16, now_ms)

    def _anchor(self, pcm16: bytes, now_ms: int) -> bytes:
        """Place audio that starts playing now at the microphone's "now", not its next frame.

        Queued audio is handed out 10 ms per 10 ms of input, from the next input frame on; an
        answer that starts while the queue is empty would otherwise begin wherever the
        client's next append happens to start, a different offset for every answer (up to a
        whole append), and AEC3 takes each new offset for a new echo path and lets echo
        through while it re-converges (measured: later answers interrupted themselves). The
        microphone's audio time at wall time ``now`` is ``now`` less its least lateness; the
        answer starts there: silence fills the gap up to it, or audio the input has already
        passed is skipped (up to :data:`MAX_ANCHOR_MS` either way).
        """
        assert self._pace.best is not None
        mic_now = (now_ms - self._pace.best) * RATE // 1000
        next_frame = self._input_samples - len(self._pending) // 2
        gap = int(mic_now - next_frame)
        limit = MAX_ANCHOR_MS * RATE // 1000
        if 0 < gap <= limit:
            return bytes(2 * gap) + pcm16
        if -limit <= gap < 0:
            return pcm16[-2 * gap :]
        return pcm16

    def drop_far_end(self) -> None:
        """Forget queued far-end audio: the client stopped playing it."""
        self._far.clear()

    def process(self, pcm16: bytes, now_ms: int) -> bytes:
        """Clean input audio in 10 ms frames; returns what is ready (holds back < 10 ms)."""
        self._live = self._pace.live(len(pcm16), now_ms)
        self._input_samples += len(pcm16) // 2
        gap = self._last_input_ms is None or now_ms - self._last_input_ms > MIC_GAP_MS
        self._last_input_ms = now_ms
        if self._far.queued:
            if gap:
                self._far.catch_up(now_ms)
            self._tail = ECHO_TAIL_FRAMES
        if not self._active():
            if not self._pending:
                return pcm16
            data, self._pending = self._pending + pcm16, b""
            return data
        data = self._pending + pcm16 if self._pending else pcm16
        whole = len(data) - len(data) % FRAME_BYTES
        self._pending = data[whole:]
        out = bytearray(data[:whole])
        for start in range(0, whole, FRAME_BYTES):
            frame = out[start : start + FRAME_BYTES]
            self._process_frame(frame)
            out[start : start + FRAME_BYTES] = frame
        return bytes(out)

    def flush(self) -> bytes:
        """Return the held-back input, unprocessed (a manual commit cuts the stream)."""
        data, self._pending = self._pending, b""
        return data

    # ------------------------------------------------------------------ internals

    def _cancelling(self) -> bool:
        return self.echo_cancellation and self._tail > 0 and self._live

    def _active(self) -> bool:
        return self._ns is not None or self._cancelling()

    def _process_frame(self, frame: bytearray) -> None:
        if self._cancelling():
            if self._aec is None:
                self._aec = _apm(echo_cancellation=True, high_pass_filter=True)
            far = self._far.take(FRAME_BYTES)
            raw = bytes(frame)
            self._aec.process_reverse_stream(_frame(far))
            self._aec.process_stream(_frame(frame))
            self.frames_cancelled += 1
            if not self._far.queued:
                self._tail -= 1
            if not self.echo_path.observe(far, raw):
                frame[:] = raw  # no echo reaches this microphone: take it as it is
            elif self.echo_path.residual(raw, frame):
                frame[:] = bytes(FRAME_BYTES)  # early in an answer: echo, nothing else
        if self._ns is not None:
            self._ns.process_stream(_frame(frame))
            self.frames_suppressed += 1


def _level_db(pcm16: bytes | bytearray) -> float:
    samples = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32)
    return float(10.0 * np.log10(float(np.dot(samples, samples)) / len(samples) + 1.0))


class EchoPath:
    """Whether the far end comes back through this microphone at all (speakerphone vs headset).

    AEC3 assumes an echo until its filter has converged on one, and until then (the first
    seconds of the assistant's audio in a session) it suppresses a headset user who talks over
    the assistant as if the words were echo: measured on flite speech, 15-26 dB off the
    user's words and barge-in 400-500 ms late or missed, for up to ~10 s of far-end audio. A
    microphone that never hears the far end needs no cancellation, so this detector watches
    the level envelopes of both signals, 10 ms frames, while the far end plays:

    * **echo**: the microphone's envelope follows the far end's at some lag within
      :data:`MAX_LAG_FRAMES` (normalised cross-correlation of the dB envelopes, over the last
      :data:`WINDOW_FRAMES` frames with far-end audio, at least :data:`ECHO_CORRELATION`);
    * **no echo**: otherwise, when the microphone stayed :data:`QUIET_BELOW_DB` under the far
      end at every lag looked for (medians over the window, from :data:`MIN_FRAMES` +
      :data:`QUIET_LAG_FRAMES` far-end frames on: nothing audible came back), or, before any
      echo was found, when the envelopes stayed uncorrelated (below
      :data:`NO_ECHO_CORRELATION`) over :data:`DECIDE_FRAMES` far-end frames: the microphone
      heard other things (the user, the room), never the far end. Once found, an echo is only
      given up for a quiet microphone: a user talking over the assistant lowers the
      correlation without taking the loudspeaker away.

    Until it knows (and whenever it finds echo) the canceller's output is used: a speakerphone
    must not interrupt itself while the detector makes up its mind. A later window can change
    the verdict (the user unplugs the headset).
    """

    def __init__(self) -> None:
        self._far: deque[float] = deque(maxlen=WINDOW_FRAMES + MAX_LAG_FRAMES)
        self._mic: deque[float] = deque(maxlen=WINDOW_FRAMES + MAX_LAG_FRAMES)
        self._since_check = 0
        self._active_frames = 0
        self._quiet_frames = MAX_LAG_FRAMES + 1
        """Far-end frames since the last one with audio."""
        self.echo: bool | None = None
        """``True`` echo found, ``False`` none comes back, ``None`` not known yet."""
        self.correlation = 0.0
        self.loss_db: float | None = None
        """Echo return loss once an echo is found: how far under the far end it comes back."""
        self.lag_frames = 0
        """The echo's delay behind the far end, in 10 ms frames, once an echo is found."""
        self._recent_far: deque[float] = deque(maxlen=MAX_LAG_FRAMES + GATE_SLACK_FRAMES + 1)
        """The far end's level over the last second, frame by frame (silent frames too)."""
        self._since_start = GATE_MAX_FRAMES
        """Frames since the far end started again after a pause (a new answer)."""
        self._attenuation: deque[float] = deque(maxlen=ATTENUATION_FRAMES)
        """dB the canceller took off the last echo-only frames of this answer."""

    def observe(self, far: bytes | bytearray, mic: bytes) -> bool:
        """Record one frame pair; returns whether to use the canceller's output for it."""
        far_db = _level_db(far)
        self._recent_far.append(far_db)
        self._since_start += 1
        if far_db < FAR_ACTIVE_DB:
            # Nothing new to learn. Unless an echo was found, only the last second of far-end
            # audio can still come back: after that the microphone is taken as it is.
            self._quiet_frames += 1
            return self.echo is True or (self.echo is None and self._quiet_frames <= MAX_LAG_FRAMES)
        if self._quiet_frames > RESTART_FRAMES:
            self._since_start = 0
            self._attenuation.clear()
        self._quiet_frames = 0
        self._far.append(far_db)
        self._mic.append(_level_db(mic))
        self._active_frames += 1
        self._since_check += 1
        if self._since_check >= CHECK_EVERY_FRAMES and self._active_frames >= MIN_FRAMES:
            self._since_check = 0
            self._decide()
        return self.echo is not False

    def _decide(self) -> None:
        far = np.fromiter(self._far, dtype=np.float64)
        mic = np.fromiter(self._mic, dtype=np.float64)
        best, lag = self._best_correlation(far, mic)
        self.correlation = best
        if best >= ECHO_CORRELATION:
            self.echo = True
            self.lag_frames = lag
            self.loss_db = float(np.median(far[: len(far) - lag] - mic[lag:]))
        elif self._quiet(far, mic) or (
            self.echo is None
            and best < NO_ECHO_CORRELATION
            and self._active_frames >= DECIDE_FRAMES
        ):
            self.echo = False

    @staticmethod
    def _best_correlation(
        far: np.ndarray[Any, Any], mic: np.ndarray[Any, Any]
    ) -> tuple[float, int]:
        """The highest normalised correlation of the envelopes, and its lag (mic behind far).

        The lag runs over 0..max lag, counted in far-end frames with audio.
        """
        n = len(mic)
        lags = min(MAX_LAG_FRAMES, n - MIN_FRAMES)
        if lags < 0:
            return 0.0, 0
        f, m = far - far.mean(), mic - mic.mean()
        # np.correlate(m, f, "full")[n - 1 + k] = sum_i m[i + k] * f[i]
        products = np.correlate(m, f, "full")[n - 1 : n + lags]
        far_energy = np.cumsum(f * f)[n - 1 - np.arange(lags + 1)]
        mic_energy = np.cumsum((m * m)[::-1])[n - 1 - np.arange(lags + 1)]
        denominator = np.sqrt(far_energy * mic_energy)
        valid = denominator > 0
        if not valid.any():
            return 0.0, 0
        scores = np.where(valid, products / np.where(valid, denominator, 1.0), -1.0)
        lag = int(np.argmax(scores))
        return float(scores[lag]), lag

    def residual(self, mic: bytes, cancelled: bytes | bytearray) -> bool:
        """Whether this input frame, early in an answer, can be nothing but echo.

        When the assistant starts a new answer, the echo's alignment moves a little (the
        client starts playing at a slightly different moment each time), and AEC3 lets echo
        through while it follows (measured by ``bench/_echo_offline.py``: false starts
        0.16-1.6 s into exactly the answers whose alignment moved). For the first
        :data:`GATE_FRAMES` of an answer, and after that for as long as the canceller is not
        yet taking :data:`CONVERGED_DB` off the echo (up to :data:`GATE_MAX_FRAMES`), once an
        echo, its delay and its return loss are known, an input frame no louder than the far
        end at that delay (the loudest within :data:`GATE_SLACK_FRAMES` of it) less the loss,
        plus :data:`GATE_MARGIN_DB`, is explained by the echo alone and is muted. A user
        talking over the answer is louder than the echo of what was played just then, or
        speaks between its words, and gets through. ``cancelled`` is the canceller's output
        for the frame.
        """
        if self.echo is not True or self.loss_db is None or self._since_start >= GATE_MAX_FRAMES:
            return False
        recent = self._recent_far
        newest = len(recent) - 1 - self.lag_frames  # the far frame this input frame echoes
        window = [
            recent[i]
            for i in range(newest - GATE_SLACK_FRAMES, newest + GATE_SLACK_FRAMES + 1)
            if 0 <= i < len(recent)
        ]
        if not window:
            return False
        echo_db = max(window) - self.loss_db
        mic_db = _level_db(mic)
        if mic_db >= echo_db + GATE_MARGIN_DB:
            return False  # louder than any echo: the user
        if echo_db > QUIET_BELOW_DB:  # an echo worth judging the canceller by
            self._attenuation.append(mic_db - _level_db(cancelled))
        if self._since_start < GATE_FRAMES:
            return True
        converged = (
            len(self._attenuation) >= ATTENUATION_FRAMES // 2
            and float(np.median(np.fromiter(self._attenuation, dtype=np.float64))) >= CONVERGED_DB
        )
        return not converged

    @staticmethod
    def _quiet(far: np.ndarray[Any, Any], mic: np.ndarray[Any, Any]) -> bool:
        """Whether, at every delay of the quick check, the microphone stayed far below."""
        n = len(mic)
        if n < MIN_FRAMES + QUIET_LAG_FRAMES:
            return False  # an echo could still be on its way
        return all(
            float(np.median(far[: n - lag] - mic[lag:])) >= QUIET_BELOW_DB
            for lag in range(0, QUIET_LAG_FRAMES + 1, 5)
        )


FAR_ACTIVE_DB = 40.0
"""A far-end frame louder than this (dB over one LSB², about −50 dBFS) counts as playing."""
WINDOW_FRAMES = 200
MAX_LAG_FRAMES = 100
"""Echo delays looked for by correlation: up to 1 s (over WebRTC the caller's jitter buffer
and sound card come on top of the room's delay)."""
QUIET_LAG_FRAMES = 50
"""Delays the quick "nothing comes back" check covers (500 ms), so a headset is recognised
0.8 s into the first answer; a longer echo still turns the verdict to echo when found."""
MIN_FRAMES = 30
CHECK_EVERY_FRAMES = 10
DECIDE_FRAMES = 120
"""Far-end frames (1.2 s) before the detector may decide there is no echo."""
QUIET_BELOW_DB = 35.0
RESTART_FRAMES = 50
"""A far end silent this long (500 ms) and playing again starts a new answer."""
GATE_FRAMES = 200
"""How long into an answer input that is only echo is muted (2 s)."""
GATE_MAX_FRAMES = 500
"""The gate's limit (5 s into an answer) however the canceller is doing."""
CONVERGED_DB = 15.0
"""What the canceller must take off the echo for the gate to lift after :data:`GATE_FRAMES`."""
ATTENUATION_FRAMES = 50
"""Echo-only frames (0.5 s) over which the canceller's attenuation is judged."""
GATE_MARGIN_DB = 6.0
"""How much louder than the expected echo an input frame must be to count as the user."""
GATE_SLACK_FRAMES = 5
"""How far (50 ms) the echo may have moved from the delay found: the window the gate looks at."""
ECHO_CORRELATION = 0.7
NO_ECHO_CORRELATION = 0.3
