"""Memory per idle session: server RSS before/after opening N idle sessions, and after closing.

The server runs as a separate process (``openrealtime serve --port P --vad silero``, the
embedded default engines; ``--engines fake`` adds ``--stt fake --llm fake --tts fake``). RSS is
the server process's own (engine worker processes, e.g. PocketSphinx decoders, are separate and
do not grow with idle sessions). Steps:

1. warm-up: open and close ``--warmup`` sessions (first-use imports, pydantic schema builds and
   onnxruntime arenas are a one-off cost, not a per-session one), then read RSS (``baseline``);
2. open N sessions concurrently, each waiting for ``session.created`` (and ``--update`` sends a
   ``session.update`` and waits for ``session.updated``), let the server settle, read RSS
   (``open``): per-session = (open - baseline) / N;
3. close them all, let the server settle, read RSS (``closed``);
4. repeat 2-3 ``--cycles`` times: if ``closed`` keeps rising from cycle to cycle, sessions leak;
   a flat ``closed`` above ``baseline`` is the allocator keeping freed arenas, not a leak.

RSS comes from psutil when installed, else ``/proc/PID/status`` VmRSS.

    .venv/bin/python bench/idle_memory.py               # N=100, 10 cycles
    .venv/bin/python bench/idle_memory.py --sessions 500 --cycles 2 --vad energy
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from pathlib import Path

from _common import (
    descendants,
    fmt,
    print_machine,
    read_rss_bytes,
    rss_source,
    serve,
    thread_count,
)
from websockets.asyncio.client import ClientConnection, connect

MIB = 1024 * 1024
UPDATE = json.dumps(
    {
        "type": "session.update",
        "session": {"type": "realtime", "instructions": "You are a helpful assistant."},
    }
)


async def open_session(url: str, update: bool) -> ClientConnection:
    ws = await connect(url, max_size=None, ping_interval=None, open_timeout=30)
    created = json.loads(await ws.recv())
    if created.get("type") != "session.created":
        raise RuntimeError(f"expected session.created, got {created.get('type')}")
    if update:
        await ws.send(UPDATE)
        while json.loads(await ws.recv()).get("type") != "session.updated":
            pass
    return ws


def open_sockets(pid: int) -> int:
    """Sockets the server holds (its listener plus one per connection not yet torn down)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith("socket:"):
                count += 1
    return count


async def settle_rss(pid: int, seconds: float) -> int:
    """RSS once it stops moving (two equal reads 0.25 s apart) or after ``seconds``."""
    deadline = time.monotonic() + seconds
    last = read_rss_bytes(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = read_rss_bytes(pid)
        if now == last:
            return now
        last = now
    return last


async def open_all(url: str, n: int, update: bool, parallel: int) -> list[ClientConnection]:
    gate = asyncio.Semaphore(parallel)

    async def one() -> ClientConnection:
        async with gate:
            return await open_session(url, update)

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def close_all(sockets: list[ClientConnection]) -> None:
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


async def run(args: argparse.Namespace) -> None:
    print(
        f"idle_memory: N={args.sessions} idle sessions, {args.cycles} cycle(s), VAD {args.vad}, "
        f"engines {args.engines}, "
        f"warm-up {args.warmup} session(s), session.update {'on' if args.update else 'off'}, "
        f"RSS from {rss_source()}"
    )
    print()
    extra = ("--stt", "fake", "--llm", "fake", "--tts", "fake") if args.engines == "fake" else ()
    with serve(args.vad, extra_args=extra) as server:
        url = f"{server.ws_base}/v1/realtime?model=gpt-realtime"
        started = read_rss_bytes(server.pid)
        await close_all(await open_all(url, args.warmup, args.update, args.parallel))
        baseline = await settle_rss(server.pid, args.settle)
        print(f"server pid {server.pid}: RSS at start {started / MIB:.1f} MiB, ", end="")
        print(
            f"after warm-up {baseline / MIB:.1f} MiB, threads {thread_count(server.pid)}, "
            f"engine worker processes {len(descendants(server.pid))} (their memory is not counted)"
        )
        print()
        print(
            "| cycle | open (MiB) | per session (KiB) | closed (MiB) | closed - baseline (MiB) "
            "| sockets open / closed |"
        )
        print("|---|---|---|---|---|---|")
        per_session: list[float] = []
        closed_values: list[int] = []
        for cycle in range(1, args.cycles + 1):
            t0 = time.monotonic()
            sockets = await open_all(url, args.sessions, args.update, args.parallel)
            opened_s = time.monotonic() - t0
            opened = await settle_rss(server.pid, args.settle)
            threads = thread_count(server.pid)
            socks_open = open_sockets(server.pid)
            await close_all(sockets)
            closed = await settle_rss(server.pid, args.settle)
            socks_closed = open_sockets(server.pid)
            per = (opened - baseline) / args.sessions / 1024
            per_session.append(per)
            closed_values.append(closed)
            note = f" opened in {opened_s:.2f} s, {threads} threads" if args.verbose else ""
            print(
                f"| {cycle} | {opened / MIB:.1f} | {per:.0f} | {closed / MIB:.1f} | "
                f"{(closed - baseline) / MIB:+.1f} | {socks_open} / {socks_closed} |{note}"
            )
        print()
        half = len(closed_values) // 2
        first = (closed_values[half] - closed_values[0]) / MIB if half else 0.0
        second = (closed_values[-1] - closed_values[half]) / MIB if half else 0.0
        print(
            f"per idle session: {fmt(per_session[0], 0)} KiB (first cycle), "
            f"{fmt(sum(per_session) / len(per_session), 0)} KiB (mean of {len(per_session)}). "
            f"RSS after closing grew {first:+.1f} MiB over cycles 1-{half + 1} and "
            f"{second:+.1f} MiB over cycles {half + 1}-{len(closed_values)} "
            "(a leak keeps growing; allocator high-water flattens)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100, help="idle sessions to open (100)")
    parser.add_argument("--cycles", type=int, default=10, help="open/close cycles (10)")
    parser.add_argument("--warmup", type=int, default=5, help="sessions opened first (5)")
    parser.add_argument("--vad", default="silero", choices=("silero", "energy"))
    parser.add_argument(
        "--engines",
        default="embedded",
        choices=("embedded", "fake"),
        help="STT/LLM/TTS: the embedded default stack (default) or --stt/--llm/--tts fake",
    )
    parser.add_argument("--update", action="store_true", help="also send one session.update")
    parser.add_argument("--parallel", type=int, default=20, help="concurrent handshakes (20)")
    parser.add_argument("--settle", type=float, default=3.0, help="most seconds to settle (3)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    print_machine()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
