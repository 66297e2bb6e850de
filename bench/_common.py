"""Shared helpers for the benchmarks: machine report, percentiles, a server subprocess, RSS/CPU.

Not a benchmark itself (``bench/run.py`` skips files starting with ``_``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent

PACKAGES = (
    "openrealtime",
    "pydantic",
    "pydantic_core",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "websockets",
    "onnxruntime",
    "numpy",
    "soxr",
)


# ----------------------------------------------------------------------------- machine


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_lines() -> list[str]:
    """The machine, as markdown bullet lines."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    return [
        f"- Tree: {git_state()}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores ({usable} usable){mem}",
        f"- OS: {platform.system()} {platform.release()} ({platform.machine()})",
        f"- Python: {platform.python_implementation()} {platform.python_version()}",
        "- Packages: " + ", ".join(versions),
        f"- Load average (1/5/15 min) when started: {load_average()}",
    ]


def git_state() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"git {commit or 'unknown'}" + (" + uncommitted changes in src/" if dirty else "")


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def print_machine() -> None:
    """Print the machine (unless run by ``bench/run.py``, which prints it once)."""
    if os.environ.get("OPENREALTIME_BENCH_QUIET_MACHINE"):
        print(f"(load average at start: {load_average()})")
        print()
        return
    print("Machine:")
    for line in machine_lines():
        print(line)
    print()


# ----------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), ``q`` in [0, 100]."""
    if not values:
        return float("nan")
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": float(len(values)),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else float("nan"),
        "min": min(values) if values else float("nan"),
    }


def fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def spread_cells(values: Sequence[float]) -> str:
    """Table cells ``n | p50 | p90 | min | max`` of ``values`` (ms, whole numbers)."""
    nan = float("nan")
    return (
        f"{len(values)} | {fmt(percentile(values, 50), 0)} | {fmt(percentile(values, 90), 0)} | "
        f"{fmt(min(values, default=nan), 0)} | {fmt(max(values, default=nan), 0)}"
    )


# ----------------------------------------------------------------------------- processes


def read_rss_bytes(pid: int) -> int:
    """Resident set size of ``pid``: psutil when installed, else ``/proc/PID/status`` VmRSS."""
    try:
        import psutil  # type: ignore[import-not-found]
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for pid {pid}") from None
    return int(psutil.Process(pid).memory_info().rss)


def rss_source() -> str:
    try:
        import psutil  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return "/proc/PID/status VmRSS"
    return "psutil"


def read_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def descendants(pid: int) -> list[int]:
    """Live child processes of ``pid``, recursively (engine worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds so far of ``pid`` and each live descendant, by pid."""
    out: dict[int, float] = {}
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            out[p] = read_cpu_seconds(p)
    return out


def tree_cpu_delta(before: dict[int, float], after: dict[int, float]) -> tuple[float, float]:
    """(main process, its descendants) CPU seconds spent between two ``tree_cpu_seconds``."""
    main = min(after) if after else 0
    own = after.get(main, 0.0) - before.get(main, 0.0)
    kids = sum(v - before.get(p, 0.0) for p, v in after.items() if p != main)
    return own, kids


def cpu_times(cpu: int | None) -> dict[str, float]:
    """Seconds one CPU (``None``: all CPUs) spent so far, from ``/proc/stat``: ``tasks``
    (user + nice + system), ``irq`` (irq + softirq), ``steal``, ``idle`` (idle + iowait),
    ``total``."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    for line in Path("/proc/stat").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == name:
            v = [int(x) / os.sysconf("SC_CLK_TCK") for x in parts[1:9]]
            return {
                "tasks": v[0] + v[1] + v[2],
                "irq": v[5] + v[6],
                "steal": v[7],
                "idle": v[3] + v[4],
                "total": sum(v),
            }
    raise RuntimeError(f"no {name} in /proc/stat")


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def openrealtime_command() -> list[str]:
    """``openrealtime`` from this interpreter's venv (falls back to ``python -m``)."""
    exe = Path(sys.executable).parent / "openrealtime"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "openrealtime"]


