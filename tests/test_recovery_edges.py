"""Edges of recovery an adversarial review found: reindex racing writers, a reflog line
Git left for an update that never landed, a ref folder that cannot be written, an index
file left empty by a full disk."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from promptrev import Registry
from promptrev.errors import StorageError
from promptrev.model.artifacts import KINDS
from promptrev.storage.gitstore import Signature
from promptrev.webhooks import Webhooks

from .workers import text_for


def test_reindex_while_another_process_saves_loses_no_version_and_no_kept_row(tmp_path):
    path = tmp_path / "reg"
    with Registry.init(path) as reg:
        reg.save("greet", text_for("seed"))
    done, errors, acked, hooks = threading.Event(), [], [], []

    def write() -> None:
        with Registry.open(path) as other:
            hooked = Webhooks(other)
            i = 0
            while not done.is_set():
                try:
                    acked.append(other.save("greet", text_for(f"w{i}"), message=f"w{i}").number)
                    hooked.add(f"http://127.0.0.1:9/hook-{i}")
                    hooks.append(f"http://127.0.0.1:9/hook-{i}")
                except Exception as exc:  # noqa: BLE001 - reported below
                    errors.append(repr(exc))
                i += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        with Registry.open(path) as reg:
            for _ in range(5):
                reg.reindex()
    finally:
        done.set()
        thread.join()
    assert not errors
    assert acked, "the writer never got in"
    with Registry.open(path) as reg:
        numbers = [v.number for v in reg.history("greet")]
        assert numbers == list(range(len(numbers), 0, -1))
        assert numbers[0] == 1 + len(acked)  # every acknowledged save is a version
        for number in acked:
            assert reg.get(f"greet@{number}").version.message == f"w{number - 2}"
        assert sorted(h["url"] for h in Webhooks(reg).list()) == sorted(hooks)
        assert reg.fsck()["ok"]


def test_repair_skips_a_reflog_line_of_an_update_that_never_landed(tmp_path):
    """Git writes its reflog line before it renames the ref's lock into place: an update
    that then failed leaves a line whose old value is not where main was."""
    path = tmp_path / "reg"
    with Registry.init(path) as reg:
        base = reg.save("greet", text_for("one"))
        landed = reg.save("greet", text_for("two"))
        blob = reg.store.write_blob(text_for("three").encode())
        made = reg.store.write_commit(base.commit, {KINDS["prompt"].path("greet"): blob},
                                      "never landed", Signature("git", "git@x"))
    with open(path / "logs/refs/heads/main", "a") as fh:
        fh.write(f"{base.commit} {made.sha} git <git@x> 1796000000 +0000\tpush\n")
    (path / "refs/heads/main").unlink()
    with Registry.open(path) as reg:
        report = reg.fsck(repair=True)
        assert f"restored refs/heads/main to {landed.commit[:12]}" in report["repaired"]
        assert reg.store.head() == landed.commit
        assert reg.get("greet").version.number == 2


def _bind_read_only(folder) -> bool:
    try:
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True,
                       capture_output=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True,
                       capture_output=True)
        return True
    except (OSError, subprocess.CalledProcessError):
        subprocess.run(["umount", str(folder)], capture_output=True)
        return False


def test_a_ref_folder_that_cannot_be_written_is_a_clear_error_not_a_spin(tmp_path):
    path = tmp_path / "reg"
    with Registry.init(path) as reg:
        reg.save("greet", text_for("one"))
    heads = path / "refs" / "heads"
    if not _bind_read_only(heads):
        pytest.skip("cannot bind-mount read-only here (needs root)")
    try:
        with Registry.open(path) as reg:
            start = time.monotonic()
            with pytest.raises(StorageError) as caught:
                reg.save("greet", text_for("two"))
            assert time.monotonic() - start < 5  # refused, not retried until a timeout
            assert "Read-only file system" in caught.value.message
            assert reg.get("greet").version.number == 1
    finally:
        subprocess.run(["umount", str(heads)], check=True)
    with Registry.open(path) as reg:
        assert reg.save("greet", text_for("two")).number == 2
        assert reg.fsck()["ok"]


def test_an_index_on_a_full_disk_that_could_not_even_be_created_reads_from_git(tmp_path):
    """On a full disk SQLite leaves a 0-byte index file it cannot initialise; the stand-in
    must then be built from Git, not copied from the empty file."""
    path = tmp_path / "reg"
    with Registry.init(path) as reg:
        reg.save("greet", text_for("one"))
        reg.save("greet", text_for("two"))
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        index = disk / "index.sqlite"
        with Registry.open(path, index_url=f"sqlite:///{index}") as reg:
            assert reg.get("greet").version.number == 2
            assert [v.number for v in reg.history("greet")] == [2, 1]
        assert not index.exists() or index.stat().st_size == 0
    finally:
        subprocess.run(["umount", str(disk)], check=True)
