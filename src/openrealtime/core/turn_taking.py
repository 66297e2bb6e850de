"""Turn-taking: who has the floor, written down as one state machine (design.md house rule 2).

The session feeds this module what it hears (appended audio, VAD probabilities, turn-model
answers, transcripts, client commits and clears, wall time) and what becomes of the answers
(response created, done, drained); this module decides when the user's turn starts and ends,
when to speculate, when the idle timer fires and whether the user interrupts the assistant. It
emits ``input_audio_buffer.speech_started``/``speech_stopped``/``timeout_triggered`` and the
listening commands itself, and asks the session (a :class:`TurnHost`) for what belongs to the
conversation and the responses: commit a turn's audio as an item, answer a turn, cut off the
answer being given, prepare a speculative answer.

States (:class:`TurnState`; moves in :data:`TURN_TRANSITIONS`, each trigger named after its input):

* ``listening``: no user speech in progress;
* ``speaking``: a user turn in progress (the VAD hears speech, or the silence after it);
* ``pause``: ``semantic_vad`` with a turn model: the speech stopped, and the model is deciding
  whether the turn is over (:mod:`openrealtime.core.semantic_turn`);
* ``overlap``, ``overlap_pause``: the same two while the user speaks over an answer that is
  held (false interruptions, below);
* ``checking``: that overlapping speech ended early; its transcript decides.

**Barge-in** (spec §5.6, §5.7). With ``interrupt_response``, speech that starts while the
assistant answers interrupts it: the default response is cancelled (``turn_detected``) and, over
WebRTC, its playback is cleared, so the item is truncated where the user stopped hearing it.
Over a WebSocket this always happens at once, at ``speech_started``, as on the live service: the
client owns playback and the official clients stop their own playback on that event, so there
is nothing the server could resume.

**False interruptions** (WebRTC only, where the server owns playback; LiveKit Agents' false
interruption resume). With :attr:`TurnOptions.resume_false_interruptions`, speech that starts
while an answer's audio is playing *holds* the answer instead (``overlap``): ``speech_started``
goes out and playback pauses (``PausePlayback``); the response goes on generating, its audio
queues. The overlap is a **real interruption**, handled exactly as a barge-in at its onset
(cancel if still generating, clear, truncation at the heard position, which is where the pause
began; then the user's turn goes on as usual), once

* the speech has lasted :attr:`~TurnOptions.min_interruption_ms` since its onset while still
  speaking (trigger ``long_speech``), or
* it ended earlier and its transcript holds a word that is not a backchannel (``words``;
  see :data:`BACKCHANNELS`).

It is a **false interruption** when it ended earlier and its transcript is empty or only
backchannels, or transcription failed (``no_words``), or no transcript came within
:attr:`~TurnOptions.false_interruption_timeout_ms` of ``speech_stopped`` (``timeout``): playback
resumes where it paused (``ResumePlayback``), the response is not cancelled, and the user's
item stays in the conversation but gets no response of its own. More speech while ``checking``
is held and judged the same way (the timer restarts when it ends).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from openrealtime.audio.pcm import SESSION_RATE
from openrealtime.core import semantic_turn as semantic
from openrealtime.core.commands import (
    Command,
    DetectSpeech,
    DropSpeculation,
    EvaluateTurn,
    Generate,
    Listen,
    Speculate,
    StopListening,
)
from openrealtime.core.ids import IdFactory
from openrealtime.core.input_buffer import InputAudioBuffer
from openrealtime.core.latency import ArrivalClock, TurnLatency
from openrealtime.core.playback import OutputAudioBuffer
from openrealtime.core.state import advance
from openrealtime.core.turn_detection import (
    ServerVadDetector,
    SilenceStart,
    SpeechResumed,
    SpeechStart,
    VadTransition,
)
from openrealtime.protocol import server_events as se
from openrealtime.protocol.session_config import SemanticVad, ServerVad

Emit = Callable[..., None]

BACKCHANNELS = frozenset(
    "mm mhm mm-hm hmm uh-huh uh um yeah yep yes okay ok right sure alright".split()
)
"""Words that do not claim the turn: a listener's feedback and fillers. Compared ignoring case,
punctuation and repeated letters, so "Mm-hmm.", "mm hm", "Hmmm" and "OK!" are all in it. A
lone letter claims nothing either: it is how a recogniser spells a hum (PocketSphinx hears
flite's "mm hm" as "m m h m")."""


def _key(word: str) -> str:
    letters = "".join(c for c in word.lower() if c.isalnum())
    return re.sub(r"(.)\1+", r"\1", letters)


_BACKCHANNEL_KEYS = frozenset(_key(w) for w in BACKCHANNELS)


def claims_the_turn(transcript: str) -> bool:
    """Whether ``transcript`` holds a word that is not in :data:`BACKCHANNELS`.

    Call with the transcript of speech that overlapped a held answer: True makes it a real
    interruption. An empty transcript claims nothing.
    """
    for token in transcript.split():
        key = _key(token)
        if len(key) <= 1 or key in _BACKCHANNEL_KEYS:
            continue
        parts = [_key(part) for part in re.split(r"\W+", token)]
        if not all(not part or part in _BACKCHANNEL_KEYS for part in parts):
            return True
    return False


class TurnState(Enum):
    """Who has the floor (see the module docstring)."""

    LISTENING = "listening"
    SPEAKING = "speaking"
    PAUSE = "pause"
    OVERLAP = "overlap"
    OVERLAP_PAUSE = "overlap_pause"
    CHECKING = "checking"


_L, _S, _P = TurnState.LISTENING, TurnState.SPEAKING, TurnState.PAUSE
_O, _OP, _C = TurnState.OVERLAP, TurnState.OVERLAP_PAUSE, TurnState.CHECKING

TURN_TRANSITIONS: dict[tuple[TurnState, str], TurnState] = {
    # the user's turn (spec §5.2 server_vad, §3.1 semantic_vad, §5.10 idle timeout)
    (_L, "speech_started"): _S,
    (_S, "pause"): _P,
    (_P, "speech_continued"): _S,
    (_S, "speech_stopped"): _L,
    (_P, "speech_stopped"): _L,
    (_L, "idle_timeout"): _L,
    # the client's input_audio_buffer.commit / .clear (spec §2.2)
    (_L, "commit"): _L,
    (_S, "commit"): _L,
    (_P, "commit"): _L,
    (_C, "commit"): _C,
    (_L, "clear"): _L,
    (_S, "clear"): _L,
    (_P, "clear"): _L,
    (_C, "clear"): _C,
    # speech over a playing answer, which is held (WebRTC, resume_false_interruptions)
    (_L, "overlap_started"): _O,
    (_C, "speech_started"): _O,
    (_O, "pause"): _OP,
    (_OP, "speech_continued"): _O,
    (_O, "speech_stopped"): _C,
    (_OP, "speech_stopped"): _C,
    (_O, "commit"): _C,
    (_OP, "commit"): _C,
    (_O, "clear"): _C,
    (_OP, "clear"): _C,
    # a real interruption: the answer is cut off, the user's turn goes on
    (_O, "long_speech"): _S,
    (_O, "words"): _S,
    (_OP, "words"): _P,
    (_C, "words"): _L,
    # a false interruption: the answer resumes
    (_C, "no_words"): _L,
    (_C, "timeout"): _L,
    # turn_detection set to null: any speech in progress is dropped, a held answer resumes
    **{(state, "vad_off"): _L for state in TurnState},
}


@dataclass(frozen=True)
class TurnOptions:
    """Server options of turn-taking (the ``Config`` fields of the same names)."""

    resume_false_interruptions: bool = True
    """Over WebRTC, hold an answer when speech starts over it and resume it if that was no real
    interruption (otherwise every barge-in interrupts at once, as over a WebSocket)."""
    min_interruption_ms: int = 1000
    """Speech over a held answer that lasts this long is a real interruption."""
    false_interruption_timeout_ms: int = 2000
    """Shorter overlapping speech whose transcript has not come this long after it ended is a
    false interruption."""


INTERRUPT_AT_ONCE = TurnOptions(resume_false_interruptions=False)
"""Every barge-in interrupts at its onset (a session built without options)."""


class TurnHost(Protocol):
    """What turn-taking asks of the rest of the session (:class:`RealtimeSession`)."""

    @property
    def now_ms(self) -> int:
        """The wall time the session was last told (unix ms)."""
        ...

    @property
    def responding(self) -> bool:
        """Whether a response of the default conversation is in progress."""
        ...

    def commit_turn(self, item_id: str, pcm16: bytes) -> None:
        """Make a user item of a turn's audio: committed, item added/done, transcription."""
        ...

    def answer(self, latency: TurnLatency | None) -> None:
        """Create the default response that answers the turn just over (spec §5.2)."""
        ...

    def interrupt(self) -> None:
        """Barge-in: cancel the default response (``turn_detected``) and cut off its audio."""
        ...

    def speculation(self) -> Generate | None:
        """The ``Generate`` the turn would get if it ended now (None if it would fail)."""
        ...


class TurnTaking:
    """The turn-taking state machine of one session; the session calls the public methods.

    Args:
        host: the session's conversation and responses.
        ids: the session's id factory (speech items).
        buffer: the session's input audio buffer (speech is taken from it).
        playback: the output audio buffer when the transport plays audio (WebRTC), else None.
        emit: the session's event emitter; command: appends a command to its output.
        answers: a realtime session (turns get responses and may interrupt them).
        turn_model: a turn-completion model is loaded (``semantic_vad`` asks it).
        options: the server's turn-taking options.
    """

    def __init__(
        self,
        host: TurnHost,
        *,
        ids: IdFactory,
        buffer: InputAudioBuffer,
        playback: OutputAudioBuffer | None,
        emit: Emit,
        command: Callable[[Command], None],
        answers: bool,
        turn_model: bool,
        options: TurnOptions,
    ) -> None:
        self.state = TurnState.LISTENING
        self._host = host
        self._ids = ids
        self._buffer = buffer
        self._playback = playback
        self._emit = emit
        self._command = command
        self._answers = answers
        self._turn_model = turn_model
        self._options = options
        self._td: ServerVad | SemanticVad | None = None
        self._vad = ServerVadDetector(0.5, 0)
        self.speech_item_id: str | None = None
        """The item of the speech in progress (from ``speech_started`` to its end)."""
        self._speech_start = 0
        """First sample of that item's audio (the onset minus prefix padding)."""
        self._onset = 0
        self._quiet = False
        """The VAD is in the silence after speech (the turn may be ending)."""
        self._pause: semantic.TurnPause | None = None
        self._speculating: str | None = None
        """The user item whose answer the runtime is preparing during a pause (see Speculate)."""
        self._arrivals = ArrivalClock()
        self._latency: dict[str, TurnLatency] = {}
        """Latency records of turns not yet answered, by item id."""
        self._answer_pending = False
        """A turn ended while a response was in progress: answer it when that one is done."""
        self._idle_deadline_ms: int | None = None
        self._idle_after_playback: str | None = None
        """Over WebRTC: the response whose playback's end arms the idle timer."""
        self._unheard: set[str] = set()
        """Items of overlapping speech whose transcripts are awaited."""
        self._held: tuple[str, TurnLatency | None] | None = None
        """The last overlapping turn, answered only if the overlap was a real interruption."""
        self._check_deadline_ms: int | None = None

    # ------------------------------------------------------------------ inputs

    def configure(self, td: ServerVad | SemanticVad | None) -> None:
        """Apply the session's ``turn_detection`` (at creation and on every ``session.update``)."""
        self._td = td
        if td is None:
            self._drop_speech()
            self._idle_deadline_ms = None
            self._resume("vad_off")
            return
        if isinstance(td, ServerVad):
            threshold, silence_ms = td.threshold, td.silence_duration_ms
        elif self._turn_model:
            threshold, silence_ms = 0.5, semantic.FIRST_CHECK_MS
        else:
            threshold, silence_ms = 0.5, semantic.FALLBACK_SILENCE_MS[td.eagerness]
        self._vad.reconfigure(threshold, silence_ms * SESSION_RATE // 1000)

    def audio(self, pcm16: bytes) -> None:
        """Audio was just appended to the buffer: run the VAD on it, stream it to the STT."""
        self._arrivals.mark(self._buffer.written, self._host.now_ms)
        if self.speech_item_id is not None:
            self._command(Listen(self.speech_item_id, pcm16))
        self._command(DetectSpeech(pcm16))

    def speech_probabilities(self, probabilities: tuple[float, ...], frame_samples: int) -> None:
        """VAD results for the next frames of the input stream (``SpeechProbabilities``)."""
        if self._td is None:
            self._vad.position += len(probabilities) * frame_samples
            return
        if self._playback is None or not self._options.resume_false_interruptions:
            for change in self._vad.feed(probabilities, frame_samples):
                self._on_vad(change)
        else:  # frame by frame: an overlap turns real on the frame that reaches its length
            for p in probabilities:
                for change in self._vad.feed((p,), frame_samples):
                    self._on_vad(change)
                if self.state is TurnState.OVERLAP and not self._quiet:
                    lasted = self._vad.position - self._onset
                    if lasted * 1000 >= self._options.min_interruption_ms * SESSION_RATE:
                        self._interrupted("long_speech")
        if self._pause is not None:
            self._check_pause(self._pause)
        if self.speech_item_id is None:
            self._trim_idle_buffer()

    def turn_evaluated(self, item_id: str, probability: float) -> None:
        """The turn model's answer (``TurnEvaluated``): end the paused turn if it is sure."""
        pause, td = self._pause, self._td
        if pause is None or pause.item_id != item_id or not isinstance(td, SemanticVad):
            return
        if probability >= semantic.THRESHOLDS[td.eagerness]:
            self._end_pause(self._vad.position)

    def commit(self) -> None:
        """``input_audio_buffer.commit``: the whole buffer is a turn (its speech item if any)."""
        item_id = self.speech_item_id or self._ids.new("item")
        self._vad.reset()
        self.speech_item_id = None
        self._pause = None
        self._move("commit")
        self._host.commit_turn(item_id, self._buffer.take_all())
        self._turn_over(item_id)

    def clear(self) -> None:
        """``input_audio_buffer.clear`` (the buffer is already empty): drop speech in progress."""
        self._drop_speech()
        self._enter_checking("clear")

    def transcribed(self, item_id: str, transcript: str | None) -> None:
        """A user item's transcript (None: transcription failed); decides a held overlap."""
        if item_id not in self._unheard:
            return
        self._unheard.discard(item_id)
        if self._held is not None and self._held[0] == item_id and self._held[1] is not None:
            self._held[1].stt_final_ms = self._host.now_ms
        if transcript is not None and claims_the_turn(transcript):
            self._interrupted("words")
        elif not self._unheard and self.state is TurnState.CHECKING:
            self._resume("no_words")

    def response_created(self) -> None:
        """Any response was created: the session is not idle."""
        self._idle_deadline_ms = None

    def answer_done(self, response_id: str, *, audio_ms: int, played_out: bool) -> None:
        """The default response sent ``response.done``: arm the idle timer, answer a queued turn.

        Args:
            response_id: the response.
            audio_ms: milliseconds of audio it produced.
            played_out: it completed (its audio plays to the end) rather than being cut off.
        """
        td = self._td
        if isinstance(td, ServerVad) and td.idle_timeout_ms is not None:
            # Spec §5.10: from response.done plus the audio still to play; over WebRTC the
            # transport says when that audio has really played (drained).
            if self._playback is not None and audio_ms > 0 and played_out:
                self._idle_after_playback = response_id
            elif self.state is TurnState.LISTENING:
                self._idle_deadline_ms = self._host.now_ms + audio_ms + td.idle_timeout_ms
        if self._answer_pending:
            self._answer_pending = False
            self._host.answer(None)

    def drained(self, response_id: str) -> None:
        """A response's audio finished playing (WebRTC): the idle timer may start now."""
        if self._idle_after_playback != response_id:
            return
        self._idle_after_playback = None
        td = self._td
        if (
            isinstance(td, ServerVad)
            and td.idle_timeout_ms is not None
            and not self._host.responding
            and self.state is TurnState.LISTENING
        ):
            self._idle_deadline_ms = self._host.now_ms + td.idle_timeout_ms

    def shut_down(self) -> None:
        """The session is ending: no queued answer is created any more."""
        self._answer_pending = False

    def next_deadline_ms(self) -> int | None:
        """The earliest wall time at which :meth:`advance_time` has something to do."""
        deadlines = [self._check_deadline_ms]
        if self.state is TurnState.LISTENING:
            deadlines.append(self._idle_deadline_ms)
        return min((d for d in deadlines if d is not None), default=None)

    def advance_time(self) -> None:
        """The host's ``now_ms`` moved: fire the false-interruption and idle timers."""
        now = self._host.now_ms
        if self._check_deadline_ms is not None and now >= self._check_deadline_ms:
            self._resume("timeout")
        idle = self._idle_deadline_ms
        if idle is not None and now >= idle and self.state is TurnState.LISTENING:
            self._idle_deadline_ms = None
            self._idle_timeout()

    def speech_audio(self, item_id: str) -> bytes | None:
        """The audio so far of the speech in progress, if it is ``item_id``'s; a pure read."""
        if item_id != self.speech_item_id:
            return None
        return self._buffer.peek(self._speech_start, self._buffer.written)

    # ------------------------------------------------------------------ the machine

    def _move(self, trigger: str) -> None:
        self.state = advance("turn", TURN_TRANSITIONS, self.state, trigger)

    def _on_vad(self, change: VadTransition) -> None:
        match change:
            case SilenceStart():
                self._quiet = True
                self._speculate()
            case SpeechResumed():
                self._quiet = False
                self._drop_speculation()
            case SpeechStart() if self._pause is not None:
                self._quiet = False
                self._pause = None  # the user went on speaking: same turn
                self._move("speech_continued")
                self._drop_speculation()
            case SpeechStart():
                self._quiet = False
                self._speech_started(change.sample)
            case _ if (
                isinstance(self._td, SemanticVad)
                and self._turn_model
                and self.speech_item_id is not None
            ):
                self._move("pause")
                self._pause = semantic.TurnPause(
                    self.speech_item_id, change.speech_end_sample, change.sample
                )
                self._start_latency(self.speech_item_id, change.speech_end_sample)
            case _:
                if self.speech_item_id is not None:
                    self._start_latency(self.speech_item_id, change.speech_end_sample)
                self._speech_stopped(change.sample)

    def _interrupts(self) -> bool:
        td = self._td
        return self._answers and td is not None and td.interrupt_response

    def _answers_turns(self) -> bool:
        td = self._td
        return self._answers and td is not None and td.create_response

    def _speech_started(self, sample: int) -> None:
        self._idle_deadline_ms = None
        self._drop_speculation()
        playback = self._playback
        if self.state is TurnState.CHECKING:
            self._check_deadline_ms = None  # restarted when this speech ends
            self._move("speech_started")
        elif (
            playback is not None
            and playback.playing
            and self._options.resume_false_interruptions
            and self._interrupts()
        ):
            self._move("overlap_started")
        else:
            self._move("speech_started")
        self.speech_item_id = self._ids.new("item")
        self._onset = sample
        self._speech_start = max(self._buffer.start, sample - self._prefix_samples())
        heard = self._buffer.peek(self._speech_start, self._buffer.written)
        self._command(Listen(self.speech_item_id, heard))
        self._emit(
            se.InputAudioBufferSpeechStarted,
            audio_start_ms=self._speech_start * 1000 // SESSION_RATE,
            item_id=self.speech_item_id,
        )
        if self.state is TurnState.OVERLAP and playback is not None:
            playback.pause()  # held: resumed or cut off once it is known which this is
        elif self._interrupts():
            self._host.interrupt()  # barge-in at once (spec §5.6)

    def _speech_stopped(self, sample: int) -> None:
        item_id = self.speech_item_id or self._ids.new("item")
        self._speculating = None  # the runtime keeps it for the Generate this turn will issue
        if (record := self._latency.get(item_id)) is not None:
            record.turn_end_ms = self._host.now_ms
        self.speech_item_id = None
        self._pause = None
        self._enter_checking("speech_stopped")
        self._emit(
            se.InputAudioBufferSpeechStopped,
            audio_end_ms=sample * 1000 // SESSION_RATE,
            item_id=item_id,
        )
        self._host.commit_turn(item_id, self._buffer.take(self._speech_start, sample))
        self._turn_over(item_id)

    def _idle_timeout(self) -> None:
        self._move("idle_timeout")
        item_id = self._ids.new("item")
        self._emit(
            se.InputAudioBufferTimeoutTriggered,
            audio_start_ms=self._buffer.start * 1000 // SESSION_RATE,
            audio_end_ms=self._buffer.written * 1000 // SESSION_RATE,
            item_id=item_id,
        )
        self._host.commit_turn(item_id, self._buffer.take_all())
        self._turn_over(item_id)

    def _turn_over(self, item_id: str) -> None:
        """A user turn was committed: answer it, or hold it while its overlap is judged."""
        record = self._latency.pop(item_id, None)
        if self.state is TurnState.CHECKING:
            self._unheard.add(item_id)
            if self._answers_turns():
                self._held = (item_id, record)
            now = self._host.now_ms
            self._check_deadline_ms = now + self._options.false_interruption_timeout_ms
        elif self._answers_turns():
            self._answer(record)

    def _answer(self, record: TurnLatency | None) -> None:
        if self._host.responding:
            self._answer_pending = True
        else:
            self._host.answer(record)

    def _enter_checking(self, trigger: str) -> None:
        """Move on ``trigger``; an overlap that ends with nothing left to hear was false."""
        overlapping = self.state in (TurnState.OVERLAP, TurnState.OVERLAP_PAUSE)
        self._move(trigger)
        if overlapping and not self._unheard:
            if trigger == "speech_stopped":
                return  # its own transcript is about to be awaited (_turn_over)
            self._resume("no_words")
        elif overlapping:
            now = self._host.now_ms
            self._check_deadline_ms = now + self._options.false_interruption_timeout_ms

    def _interrupted(self, trigger: str) -> None:
        """A real interruption: cut the held answer off; a finished turn gets its answer."""
        held, self._held = self._held, None
        self._unheard.clear()
        self._check_deadline_ms = None
        self._move(trigger)
        self._host.interrupt()
        if self.state is TurnState.LISTENING and held is not None:
            self._answer(held[1])

    def _resume(self, trigger: str) -> None:
        """A false interruption (or detection turned off): the held answer plays on."""
        self._held = None
        self._unheard.clear()
        self._check_deadline_ms = None
        self._move(trigger)
        if self._playback is not None:
            self._playback.resume()

    # ------------------------------------------------------------------ pauses and speculation

    def _check_pause(self, pause: semantic.TurnPause) -> None:
        """During a pause under semantic_vad: end the turn at max wait, else ask the model."""
        td = self._td
        assert isinstance(td, SemanticVad)
        position = self._vad.position
        max_wait = semantic.MAX_WAIT_MS[td.eagerness] * SESSION_RATE // 1000
        if position - pause.speech_end >= max_wait:
            self._end_pause(position)
        elif not pause.asked and position >= pause.ask_at:
            pause.asked = True
            shown = pause.speech_end + semantic.FIRST_CHECK_MS * SESSION_RATE // 1000
            pcm = self._buffer.peek(self._speech_start, min(position, shown))
            self._command(EvaluateTurn(pause.item_id, pcm))

    def _end_pause(self, sample: int) -> None:
        self._pause = None
        self._speech_stopped(sample)

    def _speculate(self) -> None:
        """The user went quiet: let the runtime prepare the answer it would give now."""
        item_id = self.speech_item_id
        if (
            item_id is None
            or self.state is not TurnState.SPEAKING
            or not self._answers_turns()
            or self._host.responding
        ):
            return
        template = self._host.speculation()
        if template is None:
            return  # the real response will report why
        self._speculating = item_id
        self._command(Speculate(item_id, template))

    def _drop_speech(self) -> None:
        """Forget the speech in progress, if any: its audio is gone or no longer listened to."""
        self._vad.reset()
        self._drop_speculation()
        if self.speech_item_id is not None:
            self._command(StopListening(self.speech_item_id))
            self._latency.pop(self.speech_item_id, None)
        self.speech_item_id = None
        self._pause = None

    def _drop_speculation(self) -> None:
        if self._speculating is not None:
            self._command(DropSpeculation(self._speculating))
            self._speculating = None

    def _start_latency(self, item_id: str, speech_end_sample: int) -> None:
        # the last speech sample is the one before the silence began
        now = self._host.now_ms
        speech_end = self._arrivals.arrival_ms(max(0, speech_end_sample - 1), now)
        self._latency[item_id] = TurnLatency(item_id, speech_end, now)

    def _prefix_samples(self) -> int:
        td = self._td
        prefix_ms = td.prefix_padding_ms if isinstance(td, ServerVad) else 300
        return int(prefix_ms * SESSION_RATE // 1000)

    def _trim_idle_buffer(self) -> None:
        """Outside speech, keep only the prefix padding (server VAD buffers no silence)."""
        self._buffer.drop_before(self._vad.position - self._prefix_samples())
