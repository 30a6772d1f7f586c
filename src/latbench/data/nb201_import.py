"""Import published NAS-Bench-201 latencies (architecture string + ms) into the store.

Each architecture becomes a variant ``nb201:<arch>`` at input 1×3×32×32 whose layer table is
that of :func:`latbench.models.nb201.build_nb201`; the latency becomes a one-sample
measurement on an ``imported`` device.

Speed. Building and running 15k networks one by one costs ~40 ms each here (most of it
``nn.Module`` construction; a ``meta``-device build is no faster and a meta forward is
slower), ~10 minutes in all. :class:`NB201Featurizer` therefore computes, with the real
:func:`~latbench.data.features.layer_table`, the table of the network's skeleton once (a
network whose cells have no live edge) and the table of each cell operation once per stage
(15 tiny modules), then assembles each network's table from them in the order its cells run.
This is exact, not an approximation: hooks list leaf modules in execution order, and a
NAS-Bench-201 cell runs its live edges' operations one after another on same-shaped tensors,
adding each edge's output into its target node (one ``add`` row, ``cells.<i>.add#<k>``, for
every edge into an already-filled node — computed once per stage, like the operations; the
reduction blocks' residual adds are part of the skeleton). The ``inputs`` column (row indices
of each row's producers) is rewritten as the parts are placed: an operation's first row reads
its source node, a node sum reads both operands, and the skeleton row after the cells reads
the last cell's output instead of the cell input it read in the skeleton.
Tests compare it to ``layer_table(build_nb201(arch))`` row by row; ``exact=True`` uses the
full build instead (cached by the set of live edges, since dead edges are not built).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from latbench.measure.spec import DeviceInfo
from latbench.data.features import LAYER_COLUMNS, STRING_COLUMNS, layer_table, parse_inputs
from latbench.data.store import IMPORTED_RUNTIME, Store, default_content_hash, encode_layer_columns
from latbench.exceptions import UserInputError
from latbench.models.nb201 import InferCell, build_nb201, cell_edges, parse_arch

__all__ = ["NB201_INPUT_SHAPE", "NB201Featurizer", "ImportResult", "DeviceImport", "import_nb201",
           "read_nb201_csv", "parse_latency_columns", "SPEC_PREFIX"]

NB201_INPUT_SHAPE = (1, 3, 32, 32)

#: A cell with no live edge: the network reduced to its skeleton (stem, reduction blocks, head).
_EMPTY_ARCH = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"

ProgressCallback = Callable[[int, int], None]


@contextmanager
def _one_thread() -> Iterator[None]:
    # Tiny tensors: with several intra-op threads on a busy machine one forward took 1.6 s
    # instead of 8 ms (threads spin waiting for each other).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


_Columns = dict[str, np.ndarray]
_STR_COLUMNS = STRING_COLUMNS


def _frame_to_columns(df: pd.DataFrame) -> _Columns:
    # Strings as object arrays, numbers as int64 (an empty part comes back as object columns).
    return {c: df[c].to_numpy(dtype=object if c in _STR_COLUMNS else np.int64) for c in LAYER_COLUMNS}


def _rename(cols: _Columns, prefix: str) -> _Columns:
    out = dict(cols)
    out["name"] = np.array([prefix + n for n in cols["name"]], dtype=object)
    return out


class NB201Featurizer:
    """Per-layer tables of NAS-Bench-201 networks at input B×3×32×32, fast and exact.

    Parameters
    ----------
    exact : bool
        Build each network with :func:`build_nb201` and run :func:`layer_table` on it (slow,
        the reference) instead of assembling it from precomputed parts.
    cache : bool
        Keep each table for later calls (off when the caller keeps its own, to save memory).
    edges : {"live", "all"}
        Which build to describe (:mod:`latbench.models.nb201`): ``"live"`` (dead and
        ``none`` edges removed, as LatBench's TensorFlow builds) or ``"all"`` (the reference
        code's graph: all six edges, ``none`` as a zeroing op that runs).
    batch : int
        Input batch size B.

    Notes
    -----
    Tables are cached by the edges the cells hold (under ``"live"``, architectures that
    differ only in dead edges build the same network). The cache is per instance.

    Raises
    ------
    UserInputError
        For an unknown convention or a batch size below 1.
    """

    def __init__(self, *, exact: bool = False, cache: bool = True, edges: str = "live",
                 batch: int = 1) -> None:
        cell_edges([], edges)  # validates the convention
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise UserInputError(f"--batch must be a positive integer, got {batch!r}")
        self.exact = exact
        self.cache = cache
        self.edges = edges
        self.batch = batch
        self.input_shape = (batch, *NB201_INPUT_SHAPE[1:])
        self._cache: dict[tuple[tuple[str, int, int], ...], pd.DataFrame] = {}
        self._dtypes: dict[str, object] = {}
        self._parts: tuple[list[tuple[str, object]], dict[tuple[str, tuple[int, ...]], _Columns]] | None = None

    def cell_key(self, arch: str) -> tuple[tuple[str, int, int], ...]:
        """The edges a cell of ``arch`` holds: architectures with equal keys build equal networks.

        Raises
        ------
        UserInputError
            If ``arch`` is not a NAS-Bench-201 architecture string.
        """
        return tuple(cell_edges(parse_arch(arch), self.edges))

    def table(self, arch: str) -> pd.DataFrame:
        """The layer table of ``build_nb201(arch, edges=self.edges)`` (do not modify: it is cached).

        Raises
        ------
        UserInputError
            If ``arch`` is not a NAS-Bench-201 architecture string.
        """
        key = self.cell_key(arch)
        hit = self._cache.get(key)
        if hit is None:
            if self.exact:
                with _one_thread():
                    hit = self._exact(arch)
            else:
                hit = self._frame(self.columns(key))
            if self.cache:
                self._cache[key] = hit
        return hit

    def columns(self, key: tuple[tuple[str, int, int], ...]) -> dict[str, np.ndarray]:
        """The layer table of the network with cell edges ``key`` as column → array (not cached).

        Strings are object arrays and numbers int64: the input of
        :func:`latbench.data.store.encode_layer_columns`, cheaper than a DataFrame.
        """
        if self.exact:
            return _frame_to_columns(self._exact_from_key(key))
        with _one_thread():
            return self._assemble(key)

    def _exact_from_key(self, key: tuple[tuple[str, int, int], ...]) -> pd.DataFrame:
        # Any architecture whose cells hold these edges builds this network; write one down.
        ops = {(s, d): op for op, s, d in key}
        groups = ["|" + "|".join(f"{ops.get((s, d), 'none')}~{s}" for s in range(d)) + "|"
                  for d in (1, 2, 3)]
        with _one_thread():
            return self._exact("+".join(groups))

    def frame(self, columns: dict[str, np.ndarray]) -> pd.DataFrame:
        """A DataFrame with :func:`layer_table`'s columns and dtypes from :meth:`columns`' output."""
        return self._frame(columns)

    def __len__(self) -> int:
        return len(self._cache)

    # ------------------------------------------------------------------ internals
    def _exact(self, arch: str) -> pd.DataFrame:
        return layer_table(build_nb201(arch, edges=self.edges), self.input_shape)

    def _prepare(self) -> None:
        # The skeleton: cells without a single edge (they pass their input through).
        net = build_nb201(_EMPTY_ARCH, edges="live")
        cell_shapes: dict[int, tuple[int, ...]] = {}
        handles = []
        for i, block in enumerate(net.cells):
            if isinstance(block, InferCell):
                handles.append(block.register_forward_pre_hook(
                    lambda mod, inp, _i=i: cell_shapes.__setitem__(_i, tuple(inp[0].shape))))
        try:
            skeleton = layer_table(net, self.input_shape)
        finally:
            for h in handles:
                h.remove()
        names = skeleton["name"].tolist()

        def rows(pred: Callable[[str], bool]) -> _Columns:
            return _frame_to_columns(skeleton[[pred(n) for n in names]])

        first_cell = next((k for k, n in enumerate(names) if n.startswith("cells.")), len(names))
        plan: list[tuple[str, object]] = [("rows", (_frame_to_columns(skeleton.iloc[:first_cell]), 0))]
        for i, block in enumerate(net.cells):
            if isinstance(block, InferCell):
                plan.append(("cell", (f"cells.{i}.", cell_shapes[i])))
            else:
                p = f"cells.{i}."
                start = next(k for k, n in enumerate(names) if n.startswith(p))
                plan.append(("rows", (rows(lambda n, p=p: n.startswith(p)), start)))
        last_cell = max((k for k, n in enumerate(names) if n.startswith("cells.")), default=first_cell - 1)
        plan.append(("rows", (_frame_to_columns(skeleton.iloc[last_cell + 1:]), last_cell + 1)))
        starts = [what[1] for kind, what in plan if kind == "rows"]  # type: ignore[index]
        lens = [len(what[0]["name"]) for kind, what in plan if kind == "rows"]  # type: ignore[index]
        if sum(lens) != len(skeleton) or any(a + n != b for a, n, b in zip(starts, lens, starts[1:])):
            # The skeleton is not stem → cells → head; assembling would misplace rows.
            raise RuntimeError("unexpected NAS-Bench-201 network layout; use exact=True")

        ops: dict[tuple[str, tuple[int, ...]], _Columns] = {}
        for shape in set(cell_shapes.values()):
            for op in ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"):
                # One-edge cell: the op's leaf modules are named "ops.0" or "ops.0.<k>".
                t = layer_table(InferCell([(op, 0, 1)], shape[1]), shape)
                cols = _frame_to_columns(t)
                cols["name"] = np.array([n[len("ops.0"):] for n in cols["name"]], dtype=object)
                ops[(op, shape)] = cols
            # The node sum: two skip edges into one node give exactly one row, "add#0".
            t = layer_table(InferCell([("skip_connect", 0, 1), ("skip_connect", 0, 1)], shape[1]), shape)
            if t["name"].tolist() != ["add#0"]:
                raise RuntimeError("unexpected NAS-Bench-201 node sum; use exact=True")
            cols = _frame_to_columns(t)
            cols["name"] = np.array([""], dtype=object)
            ops[("add", shape)] = cols
        self._dtypes = skeleton.dtypes.to_dict()
        self._parts = (plan, ops)

    def _frame(self, columns: dict[str, np.ndarray]) -> pd.DataFrame:
        if not self._dtypes:
            with _one_thread():
                self._prepare()
        data: dict[str, object] = dict(columns)
        for c in _STR_COLUMNS:  # the string dtype layer_table gives them
            data[c] = pd.array(columns[c], dtype=self._dtypes[c])
        return pd.DataFrame(data, columns=LAYER_COLUMNS)

    def _assemble(self, key: tuple[tuple[str, int, int], ...]) -> dict[str, np.ndarray]:
        if self._parts is None:
            self._prepare()
        assert self._parts is not None
        plan, ops = self._parts
        pieces: list[_Columns] = []
        n = 0  # rows placed so far
        # Skeleton row -> the rows that now produce what it produced. A cell passes its input
        # through in the skeleton (no live edge), so after a real cell the skeleton row that fed
        # it stands for the cell's output.
        remap: dict[int, frozenset[int]] = {}
        feeder: int | None = None  # skeleton row whose output the next cell reads

        def place(cols: _Columns, inputs: list[str], prefix: str) -> None:
            nonlocal n
            piece = _rename(cols, prefix)
            piece["inputs"] = np.array(inputs, dtype=object)
            pieces.append(piece)
            n += len(inputs)

        def text(rows: frozenset[int] | set[int]) -> str:
            return ",".join(str(r) for r in sorted(rows))

        for kind, what in plan:
            if kind == "rows":
                cols, start = what  # type: ignore[misc]
                inputs = []
                for j, v in enumerate(cols["inputs"]):
                    srcs: frozenset[int] = frozenset()
                    for r in parse_inputs(v):
                        srcs |= remap.get(r, frozenset())
                    inputs.append(text(srcs))
                    remap[start + j] = frozenset({n + j})
                place(cols, inputs, "")
                if len(inputs):
                    feeder = start + len(inputs) - 1
                continue
            prefix, shape = what  # type: ignore[misc]
            node: dict[int, frozenset[int]] = {0: remap.get(feeder, frozenset()) if feeder is not None
                                               else frozenset()}
            n_add = 0
            for k, (op, src, dst) in enumerate(key):
                cols = ops[(op, shape)]
                base = n
                inputs = [text({base + r for r in parse_inputs(v)}) if v else text(node[src])
                          for v in cols["inputs"]]
                place(cols, inputs, f"{prefix}ops.{k}")
                y = frozenset({n - 1}) if inputs else node[src]
                if dst in node:  # InferCell: nodes[d] = nodes[d] + y
                    place(ops[("add", shape)], [text(node[dst] | y)], f"{prefix}add#{n_add}")
                    n_add += 1
                    node[dst] = frozenset({n - 1})
                else:
                    node[dst] = y
            if feeder is not None:
                remap[feeder] = node.get(3, node[0])
        return {c: np.concatenate([p[c] for p in pieces]) for c in LAYER_COLUMNS}


# --------------------------------------------------------------------------- the import
@dataclass(frozen=True)
class DeviceImport:
    """What an import wrote for one latency column.

    Attributes
    ----------
    device : str
        The imported device's name in the store.
    column : str
        The CSV column its latencies came from.
    imported, skipped, invalid : int
        Measurements written now; rows already stored for this device; rows without a
        positive latency in the column.
    """

    device: str
    column: str
    imported: int
    skipped: int
    invalid: int


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_nb201` did.

    Attributes
    ----------
    device : str
        The device name (several are joined by ``","``).
    rows : int
        CSV rows considered (after ``limit``).
    imported : int
        Measurements written now (all devices).
    skipped : int
        Rows already in the store for their device (a rerun skips them).
    invalid : int
        Rows without a positive latency in the chosen column(s) (not imported).
    layer_tables : int
        Distinct networks featurised now (several may share one stored table).
    seconds : float
        Wall time of the import.
    edges : str
        The build the layer tables describe (``"live"`` or ``"all"``).
    input_shape : list of int
        The input shape of every variant (B×3×32×32).
    devices : list of DeviceImport
        One entry per latency column.
    """

    device: str
    rows: int
    imported: int
    skipped: int
    invalid: int
    layer_tables: int
    seconds: float
    edges: str = "live"
    input_shape: tuple[int, ...] = NB201_INPUT_SHAPE
    devices: tuple[DeviceImport, ...] = ()


def parse_latency_columns(columns: str | Sequence[str], device: str | None = None) -> list[tuple[str, str]]:
    """``COL`` / ``COL=DEVICE`` spellings → ``(column, device)`` pairs.

    A column without ``=DEVICE`` names its device after itself less a trailing ``_ms``;
    ``device`` (the ``--device`` option) names the device of a single column instead.

    Raises
    ------
    UserInputError
        If no column is given, a name is empty, ``device`` is given with several columns or
        contradicts ``COL=DEVICE``, or two columns would fill the same device.
    """
    specs = [columns] if isinstance(columns, str) else list(columns)
    if not specs:
        raise UserInputError("give at least one --latency-column COL[=DEVICE]")
    if device is not None and len(specs) > 1:
        raise UserInputError("--device names the device of a single --latency-column; with "
                             "several columns write each as COL=DEVICE (or leave the default name)")
    out: list[tuple[str, str]] = []
    for spec in specs:
        col, sep, dev = (str(spec).partition("=") if "=" in str(spec) else (str(spec), "", ""))
        col, dev = col.strip(), dev.strip()
        if not col or (sep and not dev):
            raise UserInputError(f"bad --latency-column {spec!r}: write COL or COL=DEVICE")
        if device is not None:
            if sep and dev != device:
                raise UserInputError(f"--latency-column {spec!r} names device {dev!r} but --device "
                                     f"says {device!r}; give one of them")
            dev = device
        if not dev:
            dev = col[:-3] if col.endswith("_ms") and len(col) > 3 else col
        out.append((col, dev))
    seen: dict[str, str] = {}
    for col, dev in out:
        if dev in seen:
            raise UserInputError(f"columns {seen[dev]!r} and {col!r} would both fill device {dev!r}; "
                                 "name the devices with COL=DEVICE")
        seen[dev] = col
    return out


def _read_columns(csv_path: str | Path, columns: Sequence[str], limit: int | None) -> pd.DataFrame:
    p = Path(csv_path)
    if limit is not None and limit <= 0:
        raise UserInputError(f"--limit must be positive, got {limit}")
    if not p.is_file():
        raise UserInputError(f"CSV file {str(p)!r} does not exist")
    try:
        df = pd.read_csv(p, nrows=limit, dtype={"arch": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read {str(p)!r} as CSV: {str(exc).strip()}") from None
    missing = [c for c in ("arch", *columns) if c not in df.columns]
    if missing:
        raise UserInputError(
            f"{str(p)!r} has no column {', '.join(repr(c) for c in missing)}; its columns are: "
            f"{', '.join(map(str, df.columns))}"
        )
    out = {"arch": df["arch"].astype(str).str.strip()}
    for col in columns:
        lat = pd.to_numeric(df[col], errors="coerce")
        bad = df[col].notna() & lat.isna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise UserInputError(
                f"{str(p)!r} row {i + 2}: latency {df[col].iloc[i]!r} in column "
                f"{col!r} is not a number (give the column of latencies in ms)"
            )
        out[col] = lat.where(lat > 0)
    return pd.DataFrame(out)


def read_nb201_csv(csv_path: str | Path, latency_column: str, limit: int | None = None) -> pd.DataFrame:
    """Read the ``arch`` and latency columns of a NAS-Bench-201 latency CSV.

    Returns
    -------
    pandas.DataFrame
        Columns ``arch`` (str) and ``latency_ms`` (float, NaN where missing or not positive).

    Raises
    ------
    UserInputError
        If the file is missing or not a CSV, a column is missing (the message lists the
        columns that exist), a latency is not a number, or ``limit`` is not positive.
    """
    df = _read_columns(csv_path, [latency_column], limit)
    return pd.DataFrame({"arch": df["arch"], "latency_ms": df[latency_column]})


#: MODEL spec prefix of each edge convention (``latbench.models.resolve_model`` builds them).
SPEC_PREFIX = {"live": "nb201:", "all": "nb201-all:"}


def import_nb201(
    csv_path: str | Path,
    *,
    latency_column: str | Sequence[str],
    device: str | None = None,
    db_path: str | Path,
    limit: int | None = None,
    exact: bool = False,
    edges: str = "live",
    batch: int = 1,
    batch_size: int = 500,
    progress: ProgressCallback | None = None,
) -> ImportResult:
    """Import published NAS-Bench-201 latencies into the store at ``db_path``.

    Each architecture is featurised once and its variant (``nb201:<arch>`` for the ``live``
    build, ``nb201-all:<arch>`` for the ``all`` build, input B×3×32×32) gets one imported
    measurement per latency column.

    Parameters
    ----------
    csv_path : path
        A CSV with an ``arch`` column (NAS-Bench-201 architecture strings) and latency
        columns in milliseconds.
    latency_column : str or sequence of str
        The column(s) of latencies in ms, each ``COL`` or ``COL=DEVICE``
        (:func:`parse_latency_columns`).
    device : str, optional
        Name of the device of a single column (default: the column less ``_ms``). Devices are
        recorded with kind ``"imported"`` and info noting the file, column and build.
    db_path : path
        The latency database (created if missing).
    limit : int, optional
        Import only the first ``limit`` rows.
    exact : bool
        Featurise each network by building it (slow reference path, see the module notes).
    edges : {"live", "all"}
        The build that was measured (:mod:`latbench.models.nb201`; README: "Which build did a
        publisher measure?"): ``"live"`` — dead-code-eliminated (LatBench/BRP-NAS);
        ``"all"`` — the reference code's graph, every edge present (HELP, HW-NAS-Bench).
    batch : int
        Input batch size of the measurements.
    batch_size : int
        Rows written per transaction; a kill loses at most one batch, and a rerun resumes.
    progress : callable, optional
        Called as ``progress(done, total)`` after each row.

    Returns
    -------
    ImportResult

    Raises
    ------
    UserInputError
        Bad CSV, missing column, bad architecture string (with its row), bad convention or
        batch, or a device name already used for other data.
    StoreError
        If the database cannot be opened or written.
    """
    t0 = time.perf_counter()
    pairs = parse_latency_columns(latency_column, device)
    feat = NB201Featurizer(exact=exact, cache=False, edges=edges, batch=batch)  # table_ids is the cache
    rows = _read_columns(csv_path, [c for c, _ in pairs], limit)
    path = Path(csv_path)
    source = f"imported:{path.name}"
    shape = feat.input_shape
    prefix = SPEC_PREFIX[edges]
    # The LatBench default (live build, batch 1) keeps the fingerprint earlier imports wrote.
    build = "" if (edges, batch) == ("live", 1) else f":edges={edges}:batch={batch}"
    total = len(rows)
    archs = rows["arch"].tolist()
    counts = {dev: [0, 0, 0] for _, dev in pairs}  # imported, skipped, invalid
    with Store(db_path) as store:
        devs = []
        for col, dev in pairs:
            fingerprint = f"{path.name}:{col}{build}"
            old = store.device_info(dev)
            if old is not None and old["kind"] == "imported" and old["fingerprint"] != fingerprint:
                raise UserInputError(
                    f"device {dev!r} already holds latencies imported from {old['fingerprint']!r}, "
                    f"not {fingerprint!r}; choose another --device name"
                    + (" (write the column as COL=DEVICE)" if len(pairs) > 1 else ""))
            info = DeviceInfo(name=dev, kind="imported", model=col, fingerprint=fingerprint,
                              state={"source_file": str(path.resolve()), "latency_column": col,
                                     "unit": "ms", "edges": edges, "batch": batch})
            dev_id = store.add_device(info, profile={"imported_from": str(path.resolve()),
                                                     "latency_column": col, "edges": edges,
                                                     "batch": batch})
            lats = rows[col].tolist()
            devs.append((dev, dev_id, lats, store.measured_hashes(dev, runtime=IMPORTED_RUNTIME)))
        table_ids: dict[tuple[tuple[str, int, int], ...], int] = {}
        for start in range(0, total, max(1, batch_size)):
            with store.transaction():
                for i in range(start, min(total, start + max(1, batch_size))):
                    arch = archs[i]
                    spec = prefix + arch
                    try:
                        key = feat.cell_key(arch)
                    except UserInputError as exc:
                        raise UserInputError(f"{str(path)!r} row {i + 2}: {exc}") from None
                    chash = default_content_hash(spec)
                    vid = None
                    for dev, dev_id, lats, done_hashes in devs:
                        lat = lats[i]
                        if lat is None or (isinstance(lat, float) and math.isnan(lat)):
                            counts[dev][2] += 1
                            continue
                        if chash in done_hashes:
                            counts[dev][1] += 1
                            continue
                        if vid is None:
                            tid = table_ids.get(key)
                            if tid is None:
                                # Hash first: networks may share a stored table, and only new
                                # ones need a DataFrame and features.
                                cols = feat.columns(key)
                                encoded = encode_layer_columns(cols)
                                tid = store.layer_table_id(encoded[1])
                                if tid is None:
                                    tid = store.add_layer_table(feat.frame(cols), encoded=encoded)
                                table_ids[key] = tid
                            vid = store.add_variant(spec, shape, tid, method="none", content_hash=chash)
                        store.add_imported_measurement(vid, dev_id, lat, device_name=dev,
                                                       input_shape=shape, content_hash=chash,
                                                       source=source)
                        done_hashes.add(chash)
                        counts[dev][0] += 1
                    if progress is not None:
                        progress(i + 1, total)
    per = tuple(DeviceImport(dev, col, *counts[dev]) for col, dev in pairs)
    return ImportResult(device=",".join(d for _, d in pairs), rows=total,
                        imported=sum(d.imported for d in per), skipped=sum(d.skipped for d in per),
                        invalid=sum(d.invalid for d in per), layer_tables=len(table_ids),
                        seconds=time.perf_counter() - t0, edges=edges, input_shape=tuple(shape),
                        devices=per)
