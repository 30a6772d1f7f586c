"""``bench compress`` (filled in by the compress work)."""

import typer


def register(app: typer.Typer) -> None:
    pass
