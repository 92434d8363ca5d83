"""Long work on a job queue: evaluation runs (judge scoring included) and fine-tuning
jobs started on the server, carried out by ``promptrev worker`` processes.

The queue is Huey's: a SQLite file beside the registry on one machine (no service to
run), Redis or PostgreSQL across machines (``PROMPTREV_QUEUE``). A message carries only
what to do (``evaluate`` a run id, ``finetune`` a job id); each worker has its own
settings, models and secrets, so no secret travels through the queue.

Huey hands a message to one worker and forgets it, so the row itself says who holds it
(:class:`~promptrev.evaluation.store.LeasedRows`): the worker claims it, beats every third
of ``PROMPTREV_QUEUE_LEASE`` while it works, and every worker sweeps for rows whose holder
went silent for a whole lease and puts them back on the queue (``requeue``, a
compare-and-swap: one sweeper wins). The worker that takes a run over resumes it with
:meth:`Evaluator.execute`: only the cases without a stored result run, and the store never
keeps a second result for a case, even when two executions race. A worker that finds it
lost its hold stops before its next batch. A fine-tuning job cannot resume mid-training:
the worker that takes one over trains again, and a worker pushes the adapter version only
while it still holds the job (``before_push``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from promptrev.config import Settings
from promptrev.errors import InvalidRequest, NotFound, StorageError
from promptrev.evaluation.runs import Evaluator
from promptrev.evaluation.store import EvalStore, LeasedRows, LeaseLost
from promptrev.model.names import validate_name
from promptrev.registry import Registry
from promptrev.runner.base import model_specs
from promptrev.runner.execute import Runner
from promptrev.runner.trust import Trust
from promptrev.storage.sql import writing
from promptrev.storage.tables import T_FINETUNE_JOB

log = logging.getLogger("promptrev.jobs")
QUEUE_NAME = "promptrev"
POLL_MAX_S = 1.0  # the longest an idle SQLite worker waits before looking again
REQUEUE_LEASES = 10  # a run queued this many leases ago and never claimed is sent again


def open_huey(url: str, name: str = QUEUE_NAME) -> Any:
    """The Huey instance for a queue URL (``sqlite:///FILE``, ``redis://``, ``postgresql://``).

    Registries that share one Redis or PostgreSQL need a queue ``name`` each: a worker
    takes every message of its queue."""
    import huey

    scheme, _, rest = url.partition("://")
    scheme = scheme.lower().split("+")[0]
    options = {"results": False, "utc": True, "serializer": _JsonSerializer()}
    if scheme == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise InvalidRequest(f"PROMPTREV_QUEUE: folder {parent} does not exist")
        return huey.SqliteHuey(name, filename=path, **options)
    if scheme in ("redis", "rediss"):
        return huey.RedisHuey(name, url=url, **options)
    if scheme in ("postgresql", "postgres"):
        return huey.PostgresHuey(name, dsn=f"postgresql://{rest}", **options)
    raise InvalidRequest(f"PROMPTREV_QUEUE: no queue for {scheme!r} URLs "
                         "(sqlite:///FILE, redis://HOST:PORT/DB or postgresql://...)")


def _json_serializer_class() -> type:
    from huey.registry import Message
    from huey.serializer import Serializer

    class JsonSerializer(Serializer):
        """Huey's messages as JSON, never pickles: whoever can write to the queue's store
        (a shared Redis, PostgreSQL, the SQLite file) can at most send a run or job id, not
        code for every worker to run. Anything else read from the queue is an error the
        consumer logs and skips."""

        def _serialize(self, data: Any) -> bytes:
            if isinstance(data, Message):
                data = {"huey-message": [_to_json(v) for v in data]}
            return json.dumps(data, default=_datetime_out).encode()

        def _deserialize(self, data: bytes) -> Any:
            value = json.loads(data)
            if isinstance(value, dict) and isinstance(value.get("huey-message"), list):
                fields = [_from_json(v) for v in value["huey-message"]]
                if len(fields) > len(Message._fields):
                    raise ValueError("a queue message with too many fields")
                message = Message(*fields)
                return message._replace(args=tuple(message.args or ()),
                                        kwargs=dict(message.kwargs or {}))
            return _from_json(value)

    return JsonSerializer


def _JsonSerializer() -> Any:  # noqa: N802 - a class made when Huey is first imported
    return _json_serializer_class()()


def _datetime_out(value: Any) -> Any:
    import datetime

    if isinstance(value, datetime.datetime):
        return {"$datetime": value.isoformat()}
    raise TypeError(f"a queue message cannot carry {type(value).__name__}")


def _to_json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _from_json(value: Any) -> Any:
    import datetime

    if isinstance(value, dict) and set(value) == {"$datetime"}:
        return datetime.datetime.fromisoformat(value["$datetime"])
    return value


def queue_where(url: str) -> str:
    """A queue URL without its credentials, to show."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


class JobQueue:
    """Where the server puts work and where workers take it from."""

    def __init__(self, settings: Settings):
        self.settings = settings.with_queue()
        self.huey = open_huey(self.settings.queue_url, self.settings.queue_name)
        self.handler: Any = None  # a worker's: what ``evaluate`` messages do
        self._tasks = {"evaluate": self.huey.task(name="evaluate")(self._on_evaluate),
                       "finetune": self.huey.task(name="finetune")(self._on_finetune)}

    def evaluate(self, registry: Registry, run_id: int) -> None:
        """Queue a started run: it waits, unheld, until a worker claims it."""
        EvalStore(registry).queue(run_id)
        self.resend(run_id)

    def finetune(self, registry: Registry, spec: dict[str, Any], *, author: str) -> int:
        """Record a fine-tuning job (its dataset and prompt pinned now) and queue it."""
        spec = {**spec, "dataset": registry.resolve(spec["dataset"], "dataset").ref}
        if spec.get("prompt"):
            spec["prompt"] = registry.resolve(spec["prompt"], "prompt").ref
        jobs = FinetuneJobs(registry)
        job_id = jobs.create(name=spec["name"], author=author, spec=spec)
        jobs.queue(job_id)
        self.resend(job_id, "finetune")
        return job_id

    def resend(self, row_id: int, kind: str = "evaluate") -> None:
        """Send a run's or job's message (again, for the sweep once it put the row back)."""
        try:
            self._tasks[kind](row_id)
        except Exception as exc:  # Redis or PostgreSQL away, a full disk: say which
            where = queue_where(self.settings.queue_url)
            what = "evaluation run" if kind == "evaluate" else "fine-tuning job"
            raise StorageError(
                f"{what} {row_id} is recorded, but the job queue {where} cannot be "
                f"reached ({type(exc).__name__}: {str(exc)[:200]}); a worker queues it "
                "again once the queue answers", details={kind: row_id}) from None

    def _on_evaluate(self, run_id: int) -> None:
        if self.handler is None:
            raise RuntimeError("a job queue without a worker executes nothing")
        self.handler("evaluate", run_id)

    def _on_finetune(self, job_id: int) -> None:
        if self.handler is None:
            raise RuntimeError("a job queue without a worker executes nothing")
        self.handler("finetune", job_id)

    def pending(self) -> int:
        """Messages waiting in the queue."""
        return self.huey.pending_count()


@dataclass
class Hold:
    """A run or job this worker executes, and whether another worker took it over."""

    run_id: int
    lost: bool = False

    def check(self) -> None:
        """Raise :class:`LeaseLost` once the work was taken over (called between steps)."""
        if self.lost:
            raise LeaseLost(f"run or job {self.run_id} was taken over by another worker")


FINETUNE_KEYS = {"dataset": str, "model": str, "name": str, "prompt": str}
CONFIG_KEYS = {"method": str, "rank": int, "alpha": int, "num_virtual_tokens": int,
               "epochs": float, "max_steps": int, "learning_rate": float, "batch_size": int,
               "validation_split": float, "seed": int}
METHODS = ("lora", "prompt_tuning")
# What a queued job may ask of the shared worker: a request beyond these (a billion steps,
# a rank that cannot fit in memory, an infinite learning rate) is refused when queued.
CONFIG_RANGES: dict[str, tuple[float, float]] = {
    "rank": (1, 1024), "alpha": (1, 4096), "num_virtual_tokens": (1, 1024),
    "epochs": (0, 1000), "max_steps": (-1, 1_000_000), "learning_rate": (0, 1),
    "batch_size": (1, 1024), "validation_split": (0, 0.9), "seed": (0, 2**32 - 1)}


def finetune_spec(data: dict[str, Any], models: dict[str, Any]) -> dict[str, Any]:
    """A fine-tuning request checked: every key known and typed, the model a configured
    local one; errors name the field."""
    unknown = set(data) - set(FINETUNE_KEYS) - {"config"}
    if unknown:
        raise InvalidRequest(f"unknown field(s) {', '.join(sorted(unknown))} (known: "
                             f"{', '.join(sorted([*FINETUNE_KEYS, 'config']))})")
    for key, kind in FINETUNE_KEYS.items():
        if key == "prompt" and data.get(key) is None:
            continue
        if not isinstance(data.get(key), kind) or not data[key]:
            raise InvalidRequest(f"field '{key}' is required (a {kind.__name__})")
    validate_name(data["name"])
    spec = models.get(data["model"])
    if spec is None or spec.backend != "hf":
        local = sorted(n for n, m in models.items() if m.backend == "hf")
        raise InvalidRequest(f"model {data['model']!r} is not a configured local model "
                             f"(configured: {', '.join(local) or 'none'})")
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise InvalidRequest("field 'config' must be an object of hyperparameters")
    for key, value in config.items():
        kind = CONFIG_KEYS.get(key)
        if kind is None:
            raise InvalidRequest(f"config: unknown key {key!r} (known: "
                                 f"{', '.join(sorted(CONFIG_KEYS))})")
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float
                                                       else kind):
            raise InvalidRequest(f"config.{key} must be a {kind.__name__}")
        low, high = CONFIG_RANGES.get(key, (None, None))
        if low is not None and not (math.isfinite(value) and low <= value <= high
                                    and not (key == "max_steps" and value == 0)
                                    and not (key in ("epochs", "learning_rate")
                                             and value == 0)):
            raise InvalidRequest(f"config.{key} must be from {low} to {high:,}"
                                 + (" (-1: as many steps as the epochs take)"
                                    if key == "max_steps" else
                                    ", above 0" if key in ("epochs", "learning_rate") else "")
                                 + f", not {value!r}: a job runs on a shared worker")
    if config.get("method", "lora") not in METHODS:
        raise InvalidRequest(f"config.method must be one of {', '.join(METHODS)}")
    return {**{k: data.get(k) for k in FINETUNE_KEYS}, "config": config}


