"""``bench predictor train|evaluate|predict`` and ``bench report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from latbench.cli._common import TRUST_FILE_HELP

__all__ = ["register"]

_KINDS = "flops, flops-clustered, lut, gbm, gbm-layer, gcn"

FALLBACK_HELP = ("lut only: what a layer missing from the lookup table gets — error (the "
                 "default: name it and stop) or regressor (a per-layer XGBoost trained on the "
                 "table estimates it, and predictions say how many layers it estimated). A "
                 "store holding models whose layers were not all measured alone needs "
                 "regressor.")
PARAM_HELP = ("A constructor parameter of the predictor kind, KEY=VALUE (repeatable; VALUE is "
              "read as JSON, else as text), e.g. --param max_depth=4. An unknown KEY lists "
              "the kind's parameters and defaults.")


def _predictor_params(kind: str, fallback: Optional[str], items: Optional[list[str]]
                      ) -> dict[str, Any]:
    """``--fallback`` and ``--param KEY=VALUE`` as constructor keywords of ``kind``, checked."""
    from latbench.exceptions import UserInputError
    from latbench.predictor.registry import check_params, settable_params

    params: dict[str, Any] = {}
    for item in items or []:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UserInputError(f"bad --param {item!r}: write KEY=VALUE, e.g. --param max_depth=4")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        params[key] = value
    if fallback is not None:
        if kind != "lut":
            raise UserInputError(f"--fallback is an option of --kind lut, not {kind!r}")
        if fallback not in ("error", "regressor"):
            raise UserInputError(f"--fallback must be error or regressor, got {fallback!r}")
        params["fallback"] = fallback
    if not params:
        return params
    check_params(kind, params)
    defaults = settable_params(kind)
    for key, value in params.items():
        want = defaults[key]
        # Catch what the predictor's own checks would meet as a TypeError: text for a
        # number, anything but true/false for a flag. Text defaults ("auto") may take numbers.
        if isinstance(want, bool) and not isinstance(value, bool) or \
                isinstance(want, (int, float)) and not isinstance(want, bool) and \
                not (isinstance(value, (int, float)) and not isinstance(value, bool)):
            raise UserInputError(f"--param {key}={value!r}: {kind} wants "
                                 f"{'true or false' if isinstance(want, bool) else 'a number'} "
                                 f"(default {want!r})")
        if isinstance(want, tuple) and isinstance(value, list):
            params[key] = tuple(value)
    return params


def train(
    db: Path = typer.Option(..., "--db", help="The latency database."),
    device: str = typer.Option(..., "--device", help="Device whose measurements to learn."),
    kind: str = typer.Option(..., "--kind", help=f"Predictor kind: {_KINDS}."),
    train_size: int = typer.Option(None, "--train-size", help="Train on N seeded rows (default: all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample and the model."),
    out: Path = typer.Option(..., "--out", help="Where to write the predictor."),
    fallback: Optional[str] = typer.Option(None, "--fallback", help=FALLBACK_HELP),
    param: Optional[list[str]] = typer.Option(None, "--param", help=PARAM_HELP),
    source_devices: str = typer.Option(
        None, "--source-devices",
        help="Transfer: also learn from every row of these devices (A,B,…); then --train-size "
             "rows of --device are enough (e.g. 10–50)."),
) -> None:
    """Fit a latency predictor and save it (with feature-schema version and device)."""
    from latbench.cli._common import console, show_progress, spinner, warn
    from latbench.predictor.base import save_predictor

    if source_devices is not None:
        from latbench.predictor.evaluate import train_transfer

        _no_params_with_transfer(fallback, param)
        with _progress() as progress:
            pred = train_transfer(db, device=device, source_devices=_names(source_devices),
                                  kind=kind, train_size=train_size, seed=seed, progress=progress)
        save_predictor(pred, out, device=device, kind=kind)
        used = ", ".join(pred.source_models_.names)
        console.print(f"trained {kind} transfer on {pred.n_train_} measurements of {device} and "
                      f"the sources {used}; wrote {out}")
        return
    from latbench.data.dataset import load_dataset
    from latbench.predictor.evaluate import small_data_notes, train_predictor

    params = _predictor_params(kind, fallback, param)
    with spinner(show_progress(False), f"training {kind} on the measurements of {device}"):
        pred = train_predictor(load_dataset(db, device), device=device, kind=kind,
                               train_size=train_size, seed=seed, params=params or None)
    save_predictor(pred, out, device=device, kind=kind)
    console.print(f"trained {kind} on {pred.n_train_} measurements of {device}; wrote {out}")
    for note in small_data_notes(device, kind, pred.n_train_):
        warn(note)


def evaluate(
    db: Path = typer.Option(..., "--db", help="The latency database."),
    device: str = typer.Option(..., "--device", help="Device to evaluate on."),
    kind: str = typer.Option(..., "--kind", help=f"Predictor kind: {_KINDS}."),
    train_size: int = typer.Option(..., "--train-size", help="Train on N seeded rows, test on the rest."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and the model."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    fallback: Optional[str] = typer.Option(None, "--fallback", help=FALLBACK_HELP),
    param: Optional[list[str]] = typer.Option(None, "--param", help=PARAM_HELP),
    source_devices: str = typer.Option(
        None, "--source-devices",
        help="Transfer: train on every row of these devices (A,B,…) plus N rows of --device, "
             "test on the rest of --device."),
) -> None:
    """Train on N measurements, test on all the others, print the metrics."""
    from latbench.cli._common import console, print_json, show_progress, spinner, warn

    if source_devices is not None:
        from latbench.predictor.evaluate import evaluate_transfer

        _no_params_with_transfer(fallback, param)
        with _progress(quiet=as_json) as progress:
            ev = evaluate_transfer(db, device=device, source_devices=_names(source_devices),
                                   kind=kind, train_size=train_size, seed=seed, progress=progress)
    else:
        from latbench.data.dataset import load_dataset
        from latbench.predictor.evaluate import evaluate_predictor

        params = _predictor_params(kind, fallback, param)
        with spinner(show_progress(as_json), f"training and testing {kind} on {device}"):
            ev = evaluate_predictor(load_dataset(db, device), device=device, kind=kind,
                                    train_size=train_size, seed=seed, params=params or None)
    for note in ev.notes:  # on stderr, also with --json
        warn(note)
    if as_json:
        print_json({**ev.as_dict(), "notes": ev.notes})
        return
    m = ev.metrics
    via = f" (and every row of {', '.join(ev.source_devices)})" if ev.source_devices else ""
    console.print(f"{kind} on {device}: trained on {ev.n_train}{via}, tested on {ev.n_test}")
    console.print(f"  ±5 % {m['acc5']:.3f}  ±10 % {m['acc10']:.3f}  MAPE {m['mape']:.2f} %  "
                  f"RMSE {m['rmse_ms']:.3f} ms  R² {m['r2']:.3f}  ρ {m['spearman']:.3f}  "
                  f"τ {m['kendall']:.3f}")


def predict(
    model: str = typer.Argument(..., help="torchvision name, nb201:<arch>, a saved module, or "
                                "NAME@STATE_DICT.pt."),
    predictor: Path = typer.Option(..., "--predictor", help="A file from `bench predictor train`."),
    plan: Path = typer.Option(None, "--plan", help="Compression plan (JSON) to apply first."),
    input_shape: str = typer.Option(None, "--input", help="Input shape like 1x3x224x224."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    trust_file: bool = typer.Option(False, "--trust-file", help=TRUST_FILE_HELP),
) -> None:
    """Print the predicted latency (ms) of MODEL."""
    from dataclasses import asdict

    from latbench.cli._common import console, err_console, parse_shape, print_json, \
        progress_bar, show_progress
    from latbench.predictor.apply import MODEL_OUTSIDE, predict_model

    shape = parse_shape(input_shape) if input_shape else None
    with progress_bar(show_progress(as_json) and plan is not None, "compressing") as on_layer:
        res = predict_model(predictor, model, plan_path=plan, input_shape=shape,
                            trust_file=trust_file, progress=on_layer)
    if as_json:
        print_json(asdict(res))
        return
    extra = (f" ({res.missing_layers} of {res.n_layers} layers estimated by the fallback "
             "regressor: not in the lookup table)") if res.missing_layers else ""
    console.print(f"{res.latency_ms:.4f} ms on {res.device}{extra}")
    if res.out_of_range:
        err_console.print(f"warning: {MODEL_OUTSIDE}: {'; '.join(res.out_of_range_reasons)}")


def convert(
    old: Path = typer.Argument(..., help="A predictor file of an older latbench (a pickle)."),
    out: Path = typer.Option(..., "--out", help="Where to write it in the current format."),
    trust_file: bool = typer.Option(False, "--trust-file", help=TRUST_FILE_HELP),
) -> None:
    """Re-save a predictor file in the current format, which loads without running code."""
    from latbench.cli._common import console
    from latbench.predictor.base import convert_predictor

    info = convert_predictor(old, out, trust_file=trust_file)
    console.print(f"wrote {out} ({info['kind'] or 'predictor'} for {info['device']}, "
                  f"format {info['format']})", markup=False)


def report(
    db: Path = typer.Option(..., "--db", help="The latency database."),
    device: list[str] = typer.Option(..., "--device", help="Device(s) to report on (repeatable)."),
    out: Path = typer.Option(..., "--out", help="Output folder (index.html, metrics.md, PNGs)."),
    train_size: int = typer.Option(900, "--train-size", help="Training rows per evaluation."),
    seed: int = typer.Option(0, "--seed", help="Seed of the splits and models."),
) -> None:
    """Write an HTML report with plots and a Markdown metrics table."""
    from latbench.cli._common import console, progress_bar, show_progress, spinner
    from latbench.data.dataset import load_dataset
    from latbench.predictor.report import write_report

    # Notes on too little data come as warnings: one "warning: ..." line each on stderr.
    with spinner(show_progress(False), f"reading {db}"):
        dataset = load_dataset(db)
    with progress_bar(show_progress(False), "report") as on_stage:
        page = write_report(dataset, out, devices=list(device), train_size=train_size,
                            seed=seed, progress=on_stage)
    console.print(f"wrote {page}")


def _no_params_with_transfer(fallback: Optional[str], items: Optional[list[str]]) -> None:
    """--fallback and --param tune a single-device predictor; a transfer predictor has its
    own settings, so the two together are refused rather than silently ignored."""
    if fallback is not None or items:
        from latbench.exceptions import UserInputError

        raise UserInputError("--fallback and --param apply to a single-device predictor; leave "
                             "them out with --source-devices")


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _progress(quiet: bool = False):
    """A context giving a ``progress(stage, done, total)`` callback drawn on stderr."""
    from contextlib import contextmanager

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from latbench.cli._common import err_console

    @contextmanager
    def bar():
        if quiet:
            yield None
            return
        p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                     console=err_console, transient=True)
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = p.add_task(stage, total=total)
            p.update(tasks[stage], completed=done, total=total)

        with p:
            yield progress

    return bar()


def register(app: typer.Typer) -> None:
    """Add ``predictor`` (train, evaluate, predict, convert) and ``report`` to ``app``."""
    sub = typer.Typer(help="Train, evaluate and apply latency predictors.", no_args_is_help=True)
    sub.command("train")(train)
    sub.command("evaluate")(evaluate)
    sub.command("predict")(predict)
    sub.command("convert")(convert)
    app.add_typer(sub, name="predictor")
    app.command("report")(report)
