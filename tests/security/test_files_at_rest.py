"""Files at rest: the accounts database (password hashes) and the index database (webhook
secrets) must not be readable by other users of the machine."""

from __future__ import annotations

import os
import stat

import pytest

from promptrev.accounts import Accounts
from promptrev.registry import Registry
from tests.live import start_server

DATABASES = ("promptrev-accounts.sqlite", "promptrev-index.sqlite")


@pytest.fixture
def usual_umask():
    """The umask most systems give (022): files are created 0644 unless we say otherwise."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _database_files(registry) -> list:
    return [registry / (name + suffix) for name in DATABASES
            for suffix in ("", "-wal", "-shm", "-journal")
            if (registry / (name + suffix)).exists()]


def test_databases_created_by_serve_are_private(tmp_path, usual_umask):
    live = start_server(tmp_path)
    try:
        token = live.token()  # writes to the accounts database while the server runs
        assert token.startswith("prv_")
        files = _database_files(live.registry)
        assert {f.name for f in files} >= set(DATABASES)
        assert any(f.name.endswith("-wal") for f in files)  # side files checked too
        for path in files:
            assert _mode(path) == 0o600, f"{path.name} is {oct(_mode(path))}"
    finally:
        live.stop()


def test_existing_readable_databases_are_tightened_when_opened(tmp_path, usual_umask):
    path = tmp_path / "reg"
    Registry.init(path).close()
    Accounts(f"sqlite:///{path / DATABASES[0]}").close()
    files = _database_files(path)
    assert len(files) >= 2
    for file in files:  # as an older release left them
        os.chmod(file, 0o644)
    reg = Registry.open(path)
    accounts = Accounts(f"sqlite:///{path / DATABASES[0]}")
    try:
        accounts.add_user("alice", "viewer", password="alice-pw-1")
        reg.list()
        for file in _database_files(path):
            assert _mode(file) == 0o600, f"{file.name} is {oct(_mode(file))}"
    finally:
        accounts.close()
        reg.close()
