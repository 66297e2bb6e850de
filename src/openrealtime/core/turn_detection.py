"""``server_vad`` over speech probabilities, counted in samples (spec §3.1, §5.2).

Pure logic: the VAD model runs elsewhere and hands in one probability per frame. Speech starts
on the first frame at or above ``threshold``; it stops once frames below the lower hysteresis
threshold have lasted ``silence_duration_ms``. Positions are absolute session sample indexes.
"""

from __future__ import annotations

from dataclasses import dataclass

from openrealtime.core.state import SPEECH_TRANSITIONS, SpeechState, advance

HYSTERESIS = 0.15
"""Speech continues while the probability stays above ``threshold - HYSTERESIS`` (as Silero's
own iterator does), so one quiet frame inside a word does not end the turn."""


@dataclass(frozen=True)
class SpeechStart:
    """Speech began at ``sample`` (before prefix padding)."""

    sample: int


@dataclass(frozen=True)
class SpeechStop:
    """Speech ended; ``sample`` is where the silence tail reached ``silence_duration_ms``."""

    sample: int
    speech_end_sample: int
    """Where the last speech frame ended (the true end of speech, for latency figures)."""


@dataclass(frozen=True)
class SilenceStart:
    """The speaker went quiet at ``sample``; the turn ends if it lasts ``silence_duration_ms``.

    The session may start preparing its answer here (speculatively), before the turn is over.
    """

    sample: int


@dataclass(frozen=True)
class SpeechResumed:
    """Speech came back before the silence was long enough: the turn goes on."""

    sample: int


VadTransition = SpeechStart | SpeechStop | SilenceStart | SpeechResumed


class ServerVadDetector:
    """Hysteresis over frame probabilities; feed frames in order, get start/stop transitions."""

    def __init__(self, threshold: float, silence_samples: int, start_sample: int = 0) -> None:
        self.threshold = threshold
        self.silence_samples = silence_samples
        self.state = SpeechState.SILENCE
        self.position = start_sample
        self._silence_from: int | None = None

    def reconfigure(self, threshold: float, silence_samples: int) -> None:
        """Apply new parameters from a ``session.update``; the current state is kept."""
        self.threshold = threshold
        self.silence_samples = silence_samples

    def reset(self) -> None:
        """Forget any speech in progress (buffer cleared or committed by the client)."""
        if self.state is SpeechState.SPEAKING:
            self.state = advance("speech", SPEECH_TRANSITIONS, self.state, "clear")
        self._silence_from = None

    def feed(self, probabilities: tuple[float, ...], frame_samples: int) -> list[VadTransition]:
        """Consume frame probabilities and return the transitions they cause, in order."""
        out: list[VadTransition] = []
        for p in probabilities:
            start = self.position
            self.position += frame_samples
            if self.state is SpeechState.SILENCE:
                if p >= self.threshold:
                    self.state = advance("speech", SPEECH_TRANSITIONS, self.state, "speech_started")
                    self._silence_from = None
                    out.append(SpeechStart(start))
                continue
            if p >= self.threshold - HYSTERESIS:
                if self._silence_from is not None:
                    self._silence_from = None
                    out.append(SpeechResumed(start))
                continue
            if self._silence_from is None:
                self._silence_from = start
                out.append(SilenceStart(start))
            if self.position - self._silence_from >= self.silence_samples:
                self.state = advance("speech", SPEECH_TRANSITIONS, self.state, "speech_stopped")
                out.append(SpeechStop(self.position, self._silence_from))
                self._silence_from = None
        return out
