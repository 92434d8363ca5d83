"""A save reports the version its own commit made, however the race with others goes.

Another process may index a writer's commit before the writer does, and another writer
may move ``main`` the moment the lock is free. The version a save returns must still be
the one holding the text it saved: a client that sends it back as ``If-Match`` must
never overwrite a change it has not seen.
"""

from __future__ import annotations

import json
import os
import textwrap
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

from promptrev import Registry
from promptrev.errors import Conflict

from .conftest import PROMPT
from .live import ROOT, start_server
from .workers import text_for


def _interleave(mine: Registry, other: Registry, *, then_save: str | None):
    """Make ``other`` index ``mine``'s commits first and, optionally, save right after.

    Both are real registries on the same files (as two processes would be); the hooks
    only choose the order in which their real steps run.
    """
    move_main = mine.store.move_main

    def move_then_index(expected, new, reason):
        move_main(expected, new, reason)
        other.sync()  # another process reads: it indexes our commit before we do

    mine.store.move_main = move_then_index
    writing = mine.writing

    @contextmanager
    def then_another_writer(timeout: float = 30.0):
        with writing(timeout=timeout):
            yield
        if then_save is not None:  # the lock is free: another writer gets in first
            other.save("greet", text_for(then_save), message=then_save)

    mine.writing = then_another_writer


@pytest.mark.parametrize("then_save", [None, "theirs"])
def test_a_save_returns_its_own_version_when_another_process_indexed_it(tmp_path, then_save):
    path = tmp_path / "reg"
    with Registry.init(path) as setup:
        setup.save("greet", PROMPT)
    with Registry.open(path) as mine, Registry.open(path) as other:
        _interleave(mine, other, then_save=then_save)
        version = mine.save("greet", text_for("mine"), message="mine", base=1)
        assert version.number == 2
        assert version.message == "mine"
        assert "[mine]" in mine.get(f"greet@{version.number}").text
        assert version.commit == mine.history("greet")[-2].commit
        # Sent back as the base of the next edit, it is refused if someone else wrote.
        if then_save is not None:
            with pytest.raises(Conflict):
                mine.save("greet", text_for("mine-again"), base=version.number)


def test_a_transaction_an_unchanged_save_and_a_deletion_report_their_own_versions(tmp_path):
    path = tmp_path / "reg"
    with Registry.init(path) as setup:
        setup.save("greet", PROMPT)
        setup.save("other", PROMPT)
    with Registry.open(path) as mine, Registry.open(path) as other:
        _interleave(mine, other, then_save="theirs")
        with mine.transaction(message="two at once") as tx:
            tx.save("greet", text_for("tx"))
            tx.save("other", text_for("tx-other"))
        assert [(v.name, v.number) for v in tx.versions] == [("greet", 2), ("other", 2)]
        assert all(v.commit == tx.commit_sha for v in tx.versions)
        # greet is now at 3 (theirs). Saving version 3's text again changes nothing, and
        # reports version 3, not the version "theirs" makes next.
        unchanged = mine.save("greet", text_for("theirs"))
        assert unchanged.number == 3 and unchanged.message == "theirs"
        deleted = mine.delete("other")
        assert deleted.number == 3 and deleted.deleted and deleted.message == "delete other"


