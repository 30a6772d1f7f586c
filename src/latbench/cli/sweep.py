"""``bench sweep``: the main job — measure compressed variants into the latency store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from latbench.cli._common import TRUST_FILE_HELP, console, err_console, parse_shape, print_json

__all__ = ["register"]


def sweep_cmd(
    device: str = typer.Option("cpu", "--device", "-d",
                               help="Device name (cpu, cuda, litert, or a devices.toml profile); "
                                    "variants are exported in the format it runs."),
    model: Optional[list[str]] = typer.Option(None, "--model", help="Model to sweep; repeat for several."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated methods, e.g. tucker2,cp,svd."),
    ranks: Optional[str] = typer.Option(None, "--ranks", help="Fractional ranks: start:stop:step or a list."),
    random_plans: Optional[int] = typer.Option(None, "--random-plans", help="Random per-layer plans per model."),
    per_layer: bool = typer.Option(
        False, "--per-layer", help="Also time each distinct layer: alone, or on benchmark_model "
                                   "phones from one per-operator profile of each variant."),
    input_shape: Optional[str] = typer.Option(None, "--input", help="Input shape, e.g. 1x3x224x224."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads (device default if unset)."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Untimed runs before timing."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Timed runs per variant."),
    adaptive: Optional[bool] = typer.Option(
        None, "--adaptive/--fixed-repeats",
        help="Keep sampling a variant while its timings are spread (default), or take exactly --repeats."),
    db: Path = typer.Option(Path("latency.db"), "--db", help="SQLite latency store (created if missing)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of weights and random plans."),
    config: Optional[Path] = typer.Option(None, "--config", help="sweep.toml with models, inputs, methods."),
    devices_file: Optional[Path] = typer.Option(None, "--devices", help="devices.toml to read profiles from."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    trust_file: bool = typer.Option(False, "--trust-file", help=TRUST_FILE_HELP),
) -> None:
    """Compress, export and measure variants on a device; resumable (rerun to continue)."""
    from dataclasses import replace

    from latbench.bench.sweep import DEFAULT_RANKS, Target, default_config, \
        load_sweep_config, run_sweep
    from latbench.bench.variants import parse_rank_range
    from latbench.exceptions import UserInputError
    from latbench.models import default_input_shape

    overrides = dict(random_plans=random_plans, per_layer=per_layer or None, threads=threads,
                     warmup=warmup, repeats=repeats, seed=seed, adaptive=adaptive,
                     trust_file=trust_file or None)
    if config is not None:
        if model or methods is not None or ranks is not None or input_shape is not None:
            raise UserInputError("--config names the models, methods, ranks and inputs; "
                                 "don't combine it with --model/--methods/--ranks/--input")
        cfg = load_sweep_config(config, **overrides)
    else:
        cfg = default_config(**overrides)
        if model or methods is not None or ranks is not None or input_shape is not None:
            mlist = tuple(m.strip() for m in (methods.split(",") if methods is not None
                                              else cfg.targets[0].methods) if m.strip())
            if not mlist:
                raise UserInputError("--methods is empty: give e.g. tucker2,cp,svd")
            rlist = parse_rank_range(ranks) if ranks is not None else DEFAULT_RANKS
            names = model or [t.model for t in cfg.targets]
            targets = tuple(
                Target(n, parse_shape(input_shape) if input_shape else default_input_shape(n), mlist, rlist)
                for n in names)
            cfg = replace(cfg, targets=targets)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  TextColumn("{task.fields[last]}"), console=err_console,
                  disable=as_json or not err_console.is_terminal) as bar:
        tasks: dict[str, int] = {}

        def on_event(ev) -> None:
            phase = ev.phase
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=ev.total, last="")
            last = f"{ev.label}: {ev.median_ms:.2f} ms" if ev.median_ms is not None else f"{ev.label}: {ev.status}"
            bar.update(tasks[phase], completed=ev.done, last=last)
            if ev.status == "failed":
                err_console.print(f"failed: {ev.label}: {ev.error}", markup=False)

        summary = run_sweep(cfg, device, db, devices_file=devices_file, progress=on_event)
    doc = {"device": device, "db": str(db), **summary.to_dict()}
    if as_json:
        print_json(doc)
        return
    console.print(
        f"{device}: {summary.measured} variants measured, {summary.skipped} already stored, "
        f"{summary.failed} failed"
        + (f"; {summary.layers_measured} layers measured alone ({summary.layers_skipped} stored"
           + (f", {summary.layers_failed} failed" if summary.layers_failed else "") + ")"
           + (f", {summary.layers_profiled} timed from op profiles" if summary.layers_profiled
              else "")
           if cfg.per_layer else "")
        + f" → {db}", soft_wrap=True, markup=False)


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_cmd)
