"""``promptrev.Client`` against a real ``promptrev serve`` on loopback."""

from __future__ import annotations

import time

import httpx
import pytest

from promptrev import Client
from promptrev.client import ServerUnavailable, _checked
from promptrev.errors import NotFound

from .conftest import PROMPT, variant
from .live import start_server

TTL = 0.3


class Recording(httpx.HTTPTransport):
    """The real HTTP transport, remembering the status of every answer."""

    def __init__(self):
        super().__init__()
        self.statuses: list[int] = []

    def handle_request(self, request):
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        return response


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("client"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token(live):
    return live.token()


@pytest.fixture(scope="module")
def admin(live, token):
    with httpx.Client(base_url=live.url + "/api/v1",
                      headers={"Authorization": f"Bearer {token}"}) as http:
        yield http


def _save(admin, name: str, text: str, base: int | None = None) -> int:
    headers = {"If-Match": str(base)} if base else {}
    r = admin.put("/artifact", params={"name": name}, headers=headers, json={"text": text})
    assert r.status_code in (200, 201), r.text
    return r.json()["version"]


def _label(admin, name: str, label: str, version: int) -> None:
    r = admin.put("/labels", params={"name": name, "label": label}, json={"version": version})
    assert r.status_code == 200, r.text


def _wait_until(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_get_resolve_render(live, admin, token):
    _save(admin, "c/greet", PROMPT)
    _label(admin, "c/greet", "production", 1)
    with Client(live.url, token, ttl=TTL) as client:
        got = client.get("c/greet@production")
        assert (got.name, got.version, got.source) == ("c/greet", 1, "server")
        assert got.text == PROMPT and "production" in got.labels
        assert client.resolve("c/greet@production") == 1
        messages = client.render("c/greet@production", {"who": "Bo"})
        server = admin.post("/render", json={"ref": "c/greet@production",
                                             "variables": {"who": "Bo"}}).json()["messages"]
        assert [m.to_dict() for m in messages] == server
        assert client.get("c/greet@production").source == "cache"
        with pytest.raises(NotFound):
            client.get("c/greet@nope")


def test_label_move_reaches_the_client_within_the_ttl(live, admin, token):
    _save(admin, "c/move", PROMPT)
    two = _save(admin, "c/move", variant(PROMPT, 1), base=1)
    _label(admin, "c/move", "production", 1)
    transport = Recording()
    with Client(live.url, token, ttl=TTL, transport=transport) as client:
        assert client.get("c/move@production").version == 1
        _label(admin, "c/move", "production", two)
        moved_at = time.monotonic()
        assert client.get("c/move@production").source == "cache"  # fresh: no network
        assert transport.statuses == [200]

        def seen():
            got = client.get("c/move@production")  # after the TTL: stale, then revalidated
            return got.version == two and got

        got = _wait_until(seen)
        assert time.monotonic() - moved_at < TTL + 1.0
        assert got.text == variant(PROMPT, 1)
        # Unchanged answers are revalidated with If-None-Match: 304, no body.
        time.sleep(TTL)
        assert client.get("c/move@production").source == "stale"
        client.wait()
        assert transport.statuses[-1] == 304
        assert client.get("c/move@production").source == "cache"


def test_cache_never_mixes_prompts_or_labels(live, admin, token):
    _save(admin, "c/a", PROMPT)
    _save(admin, "c/a", variant(PROMPT, 1), base=1)
    _save(admin, "c/b", variant(PROMPT, 2))
    _label(admin, "c/a", "production", 1)
    _label(admin, "c/a", "staging", 2)
    _label(admin, "c/b", "production", 1)
    with Client(live.url, token, ttl=60) as client:
        assert client.get("c/a@production").version == 1
        assert client.get("c/a@staging").version == 2
        assert client.get("c/b@production").text == variant(PROMPT, 2)
        assert client.get("c/a").version == 2 and client.get("c/a@1").version == 1
        assert client.get("c/a@production").text == PROMPT
    # An answer for another prompt, label or version is refused, never cached.
    answer = admin.get("/artifact", params={"ref": "c/a@staging"}).json()
    assert _checked("c/a@staging", answer).version == 2
    for wrong in ["c/b@staging", "c/a@production", "c/a@1", "c/a@deadbeef"]:
        with pytest.raises(ServerUnavailable):
            _checked(wrong, answer)


def test_removed_label_is_not_served_after_revalidation(live, admin, token):
    _save(admin, "c/gone", PROMPT)
    _label(admin, "c/gone", "canary", 1)
    with Client(live.url, token, ttl=TTL) as client:
        assert client.get("c/gone@canary").version == 1
        assert admin.delete("/labels", params={"name": "c/gone", "label": "canary"}
                            ).status_code == 200
        time.sleep(TTL)
        client.get("c/gone@canary")  # stale answer while revalidating
        client.wait()
        with pytest.raises(NotFound):
            client.get("c/gone@canary")


def test_server_down_keeps_last_known_version_or_fallback(tmp_path):
    server = start_server(tmp_path, workers=1)
    try:
        token = server.token()
        with httpx.Client(base_url=server.url + "/api/v1",
                          headers={"Authorization": f"Bearer {token}"}) as admin:
            _label(admin, "summarize", "production", 1)
        client = Client(server.url, token, ttl=TTL, timeout=2)
        known = client.get("summarize@production")
    finally:
        server.stop()
    with client:
        time.sleep(TTL)
        for _ in range(3):  # stale, revalidation fails, still served
            got = client.get("summarize@production")
            assert got.source == "stale" and got.text == known.text and got.version == 1
            client.wait()
        assert client.render("summarize@production", {"text": "t", "max_words": 3})
        fallback = "user:\nSummarize: {{ text }}\n"
        got = client.get("summarize@staging", fallback=fallback)
        assert got.source == "fallback" and got.text == fallback and got.version is None
        messages = client.render("summarize@staging", {"text": "x"}, fallback=fallback)
        assert messages[0].content == "Summarize: x"
        with pytest.raises(ServerUnavailable):
            client.get("summarize@staging")
    with Client(server.url, "t", fallbacks={"summarize@production": fallback}) as cold:
        assert cold.get("summarize@production").source == "fallback"


def test_caller_keys_follow_a_label_split(live, admin, token):
    _save(admin, "c/split", PROMPT)
    _save(admin, "c/split", variant(PROMPT, 1), base=1)
    _label(admin, "c/split", "production", 1)
    r = admin.put("/splits", params={"name": "c/split", "label": "production"},
                  json={"arms": {"1": 50, "2": 50}})
    assert r.status_code == 200, r.text
    with Client(live.url, token, ttl=60) as client:
        got = {f"u{i}": client.resolve("c/split@production", caller=f"u{i}") for i in range(30)}
        assert set(got.values()) == {1, 2}
        assert all(client.get("c/split@production", caller=k).version == v
                   for k, v in got.items())  # sticky, and from the cache
        assert client.get("c/split@production").version == 1  # no caller: the label
