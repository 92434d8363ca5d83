"""A full disk, for real: registries and indexes on a small tmpfs filled up to ENOSPC.

(a) Git and the index on one full disk: every write is refused with ``storage_full``
(507 over HTTP, one ``error:`` line in the CLI), nothing is half-written, reads go on, and
writes work again once the filler is deleted. (b) Git on the normal disk and the index on
a full one: writes are committed and reported with their version, reads come from Git,
and the real index catches up by itself once there is space. (c) Only a little space is
left for the index, so the save's own index update fails after its commit landed.

Mounting a tmpfs needs root; without it these tests are skipped.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from promptrev import Registry
from promptrev.errors import PromptrevError
from promptrev.storage import outbox
from promptrev.storage.gitstore import GitStore

from .conftest import PROMPT, variant
from .live import start_server

pytestmark = pytest.mark.slow
AUTHOR = "Tester <t@example.org>"


class Disk:
    """A mounted, size-limited tmpfs that can be filled to ENOSPC and freed again."""

    def __init__(self, path: Path):
        self.path = path
        self.filler = path / "filler"

    def fill(self, leave: int = 0) -> None:
        """Write the filler until the disk is full; then give back ``leave`` bytes."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 1 << 16, 4096, 1):
                block = b"\0" * size
                while True:
                    try:
                        os.write(fd, block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
            if leave:
                os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
        finally:
            os.close(fd)
        assert self.available() <= leave + 4096

    def free(self) -> None:
        """Delete the filler."""
        self.filler.unlink(missing_ok=True)

    def available(self) -> int:
        """Free bytes on the disk."""
        found = os.statvfs(self.path)
        return found.f_bavail * found.f_frsize


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(name, size)`` mounts a tmpfs under tmp_path; all are unmounted afterwards."""
    mounted: list[Path] = []

    def mount(name: str = "disk", size: str = "2m") -> Disk:
        path = tmp_path / name
        path.mkdir()
        try:
            out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
                                  "tmpfs", str(path)], capture_output=True, text=True)
        except FileNotFoundError:
            pytest.skip("no mount command to make a small tmpfs")
        if out.returncode != 0:
            said = (out.stderr or out.stdout).strip()
            if os.geteuid() != 0 or "permi" in said.lower() or "root" in said.lower():
                pytest.skip(f"cannot mount a tmpfs here: {said}")
            pytest.fail(f"mount -t tmpfs failed: {said}")
        mounted.append(path)
        return Disk(path)

    yield mount
    busy = []
    for path in reversed(mounted):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            busy.append(str(path))
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
    assert not busy, f"still in use after the test (a file left open?): {busy}"


@pytest.fixture
def fast_retry(monkeypatch):
    """The real index is tried again at once instead of every 2 s (in this process)."""
    from promptrev import registry as module

    monkeypatch.setattr(module, "RETRY_INDEX_SECONDS", 0.0, raising=False)


def cli(*args, registry: Path, cwd: Path, index_url: str | None = None
        ) -> subprocess.CompletedProcess:
    """``promptrev`` in its own process (cwd outside the checkout, so PYTHONPATH rules)."""
    command = [sys.executable, "-m", "promptrev.cli", "--registry", str(registry)]
    if index_url:
        command += ["--index-url", index_url]
    env = {k: v for k, v in os.environ.items()
           if k not in ("PROMPTREV_INDEX_URL", "PROMPTREV_DEBUG")}
    env["PROMPTREV_AUTHOR"] = AUTHOR
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def one_error_line(out: subprocess.CompletedProcess) -> str:
    """The CLI failed with exit 1 and an ``error:`` line, and printed no traceback."""
    both = out.stdout + out.stderr
    assert "Traceback" not in both, both
    assert out.returncode == 1, both
    lines = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, both
    return lines[0]


def assert_refused_as_full(exc: BaseException) -> None:
    assert isinstance(exc, PromptrevError), repr(exc)
    assert type(exc).__name__ == "StorageFull" and exc.code == "storage_full", repr(exc)
    assert "full" in exc.message and "nothing was changed" in exc.message, exc.message


def indexed_head(database: Path) -> str | None:
    """The commit the index database on disk says it reflects (read-only, no catch-up)."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT head FROM index_state").fetchone()[0]
    finally:
        conn.close()


