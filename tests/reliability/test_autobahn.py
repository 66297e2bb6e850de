"""Reliability check 1: WebSocket conformance with the official Autobahn|Testsuite.

reliability-targets.md §3 check 1 and §4. The Autobahn ``fuzzingclient`` (PyPI
``autobahntestsuite==25.10.1``, Python 2.7 only) runs as a subprocess against an echo route served
by *our* server stack: uvicorn with exactly ``openrealtime.cli.uvicorn_settings(Config())`` (the
guarded ``http=``/``ws=`` protocols of ``transports/connections.py``, the message size limit,
permessage-deflate, keepalive pings). The echo app lives in this test only; the product has no
echo route.

The suite is installed once with ``python2.7 -m pip install --target`` into
``$XDG_CACHE_HOME/openrealtime-tests/autobahn-25.10.1`` (default ``~/.cache/...``) and reused. No
Python 2.7, or an install that fails (no network), skips the test with the reason.
``OPENREALTIME_PYTHON27`` names the interpreter explicitly.

By default cases 1-8, 10 and 11 run (247 cases, about 11 s). The long run adds 9.* (limits and
performance, 54 cases) and 12.*/13.* (permessage-deflate, 216 cases): 517 cases in about 10 min
on 2 cores::

    OPENREALTIME_AUTOBAHN_ALL=1 .venv/bin/python -m pytest tests/reliability/test_autobahn.py -s

The test's own timeout is raised above the suite's 120 s to cover the one-time install (bounded
by ``INSTALL_TIMEOUT_S``) and, with the long run, the fuzzer (``RUN_TIMEOUT_S``).

Reports go to pytest's tmp dir (printed with ``-s``; the per-case JSON and HTML stay there).
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from openrealtime.config import Config
from tests.helpers.server import running_server, ws_url

AUTOBAHN_VERSION = "25.10.1"
RUN_ALL = os.environ.get("OPENREALTIME_AUTOBAHN_ALL", "") not in ("", "0")
"""``OPENREALTIME_AUTOBAHN_ALL=1`` adds cases 9.*, 12.* and 13.* (about 8 minutes)."""

INSTALL_TIMEOUT_S = 300
RUN_TIMEOUT_S = 1500 if RUN_ALL else 90
DEFAULT_BUDGET_S = 60.0
"""The default run (server start included) must stay well under this (check 1: ~11 s)."""

ECHO_PATH = "/__autobahn_echo"
AGENT = "openrealtime"

EXPECTED_FAILED = frozenset({"7.1.5"})
"""7.1.5 (a text frame after a close frame) is answered with 1002, not the 1000 the suite wants;
python-websockets' compliance/README.rst documents the same result."""

ALLOWED_NON_STRICT = frozenset(
    {"3.2", "3.3", "4.1.3", "4.1.4", "4.2.3", "4.2.4", "5.15", "6.4.1", "6.4.2", "6.4.3", "6.4.4"}
)
"""NON-STRICT results python-websockets documents for itself (reliability-targets.md §0.1)."""

RACY_NON_STRICT = frozenset({"3.4", "4.1.5", "4.2.5"})
"""Same kind as 3.2/3.3/4.1.3/4.1.4/4.2.3/4.2.4, but whether they show depends on timing.

Each sends a text message, then an invalid frame (reserved bit or opcode), then a ping. When
the three arrive in one TCP read, uvicorn fails the connection with 1002 before the app has
echoed the text; the case's NON-STRICT expectation is exactly "no echo" (``expected[NON_STRICT]
= []`` in ``case3_4.py``, ``case4_1_5.py``, ``case4_2_5.py``). Measured here against both our
stack and plain uvicorn ``websockets-sansio``: 3.4, 4.1.5 and 4.2.5 each came out NON-STRICT in
some runs and OK in others. They are accepted only with the server's close code 1002."""

MIN_DEFAULT_CASES = 240
"""Cases 1-8, 10, 11 are 247 in 25.10.1: a much smaller run means cases silently went missing."""


# --------------------------------------------------------------------------- the echo app


async def _echo(websocket: WebSocket) -> None:
    """Echo every text and binary message back unchanged until the peer leaves."""
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if (text := message.get("text")) is not None:
                await websocket.send_text(text)
            elif (data := message.get("bytes")) is not None:
                await websocket.send_bytes(data)
    except (WebSocketDisconnect, RuntimeError, OSError):
        return  # the fuzzer closed or broke the connection mid-send: nothing left to echo


def _echo_app() -> Starlette:
    return Starlette(routes=[WebSocketRoute(ECHO_PATH, _echo)])


# --------------------------------------------------------------------------- Python 2.7 + suite


