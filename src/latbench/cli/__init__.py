"""The ``bench`` command line: parse, call one library function, print, set the exit code."""

from __future__ import annotations

import sys
import warnings
from typing import Any, TextIO

__all__ = ["main", "KEPT_ON_INTERRUPT"]


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


#: What each command has kept when Ctrl-C stops it. Work that keeps a part of itself says
#: exactly how much by raising :class:`~latbench.exceptions.Interrupted` (a sweep counts its
#: variants); this is the line for the rest, and for Ctrl-C before that work began.
KEPT_ON_INTERRUPT: dict[str, str] = {
    "sweep": "every variant measured before Ctrl-C is kept in the database; rerun the same "
             "command to resume",
    "run": "nothing was stored (bench run keeps nothing, it prints at the end); rerun it",
    "search": "measurements already stored with --db are kept; no report was written; rerun "
              "to search again",
    "compress": "nothing is kept: --save and --out are written at the end (a file being "
                "written when Ctrl-C came may be incomplete); rerun",
    "devices list": "nothing was changed",
    "devices check": "nothing was changed",
    "data summary": "nothing was changed (the database is opened read-only)",
    "data export": "the database is unchanged; the output file may be incomplete; rerun",
    "data import-nb201": "rows are committed in batches: those of finished batches are kept; "
                         "rerun the same command to resume",
    "predictor train": "no predictor file was written (it is written whole, at the end); rerun",
    "predictor evaluate": "nothing was changed (the database is opened read-only)",
    "predictor predict": "nothing was changed",
    "predictor convert": "no predictor file was written (it is written whole, at the end)",
    "report": "the report folder may be incomplete (the database is opened read-only); rerun",
}

_GROUPS = ("data", "devices", "predictor")


def _command_of(argv: list[str]) -> str:
    """``"data summary"`` of ``["data", "summary", "x.db"]``: the command a line runs."""
    words = []
    for a in argv:  # leading words up to the first option (its value is no command)
        if a.startswith("-"):
            break
        words.append(a)
    if not words:
        return ""
    return " ".join(words[:2]) if words[0] in _GROUPS and len(words) > 1 else words[0]


def _print_interrupt(exc: KeyboardInterrupt, argv: list[str]) -> None:
    from latbench.cli._common import err_console
    from latbench.exceptions import Interrupted

    if isinstance(exc, Interrupted) and str(exc):
        detail = str(exc)
    else:
        kept = KEPT_ON_INTERRUPT.get(_command_of(argv))
        detail = f"stopped by Ctrl-C; {kept}" if kept else "stopped by Ctrl-C"
    err_console.print(f"interrupted: {detail}", markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``bench`` console script.

    Exit codes: 0, a :class:`~latbench.exceptions.LatbenchError`'s ``exit_code`` (one
    ``error:`` line), or 130 on Ctrl-C (SIGINT) with one ``interrupted:`` line saying what
    was kept (:data:`KEPT_ON_INTERRUPT`, or the interrupted work's own account).
    """
    from latbench.cli._common import err_console
    from latbench.cli.app import build_app
    from latbench.exceptions import LatbenchError, LatbenchNotice

    args = list(sys.argv[1:] if argv is None else argv)
    shown: Any = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        with warnings.catch_warnings():
            # Each wait for another process is news, even when its text repeats.
            warnings.simplefilter("always", LatbenchNotice)
            warnings.showwarning = _show_warning
            build_app()(args=args, prog_name="bench")
    except LatbenchError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:  # Ctrl-C outside typer's own handling
        _print_interrupt(exc, args)
        sys.exit(130)
    except SystemExit as exc:
        ki = _interrupt_of(exc)
        if ki is None:
            raise
        _print_interrupt(ki, args)  # shells expect 128 + SIGINT
        sys.exit(130)
    finally:
        warnings.showwarning = shown