def same_history(a: Registry, b: Registry, names: list[str]) -> None:
    for name in names:
        assert [(v.number, v.commit, v.blob, v.message) for v in a.history(name)] == \
            [(v.number, v.commit, v.blob, v.message) for v in b.history(name)]
        assert a.labels(name) == b.labels(name)


def continuous(reg: Registry, name: str) -> list[int]:
    numbers = [v.number for v in reg.history(name)]
    assert numbers == list(range(len(numbers), 0, -1)), numbers
    return numbers


# ---- (a) Git and the index on one full disk --------------------------------------------
def test_api_on_a_full_disk_refuses_writes_cleanly_and_keeps_reading(tmpfs):
    disk = tmpfs()
    path = disk.path / "reg"
    with Registry.init(path) as reg:
        reg.save("greet", PROMPT, author=AUTHOR)
        reg.set_label("greet", "production", 1, author=AUTHOR)
        head = reg.store.head()
        disk.fill()

        def two_at_once():
            with reg.transaction(message="two", author=AUTHOR) as tx:
                tx.save("greet", variant(PROMPT, 2))
                tx.save("other", PROMPT)

        for attempt in (lambda: reg.save("greet", variant(PROMPT, 1), base=1),
                        lambda: reg.save("fresh", PROMPT),
                        lambda: reg.set_label("greet", "staging", 1),
                        lambda: reg.delete("greet"),
                        two_at_once):
            with pytest.raises(Exception) as caught:
                attempt()
            assert_refused_as_full(caught.value)
            assert reg.store.head() == head  # nothing was changed
            assert reg.get("greet").text == PROMPT and continuous(reg, "greet") == [1]
        assert [a.name for a in reg.list()] == ["greet"]
        assert reg.labels("greet") == {"production": 1}
        assert reg.get("greet@production").version.number == 1
        with Registry.open(path) as other:  # opened on the full disk, as another worker
            assert other.get("greet").text == PROMPT
            same_history(reg, other, ["greet"])

        disk.free()
        saved = reg.save("greet", variant(PROMPT, 1), base=1, message="after")
        assert saved.number == 2
    with Registry.open(path) as reg:
        report = reg.fsck()
        assert report["ok"], report["problems"]
        assert continuous(reg, "greet") == [2, 1]
        assert reg.get("greet@2").text == variant(PROMPT, 1)
        assert reg.get("greet@1").text == PROMPT
        assert [a.name for a in reg.list(include_deleted=True)] == ["greet"]
        assert reg.labels("greet") == {"production": 1}


def test_filling_up_write_by_write_never_half_writes(tmpfs, fast_retry):
    """Leave 0, 4, 8 ... KiB for each write: each one is whole or refused, never half."""
    disk = tmpfs()
    path = disk.path / "reg"
    acked: dict[str, tuple[str, int]] = {}  # message → (name, version) acknowledged
    refused: list[str] = []
    with Registry.init(path) as reg:
        reg.save("greet", PROMPT, message="seed")
        reg.save("pair-a", PROMPT, message="seed")
        reg.save("pair-b", PROMPT, message="seed")
        for step, leave in enumerate(range(0, 96 * 1024, 4096)):
            disk.free()
            disk.fill(leave)
            message = f"step {step} (left {leave})"
            latest = reg.resolve("greet").number
            head = reg.store.head()
            try:
                if step % 2:
                    with reg.transaction(message=message, author=AUTHOR) as tx:
                        tx.save("pair-a", variant(PROMPT, step))
                        tx.save("pair-b", variant(PROMPT, step))
                    made = {v.name: v.number for v in tx.versions}
                    assert sorted(made) == ["pair-a", "pair-b"], tx.versions
                    acked[message] = ("pair-a", made["pair-a"])
                else:
                    version = reg.save("greet", variant(PROMPT, step), message=message,
                                       author=AUTHOR)
                    assert version.number == latest + 1
                    acked[message] = ("greet", version.number)
            except PromptrevError as exc:
                assert exc.code == "storage_full", exc.message
                assert reg.store.head() == head, f"{message}: refused but main moved"
                refused.append(message)
            name, number = acked.get(message, ("greet", latest))
            assert reg.resolve(name).number == number  # reads answer what was acknowledged
        assert refused and acked, (refused, list(acked))
        disk.free()
    with Registry.open(path) as reg:
        messages = {}
        for name in ("greet", "pair-a", "pair-b"):
            continuous(reg, name)
            messages.update({(name, v.message): v.number for v in reg.history(name)})
        for message, (name, number) in acked.items():
            step = int(message.split()[1])
            assert messages[(name, message)] == number
            assert reg.get(f"{name}@{number}").text == variant(PROMPT, step)
            if name == "pair-a":  # the transaction was whole
                assert ("pair-b", message) in messages
        for message in refused:
            assert not any(m == message for _name, m in messages), f"{message} half-written"
        report = reg.fsck()
        assert report["ok"], report["problems"]
        assert reg.save("greet", variant(PROMPT, 999)).number == reg.resolve("greet").number


