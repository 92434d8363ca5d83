"""Per-process server state: the registry pool and the response cache stay bounded."""

from __future__ import annotations

import threading

import httpx
from werkzeug.serving import make_server

from promptrev.server.state import BodyCache


def test_body_cache_is_bounded_and_follows_main():
    cache = BodyCache(size=3, max_bytes=16 * 100)
    for n in range(10):
        cache.get("head1", n)
        cache.put("head1", n, "x" * 50)
    assert len(cache.items) <= 3 and cache.bytes <= 1600
    assert cache.get("head1", 9) is not None and cache.get("head1", 0) is None
    cache.put("head1", "big", "y" * 500)  # larger than 1/16 of the budget: not kept
    assert cache.get("head1", "big") is None
    assert cache.get("head2", 9) is None and not cache.items and cache.bytes == 0


def test_registries_are_pooled_not_leaked(server_env):
    state = server_env.app.extensions["promptrev"]
    for _ in range(20):
        assert server_env.api("GET", "/artifact?ref=summarize").status_code == 200
    assert len(state._idle) == 1  # one registry, reused by every request
    # Flask's threaded server starts a thread per request: still a bounded pool.
    http = make_server("127.0.0.1", 0, server_env.app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{http.server_port}/api/v1/artifact?ref=summarize"

        def hammer():
            with httpx.Client(headers=server_env.headers()) as client:
                for _ in range(10):
                    assert client.get(url).status_code == 200

        workers = [threading.Thread(target=hammer) for _ in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        http.shutdown()
    assert 1 <= len(state._idle) <= 6
