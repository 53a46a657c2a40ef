"""The results database: one SQLite row per sweep point, keyed by a hash of the point's full resolved config.

Why SQLite: one file, no server, and its locking makes concurrent writers (submitit jobs on a cluster, two sweeps on one
machine) safe. Every state change is one short ``BEGIN IMMEDIATE`` transaction, so a process killed at any moment leaves
either the old row or the new one, never half of it, and a point is claimed by exactly one worker at a time.

Row life: ``planned`` -> ``running`` (claimed: host, pid, heartbeat) -> ``done`` (metrics, timings, manifest) or
``failed`` (error). A ``running`` row whose owner died (same host and the pid is gone, or no heartbeat for
``stale_after`` seconds) is stale and may be claimed again.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

STATUSES = ("planned", "running", "done", "failed")
DEFAULT_STALE_AFTER = 300.0  # seconds without a heartbeat before another host may take a running point over

_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    key TEXT PRIMARY KEY,
    sweep TEXT NOT NULL,
    target TEXT,
    method TEXT,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('planned', 'running', 'done', 'failed')),
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    host TEXT,
    pid INTEGER,
    pid_started REAL,
    heartbeat REAL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    timings TEXT,
    manifest TEXT,
    metrics TEXT,
    selection TEXT,
    similarity TEXT,
    num_sources INTEGER,
    include_target INTEGER,
    weighting TEXT,
    seed INTEGER,
    val_accuracy REAL,
    test_accuracy REAL,
    val_gain REAL,
    test_gain REAL,
    val_merging_effect REAL,
    test_merging_effect REAL
);
CREATE INDEX IF NOT EXISTS points_sweep_status ON points (sweep, status);
CREATE INDEX IF NOT EXISTS points_target_method ON points (target, method);
CREATE TABLE IF NOT EXISTS features (
    key TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    origin TEXT NOT NULL,
    features TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS features_target ON features (target);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def _process_start(pid: int) -> Optional[float]:
    """Start time of a live process (guards against a recycled pid), or None when it is gone. A killed process that
    its parent has not reaped yet (a zombie) is gone: it will never finish its point."""
    try:
        import psutil

        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except Exception:  # psutil.NoSuchProcess, AccessDenied, or psutil missing
        return None


@dataclass(frozen=True)
class Worker:
    """Who holds a point: host name, pid and that pid's start time."""

    host: str
    pid: int
    pid_started: Optional[float]

    @classmethod
    def current(cls) -> "Worker":
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _process_start(pid))


