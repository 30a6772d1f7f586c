"""Running the ``bench`` CLI in-process from a test: ``from clirun import bench``."""

from __future__ import annotations

import pytest

from latbench.cli import main


def bench(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run ``bench ARGS`` in-process; return exit code, stdout, stderr."""
    try:
        main([*args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err
