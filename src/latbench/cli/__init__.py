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

    from latbench.exceptions import LatbenchNotice

    if issubclass(category, LatbenchNotice):
        err_console.print(f"note: {message}", markup=False, highlight=False, soft_wrap=True)
        return
    kind = "" if category is UserWarning else f"{category.__name__}: "
    err_console.print(f"warning: {kind}{message}", markup=False, highlight=False, soft_wrap=True)


def _interrupt_of(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C behind ``exc``: typer turns a ``KeyboardInterrupt`` into ``Exit(130)``
    (older click into ``Abort``) before latbench sees it; the original is in the chain."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt):
            return e
        e = e.__cause__ or e.__context__
    return None


def _print_interrupt(exc: KeyboardInterrupt) -> None:
    from latbench.cli._common import err_console
    from latbench.exceptions import Interrupted

    detail = str(exc) if isinstance(exc, Interrupted) and str(exc) else "stopped by Ctrl-C"
    err_console.print(f"interrupted: {detail}", markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``bench`` console script."""
    from latbench.cli._common import err_console
    from latbench.cli.app import build_app
    from latbench.exceptions import LatbenchError, LatbenchNotice

    shown: Any = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        with warnings.catch_warnings():
            # Each wait for another process is news, even when its text repeats.
            warnings.simplefilter("always", LatbenchNotice)
            warnings.showwarning = _show_warning
            build_app()(args=argv, prog_name="bench")
    except LatbenchError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:  # Ctrl-C outside typer's own handling
        _print_interrupt(exc)
        sys.exit(130)
    except SystemExit as exc:
        ki = _interrupt_of(exc)
        if ki is None:
            raise
        _print_interrupt(ki)  # shells expect 128 + SIGINT
        sys.exit(130)
    finally:
        warnings.showwarning = shown
