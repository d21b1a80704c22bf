"""``python -m dermctx``: the ``dermctx`` command line, :func:`dermctx.cli.main`."""

from dermctx.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
