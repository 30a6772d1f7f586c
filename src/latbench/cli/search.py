"""``bench search``: per-layer methods and ranks that meet a latency budget, verified on the device."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Optional

import typer

from latbench.cli._common import TRUST_FILE_HELP, console, err_console, parse_shape, print_json

__all__ = ["register", "EXIT_BUDGET_NOT_MET"]

#: Exit status of a search that ran to the end without meeting the budget (its fastest plan
#: is still printed and, with --out, written). 1–5 are latbench's error codes.
EXIT_BUDGET_NOT_MET = 6


def search_cmd(
    model: str = typer.Argument(..., help="torchvision name, nb201:<arch>, a torch.save-d module, "
                                "or NAME@STATE_DICT.pt."),
    device: str = typer.Option("cpu", "--device", "-d", help="Device the budget holds on."),
    budget_ms: Optional[float] = typer.Option(None, "--budget-ms", help="Latency budget in ms."),
    speedup: Optional[float] = typer.Option(None, "--speedup", help="Wanted speed-up over the original."),
    predictor: Optional[Path] = typer.Option(None, "--predictor", help="A predictor from bench predictor train."),
    db: Optional[Path] = typer.Option(None, "--db", help="Latency store: per-layer latencies are read from "
                                      "and added to it (without --predictor)."),
    methods: str = typer.Option("tucker2,svd", "--methods",
                                help="Comma-separated methods, e.g. tucker2,cp,svd (cp is slow to search)."),
    calib: int = typer.Option(8, "--calib", help="Calibration batch size."),
    input_shape: Optional[str] = typer.Option(None, "--input", help="Input shape, e.g. 1x3x224x224."),
    rounds: int = typer.Option(5, "--rounds", help="Verification rounds at most."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads."),
    repeats: int = typer.Option(30, "--repeats", help="Timed runs per verification."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write model, plan.json and report here."),
    seed: int = typer.Option(0, "--seed", help="Seed of weights and calibration data."),
    devices_file: Optional[Path] = typer.Option(None, "--devices", help="devices.toml to read profiles from."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    trust_file: bool = typer.Option(False, "--trust-file", help=TRUST_FILE_HELP),
) -> None:
    """Search per-layer decompositions that meet a latency budget with the least damage.

    Each plan is measured right after the original, the final one back to back with it.

    Reported latency, speed-up and "met" come from that verification (they hold when the device drifts).

    Exit status: 0 met; 6 budget not met (the fastest plan is still printed and written to --out).

    Errors: 2 bad input or a budget below the fastest reachable latency; 3 device failure; 5 unusable predictor.
    """
    from latbench.devices.registry import get_device
    from latbench.exceptions import DeviceError, UserInputError
    from latbench.models import default_input_shape
    from latbench.search.search import search

    if predictor is not None and db is not None:
        raise UserInputError("give --predictor or --db, not both")
    mlist = tuple(m.strip() for m in methods.split(",") if m.strip())
    if not mlist:
        raise UserInputError("--methods is empty: give e.g. tucker2,svd")
    shape = parse_shape(input_shape) if input_shape else default_input_shape(model)
    dev = get_device(device, devices_file)
    pred = None
    if predictor is not None:
        from latbench.predictor import load_predictor

        # load_predictor refuses another device or feature schema
        pred, _ = load_predictor(predictor, device=dev.name, trust_file=trust_file)
    store = None
    if db is not None:
        from latbench.data.store import Store

        store = Store(db)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console,
                      disable=as_json or not err_console.is_terminal) as bar:
            tasks: dict[str, int] = {}

            def on_progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total)
                bar.update(tasks[stage], completed=done, total=total)

            result = search(model, dev, budget_ms=budget_ms, speedup=speedup, input_shape=shape,
                            predictor=pred, store=store, methods=mlist, calib=calib,
                            max_rounds=rounds, threads=threads, repeats=repeats, seed=seed,
                            progress=on_progress, trust_file=trust_file)
    except DeviceError as exc:
        partial = getattr(exc, "partial", None)
        if out is None or partial is None:
            raise
        from latbench.jsonio import dumps

        out.mkdir(parents=True, exist_ok=True)
        path = out / "search-partial.json"
        path.write_text(dumps({"error": str(exc), **partial}) + "\n")
        raise DeviceError(f"{exc}; what is known was written to {path}") from None
    finally:
        if store is not None:
            store.close()
        dev.close()
    doc = result.to_dict()
    if out is not None:
        from latbench.search.report import write_search_outputs

        doc["outputs"] = write_search_outputs(result, out, shape)
    if as_json:
        print_json(doc)
    else:
        _print_result(model, dev.name, result, out)
    for note in result.notes:
        err_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    if not result.met:
        where = f" and written to {out}/" if out is not None else ""
        err_console.print(f"budget not met: the fastest plan found is reported{where} "
                          f"(exit status {EXIT_BUDGET_NOT_MET})", markup=False, highlight=False,
                          soft_wrap=True)
        raise typer.Exit(code=EXIT_BUDGET_NOT_MET)


def _print_result(model: str, device: str, result, out: Optional[Path]) -> None:
    say = partial(console.print, soft_wrap=True)
    say(
        f"{model} on {device}: budget {result.budget_ms:.3f} ms, measured {result.measured_ms:.3f} ms "
        f"({'met' if result.met else 'NOT met'}), original {result.original_ms:.3f} ms, speed-up "
        f"{result.speedup:.2f}x (verified back to back), {len(result.rounds)} round(s), "
        f"fidelity {result.fidelity:.4f}")
    drift = result.original_drift or {}
    if drift.get("moved", 0.0) > 0.1:
        say(f"the original moved {drift['min_ms']:.3f}–{drift['max_ms']:.3f} ms during "
            f"the search ({drift['moved']:.0%} of its first {drift['first_ms']:.3f} ms)")
    if result.baseline:
        b = result.baseline
        eq = b.get("fidelity_at_equal_latency")
        say(f"uniform {b['method']}: fidelity {eq:.4f} at the same measured latency" if eq
            is not None else f"uniform {b['method']}@{b['fraction']:g}: measured "
            f"{b['measured_ms']:.3f} ms, fidelity {b['fidelity']:.4f}")
    for r in result.rounds:
        say(f"  round {r.index}: predicted budget {r.target_ms:.3f} ms, predicted "
            f"{r.predicted_ms:.3f} ms, measured {r.measured_ms:.3f} ms against the "
            f"original's {r.original_ms:.3f} ms ({'met' if r.met else 'over'}), "
            f"fidelity {r.fidelity:.4f}")
    if out is not None:
        say(f"wrote {out}/ (model.onnx, model.pt, plan.json, report.html)")


def register(app: typer.Typer) -> None:
    app.command("search")(search_cmd)
