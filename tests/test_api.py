"""The JSON API with Flask's test client: every endpoint, success and failure."""

from __future__ import annotations

import json
import re

import pytest

from promptrev.server.openapi import openapi_document

from .conftest import PROMPT, variant


def _error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return body["error"]


def test_list_search_and_folders(server_env):
    r = server_env.api("GET", "/artifacts")
    assert r.status_code == 200
    names = {a["name"] for a in r.get_json()["artifacts"]}
    assert {"summarize", "sentiment/few-shot", "sentiment/zero-shot", "sentiment"} <= names
    r = server_env.api("GET", "/artifacts?q=SHOT")
    assert {a["name"] for a in r.get_json()["artifacts"]} == {
        "sentiment/few-shot", "sentiment/zero-shot"}
    r = server_env.api("GET", "/artifacts?prefix=sentiment/&kind=prompt")
    assert {a["name"] for a in r.get_json()["artifacts"]} == {
        "sentiment/few-shot", "sentiment/zero-shot"}
    r = server_env.api("GET", "/artifacts?kind=dataset")
    assert [a["name"] for a in r.get_json()["artifacts"]] == ["sentiment"]
    r = server_env.api("GET", "/artifacts?limit=2&offset=1")
    assert len(r.get_json()["artifacts"]) == 2 and r.get_json()["total"] == len(names)
    _error(server_env.api("GET", "/artifacts?kind=adapterz"), 400, "invalid_request")
    _error(server_env.api("GET", "/artifacts?limit=0"), 400, "invalid_request")
    _error(server_env.api("GET", "/artifacts?limit=abc"), 400, "invalid_request")