class FinetuneJobs(LeasedRows):
    """Fine-tuning jobs started on the server, in the registry's SQL database."""

    table = T_FINETUNE_JOB

    def __init__(self, registry: Any):
        self._source = registry

    def create(self, *, name: str, author: str, spec: dict[str, Any]) -> int:
        """Record a new job (running: waiting for or held by a worker); return its id."""
        now = int(time.time())
        with writing(self.engine) as conn:
            return int(conn.execute(self.table.insert().values(
                name=name, author=author, created=now, updated=now, status="running",
                spec=json.dumps(spec))).inserted_primary_key[0])

    def job(self, job_id: int) -> dict[str, Any]:
        """A job as a dict (spec parsed)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.table).where(self.table.c.id == job_id)).first()
        if row is None:
            raise NotFound(f"no fine-tuning job {job_id}")
        return {**row._asdict(), "spec": json.loads(row.spec)}

    def jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recent jobs, newest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.table).order_by(self.table.c.id.desc())
                                .limit(limit))
            return [{**r._asdict(), "spec": json.loads(r.spec)} for r in rows]

    def finish(self, job_id: int, status: str, *, adapter: str | None = None,
               error: str | None = None) -> None:
        """Mark a job done (with the adapter version it pushed) or failed."""
        with writing(self.engine) as conn:
            conn.execute(self.table.update().where(self.table.c.id == job_id).values(
                status=status, adapter=adapter, error=error, updated=int(time.time())))


STORES: dict[str, type[LeasedRows]] = {"evaluate": EvalStore, "finetune": FinetuneJobs}


def worker_name() -> str:
    """This process's name on the runs it holds: host, pid and a per-start token."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    """A queue consumer: ``threads`` runs at once, a heartbeat and a sweep of its own."""

    def __init__(self, settings: Settings, *, threads: int | None = None,
                 stop_with: int | None = None):
        self.settings = settings.with_queue()
        self.queue = JobQueue(self.settings)
        self.queue.handler = self.execute
        self.threads = threads or self.settings.queue_threads
        self.lease = self.settings.queue_lease
        self.name = worker_name()
        self.stop_with = stop_with  # a parent's pid: stop when it is gone (promptrev serve)
        self.models = model_specs(self.settings.configured_models(), self.settings.env)
        self.backends: dict = {}  # loaded models, shared by this process's runs
        self._held: dict[tuple[str, int], Hold] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._tender: threading.Thread | None = None
        self._consumer: Any = None

    def _open(self) -> Registry:
        s = self.settings
        return Registry.open(s.registry, index_url=s.index_url, max_bytes=s.max_bytes)

    # ---- one run or job ----------------------------------------------------------------
    def execute(self, kind: str, row_id: int) -> None:
        """Claim a run (``evaluate``) or a job (``finetune``) and carry it out."""
        with self._lock:
            if (kind, row_id) in self._held:  # a second message for what this executes
                return
            hold = self._held[kind, row_id] = Hold(row_id)
        try:
            with self._open() as reg:
                if not STORES[kind](reg).claim(row_id, self.name, self.lease):
                    log.info("%s %s: finished or held by another worker", kind, row_id)
                    return
                log.info("%s %s: executing on %s", kind, row_id, self.name)
                if kind == "evaluate":
                    self._evaluate(reg, row_id, hold)
                else:
                    self._finetune(reg, row_id, hold)
                log.info("%s %s: done", kind, row_id)
        except LeaseLost as exc:
            log.warning("%s", exc)
        except Exception:  # recorded on the run or job; a queue has no caller
            log.exception("%s %s failed", kind, row_id)
        finally:
            with self._lock:
                self._held.pop((kind, row_id), None)

    def _runner(self, reg: Registry) -> Runner:
        return Runner(reg, env=self.settings.env, models=self.models, backends=self.backends,
                      trust=Trust.server(self.settings.allow_env))

    def _evaluate(self, reg: Registry, run_id: int, hold: Hold) -> None:
        Evaluator(reg, self._runner(reg), env=self.settings.env).execute(run_id,
                                                                          lease=hold.check)

    def _finetune(self, reg: Registry, job_id: int, hold: Hold) -> None:
        """Train as ``promptrev finetune`` does; push only while still holding the job."""
        from promptrev.runner.finetune import FinetuneConfig, finetune

        jobs = FinetuneJobs(reg)
        job = jobs.job(job_id)
        spec = job["spec"]
        try:
            model = self.models.get(spec["model"])
            if model is None or model.backend != "hf":
                raise InvalidRequest(f"model {spec['model']!r} is not a configured local "
                                     "(hf) model of this worker (PROMPTREV_MODELS)")
            version = finetune(
                reg, dataset=spec["dataset"], model_path=model.name, name=spec["name"],
                config=FinetuneConfig(**spec.get("config", {})), prompt=spec.get("prompt"),
                author=job["author"], progress=False, before_push=hold.check,
                message=f"finetune {spec['name']} on {spec['dataset']} (job {job_id})")
        except LeaseLost:
            raise
        except Exception as exc:
            jobs.finish(job_id, "failed", error=str(exc)[:2000])
            raise
        jobs.finish(job_id, "done", adapter=version.ref)

    # ---- heartbeat and sweep -----------------------------------------------------------
    def tend(self, reg: Registry) -> None:
        """Beat for every run and job held; queue again those of silent workers."""
        with self._lock:
            held = list(self._held.items())
        for (kind, row_id), hold in held:
            if not STORES[kind](reg).beat(row_id, self.name) and (kind, row_id) in self._held:
                hold.lost = True
        for kind, store_class in STORES.items():
            store = store_class(reg)
            for row_id, holder, beat in store.orphaned(self.lease,
                                                       REQUEUE_LEASES * self.lease):
                if (kind, row_id) in self._held:
                    continue
                if store.requeue(row_id, holder, beat):
                    log.warning("%s %s: %s; queued again", kind, row_id,
                                f"worker {holder} stopped answering" if holder
                                else "never claimed")
                    self.queue.resend(row_id, kind)

    def _tend_loop(self) -> None:
        with self._open() as reg:
            while not self._stopping.is_set():
                try:
                    self.tend(reg)
                except Exception:  # a database that is briefly away: beat next time
                    log.exception("job queue heartbeat failed")
                if self.stop_with and os.getppid() != self.stop_with:
                    log.warning("the server that started this worker is gone: stopping")
                    os.kill(os.getpid(), signal.SIGTERM)
                self._stopping.wait(self.lease / 3)

    # ---- the process -------------------------------------------------------------------
    def _consumer_for(self, *, main_thread: bool) -> Any:
        from huey.consumer import Consumer

        class _Consumer(Consumer):
            def _set_signal_handlers(inner) -> None:  # noqa: N805 (the consumer's self)
                if main_thread:
                    super()._set_signal_handlers()

        return _Consumer(self.queue.huey, workers=self.threads, worker_type="thread",
                         periodic=False, max_delay=POLL_MAX_S, initial_delay=0.05,
                         check_worker_health=True)

    def start(self) -> None:
        """Start consuming in threads of this process (tests, ``--dev``); stop with stop()."""
        self._tender = threading.Thread(target=self._tend_loop, name="promptrev-tend",
                                        daemon=True)
        self._tender.start()
        self._consumer = self._consumer_for(main_thread=False)
        self._consumer.start()

    def run(self) -> None:
        """Consume until SIGTERM or SIGINT (``promptrev worker``); give back held runs."""
        self._tender = threading.Thread(target=self._tend_loop, name="promptrev-tend",
                                        daemon=True)
        self._tender.start()
        self._consumer = self._consumer_for(main_thread=True)
        try:
            self._consumer.run()
        finally:
            self._give_back()

    def stop(self) -> None:
        """Stop a worker begun with :meth:`start`; its unfinished runs go back."""
        if self._consumer is not None:
            self._consumer.stop(graceful=False)
        self._give_back()

    def _give_back(self) -> None:
        self._stopping.set()
        with self._lock:
            holds = list(self._held.items())
        if not holds:
            return
        with self._open() as reg:
            for (kind, row_id), hold in holds:
                hold.lost = True
                STORES[kind](reg).release(row_id, self.name)
                log.info("%s %s: given back unfinished", kind, row_id)


def queue_state(run: dict[str, Any], lease: float, now: float) -> dict[str, Any] | None:
    """Where a run stands on the queue, for the pages and the API (None: not queued).

    ``queued``: waiting for a worker; ``running``: held by ``worker``, which beat
    ``heartbeat_age`` seconds ago; ``stalled``: its worker went silent, and another worker
    will resume it; ``done``/``failed`` once it ended.
    """
    if run.get("heartbeat") is None:
        return None
    if run["status"] != "running":
        return {"state": run["status"], "worker": run.get("worker")}
    age = max(0, int(now - run["heartbeat"]))
    if run.get("worker") is None:
        return {"state": "queued", "worker": None, "waiting_s": age}
    state = "running" if age <= lease else "stalled"
    return {"state": state, "worker": run["worker"], "heartbeat_age": age}
