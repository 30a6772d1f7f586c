"""The latency store: an append-only SQLite database of devices, variants and measurements.

Writes run in ``BEGIN IMMEDIATE`` transactions that commit at once (WAL mode, a busy timeout),
so a killed process loses at most the row it was writing, and several processes may write
the same database: every table has a natural unique key and inserts are ``INSERT OR IGNORE``,
so a row written twice (a rerun, a race) is stored once and both writers get its id.

Group many writes into one transaction (much faster, still all-or-nothing) with
:meth:`Store.transaction`::

    with Store("lat.db") as store:
        dev = store.add_device(device.info())
        with store.transaction():
            vid = store.add_variant("resnet18", (1, 3, 224, 224), layer_table(model, shape),
                                    plan=plan, method="svd", content_hash=artifact.sha256)
            store.add_measurement(vid, dev, measurement)

Layer tables are stored once per distinct content (NAS-Bench-201 variants share few tables)
in a compact column format (:func:`encode_layer_table`).

Concurrent measuring processes split the work through **claims**: before measuring an item
(a variant, or a layer timed alone, on one device, runtime and format) a process claims it
(:meth:`Store.claim`); another process skips what is claimed by a live owner, and takes
over the claim of a dead one (killed with ``kill -9``: its pid is gone, or another host's
lease ran out). See :meth:`Store.claim`, :meth:`Store.release`, :meth:`Store.claims`.

Readers that only look (``bench data summary``, ``export``, ``predictor evaluate``,
``report``) open the store with ``read_only=True``: SQLite's ``mode=ro`` (``immutable`` in a
folder this user cannot write), never changing the file, so a store in a read-only folder or
another user's store can be read.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import struct
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latbench.concurrency import ProcessId, is_alive, this_process
from latbench.measure.measurement import Measurement
from latbench.measure.spec import BenchSpec, DeviceInfo
from latbench.data.schema import MIN_READABLE_VERSION, SCHEMA_VERSION, ensure_schema, read_version
from latbench.exceptions import StoreError, UserInputError

# latbench.data.features (and so torch) is imported inside the methods that need it: reading
# the store (`bench data summary`, resume checks) should not pay for importing torch.

__all__ = [
    "Store",
    "noisy_counts",
    "shape_str",
    "parse_shape_str",
    "encode_layer_table",
    "encode_layer_columns",
    "decode_layer_table",
    "IMPORTED_RUNTIME",
    "default_content_hash",
    "variant_claim",
    "layer_claim",
    "CLAIM_LEASE_S",
]

#: ``runtime`` of measurements imported from published data (no runtime of ours ran them).
IMPORTED_RUNTIME = "imported"

_CODEC_VERSION = 1

#: How long a claim holds without renewal, in seconds. A claim of a process of this host
#: holds while that process runs, whatever its lease; the lease is what judges owners that
#: cannot be checked from here (another host, or a driver's named workers).
CLAIM_LEASE_S = 3600.0


def variant_claim(content_hash: str, input_shape: Sequence[int] | str, device: str,
                  runtime: str, runtime_version: str, threads: int, format: str) -> str:
    """The claim item of measuring a variant on a device with one runtime, threads and
    artifact format (what :meth:`Store.has_measurement` asks about)."""
    return json.dumps(["variant", content_hash, shape_str(input_shape), device, runtime,
                       runtime_version, int(threads), format], separators=(",", ":"))


def layer_claim(layer_key: str, device: str, runtime: str, runtime_version: str, threads: int,
                format: str) -> str:
    """The claim item of timing one layer configuration alone (what
    :meth:`Store.has_layer_measurement` asks about)."""
    return json.dumps(["layer", layer_key, device, runtime, runtime_version, int(threads),
                       format], separators=(",", ":"))


def _claim_live(owner: str, expires_at: float, now: float) -> bool:
    """Whether a claim still holds: its owner process runs (this host), or its lease has not
    run out (another host, or an owner that is not a process id)."""
    proc = ProcessId.parse(owner)
    alive = is_alive(proc) if proc is not None else None
    if alive is not None:
        return alive
    return now < expires_at


def shape_str(shape: Sequence[int] | str) -> str:
    """``(1, 3, 32, 32)`` → ``"1x3x32x32"`` (a string passes through after a check).

    Raises
    ------
    UserInputError
        If the shape is empty or holds a non-positive or non-integer size.
    """
    if isinstance(shape, str):
        shape = parse_shape_str(shape)
    try:
        dims = [int(s) for s in shape]
    except (TypeError, ValueError):
        dims = []
    if not dims or any(d <= 0 for d in dims):
        raise UserInputError(f"bad input shape {shape!r}: give positive sizes like (1, 3, 32, 32)")
    return "x".join(str(d) for d in dims)


def parse_shape_str(text: str) -> tuple[int, ...]:
    """``"1x3x32x32"`` → ``(1, 3, 32, 32)``.

    Raises
    ------
    UserInputError
        If the text is not positive integers separated by ``x``.
    """
    try:
        dims = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise UserInputError(f"bad input shape {text!r}: write it like 1x3x32x32")
    return dims


# --------------------------------------------------------------------------- layer-table codec
def encode_layer_table(table: pd.DataFrame) -> tuple[bytes, str]:
    """Serialise a layer table compactly and hash its content.

    String columns go into a JSON header; numeric columns are stored as contiguous
    little-endian arrays, int64 ones first then float64 ones, each in column order. The whole
    is zlib-compressed. The hash covers the uncompressed bytes, so equal tables hash equal.

    Returns
    -------
    (bytes, str)
        The blob and the hex sha256 of the table's content.
    """
    n = int(len(table))
    columns: list[list[str]] = []
    ints: list[str] = []
    floats: list[str] = []
    strings: dict[str, list[str]] = {}
    for col, dtype in table.dtypes.items():
        name = str(col)
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_integer_dtype(dtype):
            columns.append([name, "<i8"])
            ints.append(col)
        elif pd.api.types.is_float_dtype(dtype):
            columns.append([name, "<f8"])
            floats.append(col)
        else:
            columns.append([name, "str"])
            strings[name] = [str(v) for v in table[col].tolist()]
    # One conversion per dtype block (column access is slow in pandas).
    int_block = table[ints].to_numpy(dtype="<i8").T if ints else None
    float_block = table[floats].to_numpy(dtype="<f8").T if floats else None
    return _pack(n, columns, strings, int_block, float_block)


def encode_layer_columns(columns: Mapping[str, np.ndarray]) -> tuple[bytes, str]:
    """:func:`encode_layer_table` of a table given as column name → 1-D array (same bytes, hash).

    Object arrays are string columns, integer and bool arrays int64, float arrays float64.
    """
    n = len(next(iter(columns.values()))) if columns else 0
    spec: list[list[str]] = []
    strings: dict[str, list[str]] = {}
    ints: list[np.ndarray] = []
    floats: list[np.ndarray] = []
    for name, arr in columns.items():
        if arr.dtype.kind in "iub":
            spec.append([name, "<i8"])
            ints.append(arr)
        elif arr.dtype.kind == "f":
            spec.append([name, "<f8"])
            floats.append(arr)
        else:
            spec.append([name, "str"])
            strings[name] = [str(v) for v in arr.tolist()]
    int_block = np.stack(ints).astype("<i8") if ints else None
    float_block = np.stack(floats).astype("<f8") if floats else None
    return _pack(n, spec, strings, int_block, float_block)


def _pack(n: int, columns: list[list[str]], strings: dict[str, list[str]],
          int_block: np.ndarray | None, float_block: np.ndarray | None) -> tuple[bytes, str]:
    header = {"v": _CODEC_VERSION, "n": n, "columns": columns, "strings": strings}
    head = json.dumps(header, separators=(",", ":")).encode()
    parts = [struct.pack("<I", len(head)), head]
    for block in (int_block, float_block):
        if block is not None:  # (columns, rows): each column's values contiguous
            parts.append(np.ascontiguousarray(block).tobytes())
    raw = b"".join(parts)
    return zlib.compress(raw, 6), hashlib.sha256(raw).hexdigest()


def decode_layer_table(blob: bytes, intern: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_layer_table`: column name → numpy array, in stored order.

    Parameters
    ----------
    blob : bytes
    intern : dict, optional
        A shared string pool; equal strings of many tables then share one object (memory).

    Raises
    ------
    StoreError
        If the blob is not a layer table this latbench can read.
    """
    try:
        raw = zlib.decompress(blob)
        (n_head,) = struct.unpack_from("<I", raw, 0)
        header = json.loads(raw[4:4 + n_head])
    except (zlib.error, struct.error, ValueError) as exc:
        raise StoreError(f"a stored layer table is corrupt ({exc}); re-import the data") from None
    if header.get("v") != _CODEC_VERSION:
        raise StoreError(f"a stored layer table has codec version {header.get('v')!r}; "
                         "upgrade latbench")
    n = int(header["n"])
    offset = 4 + n_head
    found: dict[str, np.ndarray] = {}
    for tag in ("<i8", "<f8"):  # the order encode_layer_table wrote the blocks in
        for name, dtype in header["columns"]:
            if dtype == tag:
                found[name] = np.frombuffer(raw, dtype=tag, count=n, offset=offset).astype(tag[1:])
                offset += n * 8
    out: dict[str, np.ndarray] = {}
    for name, dtype in header["columns"]:
        if dtype == "str":
            values = header["strings"][name]
            if intern is not None:
                values = [intern.setdefault(v, v) for v in values]
            arr = np.empty(n, dtype=object)
            arr[:] = values
            out[name] = arr
        else:
            out[name] = found[name]
    return out


