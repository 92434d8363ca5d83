"""A real ``promptrev serve`` (gunicorn) on loopback, for tests where HTTP matters."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "admin-live-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    """A running server: its URL, registry, process and captured output file."""

    url: str
    registry: Path
    process: subprocess.Popen
    log: Path

    def cli(self, *args: str) -> str:
        """Run a ``promptrev`` command on the same registry; return stdout."""
        out = subprocess.run([sys.executable, "-m", "promptrev.cli", "--registry",
                              str(self.registry), *args], capture_output=True, text=True,
                             cwd=ROOT, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def token(self, user: str = "admin") -> str:
        """A fresh API token for ``user``."""
        return self.cli("token", "create", user, "--label", "tests").strip()

    def stop(self) -> None:
        """Stop gunicorn (and its workers), and whatever it ran under (``wrap``): the whole
        process group, so that a wrapper that exits first leaves no server behind."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def start_server(tmp: Path, *, workers: int = 2, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, wrap: tuple[str, ...] = ()
                 ) -> LiveServer:
    """Start ``promptrev serve`` on a free port and wait until it answers.

    ``wrap`` runs it under another program (``strace -f -o FILE``).
    """
    port = free_port()
    registry = tmp / "registry"
    log = tmp / "serve.log"
    full_env = {**os.environ, "PROMPTREV_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "PROMPTREV_SEED": str(ROOT / "prompts"), **(env or {})}
    process = subprocess.Popen(
        [*wrap, sys.executable, "-m", "promptrev.cli", "--registry", str(registry), "serve",
         "--port", str(port), "--workers", str(workers), *extra_args],
        stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT, env=full_env,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"promptrev serve exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/api/v1/openapi.json", timeout=2):
                break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError(f"promptrev serve did not answer:\n{log.read_text()}")
    return LiveServer(url, registry, process, log)
