"""Acknowledged means durable (issue 16): a save reaches the disk before it is answered.

A real ``promptrev save`` runs under ``strace``: the flushes (``syncfs``, or ``fsync`` of
the files) must come after the new objects are written, again after ``main`` is renamed
into place, and all of it before the answer is printed. With ``PROMPTREV_DURABILITY=off``
nothing is flushed. The settings each database gets are read back from SQLite itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from promptrev.config import Settings
from promptrev.errors import InvalidRequest
from promptrev.model.artifacts import KINDS
from promptrev.registry import Registry, configure_durability

ROOT = Path(__file__).resolve().parent.parent
STRACE = shutil.which("strace") or ("/usr/bin/strace" if os.path.exists("/usr/bin/strace")
                                    else None)
needs_strace = pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get "
                                  "install strace): a save's system calls cannot be watched")
FLUSH = re.compile(r"^(\d+ +)?(fsync|fdatasync|syncfs)\((\d+)")
PROMPT = "---\nname: durable\n---\nsystem:\nSay {{ what }}.\n"


@pytest.fixture(autouse=True)
def durable_again():
    """Durability is process-wide: every test here leaves it at the default."""
    yield
    configure_durability("full")


def test_durability_setting_defaults_to_full_and_parses_off():
    assert Settings.from_env({}).durability == "full"
    assert Settings().durability == "full"
    assert Settings.from_env({"PROMPTREV_DURABILITY": "off"}).durability == "off"
    assert Settings.from_env({"PROMPTREV_DURABILITY": "FALSE"}).durability == "off"
    assert Settings.from_env({"PROMPTREV_DURABILITY": "on"}).durability == "full"
    with pytest.raises(InvalidRequest, match="PROMPTREV_DURABILITY"):
        Settings.from_env({"PROMPTREV_DURABILITY": "sometimes"})


def _traced_save(tmp_path: Path, durability: str) -> tuple[list[str], str]:
    """Run ``promptrev save`` under strace; return its trace lines and the registry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTREV_")}
    env.update(PROMPTREV_DURABILITY=durability, PROMPTREV_AUTHOR="T <t@example.org>",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    reg = tmp_path / f"reg-{durability}"
    command = [sys.executable, "-m", "promptrev.cli", "-r", str(reg)]
    subprocess.run([*command, "init"], env=env, check=True, capture_output=True)
    (tmp_path / "durable.prompty").write_text(PROMPT)
    trace = tmp_path / f"trace-{durability}.txt"
    done = subprocess.run(
        [STRACE, "-f", "--seccomp-bpf", "-qq", "-o", str(trace), "-e",
         "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2,link,linkat,write",
         *command, "save", str(tmp_path / "durable.prompty"), "--name", "durable"],
        env=env, capture_output=True, text=True)
    if done.returncode != 0 and "PTRACE" in done.stderr.upper():
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    assert "durable@1" in done.stdout
    return trace.read_text().splitlines(), str(reg)


def _where(lines: list[str], pattern: str) -> list[int]:
    found = re.compile(pattern)
    return [i for i, line in enumerate(lines) if found.search(line)]


def _flushes(lines: list[str], start: int, end: int) -> list[str]:
    """Flushes between two trace lines that can make Git's files durable.

    ``syncfs`` flushes the file system; ``fsync`` the file (libgit2 also fsyncs folders).
    SQLite's ``fdatasync`` of its own files does not count.
    """
    return [line for line in lines[start + 1:end]
            if (m := FLUSH.match(line)) and m.group(2) in ("syncfs", "fsync")]


@needs_strace
def test_a_save_is_flushed_before_it_is_acknowledged(tmp_path):
    lines, reg = _traced_save(tmp_path, "full")
    ack = _where(lines, r'write\(1, "durable@1 ')
    objects = _where(lines, r'link(at)?\(.*/objects/tmp_object.*/objects/[0-9a-f]{2}/')
    ref = _where(lines, r'rename(at2?)?\(.*refs/heads/main\.lock", .*refs/heads/main"')
    assert ack and objects and ref, "\n".join(lines[-40:])
    ack, ref = ack[-1], ref[-1]
    made = [i for i in objects if i < ref]
    assert made and made[-1] < ref < ack
    # objects -> flush -> ref moved -> flush -> acknowledged
    assert _flushes(lines, made[-1], ref), "no flush between the new objects and main's move"
    assert _flushes(lines, ref, ack), "main moved, but was not flushed before the answer"


@needs_strace
def test_with_durability_off_nothing_is_flushed(tmp_path):
    lines, _ = _traced_save(tmp_path, "off")
    ack = _where(lines, r'write\(1, "durable@1 ')[-1]
    objects = _where(lines, r'link(at)?\(.*/objects/tmp_object.*/objects/[0-9a-f]{2}/')
    assert objects and objects[0] < ack
    assert _flushes(lines, objects[0] - 1, ack) == []


def _synchronous(engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql("PRAGMA synchronous").scalar()


def _synchronous_in_transaction(engine) -> int:
    with engine.connect() as conn, conn.begin():
        return conn.exec_driver_sql("PRAGMA synchronous").scalar()


FULL, NORMAL = 2, 1


def test_sqlite_commits_durably_except_the_index_catching_up(tmp_path):
    from promptrev.accounts import Accounts

    configure_durability("full")
    with Registry.init(tmp_path / "reg") as reg:
        # change requests, evaluations, outcomes, webhooks: nowhere else, so FULL
        assert _synchronous_in_transaction(reg.engine) == FULL
        # the index's own writes: Git replays a lost tail on the next catch-up
        assert _synchronous_in_transaction(reg._index_writer()) == NORMAL
        assert _synchronous_in_transaction(reg.engine) == FULL  # set back on the next
        reg.save("p", PROMPT)
        assert reg.resolve("p").number == 1
    accounts = Accounts(f"sqlite:///{tmp_path / 'accounts.sqlite'}")
    try:
        assert _synchronous(accounts.engine) == FULL
    finally:
        accounts.close()


def test_sqlite_with_durability_off_keeps_normal(tmp_path):
    configure_durability("off")
    with Registry.init(tmp_path / "reg") as reg:
        assert _synchronous_in_transaction(reg.engine) == NORMAL
        configure_durability("full")  # an engine made before follows the process's mode
        assert _synchronous_in_transaction(reg.engine) == FULL


def test_git_subprocesses_are_told_to_fsync(tmp_path):
    from promptrev.registry import git_durability_options

    configure_durability("full")
    options = git_durability_options()
    assert "core.fsync=all" in options
    with Registry.init(tmp_path / "reg") as reg:
        # what our git subprocesses see; nothing is written to the registry's own config
        seen = reg.store.run_git("config", "--get", "core.fsync")
        assert seen.strip() == "all"
        config = (tmp_path / "reg" / "config").read_text()
        assert "fsync" not in config
    configure_durability("off")
    assert git_durability_options() == []


def _served_writes(tmp_path: Path, durability: str) -> tuple[list[str], str]:
    """A real ``promptrev serve`` under strace: one API save and one ``git push``."""
    import httpx

    from .live import start_server
    from .test_git_http import GIT_PATH, Git

    trace = tmp_path / "serve-trace.txt"
    server = start_server(tmp_path, workers=1, env={"PROMPTREV_DURABILITY": durability},
                          wrap=(STRACE, "-f", "--seccomp-bpf", "-qq", "-s", "64", "-o",
                                str(trace), "-e",
                                "trace=fsync,syncfs,rename,renameat,renameat2,sendto,write"))
    try:
        token = server.token()
        saved = httpx.put(server.url + "/api/v1/artifact", params={"name": "served"},
                          json={"text": PROMPT}, timeout=60,
                          headers={"Authorization": f"Bearer {token}"})
        assert saved.status_code == 201, saved.text
        git = Git(tmp_path / "client", server, token)
        work = tmp_path / "client" / "work"
        git("clone", "-q", server.url + GIT_PATH, str(work))
        pushed_file = work / KINDS["prompt"].path("pushed")  # in its buckets
        pushed_file.parent.mkdir(parents=True, exist_ok=True)
        pushed_file.write_text(PROMPT.replace("Say", "Push"))
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "pushed", cwd=work)
        pushed = git("push", "origin", "main", cwd=work)
        assert "prompt pushed is now version 1" in pushed.stderr
    finally:
        server.stop()
    return trace.read_text().splitlines(), str(server.registry)


MAIN_MOVED = r'rename(at2?)?\(.*refs/heads/main\.lock", .*refs/heads/main"'


@needs_strace
def test_a_served_save_and_a_push_are_flushed_before_they_are_answered(tmp_path):
    lines, _ = _served_writes(tmp_path, "full")
    moves = _where(lines, MAIN_MOVED)
    answer = _where(lines, r'(sendto|write)\(\d+, "HTTP/1.1 201')
    assert len(moves) >= 2 and answer, "\n".join(lines[-60:])
    saved = max(i for i in moves if i < answer[0])
    assert _flushes(lines, saved, answer[0]), "the API answered before main was flushed"
    # git push: receive-pack renames main into place, the reference-transaction hook
    # flushes, and only then does receive-pack report "ok refs/heads/main"
    pushed = moves[-1]
    report = [i for i in _where(lines, r'write\(\d+, ".*ok refs/heads/main') if i > pushed]
    assert report, "\n".join(lines[pushed:pushed + 40])
    assert [line for line in lines[pushed + 1:report[0]] if "syncfs(" in line], \
        "the push was reported before main was flushed"


@needs_strace
def test_a_served_push_with_durability_off_is_not_flushed(tmp_path):
    lines, _ = _served_writes(tmp_path, "off")
    pushed = _where(lines, MAIN_MOVED)[-1]
    report = [i for i in _where(lines, r'write\(\d+, ".*ok refs/heads/main') if i > pushed]
    assert report and not _flushes(lines, pushed, report[0])


def test_the_flush_hook_is_copied_with_the_others_when_installed_without_exec_bits(
        tmp_path, monkeypatch):
    from promptrev.server import git_http

    shipped = Path(git_http.HOOKS) / git_http.FLUSH_HOOK
    assert os.access(shipped, os.X_OK)
    plain = tmp_path / "hooks"
    plain.mkdir()
    for name in (*git_http.HOOK_NAMES, git_http.FLUSH_HOOK):
        (plain / name).write_text((Path(git_http.HOOKS) / name).read_text())
        (plain / name).chmod(0o644)
    monkeypatch.setattr(git_http, "HOOKS", str(plain))
    folder = Path(git_http.hooks_dir(str(tmp_path / "reg")))
    assert os.access(folder / git_http.FLUSH_HOOK, os.X_OK)
    assert "sync -f" in (folder / git_http.FLUSH_HOOK).read_text()
