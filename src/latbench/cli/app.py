"""Build the typer application from the command modules (each has ``register(app)``)."""

from __future__ import annotations

import importlib

import typer

from latbench import __version__

__all__ = ["build_app"]

#: Command modules under ``latbench.cli``; each defines ``register(app: typer.Typer)``.
COMMAND_MODULES = (
    "compress",
    "data",
    "devices",
    "layers",
    "predictor",
    "sweep",
    "search",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"latbench {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="bench",
        help="Benchmark and predict the latency of low-rank compressed CNNs on devices.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                     help="Print the version and exit."),
    ) -> None:
        """latbench: compress, export, measure and predict CNN latency."""

    for name in COMMAND_MODULES:
        importlib.import_module(f"latbench.cli.{name}").register(app)
    return app
