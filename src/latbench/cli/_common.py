"""Helpers shared by the CLI commands: consoles, JSON output, shape parsing."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

from latbench.exceptions import UserInputError

__all__ = ["console", "err_console", "print_json", "parse_shape", "TRUST_FILE_HELP",
           "progress_bar", "spinner", "show_progress", "warn"]

#: Help of every command's ``--trust-file``.
TRUST_FILE_HELP = ("Load model (.pt) and predictor files with Python's full unpickler, which "
                   "runs any code a file holds: only for files you made or trust. Without it "
                   "files are read safely (state dicts, torch/torchvision/latbench modules, "
                   "latbench predictor files) and anything else is refused.")

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (no rich markup, so it stays machine-readable).

    Non-finite numbers (NaN, ±inf) are written as ``null``, so any JSON parser reads it.
    """
    from latbench.jsonio import dumps

    sys.stdout.write(dumps(obj) + "\n")
    sys.stdout.flush()


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``1x3x224x224`` into ``(1, 3, 224, 224)``.

    Raises
    ------
    UserInputError
        If the text is not positive integers separated by ``x``.
    """
    try:
        shape = tuple(int(p) for p in text.lower().replace("×", "x").split("x"))
    except ValueError:
        shape = ()
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise UserInputError(f"bad input shape {text!r}: write it like 1x3x224x224")
    return shape


def show_progress(as_json: bool) -> bool:
    """Whether to draw progress: on stderr when it is a terminal, never with ``--json``."""
    return not as_json and err_console.is_terminal


@contextmanager
def progress_bar(enabled: bool, what: str = "") -> Iterator[Callable[[str, int, int], None]]:
    """A rich bar on stderr driven by a library's ``progress(stage, done, total)`` callback.

    One bar: its label is ``what`` and the current stage (a layer name, a predictor kind),
    its count ``done/total``, with the time elapsed and left. Disabled (the callback does
    nothing) unless ``enabled`` (see :func:`show_progress`); transient, so what the
    command prints afterwards stands alone. Each new stage is drawn when it starts.
    """
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  TextColumn("{task.fields[stage]}", markup=False), console=err_console,
                  disable=not enabled, transient=True) as bar:
        task = bar.add_task(what, total=None, stage="")
        shown = [""]

        def update(stage: str, done: int, total: int) -> None:
            # A new stage is drawn at once: between rich's timed refreshes a fast stage (a
            # predictor kind on a small store) would otherwise never be seen.
            new = stage != shown[0]
            shown[0] = stage
            bar.update(task, completed=done, total=total, stage=stage, refresh=new)

        yield update


@contextmanager
def spinner(enabled: bool, text: str) -> Iterator[None]:
    """A rich spinner with ``text`` and the time elapsed on stderr, for work without counts."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False),
                  TimeElapsedColumn(), console=err_console, disable=not enabled,
                  transient=True) as bar:
        bar.add_task(text, total=None)
        yield


def warn(message: str) -> None:
    """Print one ``warning: ...`` line on stderr (also with ``--json``: stdout stays JSON)."""
    err_console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)
