"""Where evaluation runs and their per-case results live: SQL tables next to the index.

They are not derived from Git, so ``reindex`` never touches them. A result row is written
as soon as its case is scored, under a unique (run, variant, case) key: an interrupted
run resumes with the cases that have no row yet, and no case is ever scored twice (two
executions that race on one run keep the first row of each case and skip the other).

A run on the job queue (:mod:`promptrev.jobs`) is held by one worker at a time under a
lease: ``claim`` takes it when nobody holds it or its holder stopped beating, ``beat``
renews it, ``orphaned`` and ``requeue`` find and put back the runs whose holder died.
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa

from ..errors import Conflict, NotFound
from ..storage.sql import OnDatabase, writing
from ..storage.tables import T_EVAL_RESULT as T_RESULT
from ..storage.tables import T_EVAL_RUN as T_RUN


class LeaseLost(Conflict):
    """Another worker took over this run (its holder was taken for dead): stop quietly."""

    code = "lease_lost"


class LeasedRows(OnDatabase):
    """Rows of long work on the job queue (runs, jobs), each held by one worker at a time.

    ``heartbeat`` NULL: not on the queue; ``worker`` NULL: waiting for a worker. Only rows
    whose ``status`` is ``running`` can be held.
    """

    table: sa.Table

    def queue(self, row_id: int) -> None:
        """Mark a row as waiting in the job queue (no holder, queued now)."""
        t = self.table
        with writing(self.engine) as conn:
            conn.execute(t.update().where(t.c.id == row_id).values(
                worker=None, heartbeat=int(time.time())))

    def claim(self, row_id: int, worker: str, lease: float) -> bool:
        """Take a queued row for ``worker``: True when it is still going and nobody else
        holds it (or its holder has not beaten for ``lease`` seconds)."""
        t = self.table
        now = int(time.time())
        with writing(self.engine) as conn:
            taken = conn.execute(t.update().where(
                t.c.id == row_id, t.c.status == "running",
                sa.or_(t.c.worker.is_(None), t.c.worker == worker,
                       t.c.heartbeat < now - lease))
                .values(worker=worker, heartbeat=now))
            return taken.rowcount == 1

    def beat(self, row_id: int, worker: str) -> bool:
        """Renew ``worker``'s hold on a row; False when it holds it no longer."""
        t = self.table
        with writing(self.engine) as conn:
            kept = conn.execute(t.update().where(
                t.c.id == row_id, t.c.worker == worker)
                .values(heartbeat=int(time.time())))
            return kept.rowcount == 1

    def release(self, row_id: int, worker: str) -> None:
        """Give a row back unfinished (a worker stopping): the next sweep re-queues it."""
        t = self.table
        with writing(self.engine) as conn:
            conn.execute(t.update().where(
                t.c.id == row_id, t.c.worker == worker,
                t.c.status == "running").values(worker=None, heartbeat=0))

    def orphaned(self, lease: float, requeue_after: float) -> list[tuple[int, str | None, int]]:
        """Queued rows still going whose holder stopped beating ``lease`` seconds ago, or
        that waited unheld for ``requeue_after`` (a message lost with a killed worker):
        (id, holder, heartbeat) each."""
        t = self.table
        now = int(time.time())
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.id, t.c.worker, t.c.heartbeat).where(
                t.c.status == "running", t.c.heartbeat.is_not(None),
                sa.or_(sa.and_(t.c.worker.is_not(None), t.c.heartbeat < now - lease),
                       t.c.heartbeat < now - requeue_after)).order_by(t.c.id))
            return [tuple(r) for r in rows]

    def requeue(self, row_id: int, worker: str | None, heartbeat: int) -> bool:
        """Put an orphaned row back on the queue, unless someone did meanwhile (the
        holder and heartbeat ``orphaned`` saw must still be there): True if this did."""
        t = self.table
        holder = t.c.worker.is_(None) if worker is None else t.c.worker == worker
        with writing(self.engine) as conn:
            moved = conn.execute(t.update().where(
                t.c.id == row_id, t.c.status == "running", holder,
                t.c.heartbeat == heartbeat)
                .values(worker=None, heartbeat=int(time.time())))
            return moved.rowcount == 1