class ResultsDB:
    """A results database file. Open one per process (or thread); every method is its own transaction."""

    def __init__(self, path: str | os.PathLike, timeout: float = 60.0, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        with self.named():
            self._open(timeout)

    def _open(self, timeout: float) -> None:
        from merginguriel.errors import InputError

        if self.path.is_dir():
            raise InputError(f"results database {self.path} is a directory, not a SQLite file; give a file path (--db)")
        if self.readonly:
            # a report only reads: no -wal/-shm files are created beside a database that has none
            if not self.path.is_file():
                raise InputError(f"results database {self.path} not found; run a sweep first (`merginguriel experiment`)")
            self.conn = _connect_readonly(self.path, timeout)
            self.conn.row_factory = sqlite3.Row
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "points" not in tables:
                raise InputError(f"{self.path} is a SQLite database but not a sweep's results database (no points "
                                 "table); give the results.sqlite that `merginguriel experiment` wrote (--db)")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the lock before reading what it
        # will change (no read-then-upgrade deadlocks between two claimers).
        self.conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        with self._disk_full_named():
            self._enable_wal(timeout)
        self.conn.execute("PRAGMA synchronous = NORMAL")
        with self.transaction():
            for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                self.conn.execute(stmt)

    @contextlib.contextmanager
    def named(self) -> Iterator[None]:
        """A SQLite error carries this database's path (``err.path``), which the command line's error boundary names
        (merginguriel.cli.errors): SQLite's own messages never say which file."""
        try:
            yield
        except sqlite3.Error as err:
            err.path = self.path
            raise

    def _enable_wal(self, timeout: float) -> None:
        # Switching a new file to WAL needs an exclusive lock, and SQLite answers "locked" at once (without its busy
        # handler) when another process is opening the same file: retry until the timeout.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        self.conn.close()

    # -- paths: stored relative to the database's folder, so a report finds them wherever it runs ----------------------
    def set_workdir(self, workdir: str | os.PathLike) -> None:
        """Record where the sweep's relative paths (root, data) start from, relative to this database's folder."""
        rel = os.path.relpath(Path(workdir).resolve(), self.path.parent.resolve())
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('workdir', ?)", (rel,))

    def workdir(self) -> Path:
        """The folder the sweep's relative paths start from (the database's own folder when none was recorded)."""
        row = self.conn.execute("SELECT value FROM meta WHERE name = 'workdir'").fetchone()
        return (self.path.parent / (row["value"] if row else ".")).resolve()

    def resolve(self, path: Optional[str]) -> Optional[Path]:
        """A path stored in this database (a job's root, a manifest), made absolute."""
        if path is None:
            return None
        p = Path(path)
        return p if p.is_absolute() else (self.workdir() / p).resolve()

    def stored(self, path: str | os.PathLike) -> str:
        """How a path is stored: relative to the recorded workdir when under it, else absolute."""
        p = Path(path).resolve()
        try:
            return str(p.relative_to(self.workdir()))
        except ValueError:
            return str(p)

    def __enter__(self) -> "ResultsDB":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._disk_full_named():
            if self.conn.in_transaction:  # one a stop cut short right after its BEGIN: nothing of it was committed
                self.conn.execute("ROLLBACK")
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def _disk_full_named(self) -> Iterator[None]:
        """SQLite's "database or disk is full" as the clear error that names this database."""
        try:
            yield
        except sqlite3.OperationalError as err:
            if "disk is full" not in str(err):
                raise
            from merginguriel.errors import DiskFullError

            raise DiskFullError(self.path, "no space left on the device") from err

    # -- planning ---------------------------------------------------------------------------------------------------
    def plan(self, sweep: str, points: Iterable[tuple[str, dict]]) -> int:
        """Insert ``(key, config)`` points as ``planned``; existing keys are left as they are. Returns rows added."""
        now = time.time()
        added = 0
        with self.transaction() as conn:
            for key, config in points:
                sel = config.get("selection") or {}
                cur = conn.execute(
                    "INSERT OR IGNORE INTO points (key, sweep, target, method, config, status, created, similarity, "
                    "num_sources, include_target, weighting, seed) VALUES (?, ?, ?, ?, ?, 'planned', ?, ?, ?, ?, ?, ?)",
                    (key, sweep, config.get("target"), _method_of(config), json.dumps(config, sort_keys=True), now,
                     sel.get("similarity"), len(sel["sources"]) if sel.get("sources") else sel.get("num_sources"),
                     None if sel.get("include_target") is None else int(bool(sel.get("include_target"))),
                     sel.get("weighting") if sel.get("similarity") else (sel.get("weights") and "manual" or "average"),
                     (config.get("merge") or {}).get("seed")),
                )
                added += cur.rowcount
        return added

    # -- claiming and finishing -------------------------------------------------------------------------------------
    def is_stale(self, row: sqlite3.Row | dict, now: Optional[float] = None, stale_after: float = DEFAULT_STALE_AFTER) -> bool:
        """A running row whose owner is gone: on this host a dead (or recycled) pid; anywhere, an old heartbeat."""
        now = time.time() if now is None else now
        if row["host"] == socket.gethostname() and row["pid"] is not None:
            started = _process_start(int(row["pid"]))
            if started is None:
                return True
            if row["pid_started"] is not None and abs(started - float(row["pid_started"])) > 1.0:
                return True  # the pid now belongs to another process
        return row["heartbeat"] is None or now - float(row["heartbeat"]) > stale_after

    def claim(
        self,
        key: str,
        worker: Optional[Worker] = None,
        retry_failed: bool = True,
        stale_after: float = DEFAULT_STALE_AFTER,
    ) -> Optional[dict]:
        """Take a point to run: returns its config, or None when it is done, failed (and not retried) or held by a
        live worker. The check and the update are one transaction, so two workers never both get the point."""
        worker = worker or Worker.current()
        now = time.time()
        with self.transaction() as conn:
            row = conn.execute("SELECT * FROM points WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise KeyError(f"no point {key} in {self.path}; plan it first")
            status = row["status"]
            if status == "done" or (status == "failed" and not retry_failed):
                return None
            if status == "running" and not self.is_stale(row, now, stale_after):
                return None
            conn.execute(
                "UPDATE points SET status = 'running', error = NULL, host = ?, pid = ?, pid_started = ?, heartbeat = ?, "
                "started = ?, finished = NULL, attempts = attempts + 1 WHERE key = ?",
                (worker.host, worker.pid, worker.pid_started, now, now, key),
            )
            return json.loads(row["config"])

    def heartbeat(self, key: str, worker: Optional[Worker] = None) -> bool:
        """Refresh a running point's heartbeat; False when this worker no longer holds it."""
        worker = worker or Worker.current()
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE points SET heartbeat = ? WHERE key = ? AND status = 'running' AND host = ? AND pid = ?",
                (time.time(), key, worker.host, worker.pid),
            )
            return cur.rowcount == 1

    def finish(
        self,
        key: str,
        metrics: dict,
        timings: dict,
        manifest: Optional[str],
        selection: Optional[dict],
        worker: Optional[Worker] = None,
    ) -> bool:
        """Record a finished point (only the worker that holds it may). Returns whether the row was written."""
        worker = worker or Worker.current()
        with self.transaction() as conn:
            flat = _flat_metrics(metrics)
            cur = conn.execute(
                "UPDATE points SET status = 'done', error = NULL, finished = ?, heartbeat = ?, metrics = ?, timings = ?, "
                "manifest = ?, selection = ?, " + ", ".join(f"{c} = ?" for c in flat)
                + " WHERE key = ? AND status = 'running' AND host = ? AND pid = ?",
                (
                    time.time(),
                    time.time(),
                    json.dumps(metrics, sort_keys=True),
                    json.dumps(timings, sort_keys=True),
                    manifest,
                    json.dumps(selection, sort_keys=True) if selection is not None else None,
                    *flat.values(),
                    key,
                    worker.host,
                    worker.pid,
                ),
            )
            return cur.rowcount == 1

    def fail(self, key: str, error: str, timings: Optional[dict] = None, worker: Optional[Worker] = None) -> bool:
        """Record a failed point with its error (only the worker that holds it may)."""
        worker = worker or Worker.current()
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE points SET status = 'failed', error = ?, finished = ?, timings = ? "
                "WHERE key = ? AND status = 'running' AND host = ? AND pid = ?",
                (error, time.time(), json.dumps(timings or {}), key, worker.host, worker.pid),
            )
            return cur.rowcount == 1

    def release(self, key: str, worker: Optional[Worker] = None) -> bool:
        """Give a point this worker holds back as ``planned`` (its run was stopped: it is nobody's fault, and the next
        run takes it at once instead of waiting for its claim to go stale)."""
        worker = worker or Worker.current()
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE points SET status = 'planned', error = NULL, host = NULL, pid = NULL, pid_started = NULL, "
                "heartbeat = NULL, started = NULL WHERE key = ? AND status = 'running' AND host = ? AND pid = ?",
                (key, worker.host, worker.pid),
            )
            return cur.rowcount == 1

    # -- merging-effect features ------------------------------------------------------------------------------------
    def put_features(self, key: str, target: str, features: dict, origin: str = "sweep") -> None:
        """Store (or replace) the merging-effect features of one point (``origin``: sweep or advise)."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO features (key, target, origin, features, created) VALUES (?, ?, ?, ?, ?)",
                (key, target, origin, json.dumps(features, sort_keys=True), time.time()),
            )

    # -- reading ----------------------------------------------------------------------------------------------------
    def rows(self, sweep: Optional[str] = None, status: Optional[str] = None) -> list[dict]:
        """All point rows (optionally of one sweep and/or status), JSON columns decoded."""
        sql, args = "SELECT * FROM points", []
        where = []
        if sweep is not None:
            where.append("sweep = ?")
            args.append(sweep)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created, key"
        return [_decode(dict(r)) for r in self.conn.execute(sql, args)]

    def get(self, key: str) -> Optional[dict]:
        row = self.conn.execute("SELECT * FROM points WHERE key = ?", (key,)).fetchone()
        return _decode(dict(row)) if row is not None else None

    def counts(self, sweep: Optional[str] = None) -> dict[str, int]:
        """Number of points per status."""
        sql = "SELECT status, COUNT(*) AS n FROM points" + (" WHERE sweep = ?" if sweep else "") + " GROUP BY status"
        out = {s: 0 for s in STATUSES}
        for r in self.conn.execute(sql, (sweep,) if sweep else ()):
            out[r["status"]] = r["n"]
        return out

    def features(self) -> list[dict]:
        """All stored merging-effect feature rows, decoded."""
        out = []
        for r in self.conn.execute("SELECT * FROM features ORDER BY target, key"):
            d = dict(r)
            d["features"] = json.loads(d["features"])
            out.append(d)
        return out


def _connect_readonly(path: Path, timeout: float) -> sqlite3.Connection:
    """Open read-only. A WAL database that was closed cleanly has no -shm file, which a read-only connection cannot
    create; it is then read as immutable (no locks, nothing written beside it)."""
    from urllib.parse import quote

    uri = f"file:{quote(str(path.resolve()))}"
    shm = path.with_name(path.name + "-shm")
    mode = "?mode=ro" if shm.exists() else "?immutable=1"
    return sqlite3.connect(uri + mode, uri=True, timeout=timeout, isolation_level=None)


def _flat_metrics(metrics: dict) -> dict:
    """The numbers of a finished point as flat columns: accuracy, gain and merging effect per split."""
    out = {}
    for prefix, split in (("val", "validation"), ("test", "test")):
        rec = (metrics.get("splits") or {}).get(split) or {}
        out[f"{prefix}_accuracy"] = rec.get("accuracy")
        out[f"{prefix}_gain"] = rec.get("gain")
        out[f"{prefix}_merging_effect"] = rec.get("merging_effect")
    return out


def _method_of(config: dict) -> Optional[str]:
    merge = config.get("merge")
    return merge.get("method") if isinstance(merge, dict) else None


def _decode(row: dict) -> dict:
    for col in ("config", "timings", "metrics", "selection"):
        if row.get(col) is not None:
            row[col] = json.loads(row[col])
    return row
