"""Run the server: gunicorn with several threaded workers, or Flask's reloader with ``--dev``.

Each gunicorn worker builds its own app after the fork (no preloading), so no database
connection or Git handle is ever shared between processes; each then starts its webhook
deliverer thread, and stops it when the worker exits. Beside them runs one ``promptrev
worker`` (:mod:`promptrev.jobs`), a child process that executes the evaluation runs the
server queues, stopped with the server. Each worker serves requests in a
pool of threads (``PROMPTREV_THREADS``) behind a poller that reads request heads, so slow
or hostile clients cannot hold the workers (:mod:`promptrev.server.worker`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from typing import Any

from promptrev.config import Settings

from . import create_app
from .webhook_delivery import start_delivery, stop_delivery


def default_workers() -> int:
    """Gunicorn's rule of thumb, 2 × cores + 1, capped at 8."""
    return min(8, 2 * (os.cpu_count() or 1) + 1)


def worker_class(settings: Settings) -> type:
    """The gunicorn worker class, with the settings' limits on slow clients."""
    from .worker import ClientSocket, GuardedWorker

    socket_class = type("ClientSocket", (ClientSocket,), {
        "idle_timeout": settings.client_idle_timeout, "grace": settings.header_timeout,
        "min_rate": float(settings.client_min_rate)})
    return type("GuardedWorker", (GuardedWorker,), {
        "header_timeout": settings.header_timeout, "socket_class": socket_class})


class Child:
    """A process the server runs beside its workers: the job worker (``promptrev
    worker``) and a replica's follower (``promptrev replica follow``).

    Started with the server, started again if it dies (a thread watches it), stopped with
    the server; if the server itself is killed, the child stops by itself
    (``--stop-with``, the server's pid).
    """

    RESTART_DELAY_S = 1.0

    def __init__(self, settings: Settings, name: str, args: list[str],
                 env: dict[str, str] | None = None):
        self.settings, self.name, self.args, self.env = settings, name, args, env or {}
        self.child: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name=f"promptrev-{name}",
                                         daemon=True)

    def start(self) -> Child:
        """Start the child and its watcher."""
        self.child = self._spawn()
        self._watcher.start()
        return self

    def _spawn(self) -> subprocess.Popen:
        s = self.settings
        command = [sys.executable, "-m", "promptrev.cli", "--registry", s.registry]
        if s.index_url:
            command += ["--index-url", s.index_url]
        return subprocess.Popen([*command, *self.args, "--stop-with", str(os.getpid())],
                                env={**os.environ, **self.env})

    def _watch(self) -> None:
        # gunicorn's arbiter reaps every child, ours included: poll() then says 0.
        while not self._stopping.wait(self.RESTART_DELAY_S):
            if self.child is not None and self.child.poll() is not None \
                    and not self._stopping.is_set():
                print(f"promptrev {self.name} exited; starting it again", file=sys.stderr,
                      flush=True)
                self.child = self._spawn()

    def stop(self) -> None:
        """Stop the child (a job worker's unfinished runs go back on the queue) and its
        watcher; killed after 15 s."""
        self._stopping.set()
        child = self.child
        if child is None or child.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def job_worker(settings: Settings) -> Child:
    """``promptrev worker`` on the server's registry and queue."""
    env = {"PROMPTREV_QUEUE_NAME": settings.queue_name}
    if settings.queue_url:
        env["PROMPTREV_QUEUE"] = settings.queue_url
    return Child(settings, "worker", ["worker"], env)


def follower(settings: Settings) -> Child:
    """A replica's follower: one process per replica, started by the gunicorn master,
    never by a worker."""
    return Child(settings, "follower", ["replica", "follow"], {
        "PROMPTREV_PRIMARY": settings.primary or "",
        "PROMPTREV_PRIMARY_TOKEN": settings.primary_token or "",
        "PROMPTREV_DURABILITY": settings.durability,
        "PROMPTREV_REPLICATION_WAIT": str(settings.replication_wait)})


def run(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000,
        workers: int | None = None, threads: int | None = None, dev: bool = False,
        access_log: bool = False) -> None:
    """Serve until interrupted, with a job worker of its own (unless
    ``PROMPTREV_SERVE_WORKER`` is off, workers running elsewhere, or this is a replica,
    which sends evaluations to its primary)."""
    own = settings.serve_worker and not settings.primary \
        and os.environ.get("WERKZEUG_RUN_MAIN") != "true"
    worker = job_worker(settings).start() if own else None
    try:
        _serve(settings, host=host, port=port, workers=workers, threads=threads, dev=dev,
               access_log=access_log)
    finally:
        if worker is not None:
            worker.stop()


def _serve(settings: Settings, *, host: str, port: int, workers: int | None,
           threads: int | None, dev: bool, access_log: bool) -> None:
    if dev:
        app = create_app(settings)
        if os.environ.get("WERKZEUG_RUN_MAIN") == "true":  # the reloader's serving child
            start_delivery(app)
            if settings.primary:
                follower(settings).start()  # it exits with this process (--stop-with)
        app.run(host=host, port=port, debug=True, use_reloader=True, threaded=True)
        return
    apps: list = []  # this worker's app, once built (after the fork)
    followers: list[Child] = []  # a replica's one follower process

    def worker_exit(_server, _worker) -> None:
        for app in apps:
            stop_delivery(app)

    def when_ready(_server) -> None:
        if settings.primary:
            followers.append(follower(settings).start())

    def on_exit(_server) -> None:
        for child in followers:
            child.stop()

    from gunicorn.app.base import BaseApplication

    class _Gunicorn(BaseApplication):
        def load_config(self) -> None:
            options: dict[str, Any] = {
                "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                "workers": workers or default_workers(),
                "worker_class": worker_class(settings),
                "threads": threads or settings.server_threads,
                # A worker whose poller stops answering for this long is replaced; a slow
                # request never counts (ClientSocket bounds every wait on a client).
                "timeout": 120,
                "graceful_timeout": 10,
                "preload_app": False,
                "accesslog": "-" if access_log else None,
                "limit_request_line": 8190,
                # gunicorn >= 25 opens a control socket shared by every server of the
                # user; several registries on one machine must not collide there.
                "control_socket_disable": True,
                "worker_exit": worker_exit,
                "when_ready": when_ready,
                "on_exit": on_exit,
            }
            for key, value in options.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self):
            app = create_app(settings)
            apps.append(app)
            start_delivery(app)
            return app

    _Gunicorn().run()