def default_content_hash(source: str, plan: Any = None) -> str:
    """The content hash of a variant that has no exported artifact: sha256 of source and plan JSON."""
    plan_json = _plan_json(plan)
    return hashlib.sha256(f"{source}\n{plan_json or ''}".encode()).hexdigest()


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _plan_json(plan: Any) -> str | None:
    if plan is None:
        return None
    if isinstance(plan, str):
        try:
            return _json(json.loads(plan))
        except ValueError:
            raise UserInputError("the plan given to the store is not JSON; pass a Plan or a dict") from None
    if hasattr(plan, "to_dict"):
        return _json(plan.to_dict())
    if isinstance(plan, Mapping):
        return _json(dict(plan))
    raise UserInputError(f"cannot store a plan of type {type(plan).__name__}; pass a Plan or a dict")


class _Busy(Exception):
    """SQLite answered "database is locked/busy" while a store was being opened."""


class _OldSchema(Exception):
    """A read-only open met a schema it cannot read without migrating."""


# --------------------------------------------------------------------------- the store
class Store:
    """A latency database at ``path`` (created with the current schema if missing).

    Parameters
    ----------
    path : str or Path
        The SQLite file. Its parent directory must exist.
    timeout_s : float
        How long a write waits for another process's lock before failing, in seconds.
    read_only : bool
        Open an existing store for reading only (SQLite ``mode=ro``, or ``immutable=1``
        where a WAL store's folder cannot be written): nothing in the file changes, not even
        its journal mode, so stores in read-only folders and foreign files are safe to point
        at. A store of schema 1 is migrated first when this user can write it (as a
        writable open would), else refused. Every write raises :class:`StoreError`.

    Raises
    ------
    UserInputError
        If the folder does not exist (or, read-only, the file does not).
    StoreError
        If the file is not a latbench store, was written by a newer latbench, or cannot be
        opened.

    Notes
    -----
    One ``Store`` belongs to one thread; open another ``Store`` per process or thread.
    """

    def __init__(self, path: str | Path, *, timeout_s: float = 60.0,
                 read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = bool(read_only)
        self._depth = 0
        if not self.path.parent.exists():
            raise UserInputError(f"the directory of database {str(self.path)!r} does not exist; "
                                 "create it or give another --db path")
        if self.read_only:
            try:
                self._conn = self._open_read_only(timeout_s)
            except _OldSchema as old:
                if not (os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)):
                    raise StoreError(str(old)) from None
                Store(self.path, timeout_s=timeout_s).close()  # migrate once, as before
                self._conn = self._open_read_only(timeout_s)
            return
        deadline = time.monotonic() + timeout_s
        pause = 0.02
        while True:
            try:
                self._conn = self._open_writable(timeout_s)
                return
            except _Busy as exc:
                # Two processes creating or first opening one store at once: switching the
                # journal to WAL takes an exclusive lock for which SQLite may answer "locked"
                # at once instead of waiting (its busy handler is not called there). Retry
                # the whole open until the timeout.
                if time.monotonic() + pause > deadline:
                    raise StoreError(f"cannot open latency database {str(self.path)!r}: "
                                     f"{exc.__cause__} (for {timeout_s:g} s)") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def _open_writable(self, timeout_s: float) -> sqlite3.Connection:
        """Connect, refuse a foreign file, switch to WAL, create or migrate the schema.

        Raises ``_Busy`` where SQLite answered "database is locked/busy" without waiting.
        """
        try:
            # Autocommit mode: we issue BEGIN IMMEDIATE ourselves so a writer takes the write
            # lock up front (a deferred read→write upgrade fails at once under WAL).
            conn = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open latency database {str(self.path)!r}: {exc}"
                             f"{self._folder_hint()}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            # Refuse a foreign file before anything changes it (WAL mode is stored in the file).
            read_version(conn)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot switch {str(self.path)!r} to WAL mode (got {mode!r})")
            # NORMAL is durable across process kills in WAL mode (only power loss may drop
            # the last commits) and makes each small commit cheap.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            ensure_schema(conn)
        except StoreError as exc:
            conn.close()
            raise StoreError(f"{str(self.path)!r}: {exc}") from None
        except sqlite3.OperationalError as exc:
            conn.close()
            text = str(exc).lower()
            if "locked" in text or "busy" in text:
                raise _Busy() from exc
            raise StoreError(f"cannot open latency database {str(self.path)!r}: {exc}"
                             f"{self._folder_hint()}") from None
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"cannot open latency database {str(self.path)!r}: {exc}"
                             f"{self._folder_hint()}") from None
        return conn

    def _folder_hint(self) -> str:
        folder = self.path.parent
        if not os.access(folder, os.W_OK) or (self.path.exists()
                                              and not os.access(self.path, os.W_OK)):
            return (" (this user cannot write it or its folder; commands that only read the "
                    "store open it read-only, a sweep needs a writable --db)")
        return ""

    def _open_read_only(self, timeout_s: float) -> sqlite3.Connection:
        """Open without writing anything: ``mode=ro``; where SQLite cannot set up WAL
        reading (a WAL store in a folder this user cannot write), ``immutable=1``."""
        if not self.path.is_file():
            raise UserInputError(f"latency database {str(self.path)!r} does not exist")
        uri = self.path.resolve().as_uri()
        last: sqlite3.DatabaseError | None = None
        for query in ("mode=ro", "mode=ro&immutable=1"):
            try:
                conn = sqlite3.connect(f"{uri}?{query}", uri=True, timeout=timeout_s,
                                       isolation_level=None)
            except sqlite3.DatabaseError as exc:
                last = exc
                continue
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
                version = read_version(conn)
            except sqlite3.OperationalError as exc:  # e.g. no -shm and a read-only folder
                conn.close()
                last = exc
                continue
            except sqlite3.DatabaseError as exc:
                conn.close()
                raise StoreError(f"cannot read latency database {str(self.path)!r}: {exc}"
                                 ) from None
            except StoreError as exc:
                conn.close()
                raise StoreError(f"{str(self.path)!r}: {exc}") from None
            if version is None:
                conn.close()
                raise StoreError(f"{str(self.path)!r} is an empty database, not a latbench store")
            if version > SCHEMA_VERSION:
                conn.close()
                raise StoreError(f"{str(self.path)!r} was written by a newer latbench (schema "
                                 f"{version} > {SCHEMA_VERSION}): upgrade latbench")
            if version < MIN_READABLE_VERSION:
                conn.close()
                raise _OldSchema(f"{str(self.path)!r} has the old store schema {version}; open "
                                 "it once where it can be written (e.g. run `bench data summary` "
                                 "on a copy in a writable folder) to migrate it")
            return conn
        raise StoreError(f"cannot open latency database {str(self.path)!r} read-only: {last}")

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connection (pending transactions were already committed)."""
        self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The underlying connection, for read-only queries (e.g. :func:`pandas.read_sql`)."""
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one transaction: committed on exit, rolled back on an error.

        Nested uses join the outer transaction. Every ``add_*`` method opens its own
        transaction when called outside this block. SQLite errors inside the block (a full
        disk, a file that became read-only) roll it back and become a :class:`StoreError`
        saying so: what earlier transactions committed stays.

        Raises
        ------
        StoreError
            If the database stays locked by another writer longer than ``timeout_s``, the
            disk is full, the store was opened read-only, or SQLite cannot write it.
        """
        if self.read_only:
            raise StoreError(f"{str(self.path)!r} was opened read-only; open it without "
                             "read_only=True to write")
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise self._write_error(exc) from None
        self._depth = 1
        try:
            yield
        except sqlite3.DatabaseError as exc:
            self._depth = 0
            self._rollback()
            raise self._write_error(exc) from None
        except BaseException:
            self._depth = 0
            self._rollback()
            raise
        self._depth = 0
        try:
            self._conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self._rollback()
            raise self._write_error(exc) from None

    def _rollback(self) -> None:
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.DatabaseError:  # SQLite may have rolled back itself (SQLITE_FULL)
            pass

    def _write_error(self, exc: sqlite3.DatabaseError) -> StoreError:
        text = str(exc)
        where = str(self.path)
        kept = "this write was rolled back; everything stored before it is kept"
        if "full" in text.lower():
            return StoreError(f"cannot write {where!r}: the disk is full ({text}); {kept} — "
                              "free space (or give another --db) and rerun")
        if "locked" in text.lower() or "busy" in text.lower():
            return StoreError(f"cannot write {where!r}: {text}; another process holds it too "
                              "long")
        if "readonly" in text.lower() or "read-only" in text.lower():
            return StoreError(f"cannot write {where!r}: it is read-only for this user ({text}); "
                              f"{kept}")
        return StoreError(f"cannot write {where!r}: {text}; {kept}")

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        row = self._conn.execute(sql, args).fetchone()
        return None if row is None else row[0]

    # ------------------------------------------------------------------ devices
    def add_device(self, info: DeviceInfo, profile: Mapping[str, Any] | None = None) -> int:
        """Record a device (by ``info.name``) and return its id; idempotent.

        A device seen again keeps its id; its kind, fingerprint, profile and info are updated
        to the latest (measurements keep the state they were taken in).

        Raises
        ------
        UserInputError
            If the name is already used by a device of another kind (e.g. an imported one).
        """
        now = time.time()
        with self.transaction():
            old = self._conn.execute("SELECT id, kind FROM devices WHERE name=?", (info.name,)).fetchone()
            if old is not None and old[1] != info.kind:
                raise UserInputError(
                    f"device name {info.name!r} is already in the store as a {old[1]!r} device, "
                    f"not {info.kind!r}; choose another device name"
                )
            args = (info.kind, info.fingerprint, _json(dict(profile or {})), _json(info.to_dict()))
            if old is not None:
                self._conn.execute(
                    "UPDATE devices SET kind=?, fingerprint=?, profile=?, info=? WHERE id=?",
                    (*args, old[0]))
                return int(old[0])
            self._conn.execute(
                "INSERT OR IGNORE INTO devices(name, kind, fingerprint, profile, info, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", (info.name, *args, now))
            return int(self._one("SELECT id FROM devices WHERE name=?", (info.name,)))

    def device_id(self, name: str) -> int | None:
        """The id of the device called ``name``, or ``None``."""
        v = self._one("SELECT id FROM devices WHERE name=?", (name,))
        return None if v is None else int(v)

    def device_info(self, name: str) -> dict[str, Any] | None:
        """The stored row of device ``name`` (profile and info decoded), or ``None``."""
        row = self._conn.execute(
            "SELECT id, name, kind, fingerprint, profile, info FROM devices WHERE name=?", (name,)
        ).fetchone()
        if row is None:
            return None
        return dict(id=row[0], name=row[1], kind=row[2], fingerprint=row[3],
                    profile=json.loads(row[4]), info=json.loads(row[5]))

    def devices(self) -> pd.DataFrame:
        """One row per device: ``id, name, kind, fingerprint, profile, info`` (JSON strings)."""
        return pd.read_sql("SELECT id, name, kind, fingerprint, profile, info FROM devices "
                           "ORDER BY id", self._conn)

    # ------------------------------------------------------------------ variants
    def add_layer_table(self, layers: pd.DataFrame, *, encoded: tuple[bytes, str] | None = None) -> int:
        """Store a layer table once per distinct content; return its id (idempotent).

        Parameters
        ----------
        layers : DataFrame
            A :func:`~latbench.data.features.layer_table`.
        encoded : (bytes, str), optional
            ``encode_layer_table(layers)`` if the caller already has it (saves encoding twice).
        """
        from latbench.data.features import FEATURE_SCHEMA_VERSION, model_features

        blob, digest = encoded if encoded is not None else encode_layer_table(layers)
        with self.transaction():
            found = self._one("SELECT id FROM layer_tables WHERE table_hash=?", (digest,))
            if found is not None:
                return int(found)
            feats = model_features(layers)
            self._conn.execute(
                "INSERT OR IGNORE INTO layer_tables(table_hash, n_layers, feature_schema_version, "
                "features, data) VALUES (?, ?, ?, ?, ?)",
                (digest, int(len(layers)), FEATURE_SCHEMA_VERSION, _json(feats), blob))
            return int(self._one("SELECT id FROM layer_tables WHERE table_hash=?", (digest,)))

    def layer_table_id(self, table_hash: str) -> int | None:
        """The id of the stored layer table with this content hash, or ``None``."""
        v = self._one("SELECT id FROM layer_tables WHERE table_hash=?", (table_hash,))
        return None if v is None else int(v)

    def add_variant(
        self,
        source: str,
        input_shape: Sequence[int] | str,
        layers: pd.DataFrame | int,
        *,
        plan: Any = None,
        method: str | None = None,
        content_hash: str | None = None,
    ) -> int:
        """Record a model variant and its layer table; return its id (idempotent).

        Parameters
        ----------
        source : str
            The MODEL spec it was made from (``resnet18``, ``nb201:<arch>``...).
        input_shape : sequence of int or str
            Full input shape with the batch, e.g. ``(1, 3, 224, 224)`` or ``"1x3x224x224"``.
        layers : DataFrame or int
            Its :func:`~latbench.data.features.layer_table`, or the id returned by
            :meth:`add_layer_table`.
        plan : Plan, dict or None
            The compression plan (anything with ``to_dict()``, a mapping, or JSON text).
        method : str, optional
            ``svd``, ``cp``... , ``"mixed"`` for several, ``"none"`` (the default without a plan).
        content_hash : str, optional
            What identifies the variant: the exported artifact's sha256. Defaults to the
            sha256 of ``source`` and the plan JSON.

        Returns
        -------
        int
            The variant id; the same (content hash, input shape) always returns the same id,
            and the first stored description wins.

        Raises
        ------
        UserInputError
            If the shape or plan is malformed.
        """
        shape = shape_str(input_shape)
        plan_json = _plan_json(plan)
        if method is None:
            method = "none" if plan_json is None else "mixed"
        if content_hash is None:
            content_hash = default_content_hash(source, plan_json)
        with self.transaction():
            found = self._one("SELECT id FROM variants WHERE content_hash=? AND input_shape=?",
                              (content_hash, shape))
            if found is not None:
                return int(found)
            table_id = layers if isinstance(layers, (int, np.integer)) else self.add_layer_table(layers)
            self._conn.execute(
                "INSERT OR IGNORE INTO variants(content_hash, input_shape, source_model, method, plan, "
                "layer_table_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (content_hash, shape, source, method, plan_json, int(table_id), time.time()))
            return int(self._one("SELECT id FROM variants WHERE content_hash=? AND input_shape=?",
                                 (content_hash, shape)))

    def variant_id(self, content_hash: str, input_shape: Sequence[int] | str) -> int | None:
        """The id of the variant with this content hash and input shape, or ``None``."""
        v = self._one("SELECT id FROM variants WHERE content_hash=? AND input_shape=?",
                      (content_hash, shape_str(input_shape)))
        return None if v is None else int(v)

    # ------------------------------------------------------------------ measurements
    def add_measurement(self, variant_id: int, device_id: int, measurement: Measurement,
                        *, source: str = "measured") -> int:
        """Store one measurement of a variant on a device; return its id (idempotent).

        The same measurement (same spec and timestamp) stored twice is kept once.

        Parameters
        ----------
        source : str
            ``"measured"`` or ``"imported:<file>"``.
        """
        m, spec = measurement, measurement.spec
        stats = m.summary()
        return self._insert_measurement(
            variant_id, device_id, repr(m.timestamp), spec, list(m.samples_s), stats,
            info_before=_json(m.info_before.to_dict()), info_after=_json(m.info_after.to_dict()),
            extra=_json(m.extra), timestamp=m.timestamp, source=source)

    def add_imported_measurement(self, variant_id: int, device_id: int, latency_ms: float, *,
                                 device_name: str, input_shape: Sequence[int] | str,
                                 content_hash: str, source: str) -> int:
        """Store a published latency (one number, in ms) as a one-sample measurement.

        Its runtime is :data:`IMPORTED_RUNTIME`; ``confident`` and ``throttled`` are unknown
        (NULL), and one variant holds at most one imported latency per device.

        Raises
        ------
        UserInputError
            If ``latency_ms`` is not a positive finite number.
        """
        lat = float(latency_ms)
        if not np.isfinite(lat) or lat <= 0:
            raise UserInputError(f"latency {latency_ms!r} ms is not a positive number")
        spec = BenchSpec(artifact_sha256=content_hash, device=device_name, runtime=IMPORTED_RUNTIME,
                         runtime_version="", provider="", threads=0,
                         input_shape=parse_shape_str(shape_str(input_shape)), warmup=0, repeats=1)
        stats = dict(median_ms=lat, mean_ms=lat, std_ms=0.0, min_ms=lat, p10_ms=lat, p90_ms=lat,
                     iqr_ms=0.0, n_samples=1, confident=None, throttled=None)
        return self._insert_measurement(variant_id, device_id, "imported", spec, [lat / 1e3], stats,
                                        info_before=None, info_after=None, extra=None,
                                        timestamp=None, source=source)

    def _insert_measurement(self, variant_id: int, device_id: int, record_suffix: str,
                            spec: BenchSpec, samples_s: list[float], stats: Mapping[str, Any],
                            *, info_before: str | None, info_after: str | None,
                            extra: str | None, timestamp: float | None, source: str) -> int:
        def opt_bool(v: Any) -> int | None:
            return None if v is None else int(bool(v))

        spec_dict = spec.to_dict()
        fmt = "" if spec.runtime == IMPORTED_RUNTIME else spec.format
        # Same digest as BenchSpec.key, without converting the spec to a dict twice.
        spec_key = hashlib.sha256(json.dumps(spec_dict, sort_keys=True).encode()).hexdigest()[:16]
        # A measurement's identity: a rerun or a second writer of the same one is ignored.
        record_key = f"{variant_id}:{device_id}:{spec_key}:{record_suffix}"
        with self.transaction():
            self._conn.execute(
                "INSERT OR IGNORE INTO measurements(variant_id, device_id, record_key, spec_key, spec, "
                "runtime, runtime_version, provider, threads, format, samples_s, median_ms, mean_ms, "
                "std_ms, min_ms, p10_ms, p90_ms, iqr_ms, n_samples, confident, throttled, info_before, "
                "info_after, extra, timestamp, source, created_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (int(variant_id), int(device_id), record_key, spec_key, _json(spec_dict),
                 spec.runtime, spec.runtime_version, spec.provider, int(spec.threads), fmt,
                 _json(samples_s), stats["median_ms"], stats["mean_ms"], stats["std_ms"],
                 stats["min_ms"], stats["p10_ms"], stats["p90_ms"], stats["iqr_ms"],
                 int(stats["n_samples"]), opt_bool(stats["confident"]), opt_bool(stats["throttled"]),
                 info_before, info_after, extra, timestamp, source, time.time()))
            return int(self._one("SELECT id FROM measurements WHERE record_key=?", (record_key,)))

    def has_measurement(self, content_hash: str, input_shape: Sequence[int] | str, device_name: str,
                        runtime: str, runtime_version: str, threads: int, *,
                        format: str | None = None) -> bool:
        """Whether this variant was already measured on this device with this runtime, threads
        and (when given) artifact format (``onnx``, ``tflite``).

        The sweep calls it to resume: a hit means "skip".
        """
        sql = ("SELECT 1 FROM measurements m JOIN variants v ON v.id = m.variant_id "
               "JOIN devices d ON d.id = m.device_id WHERE v.content_hash=? AND v.input_shape=? "
               "AND d.name=? AND m.runtime=? AND m.runtime_version=? AND m.threads=?")
        args: list[Any] = [content_hash, shape_str(input_shape), device_name, runtime,
                           runtime_version, int(threads)]
        if format is not None:
            sql += " AND m.format=?"
            args.append(format)
        return self._one(sql + " LIMIT 1", args) is not None

    def measured_hashes(self, device_name: str, runtime: str | None = None) -> set[str]:
        """Content hashes of the variants measured on ``device_name`` (optionally one runtime)."""
        sql = ("SELECT DISTINCT v.content_hash FROM measurements m JOIN variants v ON v.id=m.variant_id "
               "JOIN devices d ON d.id=m.device_id WHERE d.name=?")
        args: list[Any] = [device_name]
        if runtime is not None:
            sql += " AND m.runtime=?"
            args.append(runtime)
        return {r[0] for r in self._conn.execute(sql, args)}

    # ------------------------------------------------------------------ failures
    def add_failure(self, stage: str, error: str, *, device_id: int | None = None,
                    variant_id: int | None = None, source_model: str | None = None,
                    content_hash: str | None = None, plan: Any = None) -> int:
        """Log a failure (``stage`` such as ``compress``, ``export``, ``measure``); return its id.

        Give whatever is known: a failure before export has no variant yet, only a source
        model and plan.
        """
        with self.transaction():
            cur = self._conn.execute(
                "INSERT INTO failures(device_id, variant_id, source_model, content_hash, plan, stage, "
                "error, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (device_id, variant_id, source_model, content_hash, _plan_json(plan), stage,
                 str(error), time.time()))
            return int(cur.lastrowid)

    def failures(self) -> pd.DataFrame:
        """All failures: ``id, device, variant_id, source_model, content_hash, plan, stage, error, timestamp``."""
        return pd.read_sql(
            "SELECT f.id, d.name AS device, f.variant_id, COALESCE(f.source_model, v.source_model) "
            "AS source_model, COALESCE(f.content_hash, v.content_hash) AS content_hash, "
            "COALESCE(f.plan, v.plan) AS plan, f.stage, f.error, f.timestamp FROM failures f "
            "LEFT JOIN devices d ON d.id=f.device_id LEFT JOIN variants v ON v.id=f.variant_id "
            "ORDER BY f.id", self._conn)

    def failed_since(self, content_hash: str, device_name: str, since: float) -> str | None:
        """The error of the newest failure of variant ``content_hash`` on ``device_name``
        logged at or after ``since`` (seconds since the epoch), or ``None``."""
        return self._one(
            "SELECT f.stage || ': ' || f.error FROM failures f JOIN devices d ON d.id=f.device_id "
            "WHERE f.content_hash=? AND d.name=? AND f.timestamp>=? ORDER BY f.id DESC LIMIT 1",
            (content_hash, device_name, float(since)))

    # ------------------------------------------------------------------ claims
    def claim(self, item: str, *, owner: str | None = None, lease_s: float = CLAIM_LEASE_S,
              note: str = "") -> bool:
        """Claim ``item`` for ``owner`` before measuring it; ``False`` if someone else holds it.

        A claim holds while its owner works: an owner that is a process of this host
        (``host:pid:start``, the default owner) holds it while that process runs, whatever
        the lease; any other owner (a process of another host, or a name a driver gives its
        workers, e.g. ``"ray:worker-3"``) holds it until the lease runs out. A claim that no
        longer holds (a ``kill -9``-ed process, a lapsed lease) is taken over. Claiming what
        the owner already holds renews it.

        The check and the take-over are one ``BEGIN IMMEDIATE`` transaction, so of several
        processes claiming one item at once exactly one gets it. A single-writer driver
        (e.g. a device farm handing items to remote workers) calls this with each worker's
        name as ``owner``, :meth:`renew` while the worker runs and :meth:`release` when its
        result is stored.

        Parameters
        ----------
        item : str
            What is claimed: :func:`variant_claim` or :func:`layer_claim`, or any string a
            driver chooses.
        owner : str, optional
            Who claims; this process (:func:`latbench.concurrency.this_process`) by default.
        lease_s : float
            Seconds the claim holds without :meth:`renew` for owners whose liveness cannot
            be checked from here.
        note : str
            What it is, for people reading :meth:`claims` (e.g. ``"resnet18 svd@0.5"``).

        Returns
        -------
        bool
            Whether ``owner`` holds the claim now.

        Raises
        ------
        UserInputError
            If ``lease_s`` is not a positive finite number.
        StoreError
            If the store cannot be written.
        """
        if not (isinstance(lease_s, (int, float)) and np.isfinite(lease_s) and lease_s > 0):
            raise UserInputError(f"lease_s must be a positive number of seconds, got {lease_s!r}")
        who = owner if owner is not None else str(this_process())
        now = time.time()
        with self.transaction():
            row = self._conn.execute("SELECT owner, expires_at FROM claims WHERE item=?",
                                     (item,)).fetchone()
            if row is not None and row[0] != who and _claim_live(row[0], row[1], now):
                return False
            self._conn.execute(
                "INSERT OR REPLACE INTO claims(item, owner, note, claimed_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?)", (item, who, note, now, now + float(lease_s)))
            return True

    def renew(self, item: str, *, owner: str | None = None,
              lease_s: float = CLAIM_LEASE_S) -> bool:
        """Extend ``owner``'s claim of ``item`` to ``lease_s`` from now; ``False`` if
        ``owner`` does not hold it (it was released or taken over).

        Raises
        ------
        StoreError
            If the store cannot be written.
        """
        who = owner if owner is not None else str(this_process())
        with self.transaction():
            cur = self._conn.execute("UPDATE claims SET expires_at=? WHERE item=? AND owner=?",
                                     (time.time() + float(lease_s), item, who))
            return cur.rowcount > 0

    def release(self, item: str | None = None, *, owner: str | None = None) -> int:
        """Drop ``owner``'s claim of ``item`` (every claim of ``owner`` when ``item`` is
        ``None``); return how many were dropped. Claims of others are left alone.

        Raises
        ------
        StoreError
            If the store cannot be written.
        """
        who = owner if owner is not None else str(this_process())
        with self.transaction():
            if item is None:
                cur = self._conn.execute("DELETE FROM claims WHERE owner=?", (who,))
            else:
                cur = self._conn.execute("DELETE FROM claims WHERE item=? AND owner=?",
                                         (item, who))
            return int(cur.rowcount)

    def claims(self, *, live_only: bool = False) -> pd.DataFrame:
        """What is claimed: ``item, owner, note, claimed_at, expires_at, live`` (``live``:
        whether the claim still holds, see :meth:`claim`), oldest first.

        A store written before claims existed (schema 2, opened read-only) has none.
        """
        cols = ["item", "owner", "note", "claimed_at", "expires_at"]
        try:
            df = pd.read_sql("SELECT item, owner, note, claimed_at, expires_at FROM claims "
                             "ORDER BY claimed_at, item", self._conn)
        except (sqlite3.DatabaseError, pd.errors.DatabaseError):
            df = pd.DataFrame(columns=cols)
        now = time.time()
        df["live"] = [bool(_claim_live(o, e, now)) for o, e in zip(df["owner"], df["expires_at"])]
        return df[df["live"]].reset_index(drop=True) if live_only else df

    def claim_holder(self, item: str) -> str | None:
        """The owner whose claim of ``item`` still holds, or ``None``."""
        try:
            row = self._conn.execute("SELECT owner, expires_at FROM claims WHERE item=?",
                                     (item,)).fetchone()
        except sqlite3.DatabaseError:  # schema 2 read-only: no claims table
            return None
        if row is None or not _claim_live(row[0], row[1], time.time()):
            return None
        return str(row[0])

    # ------------------------------------------------------------------ per-layer measurements
    def add_layer_measurement(self, device_id: int, layer: Mapping[str, Any] | pd.Series,
                              measurement: Measurement, *, source: str = "measured") -> int:
        """Store the latency of one layer configuration measured alone; return its id (idempotent).

        Parameters
        ----------
        layer : mapping or Series
            One row of a :func:`~latbench.data.features.layer_table`; its
            :func:`~latbench.data.features.layer_key` is the lookup key.
        source : str
            ``measured`` (the layer timed alone) or ``op_profile:<tool>`` (read from a whole
            model's per-operator profile).
        """
        from latbench.data.features import layer_key

        row = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in dict(layer).items()}
        key = layer_key(row)
        m, spec = measurement, measurement.spec
        stats = m.summary()
        # A profile gives many layers from one spec and timestamp: the source tells them apart.
        record_key = f"{device_id}:{key}:{spec.key}:{m.timestamp!r}" + (
            "" if source == "measured" else f":{source}")
        with self.transaction():
            self._conn.execute(
                "INSERT OR IGNORE INTO layer_measurements(device_id, layer_key, layer, record_key, "
                "spec_key, spec, runtime, runtime_version, provider, threads, format, samples_s, "
                "median_ms, mean_ms, p10_ms, p90_ms, iqr_ms, n_samples, confident, throttled, "
                "timestamp, source, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (int(device_id), key, _json(row), record_key, spec.key, _json(spec.to_dict()),
                 spec.runtime, spec.runtime_version, spec.provider, int(spec.threads), spec.format,
                 _json(list(m.samples_s)), stats["median_ms"], stats["mean_ms"], stats["p10_ms"],
                 stats["p90_ms"], stats["iqr_ms"], int(stats["n_samples"]), int(stats["confident"]),
                 int(stats["throttled"]), m.timestamp, source, time.time()))
            return int(self._one("SELECT id FROM layer_measurements WHERE record_key=?", (record_key,)))

    @staticmethod
    def _layer_filter(format: str | None, source: str | None) -> tuple[str, list[Any]]:
        sql, args = "", []
        if format is not None:
            sql += " AND l.format=?"
            args.append(format)
        if source is not None:
            sql += " AND (l.source=? OR l.source LIKE ?)"
            args += [source, f"{source}:%"]
        return sql, args

    def has_layer_measurement(self, layer_key: str, device_name: str, runtime: str,
                              runtime_version: str, threads: int, *, format: str | None = None,
                              source: str | None = None) -> bool:
        """Whether this layer configuration was measured on this device, runtime and threads
        (and, when given, artifact format and source: ``measured`` alone or ``op_profile``)."""
        extra, args = self._layer_filter(format, source)
        return self._one(
            "SELECT 1 FROM layer_measurements l JOIN devices d ON d.id=l.device_id WHERE "
            "l.layer_key=? AND d.name=? AND l.runtime=? AND l.runtime_version=? AND l.threads=?"
            + extra + " LIMIT 1",
            [layer_key, device_name, runtime, runtime_version, int(threads), *args]) is not None

    def has_op_profile(self, content_hash: str, device_name: str, runtime: str,
                       runtime_version: str, threads: int, *, format: str | None = None) -> bool:
        """Whether the variant ``content_hash`` was already profiled operator by operator on
        this device, runtime and threads: layers stored from its profile (source
        ``op_profile:<content_hash>``) or a recorded ``op_profile`` failure for it."""
        extra, args = self._layer_filter(format, None)
        hit = self._one(
            "SELECT 1 FROM layer_measurements l JOIN devices d ON d.id=l.device_id WHERE "
            "l.source=? AND d.name=? AND l.runtime=? AND l.runtime_version=? AND l.threads=?"
            + extra + " LIMIT 1",
            [f"op_profile:{content_hash}", device_name, runtime, runtime_version, int(threads),
             *args])
        if hit is not None:
            return True
        return self._one(
            "SELECT 1 FROM failures f JOIN devices d ON d.id=f.device_id WHERE f.stage='op_profile' "
            "AND f.content_hash=? AND d.name=? LIMIT 1", (content_hash, device_name)) is not None

    def layer_latency_ms(self, layer_key: str, device_name: str, runtime: str,
                         runtime_version: str, threads: int, *, format: str | None = None,
                         source: str | None = None) -> float | None:
        """Median latency (ms) of the newest measurement of a layer configuration, or ``None``.

        Only measurements on ``device_name`` with this runtime, version and thread count count
        (and, when given, this artifact format and source).
        """
        extra, args = self._layer_filter(format, source)
        v = self._one(
            "SELECT l.median_ms FROM layer_measurements l JOIN devices d ON d.id=l.device_id WHERE "
            "l.layer_key=? AND d.name=? AND l.runtime=? AND l.runtime_version=? AND l.threads=?"
            + extra + " ORDER BY COALESCE(l.timestamp, l.created_at) DESC, l.id DESC LIMIT 1",
            [layer_key, device_name, runtime, runtime_version, int(threads), *args])
        return None if v is None else float(v)

    def variant_layers(self, content_hash: str, input_shape: Sequence[int] | str) -> pd.DataFrame | None:
        """The stored layer table of the variant (content hash, input shape), or ``None``.

        Raises
        ------
        StoreError
            If the stored table is corrupt.
        """
        blob = self._one(
            "SELECT t.data FROM variants v JOIN layer_tables t ON t.id = v.layer_table_id "
            "WHERE v.content_hash=? AND v.input_shape=?", (content_hash, shape_str(input_shape)))
        return None if blob is None else pd.DataFrame(decode_layer_table(blob))

    # ------------------------------------------------------------------ reading
    def counts(self) -> dict[str, int]:
        """Number of rows in each table."""
        tables = ("devices", "variants", "layer_tables", "measurements", "failures",
                  "layer_measurements")
        return {t: int(self._one(f"SELECT count(*) FROM {t}")) for t in tables}

    def summary(self) -> pd.DataFrame:
        """Counts per device, source model and method.

        Returns
        -------
        pandas.DataFrame
            Columns ``device, kind, source_model, method, n_variants, n_measurements,
            median_latency_ms, n_failures``. Imported NAS-Bench-201 variants are grouped under
            the source model ``nb201``. Failures with no known device or model get empty strings.
        """
        meas = pd.read_sql(
            "SELECT d.name AS device, d.kind AS kind, v.source_model, v.method, "
            "m.variant_id, m.median_ms FROM measurements m JOIN variants v ON v.id=m.variant_id "
            "JOIN devices d ON d.id=m.device_id", self._conn)
        fail = pd.read_sql(
            "SELECT COALESCE(d.name, '') AS device, COALESCE(d.kind, '') AS kind, "
            "COALESCE(f.source_model, v.source_model, '') AS source_model, "
            "COALESCE(v.method, '') AS method FROM failures f LEFT JOIN devices d ON d.id=f.device_id "
            "LEFT JOIN variants v ON v.id=f.variant_id", self._conn)
        keys = ["device", "kind", "source_model", "method"]
        for df in (meas, fail):
            df["source_model"] = df["source_model"].map(_model_family)
        m = (meas.groupby(keys, sort=True)
             .agg(n_variants=("variant_id", "nunique"), n_measurements=("variant_id", "size"),
                  median_latency_ms=("median_ms", "median"))
             .reset_index())
        f = fail.groupby(keys, sort=True).size().rename("n_failures").reset_index()
        out = m.merge(f, on=keys, how="outer")
        out[["n_variants", "n_measurements", "n_failures"]] = (
            out[["n_variants", "n_measurements", "n_failures"]].fillna(0).astype(int))
        return out.sort_values(keys).reset_index(drop=True)


def noisy_counts(store: Store) -> dict[str, tuple[int, int]]:
    """Per device name: (noisy measurements, measurements with more than one sample).

    Noisy: IQR / median ≥ :data:`~latbench.measure.measurement.NOISY_RELATIVE_IQR`, from the
    stored statistics (so stores written before the flag existed are flagged too).
    """
    from latbench.measure.measurement import NOISY_RELATIVE_IQR

    rows = store.connection.execute(
        "SELECT d.name, SUM(m.iqr_ms >= ? * m.median_ms), count(*) FROM measurements m "
        "JOIN devices d ON d.id = m.device_id WHERE m.n_samples > 1 GROUP BY d.name ORDER BY d.name",
        (NOISY_RELATIVE_IQR,)).fetchall()
    return {name: (int(n or 0), int(total)) for name, n, total in rows}


def _model_family(source: str) -> str:
    # 15k distinct NB201 arch strings would make 15k summary rows; group them as one family
    # per build ("nb201" for the live build, "nb201-all" for the reference code's).
    if isinstance(source, str):
        for family in ("nb201", "nb201-all"):
            if source.startswith(family + ":"):
                return family
    return source
