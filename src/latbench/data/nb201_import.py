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
from collections.abc import Callable, Iterator
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
from latbench.models.nb201 import InferCell, build_nb201, live_edges, parse_arch

__all__ = ["NB201_INPUT_SHAPE", "NB201Featurizer", "ImportResult", "import_nb201", "read_nb201_csv"]

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
    """Per-layer tables of NAS-Bench-201 networks at input 1×3×32×32, fast and exact.

    Parameters
    ----------
    exact : bool
        Build each network with :func:`build_nb201` and run :func:`layer_table` on it (slow,
        the reference) instead of assembling it from precomputed parts.
    cache : bool
        Keep each table for later calls (off when the caller keeps its own, to save memory).

    Notes
    -----
    Tables are cached by the architecture's live edges (architectures that differ only in
    dead edges build the same network). The cache is per instance.
    """

    def __init__(self, *, exact: bool = False, cache: bool = True) -> None:
        self.exact = exact
        self.cache = cache
        self._cache: dict[tuple[tuple[str, int, int], ...], pd.DataFrame] = {}
        self._dtypes: dict[str, object] = {}
        self._parts: tuple[list[tuple[str, object]], dict[tuple[str, tuple[int, ...]], _Columns]] | None = None

    @staticmethod
    def cell_key(arch: str) -> tuple[tuple[str, int, int], ...]:
        """The live edges of ``arch``: architectures with equal keys have equal networks.

        Raises
        ------
        UserInputError
            If ``arch`` is not a NAS-Bench-201 architecture string.
        """
        return tuple(live_edges(parse_arch(arch)))

    def table(self, arch: str) -> pd.DataFrame:
        """The layer table of ``build_nb201(arch)`` at 1×3×32×32 (do not modify: it is cached).

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
        """The layer table of the network with live edges ``key`` as column → array (not cached).

        Strings are object arrays and numbers int64: the input of
        :func:`latbench.data.store.encode_layer_columns`, cheaper than a DataFrame.
        """
        if self.exact:
            return _frame_to_columns(self._exact_from_key(key))
        with _one_thread():
            return self._assemble(key)

    @staticmethod
    def _exact_from_key(key: tuple[tuple[str, int, int], ...]) -> pd.DataFrame:
        # Any architecture with these live edges builds this network; write one down.
        ops = {(s, d): op for op, s, d in key}
        groups = ["|" + "|".join(f"{ops.get((s, d), 'none')}~{s}" for s in range(d)) + "|"
                  for d in (1, 2, 3)]
        with _one_thread():
            return NB201Featurizer._exact("+".join(groups))

    def frame(self, columns: dict[str, np.ndarray]) -> pd.DataFrame:
        """A DataFrame with :func:`layer_table`'s columns and dtypes from :meth:`columns`' output."""
        return self._frame(columns)

    def __len__(self) -> int:
        return len(self._cache)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _exact(arch: str) -> pd.DataFrame:
        return layer_table(build_nb201(arch), NB201_INPUT_SHAPE)

    def _prepare(self) -> None:
        net = build_nb201(_EMPTY_ARCH)
        cell_shapes: dict[int, tuple[int, ...]] = {}
        handles = []
        for i, block in enumerate(net.cells):
            if isinstance(block, InferCell):
                handles.append(block.register_forward_pre_hook(
                    lambda mod, inp, _i=i: cell_shapes.__setitem__(_i, tuple(inp[0].shape))))
        try:
            skeleton = layer_table(net, NB201_INPUT_SHAPE)
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
            for op in ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"):
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
class ImportResult:
    """What :func:`import_nb201` did.

    Attributes
    ----------
    rows : int
        CSV rows considered (after ``limit``).
    imported : int
        Measurements written now.
    skipped : int
        Rows already in the store for this device (a rerun skips them).
    invalid : int
        Rows without a positive latency in the chosen column (not imported).
    layer_tables : int
        Distinct networks (sets of live edges) featurised now (several may share one stored
        table).
    seconds : float
        Wall time of the import.
    """

    device: str
    rows: int
    imported: int
    skipped: int
    invalid: int
    layer_tables: int
    seconds: float


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
    p = Path(csv_path)
    if limit is not None and limit <= 0:
        raise UserInputError(f"--limit must be positive, got {limit}")
    if not p.is_file():
        raise UserInputError(f"CSV file {str(p)!r} does not exist")
    try:
        df = pd.read_csv(p, nrows=limit, dtype={"arch": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read {str(p)!r} as CSV: {str(exc).strip()}") from None
    missing = [c for c in ("arch", latency_column) if c not in df.columns]
    if missing:
        raise UserInputError(
            f"{str(p)!r} has no column {', '.join(repr(c) for c in missing)}; its columns are: "
            f"{', '.join(map(str, df.columns))}"
        )
    lat = pd.to_numeric(df[latency_column], errors="coerce")
    bad = df[latency_column].notna() & lat.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserInputError(
            f"{str(p)!r} row {i + 2}: latency {df[latency_column].iloc[i]!r} in column "
            f"{latency_column!r} is not a number (give the column of latencies in ms)"
        )
    lat = lat.where(lat > 0)
    return pd.DataFrame({"arch": df["arch"].astype(str).str.strip(), "latency_ms": lat})


def import_nb201(
    csv_path: str | Path,
    *,
    latency_column: str,
    device: str,
    db_path: str | Path,
    limit: int | None = None,
    exact: bool = False,
    batch_size: int = 500,
    progress: ProgressCallback | None = None,
) -> ImportResult:
    """Import published NAS-Bench-201 latencies into the store at ``db_path``.

    Parameters
    ----------
    csv_path : path
        A CSV with an ``arch`` column (NAS-Bench-201 architecture strings) and a latency
        column in milliseconds.
    latency_column : str
        The column holding the latencies, in ms.
    device : str
        Name of the device in the store; it is recorded with kind ``"imported"`` and info
        noting the file and column.
    db_path : path
        The latency database (created if missing).
    limit : int, optional
        Import only the first ``limit`` rows.
    exact : bool
        Featurise each network by building it (slow reference path, see the module notes).
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
        Bad CSV, missing column, bad architecture string (with its row), or a device name
        already used for other data.
    StoreError
        If the database cannot be opened or written.
    """
    t0 = time.perf_counter()
    rows = read_nb201_csv(csv_path, latency_column, limit)
    path = Path(csv_path)
    source = f"imported:{path.name}"
    fingerprint = f"{path.name}:{latency_column}"
    info = DeviceInfo(name=device, kind="imported", model=latency_column, fingerprint=fingerprint,
                      state={"source_file": str(path.resolve()), "latency_column": latency_column,
                             "unit": "ms"})
    feat = NB201Featurizer(exact=exact, cache=False)  # table_ids below is the cache
    total = len(rows)
    imported = skipped = invalid = 0
    with Store(db_path) as store:
        old = store.device_info(device)
        if old is not None and old["kind"] == "imported" and old["fingerprint"] != fingerprint:
            raise UserInputError(
                f"device {device!r} already holds latencies imported from {old['fingerprint']!r}, "
                f"not {fingerprint!r}; choose another --device name"
            )
        device_id = store.add_device(info, profile={"imported_from": str(path.resolve()),
                                                    "latency_column": latency_column})
        done_hashes = store.measured_hashes(device, runtime=IMPORTED_RUNTIME)
        table_ids: dict[tuple[tuple[str, int, int], ...], int] = {}
        archs = rows["arch"].tolist()
        lats = rows["latency_ms"].tolist()
        for start in range(0, total, max(1, batch_size)):
            with store.transaction():
                for i in range(start, min(total, start + max(1, batch_size))):
                    arch, lat = archs[i], lats[i]
                    spec = "nb201:" + arch
                    try:
                        key = feat.cell_key(arch)
                    except UserInputError as exc:
                        raise UserInputError(f"{str(path)!r} row {i + 2}: {exc}") from None
                    chash = default_content_hash(spec)
                    if lat is None or (isinstance(lat, float) and math.isnan(lat)):
                        invalid += 1
                    elif chash in done_hashes:
                        skipped += 1
                    else:
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
                        vid = store.add_variant(spec, NB201_INPUT_SHAPE, tid, method="none",
                                                content_hash=chash)
                        store.add_imported_measurement(vid, device_id, lat, device_name=device,
                                                       input_shape=NB201_INPUT_SHAPE,
                                                       content_hash=chash, source=source)
                        done_hashes.add(chash)
                        imported += 1
                    if progress is not None:
                        progress(i + 1, total)
    return ImportResult(device=device, rows=total, imported=imported, skipped=skipped,
                        invalid=invalid, layer_tables=len(table_ids), seconds=time.perf_counter() - t0)