def _is_python27(candidate: str) -> bool:
    try:
        probe = subprocess.run(
            [candidate, "-c", "import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _find_python27() -> str | None:
    """The first working Python 2.7: ``$OPENREALTIME_PYTHON27``, pyenv's, then ``$PATH``'s."""
    candidates: list[str] = []
    if explicit := os.environ.get("OPENREALTIME_PYTHON27"):
        candidates.append(explicit)
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(
        glob.glob(os.path.join(pyenv_root, "versions", "2.7*", "bin", "python2.7"))
    )
    candidates += [found for name in ("python2.7", "python2") if (found := shutil.which(name))]
    return next((c for c in candidates if _is_python27(c)), None)


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "openrealtime-tests" / f"autobahn-{AUTOBAHN_VERSION}"


def _clean_env() -> dict[str, str]:
    """The environment for Python 2.7: nothing of this venv's Python 3 leaks into it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _suite_imports(python27: str, lib: Path) -> bool:
    code = f"import site; site.addsitedir({str(lib)!r}); import autobahntestsuite.wstest"
    try:
        probe = subprocess.run(
            [python27, "-c", code], capture_output=True, timeout=60, env=_clean_env(), check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


def _install_suite(python27: str) -> tuple[Path, float]:
    """Return the suite's ``--target`` dir (installed now if missing) and the install seconds.

    The install goes to a sibling dir that is renamed into place only once the suite imports,
    so an interrupted install is never reused. Skips the test when pip fails or times out.
    """
    lib = _cache_root()
    marker = lib / ".installed"
    if marker.exists():
        return lib, 0.0
    lib.parent.mkdir(parents=True, exist_ok=True)
    partial = lib.with_name(f"{lib.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    command = [
        python27,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--no-warn-script-location",
        "--target",
        str(partial),
        f"autobahntestsuite=={AUTOBAHN_VERSION}",
    ]
    started = time.monotonic()
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            env=_clean_env(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(partial, ignore_errors=True)
        pytest.skip(f"installing autobahntestsuite timed out after {INSTALL_TIMEOUT_S} s")
    elapsed = time.monotonic() - started
    if result.returncode != 0 or not _suite_imports(python27, partial):
        shutil.rmtree(partial, ignore_errors=True)
        tail = (result.stdout + result.stderr).strip()[-1500:]
        pytest.skip(
            f"cannot install autobahntestsuite=={AUTOBAHN_VERSION} with {python27} "
            f"(no network?); pip exit {result.returncode}:\n{tail}"
        )
    (partial / ".installed").write_text(f"{AUTOBAHN_VERSION} installed in {elapsed:.1f} s\n")
    if lib.exists():  # a broken earlier install without its marker
        shutil.rmtree(lib, ignore_errors=True)
    try:
        partial.rename(lib)
    except OSError:  # another run installed it meanwhile: use theirs
        shutil.rmtree(partial, ignore_errors=True)
    return lib, elapsed


@pytest.fixture(scope="module")
def autobahn() -> tuple[str, Path]:
    """``(python2.7, suite dir)``; skips the module's tests when either is unavailable."""
    python27 = _find_python27()
    if python27 is None:
        pytest.skip(
            "Autobahn|Testsuite needs Python 2.7 (pyenv install 2.7.18, or set "
            "OPENREALTIME_PYTHON27); none found, WebSocket conformance not checked"
        )
    lib, seconds = _install_suite(python27)
    if seconds:
        print(f"\nautobahntestsuite {AUTOBAHN_VERSION} installed into {lib} in {seconds:.1f} s")
    return python27, lib


# --------------------------------------------------------------------------- verdicts


def _case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def _message_size(report: dict[str, Any]) -> int | None:
    """The size of the largest message a 9.* case sends, from its description."""
    description = str(report.get("description", ""))
    if m := re.search(r"length (\d+) \* 2\*\*(\d+)", description):
        return int(m.group(1)) << int(m.group(2))
    if m := re.search(r"payload size (\d+)", description):
        return int(m.group(1))
    return None


def _report(outdir: Path, result: dict[str, Any]) -> dict[str, Any]:
    path = outdir / str(result.get("reportfile", ""))
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def _describe(outdir: Path, case: str, result: dict[str, Any]) -> str:
    """One line per failing case plus a snippet of its report."""
    line = f"{case}: {result.get('behavior')} (close: {result.get('behaviorClose')})"
    path = outdir / str(result.get("reportfile", ""))
    if not path.is_file():
        return line
    report = json.loads(path.read_text())
    snippet = {
        key: report.get(key)
        for key in (
            "description",
            "expectation",
            "result",
            "resultClose",
            "localCloseCode",
            "remoteCloseCode",
            "remoteCloseReason",
            "wasClean",
            "droppedByMe",
            "wasNotCleanReason",
        )
    }
    return f"{line}\n    {json.dumps(snippet)[:1200]}\n    report: {path}"


def _verdicts(outdir: Path, max_size: int) -> tuple[dict[str, int], list[str], list[str]]:
    """Return (counts by behavior, the unexpected results, the expected non-OK results)."""
    index = json.loads((outdir / "index.json").read_text())
    results: dict[str, dict[str, Any]] = index[AGENT]
    counts: dict[str, int] = {}
    bad: list[str] = []
    expected: list[str] = []
    for case in sorted(results, key=_case_key):
        result = results[case]
        behavior = str(result.get("behavior"))
        counts[behavior] = counts.get(behavior, 0) + 1
        close = str(result.get("behaviorClose"))
        if behavior == "OK" and close in ("OK", "INFORMATIONAL"):
            continue
        if behavior == "INFORMATIONAL" and close in ("OK", "INFORMATIONAL"):
            continue
        if case in EXPECTED_FAILED and behavior == "FAILED":
            expected.append(f"{case}: FAILED (documented)")
            continue
        if case in ALLOWED_NON_STRICT and behavior == "NON-STRICT":
            continue
        if case in RACY_NON_STRICT and behavior == "NON-STRICT":
            report = _report(outdir, result)
            if report.get("remoteCloseCode") == 1002:
                expected.append(f"{case}: NON-STRICT (failed with 1002 before the echo)")
                continue
        if case.startswith("9."):
            report = _report(outdir, result)
            size = _message_size(report)
            if size is not None and size > max_size and report.get("remoteCloseCode") == 1009:
                expected.append(f"{case}: closed 1009 ({size} B > ws_max_size {max_size} B)")
                continue
        bad.append(_describe(outdir, case, result))
    return counts, bad, expected


# --------------------------------------------------------------------------- the test


def _run_fuzzer(python27: str, lib: Path, spec: Path, log: Path) -> int:
    code = (
        f"import site, sys; site.addsitedir({str(lib)!r}); "
        f"sys.argv = ['wstest', '-m', 'fuzzingclient', '-s', {str(spec)!r}]; "
        "from autobahntestsuite.wstest import run; run()"
    )
    with log.open("wb") as out:
        try:
            done = subprocess.run(
                [python27, "-c", code],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=spec.parent,
                env=_clean_env(),
                timeout=RUN_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return -1
    return done.returncode


@pytest.mark.timeout(INSTALL_TIMEOUT_S + RUN_TIMEOUT_S + 60)  # the one-time install included
async def test_autobahn_fuzzingclient_against_our_uvicorn_stack(
    autobahn: tuple[str, Path], tmp_path: Path
) -> None:
    python27, lib = autobahn
    config = Config()
    outdir = tmp_path / "reports"
    log = tmp_path / "fuzzingclient.log"
    excluded = [] if RUN_ALL else ["9.*", "12.*", "13.*"]
    started = time.monotonic()
    async with running_server(_echo_app(), config=config) as base:
        spec = tmp_path / "fuzzingclient.json"
        spec.write_text(
            json.dumps(
                {
                    "outdir": str(outdir),
                    "servers": [{"agent": AGENT, "url": ws_url(base, ECHO_PATH)}],
                    "cases": ["*"],
                    "exclude-cases": excluded,
                    "exclude-agent-cases": {},
                }
            )
        )
        status = await asyncio.to_thread(_run_fuzzer, python27, lib, spec, log)
    elapsed = time.monotonic() - started
    output = log.read_text(errors="replace")
    assert status == 0, (
        f"fuzzingclient {'timed out' if status == -1 else f'exited {status}'}; "
        f"last output:\n{output[-3000:]}"
    )
    assert (outdir / "index.json").is_file(), f"no index.json; output:\n{output[-3000:]}"

    counts, bad, expected = _verdicts(outdir, config.ws_max_size)
    total = sum(counts.values())
    summary = (
        f"Autobahn {AUTOBAHN_VERSION}, {'all cases' if RUN_ALL else 'cases 1-8, 10, 11'}: "
        f"{total} cases {dict(sorted(counts.items()))} in {elapsed:.1f} s (server start "
        f"included); expected non-OK: {expected or 'none'}; reports in {outdir}"
    )
    print("\n" + summary, file=sys.stderr)
    assert not bad, f"{len(bad)} unexpected Autobahn results ({summary}):\n" + "\n".join(bad)
    if RUN_ALL:
        assert total >= MIN_DEFAULT_CASES + 216 + 54, summary
        for prefix in ("9.", "12.", "13."):
            assert any(case.startswith(prefix) for case in _case_ids(outdir)), summary
    else:
        assert total >= MIN_DEFAULT_CASES, summary
        assert elapsed < DEFAULT_BUDGET_S, f"the default run took {elapsed:.1f} s: {summary}"


def _case_ids(outdir: Path) -> list[str]:
    return list(json.loads((outdir / "index.json").read_text())[AGENT])
