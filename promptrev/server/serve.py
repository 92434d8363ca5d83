"""Run the server: gunicorn with several threaded workers, or Flask's reloader with ``--dev``.

Each gunicorn worker builds its own app after the fork (no preloading), so no database
connection or Git handle is ever shared between processes; each then starts its webhook
deliverer thread, and stops it when the worker exits. Each worker serves requests in a
pool of threads (``PROMPTREV_THREADS``) behind a poller that reads request heads, so slow
or hostile clients cannot hold the workers (:mod:`promptrev.server.worker`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


def run(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000,
        workers: int | None = None, threads: int | None = None, dev: bool = False,
        access_log: bool = False) -> None:
    """Serve until interrupted."""
    if dev:
        app = create_app(settings)
        if os.environ.get("WERKZEUG_RUN_MAIN") == "true":  # the reloader's serving child
            start_delivery(app)
            if settings.primary:
                start_follower(settings)  # it exits with this process (--parent)
        app.run(host=host, port=port, debug=True, use_reloader=True, threaded=True)
        return
    apps: list = []  # this worker's app, once built (after the fork)
    followers: list[subprocess.Popen] = []  # a replica's one follower process

    def worker_exit(_server, _worker) -> None:
        for app in apps:
            stop_delivery(app)

    def when_ready(_server) -> None:
        if settings.primary:
            followers.append(start_follower(settings))

    def on_exit(_server) -> None:
        for process in followers:
            stop_follower(process)

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


def start_follower(settings: Settings) -> subprocess.Popen:
    """A replica's follower (``promptrev replica follow``): one process per replica,
    started by the gunicorn master, never by a worker. It exits with the master (it
    checks its parent), so a killed server leaves no follower behind."""
    env = {**os.environ, "PROMPTREV_PRIMARY": settings.primary or "",
           "PROMPTREV_PRIMARY_TOKEN": settings.primary_token or "",
           "PROMPTREV_INDEX_URL": settings.index_url or "",
           "PROMPTREV_DURABILITY": settings.durability,
           "PROMPTREV_REPLICATION_WAIT": str(settings.replication_wait)}
    return subprocess.Popen([sys.executable, "-m", "promptrev.cli", "--registry",
                             settings.registry, "replica", "follow", "--parent",
                             str(os.getpid())], env=env)


def stop_follower(process: subprocess.Popen) -> None:
    """Stop the follower and wait for it (killed after 10 s)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
