"""Cached label reads served below Flask: the same answers, the same refusals."""

from __future__ import annotations

import io
import sys

from promptrev.server.fastpath import FastReads

from .conftest import PROMPT, make_server_env


def _environ(path: str, query: str, headers: dict[str, str]) -> dict:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
               "SERVER_NAME": "localhost", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr}
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    return environ


def _fast(env, query: str, headers: dict[str, str]):
    """What the fast layer answers by itself (None: it hands the request to Flask)."""
    layer = env.app.wsgi_app
    assert isinstance(layer, FastReads)
    return layer._cached(_environ("/api/v1/artifact", query, headers))


def test_hits_are_answered_below_flask_with_the_same_bytes(server_env):
    headers = server_env.headers("viewer")
    query = "ref=summarize@production"
    server_env.api("PUT", "/labels?name=summarize&label=production", json={"version": 1})
    assert _fast(server_env, query, headers) is None  # not cached yet: Flask answers
    first = server_env.api("GET", "/artifact?" + query, role="viewer")
    assert first.status_code == 200
    status, fast_headers, body = _fast(server_env, query, headers)
    assert status == "200 OK" and body == first.data
    assert dict(fast_headers)["ETag"] == first.headers["ETag"]
    assert dict(fast_headers)["Content-Type"] == first.headers["Content-Type"]
    again = server_env.api("GET", "/artifact?" + query, role="viewer")  # through the layer
    assert again.data == first.data and again.headers["ETag"] == first.headers["ETag"]
    etag = first.headers["ETag"]
    assert _fast(server_env, query, {**headers, "If-None-Match": etag})[0] == "304 NOT MODIFIED"
    assert server_env.api("GET", "/artifact?" + query, role="viewer",
                          headers={"If-None-Match": etag}).status_code == 304
    weak = _fast(server_env, query, {**headers, "If-None-Match": "W/" + etag})
    flask_weak = server_env.api("GET", "/artifact?" + query, role="viewer",
                                headers={"If-None-Match": "W/" + etag})
    assert weak[0].split()[0] == str(flask_weak.status_code)  # same rule both ways


def test_refusals_and_changes_go_through_flask(server_env):
    query = "ref=summarize"
    assert server_env.api("GET", "/artifact?" + query).status_code == 200
    token, info = server_env.accounts.create_token("viewer", "x")
    bearer = {"Authorization": f"Bearer {token}"}
    assert _fast(server_env, query, bearer) is not None
    server_env.accounts.revoke_token(info.id)
    assert _fast(server_env, query, bearer) is None
    r = server_env.api("GET", "/artifact?" + query, role=None, headers=bearer)
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthorized"
    assert _fast(server_env, query, {}) is None  # no token, no anonymous reads
    assert server_env.api("GET", "/artifact?" + query, role=None).status_code == 401
    admin = server_env.headers("admin")
    assert _fast(server_env, query + "&key=user-1", admin) is None  # splits: Flask
    assert _fast(server_env, query + "&kind=bogus", admin) is None
    # A new version moves main: the cached answer is not served any more.
    server_env.api("PUT", "/artifact?name=summarize", headers={"If-Match": "1"},
                   json={"text": PROMPT})
    assert _fast(server_env, query, admin) is None
    assert server_env.api("GET", "/artifact?" + query).get_json()["version"] == 2
    assert _fast(server_env, query, admin) is not None


def test_anonymous_reads_when_enabled(tmp_path):
    env = make_server_env(tmp_path, anonymous_read=True)
    assert env.api("GET", "/artifact?ref=summarize", role=None).status_code == 200
    assert _fast(env, "ref=summarize", {}) is not None
    assert _fast(env, "ref=summarize", {"Authorization": "Bearer prv_wrong"}) is None
    env.app.extensions["promptrev"].close()
