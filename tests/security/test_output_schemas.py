"""Attack: a prompt's ``outputs`` schema that makes the server fetch, read or loop.

Found by an attack on the hardened server: jsonschema resolves a remote ``$ref`` with
``urlopen`` (any URL, ``file://``, no timeout), so an editor's schema made the server call
a loopback listener, read a local file into an error, or hang a thread; and local
``$ref``s nested ``allOf`` doubled the checking time per level. A viewer could trigger
each through ``/v1``. Now a schema with references is refused before any model runs, on
the runner, ``/v1`` and the evaluation scorer alike, and nothing is fetched.
"""

from __future__ import annotations

import http.server
import json
import threading

import httpx
import pytest
import yaml

from promptrev.errors import InvalidRequest
from promptrev.evaluation.scorers import build_scorers

from ..live import start_server


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        self.hits.append(self.path)
        body = b'{"enum": ["FETCHED"]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802 - a model that answers: the schema is then checked
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.hits.append(self.path)
        body = json.dumps({
            "id": "c", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": '{"x": {}}'}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def listener():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _prompt(outputs: dict) -> str:
    front = {"model": {"configuration": {"name": "configured"}}, "outputs": outputs}
    return f"---\n{yaml.safe_dump(front)}---\nuser:\nAnswer in JSON.\n"


def test_references_in_outputs_are_refused_before_any_model_runs(tmp_path, listener):
    """The listener is also the operator's model: it answers, so the schema gets checked."""
    local = tmp_path / "local.json"
    local.write_text('{"enum": ["LOCAL-FILE-CONTENT"]}')
    models = tmp_path / "models.yaml"
    models.write_text(f"configured: {{backend: openai, name: m, base_url: '{listener}/v1', "
                      "api_key: k}\n")
    live = start_server(tmp_path, workers=1, env={"PROMPTREV_MODELS": str(models)})
    try:
        editor = {"Authorization": f"Bearer {live.token('admin')}"}
        live.cli("user", "add", "vic", "--role", "viewer", "--password", "vic-pw-123456")
        viewer = {"Authorization": f"Bearer {live.token('vic')}"}
        defs = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(30)}
        cases = {
            "remote": {"type": "object", "properties": {"x": {"$ref": f"{listener}/ssrf"}}},
            "file": {"type": "object", "properties": {"x": {"$ref": f"file://{local}"}}},
            "missing": {"type": "object",
                        "properties": {"x": {"$ref": "file:///no/such.json"}}},
            "exponential": {"type": "object", "properties": {"x": {"$ref": "#/$defs/d0"}},
                            "$defs": {**defs, "d30": {}}},
        }
        for name, outputs in cases.items():
            r = httpx.put(live.url + "/api/v1/artifact", params={"name": f"atk-{name}"},
                          headers=editor, json={"text": _prompt(outputs)}, timeout=30)
            assert r.status_code == 201, r.text
            r = httpx.post(live.url + "/v1/chat/completions", headers=viewer, timeout=30,
                           json={"model": f"prompt:atk-{name}"})
            assert r.status_code == 422, (name, r.status_code, r.text[:300])
            message = r.json()["error"]["message"]
            assert "$ref is not supported" in message, message
            assert "LOCAL-FILE-CONTENT" not in r.text and "FETCHED" not in r.text
        assert _Recorder.hits == []
        assert "Traceback" not in live.log.read_text()
    finally:
        live.stop()


def test_the_json_schema_scorer_refuses_references(listener):
    for schema in ({"$ref": f"{listener}/scorer"},
                   {"properties": {"x": {"$ref": "#/$defs/a"}}, "$defs": {"a": {}}},
                   {"properties": {"x": {"$dynamicRef": "#meta"}}}):
        with pytest.raises(InvalidRequest, match="is not supported"):
            build_scorers([{"json_schema": {"schema": schema}}])
    assert _Recorder.hits == []
