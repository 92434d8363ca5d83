"""Where evaluation runs and their per-case results live: SQL tables next to the index.

They are not derived from Git, so ``reindex`` never touches them. A result row is written
as soon as its case is scored, under a unique (run, variant, case) key: an interrupted
run resumes with the cases that have no row yet, and no case is ever scored twice.
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa

from ..errors import NotFound
from ..storage.sql import OnDatabase, writing
from ..storage.tables import T_EVAL_RESULT as T_RESULT
from ..storage.tables import T_EVAL_RUN as T_RUN


class EvalStore(OnDatabase):
    """Runs and results in the registry's SQL database."""

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

    def add_results(self, rows: list[dict[str, Any]]) -> None:
        """Store scored cases (one transaction; a duplicate case is an error, never a 2nd row)."""
        if not rows:
            return
        now = int(time.time())
        with writing(self.engine) as conn:
            conn.execute(T_RESULT.insert(), [{**r, "created": now,
                                              "scores": json.dumps(r["scores"]),
                                              "details": json.dumps(r["details"])}
                                             for r in rows])

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
