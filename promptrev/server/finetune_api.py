"""Fine-tuning on the server: ``POST /api/v1/finetunes`` queues a job that a ``promptrev
worker`` trains (as ``promptrev finetune`` does, on a configured local model) and that
ends by pushing the adapter version; ``GET /api/v1/finetunes/job`` follows it.

The job is checked and authorized when it is queued: pushing an adapter changes ``main``,
so it takes the role that may write ``main`` directly; the version is pushed as its author.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Response, g

from promptrev.jobs import FinetuneJobs, finetune_spec, queue_state

from .api import bp
from .auth import state
from .params import MAX_INT_FIELD, int_arg, json_body, json_response, registry


def job_summary(job: dict[str, Any]) -> dict[str, Any]:
    """What a caller polling a job needs: its state and, once done, its adapter version."""
    return {"job": job["id"], "status": job["status"], "name": job["name"],
            "dataset": job["spec"]["dataset"], "model": job["spec"]["model"],
            "adapter": job["adapter"], "error": job["error"], "author": job["author"],
            "queue": queue_state(job, state().settings.queue_lease, time.time())}


@bp.post("/finetunes")
def start_finetune() -> Response:
    """Queue a fine-tuning job; 202 with it."""
    state().policy.require_write_main(g.user, "fine-tuning an adapter")
    spec = finetune_spec(json_body(), state().models)
    reg = registry()
    job_id = state().jobs.finetune(reg, spec, author=g.user.author)
    return json_response(job_summary(FinetuneJobs(reg).job(job_id)), 202)


@bp.get("/finetunes/job")
def finetune_job() -> Response:
    """One fine-tuning job: its state, its worker, its adapter version once pushed."""
    job = FinetuneJobs(registry()).job(int_arg("id", None, 1, MAX_INT_FIELD))
    return json_response(job_summary(job))
