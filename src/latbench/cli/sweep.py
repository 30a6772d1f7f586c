"""``bench sweep``: the main job — measure compressed variants into the latency store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from latbench.cli._common import TRUST_FILE_HELP, console, err_console, parse_shape, print_json

__all__ = ["register"]


def sweep_cmd(
    device: Optional[list[str]] = typer.Option(
        None, "--device", "-d",
        help="Device name (cpu, cuda, litert, or a devices.toml profile); variants are exported "
             "in the format it runs. Repeat to sweep several devices at once on Ray (the farm "
             "extra). Default: cpu."),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=1,
        help="Compress and export in this many parallel workers (a Ray cluster started on this "
             "machine with N CPUs; with --ray, at most N at once; the farm extra). Default 1 "
             "when several devices are given."),
    ray_address: Optional[str] = typer.Option(
        None, "--ray", metavar="ADDRESS",
        help="Join the Ray cluster at ADDRESS ('ray start --head' prints it) and drive each "
             "device from the host its devices.toml 'node' names (the farm extra)."),
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
            row = ev.phase if ev.device is None else f"{ev.device} {ev.phase}"  # a row per device
            if row not in tasks:
                tasks[row] = bar.add_task(row, total=ev.total, last="")
            last = f"{ev.label}: {ev.median_ms:.2f} ms" if ev.median_ms is not None else f"{ev.label}: {ev.status}"
            bar.update(tasks[row], completed=ev.done, last=last)
            if ev.status == "failed":
                where = "" if ev.device is None else f"{ev.device}: "
                err_console.print(f"failed: {where}{ev.label}: {ev.error}", markup=False)

        devices = device or ["cpu"]
        if len(devices) > 1 or workers is not None or ray_address is not None:
            from latbench.farm import run_farm_sweep

            farm = run_farm_sweep(cfg, devices, db, devices_file=devices_file, workers=workers,
                                  address=ray_address, progress=on_event)
        else:
            summary = run_sweep(cfg, devices[0], db, devices_file=devices_file, progress=on_event)
    if len(devices) > 1 or workers is not None or ray_address is not None:
        _print_farm(farm, db, as_json)
        return
    device = devices[0]
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


def _print_farm(farm, db: Path, as_json: bool) -> None:
    """Print a farm sweep's summary (a line per device, or one JSON object); a device lost
    mid-sweep ends the command with exit code 3, after the summary."""
    from latbench.exceptions import DeviceError

    if as_json:
        print_json({"db": str(db), **farm.to_dict()})
    else:
        for name, s in farm.devices.items():
            line = (f"{name}: {s.measured} variants measured, {s.skipped} already stored, "
                    f"{s.failed} failed")
            if farm.not_measured.get(name):
                line += f", {farm.not_measured[name]} not measured"
            console.print(line + f" → {db}", soft_wrap=True, markup=False)
    if farm.lost:
        lost = "; ".join(f"{name}: {why} ({farm.not_measured.get(name, 0)} of {farm.variants} "
                         "variants not measured)" for name, why in farm.lost.items())
        raise DeviceError(f"{len(farm.lost)} of {len(farm.devices)} devices lost — {lost}; the "
                          "other devices' rows are complete; rerun the same command to measure "
                          "what was not")


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_cmd)
