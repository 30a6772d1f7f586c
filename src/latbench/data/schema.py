"""The declared schema of the latency store, its version, and the migrations between versions.

The version lives in the ``schema_info`` table (key ``schema_version``). Opening a database
written by a newer latbench is refused; an older one is migrated step by step, each step
in its own transaction, so a crash mid-migration leaves the previous version intact.

Tables
------
``devices``
    One row per device name: kind, fingerprint, profile JSON, :class:`DeviceInfo` JSON.
``layer_tables``
    Per-layer feature tables (:func:`latbench.data.features.layer_table`) deduplicated by a
    hash of their content and stored compactly
    (:func:`latbench.data.store.encode_layer_table`), with the
    model-level features (:func:`latbench.data.features.model_features`) as JSON.
``variants``
    One row per (content hash, input shape): source model spec, method (``"mixed"`` or
    ``"none"`` allowed), compression plan JSON, and the id of its layer table.
``measurements``
    One row per measurement: the :class:`BenchSpec` JSON and key, runtime, provider, threads,
    artifact format (``onnx``, ``tflite``; empty for imported latencies), raw samples
    (seconds) JSON, statistics in ms, device state before/after, provenance.
``failures``
    Append-only log of what failed, where, and at which stage.
``layer_measurements``
    A single layer configuration measured alone (keyed by :func:`layer_key`), or read from
    a whole model's per-operator profile (``source`` ``op_profile:...``), with its layer
    features as JSON and the artifact format: the data of a lookup-table predictor.

``claims``
    What a process is measuring right now (one row per item: a variant or a layer on one
    device, runtime and format), so that concurrent sweeps on one database split the work
    (:meth:`latbench.data.store.Store.claim`). Rows live only while their owner works.

Versions: 1 → 2 added ``format`` to ``measurements`` and ``layer_measurements`` (filled from
the runtime: ``tflite``/``litert`` runtimes ran ``.tflite`` files, ``imported`` none, the rest
``.onnx``) and to the resume and lookup indexes. 2 → 3 added the ``claims`` table
(:func:`_v3_add_claims`); no existing row changes, so readers of schema 2 read a
schema 3 store, and a read-only open accepts both (:data:`MIN_READABLE_VERSION`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from latbench.exceptions import StoreError

__all__ = ["SCHEMA_VERSION", "MIN_READABLE_VERSION", "SCHEMA_SQL", "MIGRATIONS",
           "TFLITE_RUNTIMES", "ensure_schema", "read_version"]

#: The schema this latbench writes. Bump it and add a migration when a table changes.
SCHEMA_VERSION = 3

#: The oldest schema a read-only open reads as it is (it cannot migrate): schema 3 only
#: added the ``claims`` table, which no reader needs.
MIN_READABLE_VERSION = 2

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS schema_info (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    fingerprint TEXT NOT NULL DEFAULT '',
    profile     TEXT NOT NULL DEFAULT '{}',
    info        TEXT NOT NULL DEFAULT '{}',
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS layer_tables (
    id                     INTEGER PRIMARY KEY,
    table_hash             TEXT NOT NULL UNIQUE,
    n_layers               INTEGER NOT NULL,
    feature_schema_version INTEGER NOT NULL,
    features               TEXT NOT NULL,
    data                   BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS variants (
    id             INTEGER PRIMARY KEY,
    content_hash   TEXT NOT NULL,
    input_shape    TEXT NOT NULL,
    source_model   TEXT NOT NULL,
    method         TEXT NOT NULL,
    plan           TEXT,
    layer_table_id INTEGER NOT NULL REFERENCES layer_tables(id),
    created_at     REAL NOT NULL,
    UNIQUE (content_hash, input_shape)
);
CREATE INDEX IF NOT EXISTS variants_source ON variants(source_model);
CREATE TABLE IF NOT EXISTS measurements (
    id              INTEGER PRIMARY KEY,
    variant_id      INTEGER NOT NULL REFERENCES variants(id),
    device_id       INTEGER NOT NULL REFERENCES devices(id),
    record_key      TEXT NOT NULL UNIQUE,
    spec_key        TEXT NOT NULL,
    spec            TEXT NOT NULL,
    runtime         TEXT NOT NULL,
    runtime_version TEXT NOT NULL,
    provider        TEXT NOT NULL,
    threads         INTEGER NOT NULL,
    format          TEXT NOT NULL DEFAULT '',
    samples_s       TEXT NOT NULL,
    median_ms       REAL NOT NULL,
    mean_ms         REAL,
    std_ms          REAL,
    min_ms          REAL,
    p10_ms          REAL,
    p90_ms          REAL,
    iqr_ms          REAL,
    n_samples       INTEGER NOT NULL,
    confident       INTEGER,
    throttled       INTEGER,
    info_before     TEXT,
    info_after      TEXT,
    extra           TEXT,
    timestamp       REAL,
    source          TEXT NOT NULL,
    created_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS measurements_resume
    ON measurements(variant_id, device_id, runtime, runtime_version, threads, format);
CREATE INDEX IF NOT EXISTS measurements_device ON measurements(device_id);
CREATE TABLE IF NOT EXISTS failures (
    id           INTEGER PRIMARY KEY,
    device_id    INTEGER REFERENCES devices(id),
    variant_id   INTEGER REFERENCES variants(id),
    source_model TEXT,
    content_hash TEXT,
    plan         TEXT,
    stage        TEXT NOT NULL,
    error        TEXT NOT NULL,
    timestamp    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS layer_measurements (
    id              INTEGER PRIMARY KEY,
    device_id       INTEGER NOT NULL REFERENCES devices(id),
    layer_key       TEXT NOT NULL,
    layer           TEXT NOT NULL,
    record_key      TEXT NOT NULL UNIQUE,
    spec_key        TEXT NOT NULL,
    spec            TEXT NOT NULL,
    runtime         TEXT NOT NULL,
    runtime_version TEXT NOT NULL,
    provider        TEXT NOT NULL,
    threads         INTEGER NOT NULL,
    format          TEXT NOT NULL DEFAULT '',
    samples_s       TEXT NOT NULL,
    median_ms       REAL NOT NULL,
    mean_ms         REAL,
    p10_ms          REAL,
    p90_ms          REAL,
    iqr_ms          REAL,
    n_samples       INTEGER NOT NULL,
    confident       INTEGER,
    throttled       INTEGER,
    timestamp       REAL,
    source          TEXT NOT NULL,
    created_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS layer_measurements_lookup
    ON layer_measurements(device_id, layer_key, runtime, runtime_version, threads, format);
CREATE TABLE IF NOT EXISTS claims (
    item       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    note       TEXT NOT NULL DEFAULT '',
    claimed_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""

#: Runtimes that run ``.tflite`` files (the v1 → v2 migration fills ``format`` from them).
TFLITE_RUNTIMES = ("tflite", "litert")


def _add_format(conn: sqlite3.Connection) -> None:
    """Schema 1 → 2: a ``format`` column on both measurement tables, filled from the runtime."""
    tflite = ", ".join(f"'{r}'" for r in TFLITE_RUNTIMES)
    fill = (f"CASE WHEN runtime IN ({tflite}) THEN 'tflite' "
            "WHEN runtime = 'imported' THEN '' ELSE 'onnx' END")
    for table, index in (("measurements", "measurements_resume"),
                         ("layer_measurements", "layer_measurements_lookup")):
        conn.execute(f"ALTER TABLE {table} ADD COLUMN format TEXT NOT NULL DEFAULT ''")
        conn.execute(f"UPDATE {table} SET format = {fill}")
        # The stored spec gains the field too (spec_key stays the key it was stored under).
        conn.execute(f"UPDATE {table} SET spec = json_set(spec, '$.format', format) "
                     "WHERE format != '' AND json_valid(spec)")
        conn.execute(f"DROP INDEX IF EXISTS {index}")
    conn.execute("CREATE INDEX measurements_resume ON measurements(variant_id, device_id, runtime, "
                 "runtime_version, threads, format)")
    conn.execute("CREATE INDEX layer_measurements_lookup ON layer_measurements(device_id, "
                 "layer_key, runtime, runtime_version, threads, format)")


def _v3_add_claims(conn: sqlite3.Connection) -> None:
    """Schema 2 → 3: the ``claims`` table (what a process is measuring right now)."""
    conn.execute("CREATE TABLE IF NOT EXISTS claims (item TEXT PRIMARY KEY, owner TEXT NOT NULL, "
                 "note TEXT NOT NULL DEFAULT '', claimed_at REAL NOT NULL, "
                 "expires_at REAL NOT NULL)")


#: ``MIGRATIONS[n]`` upgrades a database from schema ``n`` to ``n + 1`` (runs inside a transaction).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _add_format, 2: _v3_add_claims}


def read_version(conn: sqlite3.Connection) -> int | None:
    """The schema version recorded in ``conn``'s database, or ``None`` for an empty database.

    Raises
    ------
    StoreError
        If the database has tables but no readable version (not a latbench store).
    """
    # One statement, so one snapshot: read in two, another process creating the store could
    # commit in between and an empty database would look like a foreign one.
    has_info, n_tables = conn.execute(
        "SELECT (SELECT count(*) FROM sqlite_master WHERE type='table' AND name='schema_info'), "
        "(SELECT count(*) FROM sqlite_master WHERE type='table')"
    ).fetchone()
    if not has_info:
        if n_tables:
            raise StoreError("the database has tables but no schema_info: it is not a latbench store; "
                             "give another --db path")
        return None
    row = conn.execute("SELECT value FROM schema_info WHERE key='schema_version'").fetchone()
    if row is None:
        raise StoreError("the database has no schema version: it is not a latbench store or is "
                         "corrupt; give another --db path")
    try:
        return int(row[0])
    except ValueError:
        raise StoreError(f"the database's schema version {row[0]!r} is not a number: it is corrupt") from None


def ensure_schema(conn: sqlite3.Connection) -> int:
    """Create the schema in an empty database or migrate an older one to :data:`SCHEMA_VERSION`.

    ``conn`` must be in autocommit mode (``isolation_level=None``); each step runs in its own
    ``BEGIN IMMEDIATE`` transaction so two processes opening a new database do not race.

    Returns
    -------
    int
        The schema version the database had before (0 for a new database).

    Raises
    ------
    StoreError
        If the database was written by a newer latbench, is not a latbench store, or a
        migration is missing.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = read_version(conn)
        before = 0 if version is None else version
        if version is None:
            for stmt in _statements(SCHEMA_SQL):
                conn.execute(stmt)
            conn.execute("INSERT INTO schema_info(key, value) VALUES ('schema_version', ?)",
                         (str(SCHEMA_VERSION),))
        elif version > SCHEMA_VERSION:
            raise StoreError(
                f"the database was written by a newer latbench (schema {version} > "
                f"{SCHEMA_VERSION}): upgrade latbench"
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    while version is not None and version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise StoreError(f"no migration from store schema {version} to {version + 1}; "
                             "this latbench cannot open the database")
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            current = read_version(conn)
            if current == version:
                step(conn)
                conn.execute("UPDATE schema_info SET value=? WHERE key='schema_version'",
                             (str(version + 1),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = read_version(conn)
    return before


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT our open transaction; split and run one by one instead.
    return [s.strip() for s in script.split(";") if s.strip()]
