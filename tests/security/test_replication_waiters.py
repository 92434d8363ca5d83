"""Issue 20: the replication long-poll cannot be used to starve a server of threads.

``GET /api/v1/replication/wait`` holds a request thread until ``main`` moves. A client that
opens many of them must not take every thread of a worker: past
``PROMPTREV_REPLICATION_MAX_WAITERS`` per process they are refused at once with 503, and
reads keep being answered. It needs a token like every read, and refuses bad input with
400. (Without the cap, the 12 long-polls below hold all 8 threads of the one worker and the
read waits for them.)
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from ..live import start_server

THREADS = 8
MAX_WAITERS = 3
ATTACKERS = 12


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_server(tmp_path_factory.mktemp("waiters"), workers=1,
                        env={"PROMPTREV_THREADS": str(THREADS),
                             "PROMPTREV_REPLICATION_MAX_WAITERS": str(MAX_WAITERS),
                             "PROMPTREV_REPLICATION_WAIT": "15",
                             "PROMPTREV_DURABILITY": "off"})
    yield live
    live.stop()


def test_many_long_polls_cannot_take_every_thread(server):
    token = server.token()
    auth = {"Authorization": f"Bearer {token}"}
    read = httpx.get(server.url + "/api/v1/artifact", params={"ref": "summarize"},
                     headers=auth, timeout=10)
    head = read.headers["X-Promptrev-Commit"]
    answers: list[tuple[int, dict, float]] = []
    lock = threading.Lock()

    def wait() -> None:
        started = time.monotonic()
        got = httpx.get(server.url + "/api/v1/replication/wait",
                        params={"after": head, "timeout": "15"}, headers=auth, timeout=30)
        with lock:
            answers.append((got.status_code, got.json(), time.monotonic() - started))

    attackers = [threading.Thread(target=wait) for _ in range(ATTACKERS)]
    for thread in attackers:
        thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the ones over the cap are refused at once
        with lock:
            if len(answers) >= ATTACKERS - MAX_WAITERS:
                break
        time.sleep(0.05)
    with lock:
        refused = list(answers)
    assert len(refused) == ATTACKERS - MAX_WAITERS, refused
    assert all(status == 503 for status, _, _ in refused), refused
    assert "PROMPTREV_REPLICATION_MAX_WAITERS" in refused[0][1]["error"]["message"]

    # reads are still answered at once while the allowed long-polls wait
    for _ in range(5):
        started = time.monotonic()
        again = httpx.get(server.url + "/api/v1/versions", params={"name": "summarize"},
                          headers=auth, timeout=5)
        assert again.status_code == 200 and time.monotonic() - started < 2

    # a save wakes the waiting ones at once, with the new commit
    current = httpx.get(server.url + "/api/v1/artifact", params={"ref": "summarize"},
                        headers=auth, timeout=10).json()
    saved = httpx.put(server.url + "/api/v1/artifact", params={"name": "summarize"},
                      json={"text": current["text"] + "\n", "base": current["version"]},
                      headers=auth, timeout=30)
    assert saved.status_code == 200, saved.text
    for thread in attackers:
        thread.join(timeout=10)
    woken = [a for a in answers if a[0] == 200]
    assert len(woken) == MAX_WAITERS, answers
    assert all(body["changed"] and body["commit"] != head for _, body, _ in woken)
    assert all(seconds < 12 for _, _, seconds in woken)  # not at the 15 s timeout


def test_the_long_poll_needs_a_token_and_valid_input(server):
    plain = httpx.get(server.url + "/api/v1/replication/wait", params={"timeout": "0"},
                      timeout=10)
    assert plain.status_code == 401
    auth = {"Authorization": f"Bearer {server.token()}"}
    for params in ({"after": "not-hex"}, {"after": "a" * 65}, {"timeout": "NaN"},
                   {"timeout": "-1"}, {"timeout": "1e999"}, {"timeout": "soon"}):
        bad = httpx.get(server.url + "/api/v1/replication/wait", params=params,
                        headers=auth, timeout=10)
        assert bad.status_code == 400, (params, bad.text)
        assert bad.json()["error"]["message"]
    now = httpx.get(server.url + "/api/v1/replication/wait",
                    params={"after": "", "timeout": "0"}, headers=auth, timeout=10)
    assert now.status_code == 200 and now.json()["changed"] is True