def test_cli_on_a_full_disk_prints_one_error_line_and_no_traceback(tmpfs, tmp_path):
    disk = tmpfs()
    path = disk.path / "reg"
    with Registry.init(path) as reg:
        reg.save("greet", PROMPT)
    edit = tmp_path / "greet.prompty"
    edit.write_text(variant(PROMPT, 1))
    disk.fill()
    for args in (("save", edit, "--base", "1"), ("label", "set", "greet", "staging", "1"),
                 ("rm", "greet")):
        one_error_line(cli(*args, registry=path, cwd=tmp_path))
    out = cli("fsck", registry=path, cwd=tmp_path)
    assert "Traceback" not in out.stdout + out.stderr, out.stderr
    if out.returncode:
        assert out.returncode == 1 and ("error: " in out.stderr or "problem: " in out.stdout)
    disk.free()
    out = cli("save", edit, "--base", "1", registry=path, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("greet@2 "), out.stderr
    out = cli("fsck", registry=path, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr
    with Registry.open(path) as reg:
        assert continuous(reg, "greet") == [2, 1]
        assert reg.get("greet").text == variant(PROMPT, 1)


def test_cli_on_a_full_disk_reads_from_git_and_says_the_disk_is_full(tmpfs, tmp_path):
    """No process holds the index open (its -wal and -shm files are gone) when it fills."""
    disk = tmpfs()
    path = disk.path / "reg"
    with Registry.init(path) as reg:
        reg.save("greet", PROMPT)
        reg.set_label("greet", "production", 1)
    edit = tmp_path / "greet.prompty"
    edit.write_text(variant(PROMPT, 1))
    disk.fill()
    shown = cli("show", "greet@production", registry=path, cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout == PROMPT, shown.stderr
    listed = cli("list", registry=path, cwd=tmp_path)
    assert listed.returncode == 0 and "greet@1" in listed.stdout, listed.stderr
    log = cli("log", "greet", registry=path, cwd=tmp_path)
    assert log.returncode == 0 and log.stdout.strip(), log.stderr
    line = one_error_line(cli("save", edit, "--base", "1", registry=path, cwd=tmp_path))
    assert "full" in line and "reindex" not in line, line


def test_server_on_a_full_disk_answers_507_to_writes_and_200_to_reads(tmpfs, tmp_path):
    disk = tmpfs(size="4m")
    (disk.path / "reg").mkdir()
    live = tmp_path / "live"
    live.mkdir()
    (live / "registry").symlink_to(disk.path / "reg")  # serve.log stays on the normal disk
    server = start_server(live, workers=2)
    try:
        api = server.url + "/api/v1"
        http = httpx.Client(headers={"Authorization": f"Bearer {server.token()}"}, timeout=60)
        r = http.put(f"{api}/artifact", params={"name": "greet"}, json={"text": PROMPT})
        assert r.status_code == 201, r.text
        r = http.put(f"{api}/artifact", params={"name": "greet"},
                     json={"text": variant(PROMPT, 1), "base": 1})
        assert r.status_code == 200, r.text
        r = http.put(f"{api}/labels", params={"name": "greet", "label": "staging"},
                     json={"version": 1})
        assert r.status_code == 200, r.text
        before = {what: http.get(f"{api}/{what}", params=params).json() for what, params in (
            ("artifact", {"ref": "greet"}), ("versions", {"name": "greet"}),
            ("labels", {"name": "greet"}), ("artifacts", {}))}
        disk.fill()
        writes = [
            ("PUT", "artifact", {"name": "greet"}, {"text": variant(PROMPT, 2), "base": 2}),
            ("PUT", "artifact", {"name": "fresh"}, {"text": PROMPT}),
            ("POST", "restore", {}, {"name": "greet", "version": 1}),
            ("PUT", "labels", {"name": "greet", "label": "beta"}, {"version": 1}),
            ("POST", "rollback", {}, {"name": "greet", "to": 1}),
            ("DELETE", "artifact", {"name": "greet"}, None),
        ]
        for _ in range(2):  # each worker
            for method, where, params, body in writes:
                r = http.request(method, f"{api}/{where}", params=params, json=body)
                assert r.status_code == 507, (method, where, r.status_code, r.text)
                error = r.json()["error"]
                assert error["code"] == "storage_full" and "full" in error["message"], error
            for _ in range(3):
                for what, params in (("artifact", {"ref": "greet"}),
                                     ("versions", {"name": "greet"}),
                                     ("labels", {"name": "greet"}), ("artifacts", {})):
                    r = http.get(f"{api}/{what}", params=params)
                    assert r.status_code == 200, (what, r.status_code, r.text)
                    assert r.json() == before[what]
        disk.free()
        r = http.put(f"{api}/artifact", params={"name": "greet"},
                     json={"text": variant(PROMPT, 2), "base": 2})
        assert r.status_code == 200 and r.json()["version"] == 3, r.text
        for _ in range(4):
            assert http.get(f"{api}/artifact", params={"ref": "greet"}).json()["text"] == \
                variant(PROMPT, 2)
        assert server.cli("fsck").strip() == "ok"
        with Registry.open(server.registry) as reg:
            assert continuous(reg, "greet") == [3, 2, 1]
            assert reg.get("greet@1").text == PROMPT
            assert reg.get("greet@2").text == variant(PROMPT, 1)
            assert [a.name for a in reg.list(include_deleted=True)] == \
                [a["name"] for a in before["artifacts"]["artifacts"]]
        http.close()
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()


# ---- (b) Git on the normal disk, the index on a full one -------------------------------
def test_api_with_the_index_disk_full_commits_and_reads_from_git(tmpfs, tmp_path, fast_retry):
    from promptrev.webhooks import Webhooks  # subscribes its deliveries to the outbox

    disk = tmpfs()
    database = disk.path / "index.sqlite"
    url = f"sqlite:///{database}"
    path = tmp_path / "reg"
    with Registry.init(path, index_url=url) as reg:
        reg.save("greet", PROMPT)
        reg.set_label("greet", "production", 1)
        hook = Webhooks(reg).add("http://127.0.0.1:9/hook")
        disk.fill()

        saved = reg.save("greet", variant(PROMPT, 1), base=1, message="while full")
        assert saved.number == 2 and saved.commit == reg.store.head()
        assert saved.message == "while full"
        assert reg.get("greet").text == variant(PROMPT, 1)
        assert reg.get("greet@2").version.commit == saved.commit
        assert reg.get("greet@1").text == PROMPT
        assert continuous(reg, "greet") == [2, 1]
        assert {a.name: a.latest for a in reg.list()} == {"greet": 2}
        event = reg.set_label("greet", "production", 2)
        assert event is not None and (event.old, event.new) == (1, 2)
        assert reg.labels("greet") == {"production": 2}
        assert reg.get("greet@production").text == variant(PROMPT, 1)
        other = reg.save("other", PROMPT)
        assert other.number == 1
        gone = reg.delete("other")
        assert gone.number == 2 and gone.deleted
        assert {a.name: a.latest for a in reg.list(include_deleted=True)} == \
            {"greet": 2, "other": 2}
        head = reg.store.head()
        assert indexed_head(database) != head  # the real index could not follow

        disk.free()
        assert continuous(reg, "greet") == [2, 1]  # a read: the real index catches up
        assert indexed_head(database) == head
        assert getattr(reg, "_standin", None) is None
    with Registry.open(path, index_url=url) as fresh, \
            Registry.open(path, index_url="sqlite://") as rebuilt:  # from Git alone
        same_history(fresh, rebuilt, ["greet", "other"])
        report = fresh.fsck()
        assert report["ok"], report["problems"]
        events = [(e["name"], e["payload"].get("ref") or e["payload"].get("to"))
                  for e in outbox.recent(fresh.engine, limit=1000)]
        for wanted in (("version.saved", "greet@2"), ("label.moved", 2),
                       ("version.saved", "other@1"), ("version.saved", "other@2")):
            assert events.count(wanted) == 1, (wanted, events)
        sent = [d["event"] for d in Webhooks(fresh).deliveries(webhook_id=hook["id"])]
        assert sent.count("version.saved") == 3 and sent.count("label.moved") == 1, sent


@pytest.mark.parametrize("held_open", [False, True], ids=["alone", "index-held-open"])
def test_cli_with_the_index_disk_full_saves_and_reads(tmpfs, tmp_path, held_open):
    """Alone: no other process has the index open. Held open: one has (a server, say)."""
    disk = tmpfs()
    url = f"sqlite:///{disk.path / 'index.sqlite'}"
    path = tmp_path / "reg"
    first, second = tmp_path / "greet.prompty", tmp_path / "v2" / "greet.prompty"
    second.parent.mkdir()
    first.write_text(PROMPT)
    second.write_text(variant(PROMPT, 1))

    def run(*args):
        out = cli(*args, registry=path, index_url=url, cwd=tmp_path)
        assert out.returncode == 0 and "Traceback" not in out.stderr, (args, out.stderr)
        return out.stdout

    run("init")
    run("save", first)
    run("label", "set", "greet", "production", "1")
    holder = Registry.open(path, index_url=url) if held_open else None
    disk.fill()
    try:
        check_cli_reads_and_writes(run, second)
    finally:
        disk.free()
        if holder is not None:
            holder.close()
    assert run("fsck").strip() == "ok"
    with Registry.open(path, index_url=url) as reg, \
            Registry.open(path, index_url="sqlite://") as rebuilt:
        assert continuous(reg, "greet") == [2, 1]
        assert reg.labels("greet") == {"production": 2}
        same_history(reg, rebuilt, ["greet"])


def check_cli_reads_and_writes(run, second: Path) -> None:
    assert run("save", second, "--base", "1").startswith("greet@2 ")  # committed, with its version
    assert run("show", "greet") == variant(PROMPT, 1)
    listed = run("list")
    assert "greet@2" in listed and "production=1" in listed
    run("label", "set", "greet", "production", "2")
    assert run("show", "greet@production") == variant(PROMPT, 1)
    assert "production" in run("label", "list", "greet")
    log = run("log", "greet")
    assert log.count("\n") >= 2 and "2" in log


def test_server_with_the_index_disk_full_commits_and_reads(tmpfs, tmp_path, monkeypatch):
    disk = tmpfs()
    database = disk.path / "index.sqlite"
    url = f"sqlite:///{database}"
    monkeypatch.setenv("PROMPTREV_INDEX_URL", url)  # the server and server.cli
    server = start_server(tmp_path, workers=2)
    try:
        api = server.url + "/api/v1"
        http = httpx.Client(headers={"Authorization": f"Bearer {server.token()}"}, timeout=60)
        assert http.put(f"{api}/artifact", params={"name": "greet"},
                        json={"text": PROMPT}).status_code == 201
        for _ in range(4):  # each worker has read (and opened the index)
            assert http.get(f"{api}/artifact", params={"ref": "greet"}).status_code == 200
        disk.fill()
        r = http.put(f"{api}/artifact", params={"name": "greet"}, headers={"If-Match": '"1"'},
                     json={"text": variant(PROMPT, 1), "message": "while full"})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 2 and r.json()["message"] == "while full"
        r = http.put(f"{api}/labels", params={"name": "greet", "label": "staging"},
                     json={"version": 2})
        assert r.status_code == 200, r.text
        r = http.post(f"{api}/restore", json={"name": "greet", "version": 1})
        assert r.status_code == 200 and r.json()["version"] == 3, r.text
        for _ in range(4):
            got = http.get(f"{api}/artifact", params={"ref": "greet@2"})
            assert got.status_code == 200 and got.json()["text"] == variant(PROMPT, 1), got.text
            latest = http.get(f"{api}/artifact", params={"ref": "greet"}).json()
            assert latest["version"] == 3 and latest["text"] == PROMPT
            versions = http.get(f"{api}/versions", params={"name": "greet"}).json()
            assert [v["version"] for v in versions["versions"]] == [3, 2, 1]
            assert versions["labels"] == {"staging": 2}
            assert http.get(f"{api}/labels", params={"name": "greet"}).json()["labels"] == \
                {"staging": 2}
            listed = http.get(f"{api}/artifacts").json()["artifacts"]
            assert {a["name"]: a["latest"] for a in listed}["greet"] == 3
        assert server.cli("show", "greet@staging") == variant(PROMPT, 1)
        head = GitStore(str(server.registry)).head()
        assert indexed_head(database) != head

        disk.free()
        deadline = time.monotonic() + 20
        while indexed_head(database) != head and time.monotonic() < deadline:
            http.get(f"{api}/artifact", params={"ref": "greet"})  # reads retry the index
            time.sleep(0.3)
        assert indexed_head(database) == head, "the index did not catch up by itself"
        assert server.cli("fsck").strip() == "ok"
        with Registry.open(server.registry, index_url=url) as reg, \
                Registry.open(server.registry, index_url="sqlite://") as rebuilt:
            same_history(reg, rebuilt, ["greet"])
            saved = [e["payload"]["ref"] for e in outbox.recent(reg.engine, limit=1000)
                     if e["name"] == "version.saved"]
            assert all(saved.count(f"greet@{n}") == 1 for n in (1, 2, 3)), saved
        http.close()
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()


# ---- (c) the commit lands, the same save's index update fails ---------------------------
def test_index_update_failing_inside_the_save_still_reports_the_commit(tmpfs, tmp_path,
                                                                      fast_retry):
    disk = tmpfs()
    database = disk.path / "index.sqlite"
    url = f"sqlite:///{database}"
    path = tmp_path / "reg"
    names = [f"team/prompt-{n:02d}-with-a-rather-long-name" for n in range(40)]
    failed_inside, whole = [], []
    with Registry.init(path, index_url=url) as reg:
        for leave in (0, 4096, 8192, 16384, 32768, 65536, 131072, 262144):
            disk.free()
            latest = {a.name: a.latest for a in reg.list()}  # a read: the index catches up
            assert getattr(reg, "_standin", None) is None
            assert indexed_head(database) == reg.store.head()
            expected = {name: latest.get(name, 0) + 1 for name in names}
            disk.fill(leave)
            message = f"batch with {leave} bytes left"
            with reg.transaction(message=message, author=AUTHOR) as tx:
                for n, name in enumerate(names):
                    tx.save(name, variant(PROMPT, leave + n))
            assert tx.commit_sha == reg.store.head()
            assert {v.name: v.number for v in tx.versions} == expected, message
            assert all(v.commit == tx.commit_sha and v.message == message
                       for v in tx.versions)
            for n, name in enumerate(names):  # reads see the commit, index or not
                snap = reg.get(name)
                assert snap.version.number == expected[name]
                assert snap.text == variant(PROMPT, leave + n)
            if indexed_head(database) == tx.commit_sha:
                whole.append(leave)
            else:
                failed_inside.append(leave)
        assert failed_inside, "the index update never failed: leave less space"
        assert whole, f"the index update always failed ({failed_inside}): leave more space"
        disk.free()
        continuous(reg, names[0])
        assert indexed_head(database) == reg.store.head()
    with Registry.open(path, index_url=url) as fresh, \
            Registry.open(path, index_url="sqlite://") as rebuilt:
        same_history(fresh, rebuilt, names)
        report = fresh.fsck()
        assert report["ok"], report["problems"]
        saved = [e["payload"]["ref"] for e in outbox.recent(fresh.engine, limit=5000)
                 if e["name"] == "version.saved"]
        assert len(saved) == len(set(saved)) == 8 * len(names), len(saved)


def test_fsck_repair_after_the_index_disk_was_full_keeps_the_missed_events(tmpfs, tmp_path):
    """An index that is only behind is caught up (its events recorded), not rebuilt."""
    disk = tmpfs()
    url = f"sqlite:///{disk.path / 'index.sqlite'}"
    path = tmp_path / "reg"
    with Registry.init(path, index_url=url) as reg:
        reg.save("greet", PROMPT)
        disk.fill()
        assert reg.save("greet", variant(PROMPT, 1)).number == 2
    disk.free()
    out = cli("fsck", "--repair", registry=path, index_url=url, cwd=tmp_path)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stdout + out.stderr
    with Registry.open(path, index_url=url) as reg:
        saved = [e["payload"]["ref"] for e in outbox.recent(reg.engine)
                 if e["name"] == "version.saved"]
        assert saved == ["greet@1", "greet@2"], saved
