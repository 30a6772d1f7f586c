"""``bench data``: summarise, export and import the latency database."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register"]

_DB = typer.Option(..., "--db", help="The latency database (SQLite file).")


def summary(
    db: Path = _DB,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Counts of variants, measurements and failures per device, model and method."""
    from rich.table import Table

    from latbench.cli._common import console, print_json
    from latbench.data.store import Store, noisy_counts
    from latbench.exceptions import UserInputError
    from latbench.measure.measurement import NOISY_RELATIVE_IQR

    if not db.is_file():
        raise UserInputError(f"latency database {str(db)!r} does not exist")
    with Store(db, read_only=True) as store:  # never changes the file (WAL mode included)
        df = store.summary()
        counts = store.counts()
        noisy = noisy_counts(store)
    if as_json:
        print_json({"db": str(db), "totals": counts, "groups": df.to_dict(orient="records"),
                    "noisy": {d: n for d, (n, _) in noisy.items()}})
        return
    table = Table(title=f"{db}")
    short = {"source_model": "model", "n_variants": "variants", "n_measurements": "measured",
             "median_latency_ms": "median ms", "n_failures": "failed"}
    for col in df.columns:
        table.add_column(short.get(col, col), justify="right" if df[col].dtype.kind in "if" else "left")
    for rec in df.itertuples(index=False):
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in rec))
    console.print(table)
    console.print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    for device, (n, total) in noisy.items():
        if n:
            console.print(f"noisy: {n} of {total} measurements on {device} have IQR/median ≥ "
                          f"{NOISY_RELATIVE_IQR:.0%} (`bench data export` flags them)",
                          markup=False, soft_wrap=True)


def export(
    db: Path = _DB,
    fmt: str = typer.Option("csv", "--format", help="csv or parquet."),
    out: Path = typer.Option(..., "--out", help="The file to write."),
) -> None:
    """Write one flat table (a row per measurement, model features as columns)."""
    from latbench.cli._common import console
    from latbench.data.export import export_table

    n = export_table(db, out, fmt)
    console.print(f"wrote {n} rows to {out}")


def import_nb201(
    csv: Path = typer.Argument(..., help="CSV with an 'arch' column and latency columns (ms)."),
    latency_column: list[str] = typer.Option(
        ..., "--latency-column",
        help="A column of latencies in ms, COL or COL=DEVICE (device name defaults to COL "
             "without '_ms'); repeat it to import several devices from one featurisation."),
    device: str = typer.Option(None, "--device",
                               help="Name of the (imported) device of a single --latency-column."),
    db: Path = _DB,
    edges: str = typer.Option(
        "live", "--edges",
        help="The build that was measured: 'live' (dead edges removed, as LatBench/BRP-NAS "
             "built) or 'all' (the NAS-Bench-201 reference code's graph: every edge, 'none' a "
             "zeroing op that runs; HELP, HW-NAS-Bench). See the README."),
    batch: int = typer.Option(1, "--batch", help="Input batch size of the measurements."),
    limit: int = typer.Option(None, "--limit", help="Import only the first N rows."),
    exact: bool = typer.Option(False, "--exact", help="Build every network (slow reference path)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Import published NAS-Bench-201 latencies (architecture string + ms per device column)."""
    from dataclasses import asdict

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from latbench.cli._common import console, err_console, print_json
    from latbench.data.nb201_import import import_nb201 as run_import

    # The bar starts with the first row, so an error about the CSV prints as one clean line.
    state: dict[str, object] = {}

    def progress(done: int, total: int) -> None:
        if as_json:
            return
        if "bar" not in state:
            bar = Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(),
                           TimeRemainingColumn(), console=err_console, transient=True)
            bar.start()
            state["bar"], state["task"] = bar, bar.add_task("import", total=total)
        state["bar"].update(state["task"], completed=done, total=total)  # type: ignore[attr-defined]

    try:
        result = run_import(csv, latency_column=latency_column, device=device, db_path=db,
                            limit=limit, exact=exact, edges=edges, batch=batch, progress=progress)
    finally:
        if "bar" in state:
            state["bar"].stop()  # type: ignore[attr-defined]
    if as_json:
        print_json(asdict(result))
        return
    for d in result.devices:
        console.print(
            f"{d.device}: imported {d.imported} of {result.rows} rows "
            f"({d.skipped} already stored, {d.invalid} without a latency) from {d.column}")
    shape = "x".join(str(v) for v in result.input_shape)
    console.print(f"{result.layer_tables} networks featurised ({result.edges} edges, input {shape}) "
                  f"in {result.seconds:.1f} s into {db}")


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to ``app``."""
    data_app = typer.Typer(help="Summarise, export and import the latency database.",
                           no_args_is_help=True)
    data_app.command("summary")(summary)
    data_app.command("export")(export)
    data_app.command("import-nb201")(import_nb201)
    app.add_typer(data_app, name="data")