def _put(url: str, token: str, text: str, base: int) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/api/v1/artifact?name=race", method="PUT",
        data=json.dumps({"text": text, "message": text.split("[")[1].split("]")[0]}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                 "If-Match": f'"{base}"'})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _get(url: str, token: str, ref: str) -> dict:
    request = urllib.request.Request(f"{url}/api/v1/artifact?ref={ref}",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_clients_chaining_if_match_over_http_never_overwrite_unseen_changes(tmp_path):
    """Writers keep sending the returned version as If-Match while readers make the
    server's other workers index each new commit; every acknowledged version must hold
    its writer's text, and every stale base must be refused."""
    server = start_server(tmp_path, workers=3)
    try:
        token = server.token()
        status, body = _put(server.url, token, text_for("seed"), 0)
        assert status == 201, body
        acked: list[tuple[str, int]] = []
        refused: list[str] = []
        errors: list[str] = []
        stop = threading.Event()

        def write(writer: int) -> None:
            base = 1
            for i in range(60):
                token_text = f"w{writer}-{i}"
                status, body = _put(server.url, token, text_for(token_text), base)
                if status == 409:
                    refused.append(token_text)
                    base = body["error"]["details"]["current"]  # re-read, as clients do
                elif status in (200, 201):
                    acked.append((token_text, body["version"]))
                    base = body["version"]
                else:
                    errors.append(f"{status}: {body}")

        def read() -> None:
            while not stop.is_set():
                _get(server.url, token, "race")

        readers = [threading.Thread(target=read) for _ in range(2)]
        writers = [threading.Thread(target=write, args=(w,)) for w in range(3)]
        for thread in readers + writers:
            thread.start()
        for thread in writers:
            thread.join()
        stop.set()
        for thread in readers:
            thread.join()
        assert not errors
        assert len(acked) + len(refused) == 3 * 60
        numbers = [number for _, number in acked]
        assert len(set(numbers)) == len(numbers)  # no version acknowledged twice
        for token_text, number in acked:
            got = _get(server.url, token, f"race@{number}")
            assert f"[{token_text}]" in got["text"], (token_text, number, got["message"])
        latest = _get(server.url, token, "race")["version"]
        assert latest == 1 + len(acked)  # every acknowledged write is one version
    finally:
        server.stop()


# Loaded by every Python process of the server under test (its PYTHONPATH names the folder),
# it orders the real steps of the next save once the test arms it: right after the server
# moves main, another process (``promptrev list``) indexes the new commit; right after the
# server releases the writer lock, another process (``promptrev save``) writes.
_ORDERING_HOOK = textwrap.dedent("""
    import os, subprocess, sys
    from contextlib import contextmanager

    HERE = os.path.dirname(os.path.abspath(__file__))
    ARMED, INDEXED = os.path.join(HERE, "armed"), os.path.join(HERE, "indexed")

    def _cli(*args):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = os.environ["PROMPTREV_ROOT"]
        subprocess.run([sys.executable, "-m", "promptrev.cli", *args], env=env, check=True,
                       capture_output=True)

    from promptrev.registry import Registry
    from promptrev.storage.gitstore import GitStore

    _move_main, _writing = GitStore.move_main, Registry.writing

    def move_main(self, expected, new, reason):
        _move_main(self, expected, new, reason)
        if os.path.exists(ARMED):
            os.rename(ARMED, INDEXED)
            _cli("--registry", self.path, "list")

    @contextmanager
    def writing(self, timeout=30.0):
        with _writing(self, timeout=timeout):
            yield
        if os.path.exists(INDEXED):
            os.unlink(INDEXED)
            _cli("--registry", self.path, "--author", "them <them@test>", "save",
                 os.path.join(HERE, "race.prompty"), "-m", "theirs", "--force")

    GitStore.move_main, Registry.writing = move_main, writing
""")


def test_over_http_the_returned_version_is_a_safe_if_match_in_a_forced_race(tmp_path):
    """The deterministic race, in a real server: another process indexes the server's
    commit before the server does, and another writer saves the moment the server's lock
    is free. The server must answer with the version its own commit made, so that sending
    it back as If-Match is refused (409) rather than overwriting "theirs" unseen."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_ORDERING_HOOK)
    (hooks / "race.prompty").write_text(text_for("theirs"))
    server = start_server(tmp_path, workers=1, env={
        "PYTHONPATH": os.pathsep.join([str(hooks), str(ROOT)]), "PROMPTREV_ROOT": str(ROOT),
        "PYTHONSAFEPATH": "1"})
    try:
        token = server.token()
        status, body = _put(server.url, token, text_for("seed"), 0)
        assert status == 201, body
        (hooks / "armed").touch()
        status, body = _put(server.url, token, text_for("mine"), 1)
        assert not (hooks / "armed").exists() and not (hooks / "indexed").exists(), (
            "the ordering hook did not run: " + server.log.read_text()[-2000:])
        assert status == 200, body
        assert body["version"] == 2 and body["message"] == "mine", body
        theirs = _get(server.url, token, "race")
        assert theirs["version"] == 3 and theirs["message"] == "theirs"
        status, refused = _put(server.url, token, text_for("mine-again"), body["version"])
        assert status == 409, refused  # never a silent overwrite of "theirs"
        assert "[theirs]" in _get(server.url, token, "race")["text"]
    finally:
        server.stop()
