"""Who may post A/B outcomes: an application's token granted the ``outcomes`` scope, or
an editor. A person's plain viewer token once posted outcomes of ±1.7e308 that broke the
experiment pages; it is refused, with a message that names what is needed."""

from __future__ import annotations

import pytest
import requests

from tests.live import start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_server(tmp_path_factory.mktemp("outcomes"))
    try:
        admin = {"Authorization": f"Bearer {live.token()}"}
        split = requests.put(live.url + "/api/v1/splits?name=summarize&label=staging",
                             headers=admin, json={"arms": {"1": 50, "2": 50}})
        if split.status_code != 200:  # a second version to split over
            text = requests.get(live.url + "/api/v1/artifact?ref=summarize",
                                headers=admin).json()["text"]
            saved = requests.put(live.url + "/api/v1/artifact?name=summarize", headers={
                **admin, "If-Match": "1"}, json={"text": text + "\n", "message": "v2"})
            assert saved.status_code in (200, 201), saved.text
            split = requests.put(live.url + "/api/v1/splits?name=summarize&label=staging",
                                 headers=admin, json={"arms": {"1": 50, "2": 50}})
        assert split.status_code == 200, split.text
        live.cli("user", "add", "app", "--role", "viewer", "--password", "app-pw-123")
        live.cli("user", "add", "ed", "--role", "editor", "--password", "ed-pw-123")
        yield live
    finally:
        live.stop()


def _post(server, token: str, value=True):
    return requests.post(server.url + "/api/v1/outcomes",
                         headers={"Authorization": f"Bearer {token}"},
                         json={"ref": "summarize@staging", "key": "user-1", "value": value})


def test_a_plain_viewer_token_cannot_post_outcomes(server):
    refused = _post(server, server.token("app"), 1.7e308)
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "forbidden"
    assert "'outcomes' scope" in error["message"] and "editor" in error["message"]
    assert "--scope outcomes" in error["message"]
    stats = requests.get(server.url + "/api/v1/experiments?name=summarize&label=staging",
                         headers={"Authorization": f"Bearer {server.token()}"}).json()
    assert all(arm["n"] == 0 for metric in stats["metrics"]
               for arm in metric["arms"].values())  # nothing was recorded


def test_a_token_with_the_outcomes_scope_posts_outcomes(server):
    scoped = server.cli("token", "create", "app", "--scope", "outcomes").strip()
    accepted = _post(server, scoped)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["metric"] == "success"
    listed = server.cli("token", "list", "app", "--json")
    assert '"outcomes"' in listed
    # the scope adds outcomes only: the viewer still cannot write
    write = requests.put(server.url + "/api/v1/labels?name=summarize&label=staging",
                         headers={"Authorization": f"Bearer {scoped}"}, json={"version": 1})
    assert write.status_code == 403


def test_an_editor_may_post_outcomes(server):
    assert _post(server, server.token("ed")).status_code == 201


def test_an_unknown_scope_is_refused_by_name(server):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "promptrev.cli", "--registry",
                          str(server.registry), "token", "create", "app", "--scope", "admin"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "outcomes" in out.stderr