def test_get_by_reference_with_etag_and_304(server_env):
    r = server_env.api("GET", "/artifact?ref=summarize")
    assert r.status_code == 200 and r.get_json()["version"] == 1
    assert "{{ text }}" in r.get_json()["text"]
    etag = r.headers["ETag"]
    again = server_env.api("GET", "/artifact?ref=summarize", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    # A label placed on the version changes the answer, so the ETag changes too.
    server_env.api("PUT", "/labels?name=summarize&label=staging", json={"version": 1})
    after = server_env.api("GET", "/artifact?ref=summarize", headers={"If-None-Match": etag})
    assert after.status_code == 200 and after.headers["ETag"] != etag
    assert after.get_json()["labels"] == ["staging"]
    by_label = server_env.api("GET", "/artifact?ref=summarize@staging")
    assert by_label.get_json()["version"] == 1
    commit = by_label.get_json()["commit"]
    assert server_env.api("GET", f"/artifact?ref=summarize@{commit[:8]}").status_code == 200
    _error(server_env.api("GET", "/artifact?ref=summarize@prod"), 404, "not_found")
    _error(server_env.api("GET", "/artifact?ref=summarize@9"), 404, "not_found")
    _error(server_env.api("GET", "/artifact?ref=nope"), 404, "not_found")
    _error(server_env.api("GET", "/artifact?ref=../etc/passwd"), 400)
    _error(server_env.api("GET", "/artifact?ref=a@@b"), 400, "invalid_reference")
    _error(server_env.api("GET", "/artifact"), 400, "invalid_request")


def test_create_update_with_if_match_and_conflict(server_env):
    r = server_env.api("PUT", "/artifact?name=team/greet", json={"text": PROMPT,
                                                                  "message": "first"})
    assert r.status_code == 201 and r.get_json()["version"] == 1
    assert r.get_json()["author"] == "admin"
    assert r.headers["Location"].endswith("ref=team/greet@1")
    # An update must say what it is based on.
    err = _error(server_env.api("PUT", "/artifact?name=team/greet",
                                json={"text": variant(PROMPT, 1)}), 428,
                 "precondition_required")
    assert 'If-Match: "1"' in err["message"]
    r = server_env.api("PUT", "/artifact?name=team/greet", headers={"If-Match": '"1"'},
                       json={"text": variant(PROMPT, 1), "message": "second"})
    assert r.status_code == 200 and r.get_json()["version"] == 2
    # Someone still on version 1 gets a conflict that says what changed since.
    err = _error(server_env.api("PUT", "/artifact?name=team/greet", headers={"If-Match": "1"},
                                json={"text": variant(PROMPT, 2), "message": "stale"}),
                 409, "conflict")
    assert err["details"]["current"] == 2 and err["details"]["changes"][0]["message"] == "second"
    assert "variant 1" in err["details"]["diff"]
    # Base in the body works too (for clients that cannot set headers).
    r = server_env.api("PUT", "/artifact?name=team/greet",
                       json={"text": variant(PROMPT, 3), "base": 2})
    assert r.get_json()["version"] == 3
    _error(server_env.api("PUT", "/artifact?name=team/greet", headers={"If-Match": "abc"},
                          json={"text": PROMPT}), 400, "invalid_request")
    _error(server_env.api("PUT", "/artifact?name=x", data="{not json",
                          content_type="application/json"), 400, "invalid_request")
    _error(server_env.api("PUT", "/artifact?name=x", json=["a"]), 400, "invalid_request")
    _error(server_env.api("PUT", "/artifact?name=x", json={"text": 5}), 400, "invalid_request")
    _error(server_env.api("PUT", "/artifact?name=../x", json={"text": PROMPT}), 400,
           "invalid_name")
    bad = _error(server_env.api("PUT", "/artifact?name=bad", json={
        "text": "---\nname: [unclosed\n---\nuser:\nhi\n"}), 422, "invalid_artifact")
    assert bad["details"]["problems"][0]["line"]
    assert server_env.api("GET", "/artifact?ref=bad").status_code == 404  # nothing written


def test_delete_and_restore(server_env):
    r = server_env.api("DELETE", "/artifact?name=summarize&message=retire")
    assert r.status_code == 200 and r.get_json()["deleted"] and r.get_json()["version"] == 2
    _error(server_env.api("GET", "/artifact?ref=summarize"), 410, "deleted")
    assert server_env.api("GET", "/artifact?ref=summarize@1").status_code == 200
    r = server_env.api("POST", "/restore", json={"name": "summarize"})
    assert r.status_code == 200 and r.get_json()["version"] == 3
    assert server_env.api("GET", "/artifact?ref=summarize").get_json()["version"] == 3
    _error(server_env.api("DELETE", "/artifact?name=nope"), 404)
    _error(server_env.api("DELETE", "/artifact?name=summarize", headers={"If-Match": "1"}),
           409, "conflict")
    _error(server_env.api("POST", "/restore", json={}), 400, "invalid_request")


def test_versions_and_labels(server_env):
    server_env.api("PUT", "/artifact?name=summarize", headers={"If-Match": "1"},
                   json={"text": variant(PROMPT, 1), "message": "rewrite"})
    r = server_env.api("PUT", "/labels?name=summarize&label=production",
                       json={"version": 1, "message": "ship v1"})
    assert r.status_code == 200 and r.get_json()["event"]["to"] == 1
    r = server_env.api("PUT", "/labels?name=summarize&label=production", json={"version": 2})
    assert r.get_json()["event"]["from"] == 1 and r.get_json()["event"]["to"] == 2
    r = server_env.api("GET", "/versions?name=summarize")
    versions = r.get_json()["versions"]
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["labels"] == ["production"] and versions[0]["message"] == "rewrite"
    r = server_env.api("GET", "/labels?name=summarize")
    assert r.get_json()["labels"] == {"production": 2}
    assert r.get_json()["protected"] == ["production"]
    r = server_env.api("GET", "/label-events?name=summarize")
    assert [(e["from"], e["to"]) for e in r.get_json()["events"]] == [(1, 2), (None, 1)]
    r = server_env.api("DELETE", "/labels?name=summarize&label=production")
    assert r.status_code == 200 and r.get_json()["event"]["to"] is None
    _error(server_env.api("DELETE", "/labels?name=summarize&label=production"), 404)
    _error(server_env.api("PUT", "/labels?name=summarize&label=production",
                          json={"version": 7}), 404)
    _error(server_env.api("PUT", "/labels?name=summarize&label=bad label",
                          json={"version": 1}), 400)
    _error(server_env.api("PUT", "/labels?name=summarize&label=x", json={}), 400)
    _error(server_env.api("GET", "/versions?name=nope"), 404)


def test_rollback_by_label_and_by_content(server_env):
    server_env.api("PUT", "/artifact?name=summarize", headers={"If-Match": "1"},
                   json={"text": variant(PROMPT, 1)})
    server_env.api("PUT", "/labels?name=summarize&label=production", json={"version": 2})
    r = server_env.api("POST", "/rollback", json={"name": "summarize", "to": 1,
                                                  "label": "production", "message": "bad"})
    assert r.status_code == 200 and r.get_json()["result"]["to"] == 1
    assert server_env.api("GET", "/artifact?ref=summarize@production").get_json()[
        "version"] == 1
    r = server_env.api("POST", "/rollback", json={"name": "summarize", "to": 1})
    assert r.get_json()["result"]["version"] == 3
    original = server_env.api("GET", "/artifact?ref=summarize@1").get_json()["text"]
    assert server_env.api("GET", "/artifact?ref=summarize").get_json()["text"] == original
    _error(server_env.api("POST", "/rollback", json={"name": "summarize"}), 400)
    _error(server_env.api("POST", "/rollback", json={"name": "summarize", "to": 99}), 404)
    _error(server_env.api("POST", "/rollback", json={"name": "summarize", "to": "x"}), 400)


def test_diff_text_fields_rendered(server_env):
    changed = PROMPT.replace("temperature: 0.7", "temperature: 0.2").replace(
        "  who:\n    type: string\n", "  who:\n    type: string\n  tone:\n    type: string\n")
    server_env.api("PUT", "/artifact?name=g", json={"text": PROMPT})
    server_env.api("PUT", "/artifact?name=g", headers={"If-Match": "1"}, json={"text": changed})
    r = server_env.api("GET", "/diff?a=g@1&b=g@2")
    assert r.status_code == 200
    body = r.get_json()
    paths = {f["path"]: f for f in body["fields"]}
    assert paths["model.parameters.temperature"]["old"] == 0.7
    assert [c["path"] for c in body["contract_changes"]] == ["inputs.tone"]
    assert body["rendered"]["variables"] == {"who": "Ada"}
    assert "-    temperature: 0.7" in body["text"]["unified"]
    r = server_env.api("GET", "/diff?a=g@1&b=g@2&variables=" + json.dumps({"who": "Bo"}))
    assert "Bo" in r.get_json()["rendered"]["right"][1]["content"]
    _error(server_env.api("GET", "/diff?a=g@1&b=g@2&variables=[1]"), 400)
    _error(server_env.api("GET", "/diff?a=g@1"), 400)
    _error(server_env.api("GET", "/diff?a=g@1&b=g@5"), 404)


def test_render_and_sandbox(server_env):
    r = server_env.api("POST", "/render", json={"ref": "summarize", "variables": {
        "text": "Long text.", "max_words": 5}})
    assert r.status_code == 200
    assert [m["role"] for m in r.get_json()["messages"]] == ["system", "user"]
    assert "Long text." in r.get_json()["messages"][1]["content"]
    err = _error(server_env.api("POST", "/render", json={"ref": "summarize",
                                                         "variables": {}}), 422, "render_error")
    assert "text" in err["message"] or "max_words" in err["message"]
    # A template reaching for Python internals is stored as text but refused by the sandbox.
    hostile = "user:\n{{ ''.__class__.__mro__[1].__subclasses__() }}\n"
    assert server_env.api("PUT", "/artifact?name=evil", json={"text": hostile}).status_code == 201
    err = _error(server_env.api("POST", "/render", json={"ref": "evil"}), 422, "render_error")
    assert "sandbox" in err["message"] and "__class__" in err["message"]
    diff = server_env.api("GET", "/diff?a=summarize@1&b=evil@1").get_json()
    assert "sandbox" in diff["rendered"]["right_error"]
    _error(server_env.api("POST", "/render", json={"ref": "summarize", "variables": "x"}), 400)
    _error(server_env.api("POST", "/render", json={"ref": "sentiment", "variables": {}}), 404)


def test_audit_and_me(server_env):
    server_env.api("PUT", "/artifact?name=g", json={"text": PROMPT, "message": "add g"},
                   role="editor")
    server_env.api("PUT", "/artifact?name=g", json={"text": variant(PROMPT, 1)},
                   headers={"If-Match": "1"}, role="editor")
    server_env.api("PUT", "/labels?name=g&label=staging", json={"version": 2}, role="editor")
    server_env.api("POST", "/rollback", json={"name": "g", "to": 1, "label": "staging"},
                   role="editor")
    entries = server_env.api("GET", "/audit?limit=4").get_json()["entries"]
    assert [e["action"] for e in entries] == ["rollback", "label", "save", "create"]
    assert entries[0]["label_moves"] == [{"kind": "prompt", "name": "g", "label": "staging",
                                          "from": 2, "to": 1}]
    assert {e["author"] for e in entries} == {"editor"}
    older = server_env.api("GET", f"/audit?before={entries[-1]['seq']}").get_json()["entries"]
    assert older and all(e["seq"] < entries[-1]["seq"] for e in older)
    assert server_env.api("GET", "/me", role="viewer").get_json()["user"]["role"] == "viewer"


def test_request_size_limit(tmp_path):
    from .conftest import make_server_env

    env = make_server_env(tmp_path, max_bytes=4096, seed_from=None)
    big = "user:\n" + "x" * 5000 + "\n"
    _error(env.api("PUT", "/artifact?name=big", json={"text": big}), 413, "too_large")
    huge = "user:\n" + "x" * (2 * 1024 * 1024) + "\n"
    _error(env.api("PUT", "/artifact?name=big", json={"text": huge}), 413, "too_large")
    assert env.api("GET", "/artifact?ref=big").status_code == 404


def test_error_shape_everywhere(server_env):
    """Every error answer of the API, whatever produced it, has the one JSON shape."""
    cases = [
        ("GET", "/nope", "admin", {}), ("DELETE", "/artifacts", "admin", {}),
        ("GET", "/artifacts", None, {}), ("GET", "/artifact?ref=x", "bogus", {}),
        ("GET", "/artifact?ref=a b", "admin", {}), ("POST", "/render", "admin", {"data": "x"}),
        ("PUT", "/artifact?name=x", "viewer", {"json": {"text": PROMPT}}),
        ("GET", "/diff?a=summarize@1&b=sentiment@1", "admin", {}),
    ]
    for method, path, role, kw in cases:
        headers = {"Authorization": "Bearer prv_wrong"} if role == "bogus" else None
        r = server_env.api(method, path, role=None if role == "bogus" else role,
                           headers=headers, **kw)
        assert r.status_code >= 400 or path.startswith("/diff")
        if r.status_code >= 400:
            _error(r, r.status_code)
            assert "Traceback" not in r.get_data(as_text=True)
    r = server_env.api("DELETE", "/artifacts")
    assert r.status_code == 405 and "GET" in r.headers["Allow"]


def test_unexpected_errors_are_500_without_trace(server_env, monkeypatch):
    from promptrev.registry import Registry

    def broken(*_a, **_kw):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Registry, "labels", broken)
    r = server_env.api("GET", "/labels?name=summarize")
    err = _error(r, 500, "internal_error")
    assert "secret" not in r.get_data(as_text=True) and "Traceback" not in err["message"]


def test_openapi_documents_every_route(server_env):
    r = server_env.client.get("/api/v1/openapi.json")  # public: no token needed
    assert r.status_code == 200 and r.get_json()["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in openapi_document()["paths"].items()
                  for method in ops}
    routed = {(re.sub(r"<(?:[^:>]+:)?(\w+)>", r"{\1}", rule.rule), method)
              for rule in server_env.app.url_map.iter_rules()
              if rule.rule.startswith("/api/v1") for method in rule.methods
              if method not in ("HEAD", "OPTIONS")}
    assert documented == routed


@pytest.mark.parametrize("kind", ["prompt", "dataset"])
def test_datasets_through_the_api(server_env, kind):
    r = server_env.api("GET", f"/artifacts?kind={kind}")
    name = r.get_json()["artifacts"][0]["name"]
    r = server_env.api("GET", f"/artifact?ref={name}&kind={kind}")
    assert r.status_code == 200 and r.get_json()["kind"] == kind
