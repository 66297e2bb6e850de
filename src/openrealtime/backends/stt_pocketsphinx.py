"""Pocketsphinx speech-to-text, offline on the CPU (embedded-stack.md §2, §7E; design decision 8).

**Decoders live in worker processes.** The ``pocketsphinx`` 5.1 binding never releases the GIL:
a ``Decoder`` call running in a worker *thread* still stops the event loop for as long as it
runs. Measured on the 2-core machine with other load: ``process_raw`` of 100 ms of audio took 24
ms (p50) to 160 ms (max), ``end_utt`` 58-180 ms, ``Decoder()`` 0.4 s, and a 10 ms ticker task
stalled for up to 290 ms (1.5 s while decoders were being created) with three transcriptions in
threads. So each ``Decoder`` runs in its own small Python process (:func:`_worker_main`, started
with ``sys.executable``; 113 MB RSS each, 100 MB of it anonymous, against 91 MB for a decoder
in-process) and the engine talks to it over a socket pair; the engine's threads only wait on
that socket, without the GIL. It also lets decoders use several cores at once.

A pool keeps up to ``max_decoders`` of these processes, started on first use (about 0.5 s each)
or up front with :meth:`PocketsphinxSpeechToText.warm_up`; each decodes one utterance at a time.

Two ways in:

* :meth:`PocketsphinxSpeechToText.transcribe` (the ``SpeechToText`` Protocol): a finished audio
  item, fed to the decoder in 100 ms chunks; yields :class:`TranscriptDelta` from the partial
  hypotheses as they grow, then :class:`TranscriptFinal`.
* :meth:`PocketsphinxSpeechToText.open_stream` (:class:`StreamingRecognizer`): decode *while the
  user speaks*, so that at the end of the turn only the last chunk and ``end_utt`` remain and
  the final transcript is ready tens of milliseconds later.

Measured choices (the 20 sentences of embedded-stack.md §8; WER on flite rms / flite slt /
espeak-ng speech):

* **Per-utterance reset.** Nothing but the cepstral mean (CMN) carries over between utterances
  of one decoder, and that carry-over matters: the model's initial mean (``40,3,-1``) gives
  10.0 / 13.8 / 80.6% WER on every first utterance, while a decoder warmed on earlier speech
  gives 1.2 / 9.4 / 74.4%, but then depends on whoever spoke before on that pooled decoder.
  ``reinit_feat()`` only restores the poor initial mean. So each utterance starts from a fixed
  speech prior, :data:`CMN_PRIOR` (the mean of the warmed-up means over the three voices), and
  live CMN adapts from there: 1.9 / 10.6 / 71.9% WER, and the same audio always gives the same
  transcript whatever was decoded before.
* **No second (fwdflat) pass by default.** ``fwdflat`` runs over the whole utterance inside
  ``end_utt``: 170-250 ms there (p50), against 50 ms without it (20 ms on an idle machine), for
  3.8 / 11.9 / 75.6% WER instead of 1.9 / 10.6 / 71.9%. The design goal is a final transcript
  50-100 ms after the end of speech; ``accurate=True`` turns the pass back on.
* **Deltas.** Raw partial hypotheses are revised constantly (17 of 20 utterances revise the
  very first words), so :class:`TranscriptDeltas` only releases a word once it has survived two
  consecutive partials and is not among the last two words: 3 of 20 rms utterances then emit a
  word the final corrects, and 61% of the words arrive before the final.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from openrealtime.backends._bridge import Emitter, iterate_in_thread
from openrealtime.backends.base import (
    TranscriptDelta,
    TranscriptFinal,
    TranscriptionEvent,
    TranscriptionRequest,
)
from openrealtime.backends.errors import BackendError

SAMPLE_RATE = 16000
"""The only rate the shipped acoustic model works at (embedded-stack.md §2)."""
CHUNK_BYTES = 3200
"""Audio per partial hypothesis (and per decoder call in :meth:`transcribe`): 100 ms."""
CMN_PRIOR = "56,3,8,26,-2,0,1,-12,-2,-6.5,10,0,3"
"""Cepstral mean every utterance starts from (see the module docstring)."""
ERROR_CODE = "transcription_failed"
INSTALL_HINT = "pocketsphinx is not installed: pip install 'pocketsphinx>=5.1,<6'"
STOP_TIMEOUT_S = 2.0
"""How long a decoder process may take to exit before it is killed."""

_T = TypeVar("_T")


def _failure(what: str, exc: BaseException | str) -> BackendError:
    return BackendError(f"pocketsphinx {what} failed: {exc}", code=ERROR_CODE)


# --------------------------------------------------------------------------- deltas


class TranscriptDeltas:
    """Turns successive partial hypotheses into append-only transcript deltas.

    Call :meth:`update` with every partial hypothesis (one per 100 ms of audio, changed or
    not), then :meth:`finish` with the final text. A word is released once it has been the same
    in ``stable_updates`` consecutive partials and is not among the last ``holdback_words``
    words of the newest one. When the stable words contradict what was already released, the
    hypothesis was revised: nothing more is released, and the final transcript is the truth.

    Args:
        holdback_words: trailing words of each partial never released (they change most).
        stable_updates: consecutive partials a word must survive before it is released.
    """

    def __init__(self, holdback_words: int = 2, stable_updates: int = 2) -> None:
        self.holdback_words = holdback_words
        self.stable_updates = max(1, stable_updates)
        self.emitted: list[str] = []
        self.revised = False
        self._history: list[list[str]] = []

    @property
    def text(self) -> str:
        """The text released so far (the concatenation of every delta)."""
        return " ".join(self.emitted)

    def update(self, partial: str) -> str | None:
        """Record one partial hypothesis; return the new delta text, or ``None``."""
        words = partial.split()
        self._history = [*self._history[-(self.stable_updates - 1) :], words][
            -self.stable_updates :
        ]
        if self.revised or len(self._history) < self.stable_updates:
            return None
        stable = words[: max(0, len(words) - self.holdback_words)]
        for earlier in self._history[:-1]:
            stable = stable[: _common_prefix(stable, earlier)]
        overlap = min(len(stable), len(self.emitted))
        if stable[:overlap] != self.emitted[:overlap]:
            self.revised = True
            return None
        return self._release(stable)

    def finish(self, final: str) -> str | None:
        """Return the delta that completes ``final``, or ``None`` if there is none to send.

        ``None`` also when the released words are not a prefix of the final text (a revision).
        """
        words = final.split()
        if self.revised or words[: len(self.emitted)] != self.emitted:
            self.revised = self.revised or bool(self.emitted)
            return None
        return self._release(words)

    def _release(self, words: list[str]) -> str | None:
        if len(words) <= len(self.emitted):
            return None
        new = words[len(self.emitted) :]
        delta = (" " if self.emitted else "") + " ".join(new)
        self.emitted = list(words)
        return delta


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n


# --------------------------------------------------------------------------- streaming API


@runtime_checkable
class RecognizerStream(Protocol):
    """One utterance being recognised while it is spoken (blocking calls; use a worker thread)."""

    sample_rate: int

    def feed(self, pcm16: bytes) -> str | None:
        """Decode more audio; return the current partial hypothesis when one was computed."""
        ...

    def finish(self) -> str:
        """End the utterance and return the final transcript."""
        ...

    def close(self) -> None:
        """Abandon the utterance and release its resources."""
        ...


@runtime_checkable
class StreamingRecognizer(Protocol):
    """An STT engine that can decode during the user's turn."""

    name: str
    sample_rate: int

    def open_stream(self) -> RecognizerStream:
        """Start recognising one utterance."""
        ...


