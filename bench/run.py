"""Run every benchmark at its default size and print one markdown block for docs/benchmarks.md.

.venv/bin/python bench/run.py                  # all of them
.venv/bin/python bench/run.py vad_latency      # just some
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from _common import BENCH, ROOT, load_average, machine_lines

BENCHMARKS = ("core_throughput", "vad_latency", "idle_memory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"some of {', '.join(BENCHMARKS)} (all)")
    args = parser.parse_args()
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    env = {**os.environ, "OPENREALTIME_BENCH_QUIET_MACHINE": "1"}
    print("## Machine")
    print()
    for line in machine_lines():
        print(line)
    print()
    status = 0
    for name in names:
        script = BENCH / f"{name}.py"
        command = f".venv/bin/python bench/{name}.py"
        print(f"## {name}")
        print()
        print(f"`{command}`")
        print()
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True
        )
        print(result.stdout.rstrip())
        if result.returncode:
            status = 1
            print()
            print(f"**failed with status {result.returncode}**:")
            print()
            print("```")
            print(result.stderr.rstrip()[-3000:])
            print("```")
        print()
        print(f"_{time.monotonic() - started:.0f} s; load average after: {load_average()}_")
        print()
    sys.exit(status)


if __name__ == "__main__":
    main()
