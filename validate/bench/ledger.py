"""The benchmark ledger: every repetition ever run, in SQLite, keyed by image digest, device model and driver.

    with Ledger.open(Path("results/ledger.sqlite")) as ledger:
        ledger.record_run(run)
        ledger.add(repetition)
        ledger.history("127.0.0.1:5000/strata/tensorflow:2.13.1-cpu-py3.11-bookworm")

Nothing is averaged on the way in: each row is one fresh container's result, with its full workload JSON
(environment included), so any statistic can be recomputed later.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import StrataError
from validate.bench.metrics import DeviceKey, Repetition

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    device TEXT NOT NULL,
    size TEXT NOT NULL,
    repeats INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    images_json TEXT NOT NULL,
    workloads_json TEXT NOT NULL,
    schedule_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS repetitions (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    image_ref TEXT NOT NULL,
    image_id TEXT NOT NULL,
    repo_digest TEXT,
    device TEXT NOT NULL,
    device_model TEXT NOT NULL,
    driver TEXT NOT NULL,
    workload TEXT NOT NULL,
    size TEXT NOT NULL,
    repetition INTEGER NOT NULL,
    order_index INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    samples_per_s REAL NOT NULL,
    startup_s REAL NOT NULL,
    steady INTEGER NOT NULL,
    env_json TEXT NOT NULL,
    result_json TEXT NOT NULL,
    UNIQUE (run_id, image_id, workload, repetition)
);
CREATE INDEX IF NOT EXISTS repetitions_by_key
    ON repetitions (image_id, device_model, driver, workload);
"""


@dataclass(frozen=True)
class RunInfo:
    """One `bench run`: what was asked and the interleaved order the repetitions ran in."""

    run_id: str
    created_at: str
    device: str
    size: str
    repeats: int
    seed: int
    images: Sequence[str]
    workloads: Sequence[str]
    schedule: Sequence[tuple[str, str, int]]  # (image ref, workload, repetition) in the order run


@dataclass(frozen=True)
class HistoryPoint:
    """One image digest's result for one workload in one run: a point of a tag's history."""

    run_id: str
    time: str
    image_id: str
    image_ref: str
    workload: str
    device: DeviceKey
    median_samples_per_s: float
    median_effective_gpu_hour: float
    repetitions: int


