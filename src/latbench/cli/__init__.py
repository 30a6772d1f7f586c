"""The ``bench`` command line: parse, call one library function, print, set the exit code."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``bench`` console script."""
    from latbench.cli._common import err_console
    from latbench.cli.app import build_app
    from latbench.exceptions import LatbenchError

    app = build_app()
    try:
        app(args=argv, prog_name="bench")
    except LatbenchError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted: everything measured so far is kept; rerun to resume",
                          markup=False, highlight=False)
        sys.exit(130)
