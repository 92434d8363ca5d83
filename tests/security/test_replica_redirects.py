"""Issue 20: a replica's 307 to the primary cannot be turned into a header injection or an
open redirect.

WSGI hands the path over decoded, so ``%0D%0A`` in a request is a line break by the time
the replica builds ``Location``; it is encoded again (without that, the redirect would
carry a forged ``Set-Cookie`` or fail with a server error). The redirect always goes to
the configured primary, whatever ``Host`` or path the client sends.
"""

from __future__ import annotations

import http.client
import time
from urllib.parse import urlsplit

import pytest

from ..live import start_server


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("redirects")
    (root / "p").mkdir()
    (root / "r").mkdir()
    primary = start_server(root / "p", workers=1, env={"PROMPTREV_DURABILITY": "off"})
    token = primary.token()
    accounts = primary.registry / "promptrev-accounts.sqlite"
    replica = start_server(root / "r", workers=1, env={
        "PROMPTREV_PRIMARY": primary.url, "PROMPTREV_PRIMARY_TOKEN": token,
        "PROMPTREV_ACCOUNTS_URL": f"sqlite:///{accounts}", "PROMPTREV_DURABILITY": "off"})
    yield primary, replica
    replica.stop()
    primary.stop()


def _raw(url: str, method: str, path: str, headers: dict | None = None):
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
    conn.putrequest(method, path, skip_host=bool(headers and "Host" in headers))
    for name, value in (headers or {}).items():
        conn.putheader(name, value)
    conn.putheader("Content-Length", "0")
    conn.endheaders()
    answer = conn.getresponse()
    answer.read()
    conn.close()
    return answer


@pytest.mark.parametrize("path", [
    "/api/v1/artifact%0D%0ASet-Cookie:%20evil=1?name=x",
    "/api/v1/artifact?name=x%0D%0ASet-Cookie:%20evil=1",
    "/api/v1/artifact%E2%80%A8%0Aevil?name=x",
    "//evil.example/api/v1/artifact",
])
def test_the_redirect_carries_no_injected_header_and_stays_on_the_primary(pair, path):
    primary, replica = pair
    deadline = time.monotonic() + 20
    while True:  # the follower has reached the primary (else writes get 503)
        answer = _raw(replica.url, "PUT", path, {"Host": "evil.example"})
        if answer.status != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert answer.status == 307, answer.status
    location = answer.getheader("Location")
    assert location.startswith(primary.url + "/"), location
    assert "\r" not in location and "\n" not in location
    assert answer.getheader("Set-Cookie") is None
    assert not location.startswith(primary.url + "//")  # no scheme-relative escape
