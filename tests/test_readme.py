"""The README's Python example, run as written against a real server (issue 11, item 6)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from openrealtime.cli_flags import add_serve_flags
from tests.helpers.cli_server import FAKE_ENGINES, cli_server

README = Path(__file__).resolve().parents[1] / "README.md"


def python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "the README has no Python example"
    return str(blocks[0])


def test_the_first_lines_are_the_two_commands() -> None:
    head = README.read_text(encoding="utf-8").splitlines()[:4]
    assert head[0] == "```sh" and head[3] == "```"
    assert head[1].endswith(".venv/bin/pip install -e . && .venv/bin/openrealtime serve")
    assert head[2].endswith('.venv/bin/pip install -e ".[test]" && .venv/bin/python -m pytest')
    # CI runs the test command verbatim
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert head[2] in ci.splitlines()


def test_the_python_example_prints_the_answer(tmp_path: Path) -> None:
    """Only the port changes (the test server's is free, not 8000)."""
    code = python_example()
    assert "http://127.0.0.1:8000/v1" in code
    with cli_server(*FAKE_ENGINES, log_dir=tmp_path) as server:
        script = tmp_path / "example.py"
        script.write_text(code.replace("http://127.0.0.1:8000", server.base), encoding="utf-8")
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()
    assert len(words) >= 2, done.stdout  # the fake model's answer, word by word


def test_the_synopsis_lists_every_flag_and_engine() -> None:
    parser = argparse.ArgumentParser()
    add_serve_flags(parser)
    text = README.read_text(encoding="utf-8")
    synopsis = text[text.index("openrealtime serve [") : text.index("openrealtime models list")]
    for action in parser._actions:
        flags = [f for f in action.option_strings if f.startswith("--") and f != "--help"]
        if flags:
            assert any(flag in synopsis for flag in flags), flags
        for choice in action.choices or ():
            if choice != "fake" and flags and flags[0] in ("--vad", "--stt", "--llm", "--tts"):
                assert choice in synopsis, (flags[0], choice)
