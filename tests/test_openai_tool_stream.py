"""Streamed tool calls: the official ``openai`` client with ``stream=True`` against a real
``promptrev serve`` whose configured model is a fake OpenAI-compatible server on loopback
that answers with tool calls, in pieces, as OpenAI streams them."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest

from .live import ROOT, start_server

openai = pytest.importorskip("openai")

PROMPT = """---
name: assistant
model:
  id: gpt-4
  apiType: chat
tools:
  - name: get_weather
    kind: function
    description: The weather in a place
    parameters:
      - name: location
        kind: string
      - name: unit
        kind: string
    bindings:
      unit:
        input: preferred_unit
  - name: get_time
    kind: function
    description: The time in a time zone
    parameters:
      - name: tz
        kind: string
inputs:
  - name: preferred_unit
    kind: string
    default: celsius
---
system:
You have tools.

user:
Weather and time in Paris?
"""
# What the fake model says: the text, then three calls whose arguments come in pieces.
TEXT = "Let me look."
CALLS = [("call_t", "get_time", ['{"tz":', ' "Europe/Paris"}']),
         ("call_w", "get_weather", ['{"loc', 'ation": "Pa', 'ris", "unit": "fahrenheit"}']),
         ("call_u", "get_time", ['{"tz": "UTC"', '}'])]


class _Upstream(http.server.BaseHTTPRequestHandler):
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.requests.append(body)
        if not body.get("stream"):
            return self._json({
                "id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": TEXT, "tool_calls": [
                        _call(i, c, name, "".join(args))
                        for i, (c, name, args) in enumerate(CALLS)]}}],
                "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}})
        deltas = [{"role": "assistant", "content": ""}, {"content": TEXT}]
        for i, (call_id, name, args) in enumerate(CALLS):
            deltas.append({"tool_calls": [_call(i, call_id, name, "")]})
            deltas += [{"tool_calls": [{"index": i, "function": {"arguments": a}}]}
                       for a in args]
        events = [_chunk(body, d) for d in deltas]
        events.append(_chunk(body, {}, "tool_calls"))
        events.append({**_chunk(body, {}), "choices": [], "usage": {
            "prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}})
        data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
        data += b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def _call(index: int, call_id: str, name: str, arguments: str) -> dict:
    return {"index": index, "id": call_id, "type": "function",
            "function": {"name": name, "arguments": arguments}}


def _chunk(body: dict, delta: dict, finish: str | None = None) -> dict:
    return {"id": "s", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[object, list[dict]]]:
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    tmp = tmp_path_factory.mktemp("toolstream")
    models = tmp / "models.yaml"
    models.write_text(json.dumps({"gpt-4": {
        "backend": "openai", "name": "up-model", "api_key": "sk-up-123456",
        "base_url": f"http://127.0.0.1:{upstream.server_address[1]}/v1"}}))
    server = start_server(tmp, workers=1, env={"PROMPTREV_MODELS": str(models)})
    token = server.token()
    httpx.put(server.url + "/api/v1/artifact", params={"name": "assistant"},
              headers={"Authorization": f"Bearer {token}"},
              json={"text": PROMPT}).raise_for_status()
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0)
    _Upstream.requests = []
    try:
        yield client, _Upstream.requests, server, models
    finally:
        server.stop()
        upstream.shutdown()
        upstream.server_close()


def test_streamed_tool_calls_come_as_openai_streams_them(served):
    client, upstream, _, _ = served
    stream = client.chat.completions.create(
        model="prompt:assistant", messages=[], stream=True,
        stream_options={"include_usage": True},
        extra_body={"variables": {"preferred_unit": "kelvin"}})
    chunks = list(stream)
    sent = upstream[-1]
    assert sent["stream"] is True and sent["model"] == "up-model"
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather", "get_time"]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == TEXT
    pieces = [(c.choices[0].delta.tool_calls or []) for c in chunks if c.choices]
    pieces = [p for group in pieces for p in group]
    # A call streams as it arrives: index, id, type and name first, then only argument
    # chunks; a call with bindings comes whole at the end, its binding filled in, and the
    # calls after it come whole after it (clients assemble calls in index order).
    assert [p.index for p in pieces] == [0, 0, 0, 1, 2]
    first, *rest = pieces[:3]
    assert (first.id, first.type, first.function.name) == ("call_t", "function", "get_time")
    assert [p.function.arguments for p in pieces[:3]] == ["", *CALLS[0][2]]
    assert all(p.id is None and p.type is None and p.function.name is None for p in rest)
    weather, later = pieces[3:]
    assert (weather.id, weather.type, weather.function.name) == (
        "call_w", "function", "get_weather")
    assert json.loads(weather.function.arguments) == {"location": "Paris", "unit": "kelvin"}
    assert (later.id, later.function.name, later.function.arguments) == (
        "call_u", "get_time", '{"tz": "UTC"}')

    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "tool_calls" and set(finishes[:-1]) == {None}
    assert chunks[-1].usage.total_tokens == 42

    # What an application assembles from the pieces is what a non-streamed call returns.
    assembled: dict[int, dict] = {}
    for p in pieces:
        call = assembled.setdefault(p.index, {"id": None, "name": None, "arguments": ""})
        call["id"] = call["id"] or p.id
        call["name"] = call["name"] or p.function.name
        call["arguments"] += p.function.arguments or ""
    whole = client.chat.completions.create(
        model="prompt:assistant", messages=[],
        extra_body={"variables": {"preferred_unit": "kelvin"}}).choices[0].message
    assert [(c["id"], c["name"], json.loads(c["arguments"]))
            for _, c in sorted(assembled.items())] == [
        (c.id, c.function.name, json.loads(c.function.arguments)) for c in whole.tool_calls]


def test_the_clients_stream_helper_builds_the_tool_calls(served):
    client, _, _, _ = served
    with client.chat.completions.stream(
            model="prompt:assistant", messages=[],
            extra_body={"variables": {"preferred_unit": "kelvin"}}) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls" and message.content == TEXT
    calls = [(c.id, c.function.name, json.loads(c.function.arguments))
             for c in message.tool_calls]
    assert calls == [("call_t", "get_time", {"tz": "Europe/Paris"}),
                     ("call_w", "get_weather", {"location": "Paris", "unit": "kelvin"}),
                     ("call_u", "get_time", {"tz": "UTC"})]


def test_cli_run_stream_prints_the_tool_calls(served):
    _, _, server, models = served
    out = subprocess.run(
        [sys.executable, "-m", "promptrev.cli", "--registry", str(server.registry), "run",
         "assistant", "--var", "preferred_unit=kelvin", "--stream"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "PROMPTREV_MODELS": str(models)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(TEXT)
    assert '[tool call get_time] {"tz": "Europe/Paris"}' in out.stdout
    assert '[tool call get_weather] {"location": "Paris", "unit": "kelvin"}' in out.stdout
