"""Diffs that cost a worker minutes, replayed against a real ``promptrev serve``.

The line diff (difflib with ``autojunk=False``) is quadratic on repeated lines: 8,000
lines of "x" (16 kB) took 11 s, 20,000 over a minute, and a prompt's diff renders and
diffs its messages twice (the diff, then the token counts, whose message pairing was
quadratic too). An editor's stored prompt of repeated lines or messages held a server
thread for minutes for every reader of its diff (API, diff page, label confirmation,
change request page).
"""

from __future__ import annotations

import time

import pytest
import requests

from tests.live import start_server

SECONDS = 20  # each of these answers in about a second now


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_server(tmp_path_factory.mktemp("diff-cost"), workers=1)
    try:
        yield live
    finally:
        live.stop()


def _save_two_versions(server, name: str, text: str, changed: str) -> None:
    editor = server.token("admin")
    for base, body in enumerate((text, changed)):
        r = requests.put(server.url + "/api/v1/artifact", params={"name": name},
                         json={"text": body, "base": base},
                         headers={"Authorization": f"Bearer {editor}"}, timeout=60)
        assert r.status_code in (200, 201), r.text[:300]


def test_viewer_reads_a_diff_of_repeated_lines(server) -> None:
    server.cli("user", "add", "vic", "--role", "viewer", "--password", "vic-pw-1234")
    viewer = server.token("vic")
    text = "---\nname: lines\n---\nuser:\n" + "x\n" * 20000  # 40 kB
    _save_two_versions(server, "lines", text, text.replace("user:\n", "user:\ny\n", 1))
    start = time.monotonic()
    r = requests.get(server.url + "/api/v1/diff", params={"a": "lines@1", "b": "lines@2"},
                     headers={"Authorization": f"Bearer {viewer}"}, timeout=SECONDS)
    assert r.status_code == 200, r.text[:300]
    assert time.monotonic() - start < SECONDS
    assert r.json()["text"]["added"] == 1 and r.json()["text"]["removed"] == 0


def test_stored_prompt_of_repeated_messages(server) -> None:
    text = "---\nname: many\n---\n" + "user:\nx\n\n" * 6000  # 54 kB
    _save_two_versions(server, "many", text,
                       text.replace("---\nuser:", "---\nsystem:\ny\n\nuser:", 1))
    auth = {"Authorization": f"Bearer {server.token('admin')}"}
    start = time.monotonic()
    r = requests.get(server.url + "/api/v1/diff", params={"a": "many@1", "b": "many@2"},
                     headers=auth, timeout=SECONDS)
    assert r.status_code == 200, r.text[:300]
    assert time.monotonic() - start < SECONDS
    assert len(r.json()["tokens"]["messages"]) == 6001