# --------------------------------------------------------------------------- worker process


def _worker_main(fd: int) -> None:
    """The decoder process: serve ``(op, payload)`` requests on socket ``fd`` until EOF.

    Runs in a child started by :class:`_DecoderProcess`; every request gets one
    ``("ok", result)`` or ``("error", message)`` reply.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the parent's; EOF ends us
    conn = Connection(fd)
    pocketsphinx: Any = importlib.import_module("pocketsphinx")
    decoder: Any = None
    while True:
        try:
            op, payload = conn.recv()
        except (EOFError, OSError):
            return
        try:
            result: object = None
            if op == "init":
                decoder = pocketsphinx.Decoder(**payload)
            elif op == "start":
                decoder.set_cmn(payload)
                decoder.start_utt()
            elif op == "feed":
                data, want_partial = payload
                decoder.process_raw(data, False, False)
                if want_partial:
                    hypothesis = decoder.hyp()
                    result = hypothesis.hypstr if hypothesis is not None else ""
            elif op == "finish":
                decoder.end_utt()
                hypothesis = decoder.hyp()
                result = hypothesis.hypstr if hypothesis is not None else ""
            elif op == "peek":
                result = _peek_final(decoder)
            elif op == "abort":
                try:
                    decoder.end_utt()
                except RuntimeError:
                    pass  # no utterance in progress
            elif op == "exit":
                conn.send(("ok", None))
                return
            else:
                raise ValueError(f"unknown request {op!r}")
            conn.send(("ok", result))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _peek_final(decoder: Any) -> str:
    """What ``end_utt`` would give now, with the utterance left open: ends it in a fork.

    The worker is single-threaded, so forking it is safe and cheap (copy-on-write); the child
    finishes its copy of the utterance, writes the text to a pipe and exits. Measured on the
    20 test sentences: the same text as the real final in 20/20 (the last partial hypothesis
    matched in 14/20), in 43 ms p50.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child exits without returning
        code = 0
        try:
            os.close(read_fd)
            decoder.end_utt()
            hypothesis = decoder.hyp()
            os.write(write_fd, (hypothesis.hypstr if hypothesis is not None else "").encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks: list[bytes] = []
    try:
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError("the peek child failed")
    return b"".join(chunks).decode("utf-8", "replace")


_WORKER_COMMAND = (
    "import sys; from openrealtime.backends.stt_pocketsphinx import _worker_main; "
    "_worker_main(int(sys.argv[1]))"
)


def _worker_env() -> dict[str, str]:
    """The parent's environment, with the directories holding our package and pocketsphinx."""
    roots: list[str] = []
    for module in ("openrealtime", "pocketsphinx"):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            root = str(Path(next(iter(spec.submodule_search_locations))).parent)
            if root not in roots:
                roots.append(root)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*roots, *filter(None, [env.get("PYTHONPATH")])])
    return env


