"""``python -m dermctx.cli``: the same command line as ``dermctx`` and ``python -m dermctx``."""

from dermctx.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
