"""Real damage to a registry, met by every edge: CLI, HTTP API, fsck, and the repair.

Each test breaks a registry the way disks, operators and killed processes do: a deleted,
garbled, empty or unknown ``refs/heads/main``, a deleted loose blob or commit, SQLite pages
overwritten with garbage, the index file truncated or deleted under a running server. Then
the CLI must print one ``error:`` line (never a traceback), the HTTP API must answer JSON
with a 5xx status that is not a generic 500 (the cached fast label path included),
``promptrev fsck`` must name the damage and the command that repairs it, and after the
repair history must go on where it stopped (version numbers continue, never restart).

Everything runs in subprocesses (``python -m promptrev.cli``, ``promptrev serve``), so these
tests can be pointed at another copy of the code with PYTHONPATH; PYTHONSAFEPATH keeps the
checkout (their working directory) from shadowing it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from .conftest import PROMPT, at, variant
from .live import ROOT, LiveServer, start_server

pytestmark = pytest.mark.slow

ENV = {"PYTHONSAFEPATH": "1", "PROMPTREV_AUTHOR": "Tester <t@example.org>",
       "PROMPTREV_WEBHOOK_ALLOW_PRIVATE": "1"}  # the webhook receivers live on loopback
INDEX = "promptrev-index.sqlite"
_texts = itertools.count(1000)  # every saved text differs, so every blob is its own


# ---- the edges -------------------------------------------------------------------------
def promptrev(registry: Path, *args, timeout: float = 40) -> subprocess.CompletedProcess:
    """Run ``python -m promptrev.cli --registry REGISTRY ARGS``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PROMPTREV_REGISTRY", "PROMPTREV_INDEX_URL", "PROMPTREV_ACCOUNTS_URL",
                        "PROMPTREV_DEBUG")}
    return subprocess.run([sys.executable, "-m", "promptrev.cli", "--registry", str(registry),
                           *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env={**env, **ENV}, timeout=timeout)


def ok(registry: Path, *args) -> str:
    out = promptrev(registry, *args)
    assert out.returncode == 0, f"promptrev {' '.join(map(str, args))}:\n{out.stderr}"
    assert "Traceback" not in out.stderr, out.stderr
    return out.stdout


def refused(registry: Path, *args, naming: str) -> str:
    """Assert the command fails with one ``error:`` line naming ``naming``; return it."""
    out = promptrev(registry, *args)
    said = out.stdout + out.stderr
    assert "Traceback" not in said, said
    assert out.returncode == 1, f"promptrev {' '.join(map(str, args))} -> {out.returncode}:\n{said}"
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr
    assert naming in errors[0], errors[0]
    return errors[0]


def fsck_report(registry: Path) -> dict:
    out = promptrev(registry, "fsck", "--json", timeout=90)
    assert "Traceback" not in out.stderr, out.stderr
    report = json.loads(out.stdout)
    assert out.returncode == (0 if report["ok"] else 1)
    return report


def refused_json(response: httpx.Response, code: str, naming: str | None = None) -> dict:
    """Assert a JSON error with a specific 5xx status (not the generic 500); return it."""
    assert 500 < response.status_code < 600, (response.status_code, response.text[:600])
    assert response.headers["content-type"].startswith("application/json"), response.text[:600]
    error = response.json()["error"]
    assert error["code"] == code, error
    if naming is not None:
        assert naming in error["message"], error
    return error


def git(registry: Path, *args: str, stdin: bytes | None = None) -> str:
    return subprocess.run(["git", "--git-dir", str(registry), *args], input=stdin,
                          capture_output=True, check=True).stdout.decode().strip()


class Site:
    """A running server, its registry and an admin's HTTP client; ``greet`` has versions."""

    def __init__(self, live: LiveServer):
        self.live = live
        self.registry = live.registry
        token = ok(self.registry, "token", "create", "admin", "--label", "tests").strip()
        self.http = httpx.Client(base_url=live.url + "/api/v1", timeout=90,
                                 headers={"Authorization": f"Bearer {token}"})

    def get(self, ref: str) -> httpx.Response:
        return self.http.get("/artifact", params={"ref": ref})

    def latest(self) -> int:
        r = self.get("greet")
        assert r.status_code == 200, r.text
        return r.json()["version"]

    def put(self, base: int | None) -> httpx.Response:
        headers = {"If-Match": str(base)} if base else {}
        return self.http.put("/artifact", params={"name": "greet"}, headers=headers,
                             json={"text": variant(PROMPT, next(_texts))})

    def save(self, base: int | None) -> int:
        r = self.put(base)
        assert r.status_code in (200, 201), r.text
        return r.json()["version"]

    def numbers(self) -> list[int]:
        r = self.http.get("/versions", params={"name": "greet"})
        assert r.status_code == 200, r.text
        return [v["version"] for v in r.json()["versions"]]

    def prompt_file(self, folder: Path) -> Path:
        path = folder / "greet.prompty"
        path.write_text(variant(PROMPT, next(_texts)))
        return path

    def close(self) -> None:
        self.http.close()
        self.live.stop()


def _site(tmp: Path, workers: int) -> Site:
    site = Site(start_server(tmp, workers=workers, env=ENV))
    base = None
    for _ in range(3):
        base = site.save(base)
    return site


@pytest.fixture(scope="module")
def solo(tmp_path_factory):
    """A server with one worker: the second read of a label is sure to come from its fast
    path's cache, and a restarted worker is sure to answer the next request."""
    site = _site(tmp_path_factory.mktemp("solo"), workers=1)
    yield site
    site.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A server with two workers, each with its own connections to the index."""
    site = _site(tmp_path_factory.mktemp("pair"), workers=2)
    yield site
    site.close()


def cache_label(site: Site, version: int) -> bytes:
    """Point ``production`` at ``version`` and read it twice (Flask caches, the fast path
    answers); return the body."""
    r = site.http.put("/labels", params={"name": "greet", "label": "production"},
                      json={"version": version})
    assert r.status_code == 200, r.text
    first, second = site.get("greet@production"), site.get("greet@production")
    assert first.status_code == second.status_code == 200, second.text
    assert first.content == second.content and first.json()["version"] == version
    return first.content


def index_rows(registry: Path, table: str) -> int:
    conn = sqlite3.connect(f"file:{registry / INDEX}?mode=ro", uri=True)
    try:
        return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    finally:
        conn.close()


def _valid_main(registry: Path) -> str | None:
    try:
        return git(registry, "rev-parse", "--verify", "--quiet", "main^{commit}")
    except subprocess.CalledProcessError:
        return None


@contextmanager
def clone_first(registry: Path, tmp: Path) -> Iterator[Path]:
    """A bare clone made before the damage; afterwards, pass or fail, the shared registry is
    made whole from it (lost objects copied back, a broken main reset) for the next test."""
    clone = tmp / "clone.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(registry), str(clone)], check=True)
    head = git(registry, "rev-parse", "main")
    try:
        yield clone
    finally:
        for src in (clone / "objects").rglob("*"):
            dst = registry / "objects" / src.relative_to(clone / "objects")
            if src.is_file() and not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        if _valid_main(registry) is None:
            (registry / "refs" / "heads" / "main").write_text(head + "\n")


@contextmanager
def reindexed_on_failure(registry: Path) -> Iterator[None]:
    """Leave the shared index rebuilt for the next test when this one fails midway."""
    try:
        yield
    except BaseException:
        promptrev(registry, "reindex")
        raise


# ---- Git damage: refs/heads/main --------------------------------------------------------
def _main(registry: Path) -> Path:
    path = registry / "refs" / "heads" / "main"
    assert path.is_file(), "main is packed: deleting the loose file would not damage it"
    return path


def _delete_main(registry: Path) -> None:
    _main(registry).unlink()


def _delete_main_and_reflog(registry: Path) -> None:
    _main(registry).unlink()
    for log in ("logs/refs/heads/main", "logs/HEAD"):
        (registry / log).unlink(missing_ok=True)


MAIN_DAMAGE = {
    "missing": _delete_main,
    "missing-without-reflog": _delete_main_and_reflog,  # the index's head is the witness
    "garbage": lambda reg: _main(reg).write_bytes(b"\x00\x17 not a ref at all \xff\xfe\n"),
    "empty": lambda reg: _main(reg).write_bytes(b""),
    "unknown-commit": lambda reg: _main(reg).write_text("0123456789abcdef" * 2 + "01234567\n"),
}


@pytest.mark.parametrize("damage", list(MAIN_DAMAGE))
def test_damaged_main_is_refused_everywhere_then_repaired(solo, tmp_path, damage):
    reg = solo.registry
    latest = solo.latest()
    cached = cache_label(solo, latest)
    head = git(reg, "rev-parse", "main")
    versions_indexed = index_rows(reg, "version")
    with clone_first(reg, tmp_path):
        MAIN_DAMAGE[damage](reg)

        # The API: JSON errors naming the repair, the cached fast label path included.
        for path, params in (("/artifact", {"ref": "greet@production"}),
                             ("/artifact", {"ref": "greet@1"}), ("/artifacts", {}),
                             ("/versions", {"name": "greet"})):
            refused_json(solo.http.get(path, params=params), "damaged", "promptrev fsck")
        refused_json(solo.put(latest), "damaged", "promptrev fsck")

        # The CLI: one line, no traceback; reads and writes refused alike.
        for args in (("list",), ("show", "greet"), ("save", solo.prompt_file(tmp_path), "--force")):
            refused(reg, *args, naming="promptrev fsck")
        # Nothing was wiped or re-rooted: the index kept its rows, main is still damaged.
        assert index_rows(reg, "version") == versions_indexed
        assert _valid_main(reg) is None

        report = fsck_report(reg)
        assert not report["ok"]
        assert any("promptrev fsck --repair" in p for p in report["problems"]), report

        out = ok(reg, "fsck", "--repair")
        assert f"repaired: restored refs/heads/main to {head[:12]}" in out, out
        assert git(reg, "rev-parse", "main") == head
        assert fsck_report(reg)["ok"]

    # History goes on where it stopped, through the server that never restarted.
    again = solo.get("greet@production")
    assert again.status_code == 200 and again.content == cached
    assert solo.save(latest) == latest + 1
    assert solo.numbers() == list(range(latest + 1, 0, -1))


# ---- Git damage: loose objects ----------------------------------------------------------
def _loose(registry: Path, sha: str) -> Path:
    path = registry / "objects" / sha[:2] / sha[2:]
    assert path.is_file(), f"{sha} is packed"
    return path


def _copy_object(clone: Path, registry: Path, sha: str, kind: str) -> None:
    data = subprocess.run(["git", "--git-dir", str(clone), "cat-file", kind, sha],
                          capture_output=True, check=True).stdout
    assert git(registry, "hash-object", "-t", kind, "-w", "--stdin", stdin=data) == sha


def test_missing_blob_is_reported_and_restored_from_a_clone(solo, tmp_path):
    reg = solo.registry
    before = solo.latest()
    cache_label(solo, before)
    # A version the server has never read (libgit2 would answer from its object cache).
    latest = before + 1
    assert ok(reg, "save", solo.prompt_file(tmp_path), "--force").startswith(f"greet@{latest} ")
    with clone_first(reg, tmp_path) as clone:
        blob = git(reg, "rev-parse", f"main:{at('greet')}")
        _loose(reg, blob).unlink()

        refused_json(solo.get("greet"), "damaged", "promptrev fsck")
        refused_json(solo.http.post("/render", json={"ref": "greet",
                                                         "variables": {"who": "Ada"}}),
                     "damaged", "promptrev fsck")
        assert solo.get("greet@production").status_code == 200  # an intact version
        refused(reg, "show", "greet", naming="promptrev fsck")
        assert f"greet@{latest}" in ok(reg, "list")  # the index still answers what it can

        report = fsck_report(reg)
        assert not report["ok"]
        assert any(blob in p and "clone" in p for p in report["problems"]), report

        _copy_object(clone, reg, blob, "blob")
        assert fsck_report(reg)["ok"]
    assert solo.get("greet").json()["blob"] == blob
    assert solo.save(latest) == latest + 1
    assert solo.numbers() == list(range(latest + 1, 0, -1))


def test_missing_commit_is_refused_and_restored_from_a_clone(solo, tmp_path):
    reg = solo.registry
    latest = solo.latest()
    cache_label(solo, latest)
    with clone_first(reg, tmp_path) as clone:
        head = git(reg, "rev-parse", "main")
        _loose(reg, head).unlink()

        refused_json(solo.put(latest), "damaged", "promptrev fsck")
        r = solo.get("greet@production")  # the index and the blob still hold the answer
        assert r.status_code == 200 or refused_json(r, "damaged")
        refused(reg, "save", solo.prompt_file(tmp_path), "--force", naming="promptrev fsck")
        refused(reg, "reindex", naming="promptrev fsck")
        assert f"greet@{latest}" in ok(reg, "list")  # the refused reindex left the index

        report = fsck_report(reg)
        assert not report["ok"]
        assert any(head[:12] in p for p in report["problems"]), report
        assert any("clone" in p for p in report["problems"]), report

        _copy_object(clone, reg, head, "commit")
        assert fsck_report(reg)["ok"]
    assert solo.save(latest) == latest + 1
    assert solo.numbers() == list(range(latest + 1, 0, -1))
    assert ok(reg, "log", "greet").count("greet@") == latest + 1


def test_repairing_a_missing_head_commit_never_gives_a_number_twice(solo, tmp_path):
    """fsck names ``--repair`` for a main whose commit is gone; following that advice must
    not rewind main silently so that the next save reuses the lost version's number."""
    reg = solo.registry
    latest = solo.latest()
    lost = solo.get(f"greet@{latest}").json()
    with clone_first(reg, tmp_path):
        head = git(reg, "rev-parse", "main")
        _loose(reg, head).unlink()
        out = promptrev(reg, "fsck", "--repair", timeout=90)
        assert "Traceback" not in out.stderr, out.stderr
        if _valid_main(reg) is None or git(reg, "rev-parse", "main") == head:
            # Refused: it says where the commit can come from.
            assert out.returncode == 1 and "clone" in out.stdout + out.stderr, out
            return
        saved = solo.save(solo.latest())
        again = solo.get(f"greet@{latest}").json()
        assert saved == latest + 1 and again["blob"] == lost["blob"], (
            f"after 'fsck --repair' said {out.stdout.strip()!r}, greet@{latest} is "
            f"{again['blob'][:12]}, not the {lost['blob'][:12]} it was")


# ---- the index --------------------------------------------------------------------------
def _checkpoint(registry: Path) -> None:
    """Move everything from the write-ahead log into the file, as SQLite does by itself."""
    conn = sqlite3.connect(registry / INDEX, timeout=30)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        conn.close()


def _overwrite_pages(registry: Path, tables: tuple[str, ...]) -> None:
    """Overwrite the root pages of ``tables`` with random bytes (after a checkpoint)."""
    _checkpoint(registry)
    conn = sqlite3.connect(registry / INDEX)
    try:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        roots = dict(conn.execute("SELECT name, rootpage FROM sqlite_master WHERE type='table'"))
    finally:
        conn.close()
    with open(registry / INDEX, "r+b") as fh:
        for table in tables:
            fh.seek((roots[table] - 1) * size)
            fh.write(os.urandom(size))
        os.fsync(fh.fileno())


def _truncate(registry: Path) -> None:
    _checkpoint(registry)
    os.truncate(registry / INDEX, (registry / INDEX).stat().st_size // 2)


GIT_TABLES = ("artifact", "version", "commit", "label")  # rebuilt from Git; the rest kept
INDEX_DAMAGE = {"pages": lambda reg: _overwrite_pages(reg, GIT_TABLES), "truncated": _truncate}


def _keepsakes(site: Site, folder: Path) -> tuple[str, str]:
    """A webhook and a change request: rows that exist nowhere but in the index file."""
    url = f"http://127.0.0.1:9/hook-{next(_texts)}"
    ok(site.registry, "webhook", "add", url)
    title = f"a warmer greeting {next(_texts)}"
    ok(site.registry, "review", "open", site.prompt_file(folder), "--title", title)
    return url, title


def test_page_corrupted_index_is_refused_until_reindex_with_the_server_running(
        pair, tmp_path):
    reg = pair.registry
    url, title = _keepsakes(pair, tmp_path)
    latest = pair.latest()
    with reindexed_on_failure(reg):
        _overwrite_pages(reg, GIT_TABLES)
        for _ in range(3):  # whichever worker answers
            for path, params in (("/versions", {"name": "greet"}), ("/artifacts", {}),
                                 ("/artifact", {"ref": "greet@1"})):
                refused_json(pair.http.get(path, params=params), "damaged",
                             "promptrev reindex")
        for args in (("list",), ("show", "greet"), ("log", "greet")):
            refused(reg, *args, naming="promptrev reindex")
        report = fsck_report(reg)
        assert not report["ok"]
        assert any("promptrev reindex" in p for p in report["problems"]), report

        out = ok(reg, "reindex")  # while the server runs
        assert "lost" not in out, out  # the kept tables were readable
    for _ in range(4):
        assert pair.numbers() == list(range(latest, 0, -1))
    assert url in ok(reg, "webhook", "list")
    assert title in ok(reg, "review", "list")
    assert fsck_report(reg)["ok"]
    assert pair.save(latest) == latest + 1
    assert pair.numbers() == list(range(latest + 1, 0, -1))


@pytest.mark.parametrize("damage", list(INDEX_DAMAGE))
@pytest.mark.parametrize("edge", ["cli", "api"])
def test_a_save_on_a_damaged_index_is_refused_or_done_never_half(
        solo, tmp_path, edge, damage):
    """Damaged and nothing committed, or committed and answered as done; never a failure
    that committed (nor a generic error)."""
    reg = solo.registry
    latest = solo.latest()
    for _ in range(3):  # a server in use: its worker holds the index's pages in memory
        latest = solo.save(latest)
        solo.numbers()
        solo.http.get("/artifacts")
    head = git(reg, "rev-parse", "main")
    try:
        INDEX_DAMAGE[damage](reg)
        if edge == "cli":
            out = promptrev(reg, "save", solo.prompt_file(tmp_path), "--force")
            assert "Traceback" not in out.stderr, out.stderr
            done = out.returncode == 0
            if not done:
                assert out.returncode == 1 and "promptrev reindex" in out.stderr, out.stderr
        else:
            r = solo.put(latest)
            done = r.status_code == 200
            if not done:
                assert git(reg, "rev-parse", "main") == head, \
                    f"answered {r.status_code} {r.text}, yet committed"
                refused_json(r, "damaged", "promptrev reindex")
        if not done:
            assert git(reg, "rev-parse", "main") == head, "refused, yet committed"
    finally:
        ok(reg, "reindex")
    assert solo.numbers() == list(range(latest + done, 0, -1))
    assert fsck_report(reg)["ok"]


def test_truncated_index_fails_fast_and_reindex_repairs_it(pair, tmp_path):
    reg = pair.registry
    latest = pair.latest()
    for _ in range(6):
        pair.numbers()  # both workers have it open (see the restarted-worker test)
    with reindexed_on_failure(reg):
        _truncate(reg)
        for args in (("list",), ("show", "greet")):  # at once: no 60 s wait for a lock
            refused(reg, *args, naming="promptrev reindex")
        for path, params in (("/versions", {"name": "greet"}),
                             ("/artifact", {"ref": "greet@1"})):
            r = pair.http.get(path, params=params)  # pages still cached, or Damaged
            assert r.status_code == 200 or refused_json(r, "damaged", "promptrev reindex")
        report = fsck_report(reg)
        assert not report["ok"]
        assert any("promptrev reindex" in p for p in report["problems"]), report
        ok(reg, "reindex")
    assert fsck_report(reg)["ok"]
    for _ in range(4):
        assert pair.numbers() == list(range(latest, 0, -1))
    assert pair.save(latest) == latest + 1
    assert f"greet@{latest + 1}" in ok(reg, "list")


def test_index_deleted_while_the_server_runs_is_rebuilt_from_git(pair, tmp_path):
    reg = pair.registry
    latest = pair.latest()
    for _ in range(4):
        pair.numbers()  # both workers have it open
    with reindexed_on_failure(reg):
        (reg / INDEX).unlink()
        assert f"greet@{latest}" in ok(reg, "list")
        assert ok(reg, "show", "greet").startswith("---")
        ok(reg, "save", pair.prompt_file(tmp_path), "--force")
        for _ in range(4):  # the workers notice the new file without a restart
            assert pair.numbers() == list(range(latest + 1, 0, -1))
        assert pair.save(latest + 1) == latest + 2
        assert f"greet@{latest + 2}" in ok(reg, "list")
        assert fsck_report(reg)["ok"]


def test_reindex_while_the_server_runs_keeps_reviews_webhooks_and_answers(pair, tmp_path):
    reg = pair.registry
    url, title = _keepsakes(pair, tmp_path)
    latest = pair.latest()
    before = pair.get("greet@1").content
    for _ in range(4):
        assert pair.numbers() == list(range(latest, 0, -1))

    ok(reg, "reindex")
    for _ in range(4):
        assert pair.numbers() == list(range(latest, 0, -1))
        assert pair.get("greet@1").content == before
    assert pair.save(latest) == latest + 1
    for _ in range(4):
        assert pair.numbers() == list(range(latest + 1, 0, -1))
    assert url in ok(reg, "webhook", "list")
    assert title in ok(reg, "review", "list")
    assert fsck_report(reg)["ok"]


class Receiver:
    """A webhook receiver on loopback that records the events posted to it."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        events = self.events = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, ref: str, timeout: float = 15) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            refs = [e["payload"].get("ref") for e in self.events]
            if ref in refs:
                return refs
            time.sleep(0.1)
        return [e["payload"].get("ref") for e in self.events]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhooks_work_after_the_index_was_deleted_under_the_server(pair, tmp_path):
    """The server's webhook list and its delivery threads follow the new file too."""
    reg = pair.registry
    receiver, hook = Receiver(), None
    try:
        latest = pair.latest()
        with reindexed_on_failure(reg):
            (reg / INDEX).unlink()
            assert f"greet@{latest}" in ok(reg, "list")  # recreated, rebuilt from Git
            hook = ok(reg, "webhook", "add", receiver.url).split()[2].rstrip(":")
            saved = pair.save(latest)
            assert saved == latest + 1
            refs = receiver.wait(f"greet@{saved}")
            assert f"greet@{saved}" in refs, f"not delivered (got {refs}): " + \
                ok(reg, "webhook", "deliveries")
            assert refs.count(f"greet@{saved}") == 1 and f"greet@{latest}" not in refs
            for _ in range(4):  # whichever worker answers
                hooks = pair.http.get("/webhooks").json()["webhooks"]
                assert receiver.url in [h["url"] for h in hooks], hooks
    finally:
        receiver.close()
        if hook is not None:
            promptrev(reg, "webhook", "rm", hook)


def _workers(live: LiveServer) -> list[int]:
    """The process ids of the server's gunicorn workers (the children of its master)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == live.process.pid:
            found.append(int(entry))
    return found


def _restart_workers(live: LiveServer) -> None:
    """Kill the workers, as the kernel's OOM killer or gunicorn's timeout does; gunicorn
    starts new ones, which open the registry afresh."""
    old = _workers(live)
    assert old
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len([p for p in _workers(live) if p not in old]) < len(old):
        assert time.monotonic() < deadline, "gunicorn started no new workers"
        time.sleep(0.05)
    while True:
        try:
            if httpx.get(live.url + "/api/v1/openapi.json", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the new workers do not answer"
        time.sleep(0.05)


def test_a_worker_started_on_a_damaged_index_recovers_after_reindex(solo, tmp_path):
    """A worker that first opened the index while it was damaged answers again once
    ``promptrev reindex`` has rebuilt it, without another restart."""
    reg = solo.registry
    latest = solo.latest()
    try:
        _overwrite_pages(reg, (*GIT_TABLES, "index_state"))
        _restart_workers(solo.live)
        for _ in range(2):
            refused_json(solo.http.get("/versions", params={"name": "greet"}), "damaged",
                         "promptrev reindex")
        ok(reg, "reindex")
        for _ in range(3):
            assert solo.numbers() == list(range(latest, 0, -1))
        assert solo.save(latest) == latest + 1
    except BaseException:
        promptrev(reg, "reindex")
        with suppress(AssertionError):
            _restart_workers(solo.live)  # not to leave a stuck worker to the next test
        raise
