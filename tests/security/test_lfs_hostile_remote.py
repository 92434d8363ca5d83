"""Attacks from a hostile Git LFS server on ``promptrev pull``: the client side.

``promptrev pull`` asks the remote's batch API for the weights its commits name and
downloads each object from the ``href`` the remote answers. The remote is not trusted:
the user's credentials go only to the remote's own origin (never to a host its answer
names), an object is read up to the size the commits' pointer says (never the size the
remote claims), objects nobody asked for are not stored, and an answer that is not the
protocol (not JSON, a ``file://`` href) is a clear error, not a traceback.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from promptrev import lfs_transfer
from promptrev.errors import RemoteFailed
from promptrev.model.lfs import Pointer
from promptrev.registry import Registry

DATA = b"\x02real adapter weights" * 64
OID = hashlib.sha256(DATA).hexdigest()
OTHER = b"something nobody asked for"
OTHER_OID = hashlib.sha256(OTHER).hexdigest()


class Hostile(http.server.ThreadingHTTPServer):
    """An LFS server whose batch answer and object bodies the test chooses."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str | None]] = []  # (path, Authorization)
        self.answer = lambda server: b"{}"
        self.body_sent = 0
        self.endless = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Hostile

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        body = self.server.answer(self.server)
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.git-lfs+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(200)
        if self.server.endless:  # a body that never ends (until 256 MiB)
            self.send_header("Content-Length", str(256 * 1024 * 1024))
            self.end_headers()
            chunk = b"\0" * (1024 * 1024)
            try:
                for _ in range(256):
                    self.wfile.write(chunk)
                    self.server.body_sent += len(chunk)
            except OSError:
                pass
            return
        data = OTHER if OTHER_OID in self.path else DATA
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def _serve():
    server = Hostile()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def hostile():
    servers: list[Hostile] = []

    def make() -> Hostile:
        servers.append(_serve())
        return servers[-1]

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def local(tmp_path: Path):
    registry = Registry.init(tmp_path / "local.git")
    yield registry
    registry.close()


def _answer(*objects: dict) -> bytes:
    return json.dumps({"transfer": "basic", "objects": list(objects)}).encode()


def test_credentials_never_go_to_a_host_the_remote_names(hostile, local):
    remote, elsewhere = hostile(), hostile()
    remote.answer = lambda s: _answer({"oid": OID, "size": len(DATA), "actions": {
        "download": {"href": f"{elsewhere.url}/steal/{OID}", "header": {}}}})
    url = remote.url.replace("http://", "http://ada:s3cret-token@") + "/registry.git"
    assert lfs_transfer.fetch_objects(local, url, [Pointer(OID, len(DATA))]) == 1
    assert remote.seen[0][1] is not None  # the remote itself is asked with them
    assert elsewhere.seen and elsewhere.seen[0][1] is None, \
        "the user's credentials were sent to a host the remote's answer named"
    assert local.objects.read(Pointer(OID, len(DATA))) == DATA


def test_credentials_still_go_to_the_remote_own_download_href(hostile, local):
    remote = hostile()
    remote.answer = lambda s: _answer({"oid": OID, "size": len(DATA), "actions": {
        "download": {"href": f"{s.url}/registry.git/info/lfs/objects/{OID}"}}})
    url = remote.url.replace("http://", "http://ada:s3cret-token@") + "/registry.git"
    assert lfs_transfer.fetch_objects(local, url, [Pointer(OID, len(DATA))]) == 1
    assert all(auth is not None for _, auth in remote.seen)


def test_a_size_lie_is_read_no_further_than_the_pointer_says(hostile, local):
    remote = hostile()
    remote.endless = True
    remote.answer = lambda s: _answer({"oid": OID, "size": 10**15, "actions": {
        "download": {"href": f"{s.url}/o/{OID}"}}})
    with pytest.raises(Exception) as caught:
        lfs_transfer.fetch_objects(local, remote.url + "/registry.git",
                                   [Pointer(OID, len(DATA))])
    assert f"{len(DATA):,} bytes" in str(caught.value)
    assert remote.body_sent < 64 * 1024 * 1024, "the client read the remote's size lie"
    assert local.objects.size(OID) is None


def test_objects_nobody_asked_for_are_not_stored(hostile, local):
    remote = hostile()
    remote.answer = lambda s: _answer(
        {"oid": OTHER_OID, "size": len(OTHER), "actions": {
            "download": {"href": f"{s.url}/o/{OTHER_OID}"}}},
        {"oid": OID, "size": len(DATA), "actions": {"download": {"href": f"{s.url}/o/{OID}"}}})
    assert lfs_transfer.fetch_objects(local, remote.url + "/r.git",
                                      [Pointer(OID, len(DATA))]) == 1
    assert local.objects.size(OTHER_OID) is None


@pytest.mark.parametrize("answer", [
    b"not json at all",
    b"[1, 2]",
    json.dumps({"objects": ["x", None, 3]}).encode(),
    _answer({"oid": OID, "size": "big", "actions": {"download": {"href": 7}}}),
    _answer({"oid": OID, "size": 1, "actions": {"download": {"href": "file:///etc/passwd"}}}),
    _answer({"oid": OID, "size": 1, "actions": "download"}),
    _answer({"oid": OID, "error": "no"}),
])
def test_a_malformed_answer_is_a_clear_error(hostile, local, answer):
    remote = hostile()
    remote.answer = lambda s: answer
    with pytest.raises(RemoteFailed) as caught:
        lfs_transfer.fetch_objects(local, remote.url + "/r.git", [Pointer(OID, len(DATA))])
    assert "Git LFS server" in caught.value.message
    assert local.objects.size(OID) is None