class _DecoderProcess:
    """One ``pocketsphinx.Decoder`` in its own process; blocking calls (use worker threads)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        parent, child = socket.socketpair()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_COMMAND, str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                env=_worker_env(),
            )
        except OSError as exc:
            parent.close()
            raise _failure("starting a decoder process", exc) from exc
        finally:
            child.close()
        self._conn = Connection(parent.detach())
        self.broken = False
        try:
            self.call("init", dict(options))
        except BaseException:
            self.kill()
            raise

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self._process.pid

    @property
    def usable(self) -> bool:
        """Whether the process is alive and its decoder in a known state."""
        return not self.broken and self._process.poll() is None

    def call(self, op: str, payload: object = None) -> Any:
        """Send one request and wait for its reply; a failure marks the process broken."""
        try:
            self._conn.send((op, payload))
            kind, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            self.broken = True
            raise _failure(f"decoder process ({op})", str(exc) or "it exited") from exc
        if kind != "ok":
            self.broken = True
            raise _failure(op, str(value))
        return value

    def stop(self) -> None:
        """Ask the process to exit; kill it if it does not within :data:`STOP_TIMEOUT_S`."""
        if self.usable:
            try:
                self._conn.send(("exit", None))
                self._process.wait(STOP_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def kill(self) -> None:
        """End the process now and reap it."""
        self.broken = True
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._conn.close()


# --------------------------------------------------------------------------- decoder pool


class _DecoderPool:
    """Up to ``max_size`` decoder processes, started lazily; waiters: threads or coroutines."""

    def __init__(self, factory: Callable[[], _DecoderProcess], max_size: int) -> None:
        self._factory = factory
        self._max = max_size
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._idle: list[_DecoderProcess] = []
        self._count = 0
        self._closed = False
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    @property
    def size(self) -> int:
        """Decoder processes started (or starting) and not discarded."""
        return self._count

    @property
    def idle(self) -> list[_DecoderProcess]:
        """The processes waiting for an utterance (a snapshot)."""
        with self._lock:
            return list(self._idle)

    def _take(self) -> tuple[bool, _DecoderProcess | None]:
        """Under the lock: ``(True, process)``, ``(True, None)`` = start one, or wait."""
        if self._closed:
            raise _failure("acquire", "the engine is closed")
        while self._idle:
            process = self._idle.pop()
            if process.usable:
                return True, process
            self._count -= 1  # it died while idle: reap it and start another
            process.kill()
        if self._count < self._max:
            self._count += 1
            return True, None
        return False, None

    def _create(self) -> _DecoderProcess:
        try:
            return self._factory()
        except BaseException:
            self.discard()
            raise

    def acquire(self) -> _DecoderProcess:
        """Take a decoder, starting one or blocking until one is free (worker threads only)."""
        with self._freed:
            ok, process = self._take()
            while not ok:
                self._freed.wait()
                ok, process = self._take()
        return process if process is not None else self._create()

    async def acquire_async(self, executor: ThreadPoolExecutor) -> _DecoderProcess:
        """Take a decoder without blocking the event loop; starting one runs on ``executor``."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                ok, process = self._take()
                if not ok:
                    waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] = (
                        loop,
                        loop.create_future(),
                    )
                    self._async_waiters.add(waiter)
            if ok:
                if process is not None:
                    return process
                starting = loop.run_in_executor(executor, self._create)
                try:
                    return await asyncio.shield(starting)
                except asyncio.CancelledError:
                    starting.add_done_callback(self._release_started)
                    raise
            try:
                await waiter[1]
            finally:
                with self._lock:
                    self._async_waiters.discard(waiter)

    def _release_started(self, future: asyncio.Future[_DecoderProcess]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.release(future.result())

    def release(self, process: _DecoderProcess) -> None:
        """Return a decoder between utterances (a broken one is killed and forgotten)."""
        with self._freed:
            keep = process.usable and not self._closed
            if keep:
                self._idle.append(process)
            else:
                self._count -= 1
            self._wake()
        if not keep:
            process.kill()

    def discard(self) -> None:
        """Forget a decoder that failed to start."""
        with self._freed:
            self._count -= 1
            self._wake()

    def _wake(self) -> None:
        self._freed.notify_all()
        for loop, future in list(self._async_waiters):
            try:
                loop.call_soon_threadsafe(_set_done, future)
            except RuntimeError:  # that loop is closed; its waiter is gone
                self._async_waiters.discard((loop, future))

    def close(self) -> None:
        """Stop the idle processes; busy ones stop when released. Idempotent."""
        with self._freed:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._wake()
        for process in idle:
            process.stop()


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# --------------------------------------------------------------------------- stream


class PocketsphinxStream:
    """One utterance decoded as it arrives; holds one pooled decoder until finished or closed.

    Get one from :meth:`PocketsphinxSpeechToText.open_stream`. The plain methods block while the
    decoder process works (a few ms per 20 ms of audio, tens of ms for :meth:`finish`) but do
    not hold the GIL; from the event loop, await :meth:`afeed`, :meth:`afinish` and
    :meth:`aclose`, which run them on the engine's threads. Calls are serialised per stream;
    make them in order, and always end with :meth:`finish` or :meth:`close` (else the decoder
    never returns to the pool).
    """

    sample_rate = SAMPLE_RATE

    def __init__(
        self, pool: _DecoderPool, process: _DecoderProcess, executor: ThreadPoolExecutor
    ) -> None:
        self._pool = pool
        self._process: _DecoderProcess | None = process
        self._executor = executor
        self._lock = threading.Lock()
        self._carry = b""
        self._since_partial = 0
        self._samples = 0
        self._final: str | None = None
        self._started = False

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio fed so far."""
        return self._samples / SAMPLE_RATE

    def feed(self, pcm16: bytes) -> str | None:
        """Decode the next PCM16 chunk (16 kHz mono); any length, in order.

        Returns:
            The whole current partial hypothesis each time another 100 ms of audio has been
            decoded (it may equal the previous one), else ``None``.

        Raises:
            BackendError: ``transcription_failed`` if the decoder fails (the stream is closed).
            RuntimeError: if the stream was already finished or closed.
        """
        with self._lock:
            process = self._live()
            data = self._carry + pcm16
            whole = len(data) - len(data) % 2
            self._carry = data[whole:]
            if not whole:
                return None
            self._since_partial += whole
            want_partial = self._since_partial >= CHUNK_BYTES
            if want_partial:
                self._since_partial %= CHUNK_BYTES
            try:
                partial = process.call("feed", (data[:whole], want_partial))
            except BackendError:
                self._drop()
                raise
            self._samples += whole // 2
            return str(partial) if partial is not None else None

    def finish(self) -> str:
        """End the utterance and return the final transcript; the decoder goes back to the pool.

        Returns the same text if called again.

        Raises:
            BackendError: ``transcription_failed`` if the decoder fails.
            RuntimeError: if the stream was closed without finishing.
        """
        with self._lock:
            if self._final is not None:
                return self._final
            process = self._live()
            try:
                self._final = str(process.call("finish"))
            finally:
                self._drop()
            return self._final

    def peek(self) -> str:
        """The final transcript of the audio fed so far, without ending the utterance.

        Costs about what :meth:`finish` costs (the decoder process finishes a forked copy).

        Raises:
            BackendError: ``transcription_failed`` if the decoder fails (the stream is closed).
            RuntimeError: if the stream was already finished or closed.
        """
        with self._lock:
            if self._final is not None:
                return self._final
            process = self._live()
            try:
                return str(process.call("peek"))
            except BackendError:
                self._drop()
                raise

    def close(self) -> None:
        """Abandon the utterance (if not finished) and return the decoder; safe to repeat."""
        with self._lock:
            process = self._process
            if process is None:
                return
            if self._started:
                try:
                    process.call("abort")
                except BackendError:
                    pass  # the pool kills a broken process
            self._drop()

    async def afeed(self, pcm16: bytes) -> str | None:
        """:meth:`feed` on the engine's worker threads."""
        return await self._in_thread(self.feed, pcm16)

    async def afinish(self) -> str:
        """:meth:`finish` on the engine's worker threads."""
        return await self._in_thread(self.finish)

    async def apeek(self) -> str:
        """:meth:`peek` on the engine's worker threads."""
        return await self._in_thread(self.peek)

    async def aclose(self) -> None:
        """:meth:`close` on the engine's worker threads."""
        await self._in_thread(self.close)

    async def _in_thread(self, function: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _live(self) -> _DecoderProcess:
        """The decoder, its utterance started (from the worker thread, on first use)."""
        if self._process is None:
            raise RuntimeError("the recognizer stream is already finished or closed")
        if not self._started:
            try:
                self._process.call("start", CMN_PRIOR)
            except BackendError:
                self._drop()
                raise
            self._started = True
        return self._process

    def _drop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            self._pool.release(process)


# --------------------------------------------------------------------------- engine


class PocketsphinxSpeechToText:
    """Offline English STT with pocketsphinx (implements ``SpeechToText``, ``StreamingRecognizer``).

    Create once at start-up and share between sessions; call :meth:`warm_up` to start decoder
    processes before the first user speaks, and :meth:`close` at shutdown.

    Args:
        max_decoders: decoder processes in the pool, i.e. utterances decoded at once (about
            113 MB each). Default: the CPU count, between 2 and 8.
        accurate: run pocketsphinx's second (fwdflat) pass: about half the word errors on
            clean speech, but 120-200 ms more before the final transcript.
        decoder_options: extra ``pocketsphinx.Decoder`` options (``hmm``, ``lm``, ``dict`` for
            another model, beams, ...; JSON-like values); they override the defaults here.

    Raises:
        ImportError: the ``pocketsphinx`` package is not installed.
    """

    name = "pocketsphinx"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        max_decoders: int | None = None,
        *,
        accurate: bool = False,
        decoder_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not self.available():
            raise ImportError(INSTALL_HINT)
        size = max_decoders if max_decoders is not None else min(8, max(2, os.cpu_count() or 2))
        if size < 1:
            raise ValueError(f"max_decoders must be at least 1, got {size}")
        self.max_decoders = size
        options: dict[str, Any] = {
            "samprate": SAMPLE_RATE,
            "loglevel": "FATAL",
            "cmninit": CMN_PRIOR,
            "fwdflat": accurate,
            **(decoder_options or {}),
        }
        # A thread per decoder to wait on it, and one per decoder being started.
        self._executor = ThreadPoolExecutor(max_workers=2 * size, thread_name_prefix="pocketsphinx")
        self._pool = _DecoderPool(lambda: _DecoderProcess(options), size)
        self._finalizer = weakref.finalize(self, _shutdown, self._pool, self._executor)

    @classmethod
    def available(cls) -> bool:
        """Whether the ``pocketsphinx`` package is installed (imports nothing)."""
        return importlib.util.find_spec("pocketsphinx") is not None

    @property
    def decoders(self) -> int:
        """Decoder processes started so far (they stay in the pool)."""
        return self._pool.size

    def decoder_pids(self) -> list[int]:
        """Process ids of the idle decoder processes (for memory accounting)."""
        return [process.pid for process in self._pool.idle]

    def warm_up(self, count: int = 1) -> None:
        """Start ``count`` decoder processes now, in parallel (about 0.5 s); blocking.

        Call at start-up (or ``await asyncio.to_thread(stt.warm_up)``).
        """
        n = min(count, self.max_decoders)
        processes = list(self._executor.map(lambda _: self._pool.acquire(), range(n)))
        for process in processes:
            self._pool.release(process)

    def open_stream(self) -> PocketsphinxStream:
        """Start one utterance; blocks while starting a decoder or waiting for a free one.

        From the event loop, use :meth:`aopen_stream` instead.
        """
        return PocketsphinxStream(self._pool, self._pool.acquire(), self._executor)

    async def aopen_stream(self) -> PocketsphinxStream:
        """Start one utterance without blocking the event loop (waits for a free decoder)."""
        process = await self._pool.acquire_async(self._executor)
        return PocketsphinxStream(self._pool, process, self._executor)

    async def transcribe(self, request: TranscriptionRequest) -> AsyncIterator[TranscriptionEvent]:
        """Transcribe one finished audio item (spec: ``input_audio_transcription``).

        Audio at another rate is resampled to 16 kHz; ``language`` and ``prompt`` are ignored
        (the shipped model is US English). Yields deltas (see :class:`TranscriptDeltas`), the
        rest of the text as a last delta when the final extends them, then one
        :class:`TranscriptFinal`. Stop iterating to abandon the work.

        Raises:
            BackendError: ``transcription_failed`` when decoding fails.
        """
        pcm = request.pcm16
        if request.sample_rate != SAMPLE_RATE:
            from openrealtime.audio.resample import resample

            pcm = resample(pcm, request.sample_rate, SAMPLE_RATE)
        seconds = len(request.pcm16) // 2 / request.sample_rate
        stream = await self.aopen_stream()

        def decode(emit: Emitter[TranscriptionEvent]) -> None:
            try:
                deltas = TranscriptDeltas()
                for start in range(0, len(pcm), CHUNK_BYTES):
                    if not emit.alive:
                        return
                    partial = stream.feed(pcm[start : start + CHUNK_BYTES])
                    delta = deltas.update(partial) if partial is not None else None
                    if delta is not None:
                        emit(TranscriptDelta(delta))
                final = stream.finish()
                delta = deltas.finish(final)
                if delta is not None:
                    emit(TranscriptDelta(delta))
                emit(TranscriptFinal(final, seconds))
            finally:
                stream.close()

        async for event in iterate_in_thread(
            self._executor, decode, engine="pocketsphinx", code=ERROR_CODE, not_started=stream.close
        ):
            yield event

    def close(self) -> None:
        """Stop the decoder processes and worker threads; call once at shutdown (blocking)."""
        self._finalizer()


def _shutdown(pool: _DecoderPool, executor: ThreadPoolExecutor) -> None:
    pool.close()
    executor.shutdown(wait=False, cancel_futures=True)
