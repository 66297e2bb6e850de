"""Per-turn latency, measured from the true end of the user's speech (issue: voice pipeline §8).

The core knows when each piece of audio arrived (``advance_time`` runs before every input), so
it can date the last speech frame. The stages after it are stamped as they happen; the driver
adds the moment the first audio delta actually left the socket.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class TurnLatency:
    """Wall-clock stamps (unix ms) of one user turn and the response that answers it."""

    item_id: str
    speech_end_ms: int
    """When the audio holding the last speech frame arrived."""
    vad_end_ms: int
    """When VAD saw enough silence (the first pause check under semantic_vad)."""
    turn_end_ms: int = 0
    """When the turn was declared over (``speech_stopped``)."""
    stt_final_ms: int | None = None
    llm_first_ms: int | None = None
    tts_first_ms: int | None = None
    first_sent_ms: int | None = None
    """Set by the driver when the first output delta was written to the client."""

    def stages(self) -> dict[str, int | None]:
        """Milliseconds after the end of speech at which each stage happened."""
        base = self.speech_end_ms

        def rel(stamp: int | None) -> int | None:
            return None if stamp is None else stamp - base

        return {
            "vad_end": rel(self.vad_end_ms),
            "turn_decision": rel(self.turn_end_ms),
            "stt_final": rel(self.stt_final_ms),
            "llm_first_token": rel(self.llm_first_ms),
            "tts_first_audio": rel(self.tts_first_ms),
            "first_delta_sent": rel(self.first_sent_ms),
        }

    def describe(self) -> str:
        """One log line: each stage's delay after the end of speech."""
        parts = [f"{k}=+{v}ms" for k, v in self.stages().items() if v is not None]
        return f"turn {self.item_id} latency from end of speech: " + " ".join(parts)


@dataclass
class ArrivalClock:
    """Remembers when recent audio arrived, to date a sample position in wall time."""

    horizon: int = 2048
    _marks: deque[tuple[int, int]] = field(default_factory=deque)

    def mark(self, end_sample: int, now_ms: int) -> None:
        """Audio up to ``end_sample`` had arrived at ``now_ms``."""
        self._marks.append((end_sample, now_ms))
        while len(self._marks) > self.horizon:
            self._marks.popleft()

    def arrival_ms(self, sample: int, default: int) -> int:
        """When the audio holding ``sample`` arrived (``default`` if no longer known)."""
        for end, when in self._marks:
            if end > sample:
                return when
        return default