@dataclass
class ServerProcess:
    """A server started by :func:`serve`."""

    process: subprocess.Popen[bytes]
    port: int
    command: list[str]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def serve(
    vad: str = "silero",
    *,
    probe_file: Path | None = None,
    cpu: int | None = None,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 60.0,
) -> Iterator[ServerProcess]:
    """Run ``openrealtime serve --port P --vad VAD`` as a separate process until the block ends.

    With ``probe_file`` the same CLI runs under ``bench/_serve_probe.py``, which adds timing hooks
    that append one JSON line per ``speech_stopped`` to that file. ``cpu`` pins the server to
    one CPU (``taskset`` semantics through ``sched_setaffinity``).
    """
    port = free_port()
    args = ["serve", "--port", str(port), "--vad", vad, *extra_args]
    env = dict(os.environ)
    if probe_file is not None:
        command = [sys.executable, str(BENCH / "_serve_probe.py"), *args]
        env["OPENREALTIME_BENCH_PROBE"] = str(probe_file)
    else:
        command = [*openrealtime_command(), *args]
    log_dir = Path(tempfile.mkdtemp(prefix="openrealtime-bench-"))
    log_path = log_dir / "server.log"
    log = log_path.open("wb")

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, preexec_fn=pin
    )
    server = ServerProcess(process, port, command, log_path)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited ({process.returncode}):\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start in time:\n{server.log_tail()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        shutil.rmtree(log_dir, ignore_errors=True)


def pin_self(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def default_cpus() -> tuple[int | None, int | None]:
    """(server CPU, client CPU): separate cores when there are at least two, else unpinned."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None, None
    if len(cpus) < 2:
        return None, None
    return cpus[-1], cpus[0]


async def append_in_real_time(
    conn: Any,
    pcm16: bytes,
    *,
    chunk_ms: int = 20,
    mark_chunk: int | None = None,
    marks: list[float] | None = None,
) -> None:
    """Send ``pcm16`` (24 kHz) as ``input_audio_buffer.append`` events, chunk k at t0 + k*chunk_ms.

    When chunk ``mark_chunk`` has been sent, its ``time.monotonic()`` is appended to ``marks``
    at once (the answer may arrive before the rest of the audio is sent): the benchmarks time
    latencies from the chunk holding the true end of speech.
    """
    step = 24_000 * 2 * chunk_ms // 1000
    t0 = time.monotonic()
    for k, start in enumerate(range(0, len(pcm16), step)):
        delay = t0 + k * chunk_ms / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = base64.b64encode(pcm16[start : start + step]).decode()
        await conn.send({"type": "input_audio_buffer.append", "audio": chunk})
        if k == mark_chunk and marks is not None:
            marks.append(time.monotonic())


def read_pss_bytes(pid: int) -> int:
    """Proportional set size of ``pid`` (``/proc/PID/smaps_rollup``; shared pages split among
    the processes that map them, so a parent and its workers add up without double counting);
    its RSS where the kernel has no rollup."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return read_rss_bytes(pid)


def tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes summed over ``pid`` and every live descendant (worker processes)."""
    rss = pss = 0
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            rss += read_rss_bytes(p)
            pss += read_pss_bytes(p)
    return rss, pss


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of ``pid`` and its descendants, summed by thread name
    (``/proc/PID/task/TID/comm``: the main thread carries the process's name, ``vad_0`` is the
    VAD worker)."""
    out: dict[str, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    name = "main" if task.name == str(p) else (task / "comm").read_text().strip()
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                    out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


@contextlib.contextmanager
def redis_server(startup_timeout: float = 10.0) -> Iterator[str | None]:
    """A private ``redis-server`` on a free loopback port (nothing on disk); yields its URL.

    ``openrealtime serve --workers N`` (N > 1) needs ``--redis-url``. Yields ``None`` when
    redis-server is not installed.
    """
    exe = shutil.which("redis-server")
    if exe is None:
        yield None
        return
    port = free_port()
    process = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
