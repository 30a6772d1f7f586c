"""``bench predictor train|evaluate|predict`` and ``bench report``."""

from __future__ import annotations

from pathlib import Path

import typer

from latbench.cli._common import TRUST_FILE_HELP

__all__ = ["register"]

_KINDS = "flops, flops-clustered, lut, gbm, gbm-layer, gcn"


def train(
    db: Path = typer.Option(..., "--db", help="The latency database."),
    device: str = typer.Option(..., "--device", help="Device whose measurements to learn."),
    kind: str = typer.Option(..., "--kind", help=f"Predictor kind: {_KINDS}."),
    train_size: int = typer.Option(None, "--train-size", help="Train on N seeded rows (default: all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample and the model."),
    out: Path = typer.Option(..., "--out", help="Where to write the predictor."),
    source_devices: str = typer.Option(
        None, "--source-devices",
        help="Transfer: also learn from every row of these devices (A,B,…); then --train-size "
             "rows of --device are enough (e.g. 10–50)."),
) -> None:
    """Fit a latency predictor and save it (with feature-schema version and device)."""
    from latbench.cli._common import console
    from latbench.predictor.base import save_predictor

    if source_devices is not None:
        from latbench.predictor.evaluate import train_transfer

        with _progress() as progress:
            pred = train_transfer(db, device=device, source_devices=_names(source_devices),
                                  kind=kind, train_size=train_size, seed=seed, progress=progress)
        save_predictor(pred, out, device=device, kind=kind)
        used = ", ".join(pred.source_models_.names)
        console.print(f"trained {kind} transfer on {pred.n_train_} measurements of {device} and "
                      f"the sources {used}; wrote {out}")
        return
    from latbench.data.dataset import load_dataset
    from latbench.predictor.evaluate import train_predictor

    pred = train_predictor(load_dataset(db, device), device=device, kind=kind,
                           train_size=train_size, seed=seed)
    save_predictor(pred, out, device=device, kind=kind)
    console.print(f"trained {kind} on {pred.n_train_} measurements of {device}; wrote {out}")


def evaluate(
    db: Path = typer.Option(..., "--db", help="The latency database."),
    device: str = typer.Option(..., "--device", help="Device to evaluate on."),
    kind: str = typer.Option(..., "--kind", help=f"Predictor kind: {_KINDS}."),
    train_size: int = typer.Option(..., "--train-size", help="Train on N seeded rows, test on the rest."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and the model."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    source_devices: str = typer.Option(
        None, "--source-devices",
        help="Transfer: train on every row of these devices (A,B,…) plus N rows of --device, "
             "test on the rest of --device."),
) -> None:
    """Train on N measurements, test on all the others, print the metrics."""
    from latbench.cli._common import console, print_json

    if source_devices is not None:
        from latbench.predictor.evaluate import evaluate_transfer

        with _progress(quiet=as_json) as progress:
            ev = evaluate_transfer(db, device=device, source_devices=_names(source_devices),
                                   kind=kind, train_size=train_size, seed=seed, progress=progress)
    else:
        from latbench.data.dataset import load_dataset
        from latbench.predictor.evaluate import evaluate_predictor

        ev = evaluate_predictor(load_dataset(db, device), device=device, kind=kind,
                                train_size=train_size, seed=seed)
    if as_json:
        print_json(ev.as_dict())
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

    from latbench.cli._common import console, err_console, parse_shape, print_json
    from latbench.predictor.apply import MODEL_OUTSIDE, predict_model

    shape = parse_shape(input_shape) if input_shape else None
    res = predict_model(predictor, model, plan_path=plan, input_shape=shape, trust_file=trust_file)
    if as_json:
        print_json(asdict(res))
        return
    extra = f" ({res.missing_layers} layers estimated by the fallback)" if res.missing_layers else ""
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
    from latbench.cli._common import console
    from latbench.data.dataset import load_dataset
    from latbench.predictor.report import write_report

    page = write_report(load_dataset(db), out, devices=list(device), train_size=train_size,
                        seed=seed)
    console.print(f"wrote {page}")


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
