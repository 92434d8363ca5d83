"""Long work on a job queue: evaluation runs started on the server, executed by workers.

The queue is Huey's: a SQLite file beside the registry on one machine (no service to
run), Redis or PostgreSQL across machines (``PROMPTREV_QUEUE``). A message carries only
what to do (``evaluate``, a run id); each worker has its own settings, models and secrets.

Huey hands a message to one worker and forgets it, so the run itself says who holds it:
the worker claims the run (:meth:`EvalStore.claim`), beats every third of
``PROMPTREV_QUEUE_LEASE`` while it executes it, and every worker sweeps for runs whose
holder went silent for a whole lease and puts them back on the queue
(:meth:`EvalStore.requeue`, a compare-and-swap: one sweeper wins). The worker that takes
such a run over resumes it with :meth:`Evaluator.execute`: only the cases without a stored
result run, and the store never keeps a second result for a case, even when two
executions race. A worker that finds it lost its hold stops before its next batch.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
from dataclasses import dataclass
from typing import Any

from promptrev.config import Settings
from promptrev.errors import InvalidRequest, StorageError
from promptrev.evaluation.runs import Evaluator
from promptrev.evaluation.store import EvalStore, LeaseLost
from promptrev.registry import Registry
from promptrev.runner.base import model_specs
from promptrev.runner.execute import Runner
from promptrev.runner.trust import Trust

log = logging.getLogger("promptrev.jobs")
QUEUE_NAME = "promptrev"
POLL_MAX_S = 1.0  # the longest an idle SQLite worker waits before looking again
REQUEUE_LEASES = 10  # a run queued this many leases ago and never claimed is sent again


def open_huey(url: str) -> Any:
    """The Huey instance for a queue URL (``sqlite:///FILE``, ``redis://``, ``postgresql://``)."""
    import huey

    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    options = {"results": False, "utc": True}
    if scheme == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise InvalidRequest(f"PROMPTREV_QUEUE: folder {parent} does not exist")
        return huey.SqliteHuey(QUEUE_NAME, filename=path, **options)
    if scheme in ("redis", "rediss"):
        return huey.RedisHuey(QUEUE_NAME, url=url, **options)
    if scheme in ("postgresql", "postgres"):
        return huey.PostgresHuey(QUEUE_NAME, dsn=url.replace("postgresql+psycopg", "postgresql"),
                                 **options)
    raise InvalidRequest(f"PROMPTREV_QUEUE: no queue for {scheme!r} URLs "
                         "(sqlite:///FILE, redis://HOST:PORT/DB or postgresql://...)")


def queue_where(url: str) -> str:
    """A queue URL without its credentials, to show."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


class JobQueue:
    """Where the server puts work and where workers take it from."""

    def __init__(self, settings: Settings):
        self.settings = settings.with_queue()
        self.huey = open_huey(self.settings.queue_url)
        self.handler: Any = None  # a worker's: what ``evaluate`` messages do
        self._evaluate = self.huey.task(name="evaluate")(self._on_evaluate)

    def evaluate(self, registry: Registry, run_id: int) -> None:
        """Queue a started run: it waits, unheld, until a worker claims it."""
        EvalStore(registry).queue(run_id)
        self.resend(run_id)

    def resend(self, run_id: int) -> None:
        """Send a run's message (again, for the sweep once it has put the run back)."""
        try:
            self._evaluate(run_id)
        except Exception as exc:  # Redis or PostgreSQL away, a full disk: say which
            where = queue_where(self.settings.queue_url)
            raise StorageError(
                f"evaluation run {run_id} is recorded, but the job queue {where} cannot be "
                f"reached ({type(exc).__name__}: {str(exc)[:200]}); a worker queues it "
                "again once the queue answers", details={"run": run_id}) from None

    def _on_evaluate(self, run_id: int) -> None:
        if self.handler is None:
            raise RuntimeError("a job queue without a worker executes nothing")
        self.handler(run_id)

    def pending(self) -> int:
        """Messages waiting in the queue."""
        return self.huey.pending_count()


@dataclass
class Hold:
    """A run this worker executes, and whether another worker took it over."""

    run_id: int
    lost: bool = False

    def check(self) -> None:
        """Raise :class:`LeaseLost` once the run was taken over (called between batches)."""
        if self.lost:
            raise LeaseLost(f"evaluation run {self.run_id} was taken over by another worker")


def worker_name() -> str:
    """This process's name on the runs it holds: host, pid and a per-start token."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    """A queue consumer: ``threads`` runs at once, a heartbeat and a sweep of its own."""

    def __init__(self, settings: Settings, *, threads: int | None = None,
                 stop_with: int | None = None):
        self.settings = settings.with_queue()
        self.queue = JobQueue(self.settings)
        self.queue.handler = self.evaluate
        self.threads = threads or self.settings.queue_threads
        self.lease = self.settings.queue_lease
        self.name = worker_name()
        self.stop_with = stop_with  # a parent's pid: stop when it is gone (promptrev serve)
        self.models = model_specs(self.settings.configured_models(), self.settings.env)
        self.backends: dict = {}  # loaded models, shared by this process's runs
        self._held: dict[int, Hold] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._tender: threading.Thread | None = None
        self._consumer: Any = None

    def _open(self) -> Registry:
        s = self.settings
        return Registry.open(s.registry, index_url=s.index_url, max_bytes=s.max_bytes)

    # ---- one run -----------------------------------------------------------------------
    def evaluate(self, run_id: int) -> None:
        """Claim a run and execute it to the end (resuming from its stored results)."""
        with self._lock:
            if run_id in self._held:  # a second message for a run this process executes
                return
            hold = self._held[run_id] = Hold(run_id)
        try:
            with self._open() as reg:
                if not EvalStore(reg).claim(run_id, self.name, self.lease):
                    log.info("evaluation run %s: finished or held by another worker", run_id)
                    return
                log.info("evaluation run %s: executing on %s", run_id, self.name)
                runner = Runner(reg, env=self.settings.env, models=self.models,
                                backends=self.backends,
                                trust=Trust.server(self.settings.allow_env))
                Evaluator(reg, runner, env=self.settings.env).execute(run_id,
                                                                      lease=hold.check)
                log.info("evaluation run %s: done", run_id)
        except LeaseLost as exc:
            log.warning("%s", exc)
        except Exception:  # recorded on the run by execute; a queue has no caller
            log.exception("evaluation run %s failed", run_id)
        finally:
            with self._lock:
                self._held.pop(run_id, None)

    # ---- heartbeat and sweep -----------------------------------------------------------
    def tend(self, store: EvalStore) -> None:
        """Beat for every run held; put back on the queue the runs of silent workers."""
        with self._lock:
            holds = list(self._held.values())
        for hold in holds:
            if not store.beat(hold.run_id, self.name) and hold.run_id in self._held:
                hold.lost = True
        for run_id, holder, beat in store.orphaned(self.lease,
                                                   REQUEUE_LEASES * self.lease):
            if run_id in self._held:
                continue
            if store.requeue(run_id, holder, beat):
                log.warning("evaluation run %s: %s; queued again", run_id,
                            f"worker {holder} stopped answering" if holder
                            else "never claimed")
                self.queue.resend(run_id)

    def _tend_loop(self) -> None:
        with self._open() as reg:
            store = EvalStore(reg)
            while not self._stopping.is_set():
                try:
                    self.tend(store)
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
            holds = list(self._held.values())
        if not holds:
            return
        with self._open() as reg:
            store = EvalStore(reg)
            for hold in holds:
                hold.lost = True
                store.release(hold.run_id, self.name)
                log.info("evaluation run %s: given back unfinished", hold.run_id)


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