class EvalStore(LeasedRows):
    """Runs and results in the registry's SQL database."""

    table = T_RUN

    def __init__(self, registry: Any):
        self._source = registry  # a Registry (or, in the core, its engine)

    def create(self, *, name: str, author: str, dataset: str, cases: int,
               spec: dict[str, Any]) -> int:
        """Record a new run; return its id."""
        now = int(time.time())
        with writing(self.engine) as conn:
            result = conn.execute(T_RUN.insert().values(
                name=name, author=author, created=now, updated=now, status="running",
                dataset=dataset, cases=cases, spec=json.dumps(spec)))
            return int(result.inserted_primary_key[0])

    def run(self, run_id: int) -> dict[str, Any]:
        """A run as a dict (spec and report parsed)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(T_RUN).where(T_RUN.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"no evaluation run {run_id} (see 'promptrev eval list')")
        return _run(row)

    def runs(self, limit: int = 100) -> list[dict[str, Any]]:
        """Recent runs, newest first, without their reports."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(T_RUN).order_by(T_RUN.c.id.desc()).limit(limit))
            return [{k: v for k, v in _run(r).items() if k not in ("report", "spec")}
                    for r in rows]

    def finished(self, dataset: str, limit: int = 500) -> list[dict[str, Any]]:
        """Finished runs on the dataset version ``dataset``, newest first, with specs."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(T_RUN).where(
                T_RUN.c.dataset == dataset, T_RUN.c.status == "done")
                .order_by(T_RUN.c.id.desc()).limit(limit))
            return [_run(r) for r in rows]

    def active(self, dataset: str, since: int) -> list[dict[str, Any]]:
        """Runs on ``dataset`` still going, with a result or a start at or after ``since``
        (epoch seconds), newest first, with specs."""
        latest = (sa.select(sa.func.max(T_RESULT.c.created))
                  .where(T_RESULT.c.run_id == T_RUN.c.id).scalar_subquery())
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(T_RUN).where(
                T_RUN.c.dataset == dataset, T_RUN.c.status == "running",
                sa.or_(T_RUN.c.updated >= since, latest >= since))
                .order_by(T_RUN.c.id.desc()))
            return [_run(r) for r in rows]

    def set_status(self, run_id: int, status: str, *, report: dict | None = None,
                   error: str | None = None) -> None:
        """Mark a run running, done or failed (with its report or error)."""
        values: dict[str, Any] = {"status": status, "updated": int(time.time()),
                                  "error": error}
        if report is not None:
            values["report"] = json.dumps(report)
        with writing(self.engine) as conn:
            conn.execute(T_RUN.update().where(T_RUN.c.id == run_id).values(**values))

    def done_cases(self, run_id: int, variant: str) -> set[str]:
        """Case ids of ``variant`` that already have a result."""
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(sa.select(T_RESULT.c.case_id).where(
                T_RESULT.c.run_id == run_id, T_RESULT.c.variant == variant))}

    def add_results(self, rows: list[dict[str, Any]]) -> int:
        """Store scored cases in one transaction; return how many were new.

        A case that already has a row (another execution of the run scored it first) keeps
        that row: the transaction skips it, never stores a second one.
        """
        if not rows:
            return 0
        now = int(time.time())
        with writing(self.engine) as conn:
            taken = {(r.variant, r.case_id) for r in conn.execute(
                sa.select(T_RESULT.c.variant, T_RESULT.c.case_id).where(
                    T_RESULT.c.run_id == rows[0]["run_id"],
                    T_RESULT.c.case_id.in_({r["case_id"] for r in rows})))}
            new = [{**r, "created": now, "scores": json.dumps(r["scores"]),
                    "details": json.dumps(r["details"])}
                   for r in rows if (r["variant"], r["case_id"]) not in taken]
            if new:
                conn.execute(T_RESULT.insert(), new)
        return len(new)

    def results(self, run_id: int) -> list[dict[str, Any]]:
        """Every result of a run, in variant then case order."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(T_RESULT).where(T_RESULT.c.run_id == run_id)
                                .order_by(T_RESULT.c.variant, T_RESULT.c.case_index))
            return [{**r._asdict(), "scores": json.loads(r.scores),
                     "details": json.loads(r.details)} for r in rows]


def _run(row) -> dict[str, Any]:
    out = row._asdict()
    out["spec"] = json.loads(out["spec"])
    out["report"] = json.loads(out["report"]) if out["report"] else None
    return out
