"""``python -m openrealtime``: the same command line as the ``openrealtime`` script."""

from openrealtime.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