class Ledger:
    """A SQLite file of runs and repetitions; use `Ledger.open(path)` as a context manager."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    @contextmanager
    def open(cls, path: Path, *, create: bool = True) -> Iterator[Ledger]:
        """Open (and create, unless create=False) the ledger at `path`; commits on clean exit."""
        if not create and not path.exists():
            raise StrataError(f"{path}: no benchmark ledger here; run `strata bench run` first")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(path)
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            (version,) = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StrataError(f"{path}: not a usable benchmark ledger ({exc})") from exc
        if int(version) != SCHEMA_VERSION:
            raise StrataError(f"{path}: ledger schema {version}, this strata reads {SCHEMA_VERSION}")
        try:
            yield cls(db, path)
            db.commit()
        finally:
            db.close()

    # ------------------------------------------------------------ writing

    def record_run(self, run: RunInfo) -> None:
        """Store a run's request and schedule (before its repetitions)."""
        if self._db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run.run_id,)).fetchone():
            raise StrataError(
                f"{self.path}: run {run.run_id} is already recorded; start it again with another seed"
            )
        self._db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run.run_id,
                run.created_at,
                run.device,
                run.size,
                run.repeats,
                run.seed,
                json.dumps(list(run.images)),
                json.dumps(list(run.workloads)),
                json.dumps([list(entry) for entry in run.schedule]),
            ),
        )
        self._db.commit()

    def add(self, rep: Repetition) -> None:
        """Store one repetition; committed at once so an interrupted run keeps what it measured."""
        self._db.execute(
            "INSERT INTO repetitions (run_id, image_ref, image_id, repo_digest, device, device_model, driver,"
            " workload, size, repetition, order_index, started_at, samples_per_s, startup_s, steady, env_json,"
            " result_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rep.run_id,
                rep.image,
                rep.image_id,
                rep.repo_digest,
                rep.device.device,
                rep.device.model,
                rep.device.driver,
                rep.workload,
                rep.size,
                rep.repetition,
                rep.order_index,
                rep.started_at,
                rep.samples_per_s,
                rep.startup_s,
                int(rep.steady),
                json.dumps(rep.result.get("env", {}), sort_keys=True),
                json.dumps(rep.result, sort_keys=True),
            ),
        )
        self._db.commit()

    # ------------------------------------------------------------ reading

    def resolve(self, ref_or_digest: str) -> str:
        """The image id a tag, image id (full or short), or repo digest names in the ledger.

        A tag resolves to the digest it pointed at most recently.
        """
        needle = ref_or_digest.strip()
        bare = needle.removeprefix("sha256:")
        rows = self._db.execute(
            "SELECT image_id, MAX(started_at) AS last FROM repetitions"
            " WHERE image_ref = ? OR image_id = ? OR image_id LIKE ? OR repo_digest = ?"
            " OR repo_digest LIKE ? GROUP BY image_id ORDER BY last DESC",
            (needle, needle, f"sha256:{bare}%" if len(bare) >= 6 else "-", needle, f"%@{needle}"),
        ).fetchall()
        if not rows:
            raise StrataError(f"{needle}: no benchmark results for this image in {self.path}")
        by_tag = self._db.execute(
            "SELECT image_id FROM repetitions WHERE image_ref = ? ORDER BY started_at DESC LIMIT 1", (needle,)
        ).fetchone()
        if by_tag:
            return str(by_tag[0])
        if len(rows) > 1:
            ids = ", ".join(str(r[0])[:19] for r in rows)
            raise StrataError(f"{needle}: names several images in the ledger ({ids}); give more digits")
        return str(rows[0][0])

    def repetitions(
        self,
        *,
        image_id: str | None = None,
        run_id: str | None = None,
        workload: str | None = None,
    ) -> list[Repetition]:
        """Stored repetitions matching every given filter, in the order they ran."""
        clauses, params = [], []
        for column, value in (("image_id", image_id), ("run_id", run_id), ("workload", workload)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            "SELECT run_id, image_ref, image_id, repo_digest, device, device_model, driver, workload, size,"
            " repetition, order_index, started_at, samples_per_s, startup_s, steady, result_json"
            f" FROM repetitions {where} ORDER BY started_at, order_index",
            params,
        ).fetchall()
        return [_row_to_repetition(row) for row in rows]

    def runs(self) -> list[RunInfo]:
        """All runs, oldest first."""
        rows = self._db.execute("SELECT * FROM runs ORDER BY created_at").fetchall()
        return [
            RunInfo(
                run_id=r[0],
                created_at=r[1],
                device=r[2],
                size=r[3],
                repeats=r[4],
                seed=r[5],
                images=json.loads(r[6]),
                workloads=json.loads(r[7]),
                schedule=[tuple(e) for e in json.loads(r[8])],
            )
            for r in rows
        ]

    def latest_run_id(self) -> str:
        """The most recent run's id."""
        row = self._db.execute("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 1").fetchone()
        if row is None:
            raise StrataError(f"{self.path}: the ledger has no runs yet")
        return str(row[0])

    def history(self, tag_or_digest: str) -> list[HistoryPoint]:
        """A tag's (or digest's) results over time: one point per run, digest and workload."""
        needle = tag_or_digest.strip()
        ids = {
            r[0] for r in self._db.execute("SELECT image_id FROM repetitions WHERE image_ref = ?", (needle,))
        }
        if not ids:
            ids = {self.resolve(needle)}
        groups: dict[tuple[str, str, str, DeviceKey], list[Repetition]] = {}
        for image_id in ids:
            for rep in self.repetitions(image_id=image_id):
                groups.setdefault((rep.run_id, rep.image_id, rep.workload, rep.device), []).append(rep)
        points = [
            HistoryPoint(
                run_id=run_id,
                time=min(r.started_at for r in reps),
                image_id=image_id,
                image_ref=reps[0].image,
                workload=workload,
                device=device,
                median_samples_per_s=statistics.median(r.samples_per_s for r in reps),
                median_effective_gpu_hour=statistics.median(r.effective_gpu_hour for r in reps),
                repetitions=len(reps),
            )
            for (run_id, image_id, workload, device), reps in groups.items()
        ]
        return sorted(points, key=lambda p: (p.time, p.workload))


def _row_to_repetition(row: Sequence[Any]) -> Repetition:
    return Repetition(
        run_id=row[0],
        image=row[1],
        image_id=row[2],
        repo_digest=row[3],
        device=DeviceKey(row[4], row[5], row[6]),
        workload=row[7],
        size=row[8],
        repetition=row[9],
        order_index=row[10],
        started_at=row[11],
        samples_per_s=row[12],
        startup_s=row[13],
        steady=bool(row[14]),
        result=json.loads(row[15]),
    )


def paired_samples(
    reference: list[Repetition], candidate: list[Repetition]
) -> tuple[list[Repetition], list[Repetition], str]:
    """The reference and candidate repetitions a fair comparison should use, and where they came from.

    Prefers the latest run that measured both images on the same device (interleaved, so drift is shared);
    otherwise all repetitions on the device model both have in common.
    """
    ref_runs = {(r.run_id, r.device) for r in reference}
    shared = [(run, dev) for run, dev in ((c.run_id, c.device) for c in candidate) if (run, dev) in ref_runs]
    if shared:
        latest = max(shared, key=lambda key: max(c.started_at for c in candidate if c.run_id == key[0]))
        pick = [r for r in reference if (r.run_id, r.device) == latest]
        return pick, [c for c in candidate if (c.run_id, c.device) == latest], f"run {latest[0]}"
    keys = {(r.device, r.size) for r in reference} & {(c.device, c.size) for c in candidate}
    if not keys:
        return [], [], "no device and size in common"
    key = max(keys, key=lambda k: max(c.started_at for c in candidate if (c.device, c.size) == k))
    pick = [r for r in reference if (r.device, r.size) == key]
    picked = [c for c in candidate if (c.device, c.size) == key]
    return pick, picked, f"all {key[1]} runs on {key[0].model} (not interleaved in one run)"
