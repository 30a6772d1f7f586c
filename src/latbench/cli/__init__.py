"""The ``bench`` command line: parse, call one library function, print, set the exit code."""

from __future__ import annotations

import sys
import warnings
from typing import Any, TextIO

__all__ = ["main"]


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """Print a warning as one ``warning: ...`` line on stderr (no file name or source line).

    Library code warns through :mod:`warnings` (a world-readable ADB key, an old database
    schema); on the command line that is one line, like ``error: ...``.
    """
    from latbench.cli._common import err_console

    kind = "" if category is UserWarning else f"{category.__name__}: "
    err_console.print(f"warning: {kind}{message}", markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``bench`` console script."""
    from latbench.cli._common import err_console
    from latbench.cli.app import build_app
    from latbench.exceptions import LatbenchError

    app = build_app()
    shown: Any = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        app(args=argv, prog_name="bench")
    except LatbenchError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted: everything measured so far is kept; rerun to resume",
                          markup=False, highlight=False)
        sys.exit(130)
    finally:
        warnings.showwarning = shown
