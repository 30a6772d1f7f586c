"""``bench devices list``, ``bench devices check NAME`` and ``bench run MODEL``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from latbench.cli._common import console, print_json

__all__ = ["register", "measurement_json"]

DEVICES_HELP = ("Devices file (TOML); default: $LATBENCH_DEVICES, ./devices.toml, "
                "then ~/.config/latbench/devices.toml.")


def measurement_json(m: Any, model: str | None = None) -> dict[str, Any]:
    """The ``--json`` object of ``bench run``: statistics in ms, raw samples, device info."""
    doc: dict[str, Any] = {
        "median_ms": m.median_ms,
        "p90_ms": m.p90_ms,
        "iqr_ms": m.iqr_ms,
        "samples_ms": m.samples_ms,
        "device": m.info_before.to_dict(),
        "mean_ms": m.mean_ms,
        "p10_ms": m.p10_ms,
        "min_ms": m.min_ms,
        "std_ms": m.std_ms,
        "relative_iqr": m.relative_iqr,
        "confident": m.confident,
        "n_samples": len(m.samples_s),
        "threads": m.spec.threads,
        "stop_reason": m.extra.get("stop_reason"),
        "spec": m.spec.to_dict(),
        "device_after": m.info_after.to_dict(),
    }
    if model is not None:
        doc["model"] = model
    return doc


def devices_list_cmd(
    devices_file: Optional[Path] = typer.Option(None, "--devices", help=DEVICES_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """List the built-in devices and those of the devices file, with whether they can run here."""
    from latbench.devices.registry import list_devices

    rows = list_devices(devices_file)
    if as_json:
        print_json({"devices": [r.to_dict() for r in rows]})
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="devices")
    for col in ("name", "kind", "source", "available", "options / note"):
        table.add_column(col)
    for r in rows:
        opts = ", ".join(f"{k}={v!r}" for k, v in r.profile.options.items() if k != "kind")
        avail = {True: "yes", False: "no", None: "?"}[r.available]
        # Notes hold literal brackets (pip extras) that rich would read as markup.
        table.add_row(*(escape(c) for c in (r.profile.name, r.profile.kind, r.profile.where, avail,
                                            "; ".join(x for x in (opts, r.note) if x))))
    console.print(table)


def devices_check_cmd(
    name: str = typer.Argument(..., help="Device name (cpu, cuda, litert, or a devices.toml profile)."),
    devices_file: Optional[Path] = typer.Option(None, "--devices", help=DEVICES_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Connect to NAME, print its info, and time a tiny conv model on it."""
    from latbench.bench.run import CHECK_INPUT_SHAPE, check_device

    result = check_device(name, devices_file=devices_file)
    m = result.measurement
    if as_json:
        print_json({"device": result.info.to_dict(), "median_ms": m.median_ms,
                    "samples_ms": m.samples_ms, "threads": m.spec.threads})
        return
    info = result.info
    console.print(f"{info.name} ({info.kind}): {info.model or '?'}", markup=False)
    for label, value in (("os", info.os), ("abi", info.abi), ("fingerprint", info.fingerprint)):
        if value:
            console.print(f"  {label}: {value}", markup=False)
    if info.runtime_versions:
        console.print("  runtimes: " + ", ".join(f"{k} {v}" for k, v in info.runtime_versions.items()),
                      markup=False)
    if info.state:
        console.print("  state: " + ", ".join(f"{k}={v}" for k, v in info.state.items()), markup=False)
    shape = "x".join(map(str, CHECK_INPUT_SHAPE))
    console.print(f"ok: tiny conv model ({shape}) median {m.median_ms:.3f} ms over "
                  f"{len(m.samples_s)} runs, {m.spec.threads} thread(s)", markup=False)


def run_cmd(
    model: str = typer.Argument(..., help="A model file in the device's format: .onnx (cpu, "
                                          "cuda, perf_test phones) or .tflite (litert, "
                                          "benchmark_model phones)."),
    device: str = typer.Option(..., "--device", "-d",
                               help="Device name (cpu, cuda, litert, or a profile)."),
    threads: Optional[int] = typer.Option(None, "--threads", "-t",
                                          help="Intra-op threads (default: the device's)."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed runs before timing."),
    repeats: int = typer.Option(50, "--repeats", "-r", help="Timed runs (the minimum with --adaptive)."),
    adaptive: bool = typer.Option(False, "--adaptive",
                                  help="Keep sampling until IQR/median < 5 % or a cap is hit."),
    max_repeats: int = typer.Option(1000, "--max-repeats", help="With --adaptive: most timed runs."),
    max_time: float = typer.Option(30.0, "--max-time", help="With --adaptive: seconds of timing at most."),
    devices_file: Optional[Path] = typer.Option(None, "--devices", help=DEVICES_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Time MODEL (.onnx or .tflite) on a device and print its latency statistics.

    Phone runners: onnxruntime_perf_test of ONNX Runtime 1.0 and later; benchmark_model of
    TensorFlow Lite 1.12 and later and the LiteRT benchmark_model (2025 on), told apart by
    their --help. Outputs of other releases are refused with a message saying so.
    """
    from latbench.bench.run import run_model

    m = run_model(model, device, threads=threads, warmup=warmup, repeats=repeats,
                  adaptive=adaptive, max_repeats=max_repeats, max_time_s=max_time,
                  devices_file=devices_file)
    if as_json:
        print_json(measurement_json(m, model))
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"{model} on {m.spec.device} ({m.info_before.model or m.info_before.kind})"))
    for col in ("threads", "runs", "median ms", "p10 ms", "p90 ms", "IQR ms", "IQR/median"):
        table.add_column(col, justify="right")
    table.add_row(str(m.spec.threads), str(len(m.samples_s)), f"{m.median_ms:.3f}",
                  f"{m.p10_ms:.3f}", f"{m.p90_ms:.3f}", f"{m.iqr_ms:.3f}",
                  f"{m.relative_iqr:.1%}")
    console.print(table)
    if not m.confident:
        console.print(f"note: IQR/median is {m.relative_iqr:.1%} (≥ {m.confidence_threshold:.0%}); "
                      "the machine may be busy — try --adaptive or more --repeats", markup=False)


def register(app: typer.Typer) -> None:
    devices = typer.Typer(help="List and check devices.", no_args_is_help=True)
    devices.command("list")(devices_list_cmd)
    devices.command("check")(devices_check_cmd)
    app.add_typer(devices, name="devices")
    app.command("run")(run_cmd)
