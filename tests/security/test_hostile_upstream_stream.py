"""A hostile (or broken) OpenAI-compatible model server streaming tool calls.

``/v1/chat/completions`` with ``stream=True`` passes the model server's pieces on as they
come (:meth:`OpenAIBackend.stream`). The upstream is not trusted: a tool call whose
``index`` is not a small number, a piece whose text is not text, and an answer that never
ends (arguments by the megabyte) end the stream with a clear error naming the model
server, never a traceback, and never with the whole endless answer held in memory.
"""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from promptrev.errors import PromptrevError
from promptrev.runner.base import GenerationRequest, ModelSpec
from promptrev.runner.openai_backend import OpenAIBackend

pytest.importorskip("openai")


class _Upstream(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.deltas: list[dict] = []
        self.endless: dict | None = None  # a delta sent again and again
        self.sent = 0
        self.pause = 0.0  # seconds between the endless pieces


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Upstream
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()

        def send(delta: dict) -> None:
            event = {"id": "s", "object": "chat.completion.chunk", "created": 0,
                     "model": "m", "choices": [{"index": 0, "delta": delta,
                                                "finish_reason": None}]}
            data = b"data: " + json.dumps(event).encode() + b"\n\n"
            self.wfile.write(data)
            self.server.sent += len(data)

        try:
            for delta in self.server.deltas:
                send(delta)
            if self.server.endless is not None:
                while self.server.sent < 512 * 1024 * 1024:
                    send(self.server.endless)
                    if self.server.pause:
                        self.wfile.flush()
                        time.sleep(self.server.pause)
                        if self.server.sent > 4000 * len(json.dumps(self.server.endless)):
                            break
            self.wfile.write(b"data: [DONE]\n\n")
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def upstream():
    server = _Upstream()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _stream(upstream, **options) -> list:
    backend = OpenAIBackend(ModelSpec("openai", "m", base_url=f"http://127.0.0.1:"
                                      f"{upstream.server_address[1]}/v1",
                                      options={"max_retries": 0, **options}))
    request = GenerationRequest(messages=[{"role": "user", "content": "hi"}])
    return list(backend.stream(request))


def _call(index, **extra) -> dict:
    return {"tool_calls": [{"index": index, **extra}]}


@pytest.mark.parametrize("deltas", [
    [_call("x", id="a", function={"name": "f", "arguments": "{}"})],
    [_call(None, id="a", function={"name": "f", "arguments": "{}"}),
     _call(0, id="b", function={"name": "g", "arguments": "{}"})],
    [_call(-1, id="a", function={"name": "f", "arguments": "{}"})],
    [_call(10**30, id="a", function={"name": "f", "arguments": "{}"})],
    [_call(0, id="a", function={"name": "f", "arguments": {"not": "text"}})],
    [_call(0, id="a", function={"name": ["f"], "arguments": "{}"})],
    [{"content": {"not": "text"}}],
], ids=["index-text", "index-none", "index-negative", "index-huge", "arguments-object",
        "name-list", "content-object"])
def test_bogus_tool_call_pieces_are_a_clear_error(upstream, deltas):
    upstream.deltas = [{"role": "assistant", "content": ""}, *deltas]
    with pytest.raises(PromptrevError) as caught:
        _stream(upstream)
    assert "model server for 'm'" in caught.value.message


@pytest.mark.parametrize("endless", [
    _call(0, function={"arguments": "A" * (1024 * 1024)}),
    {"content": "B" * (1024 * 1024)},
], ids=["arguments", "text"])
def test_an_answer_that_never_ends_is_cut_off(upstream, endless):
    upstream.deltas = [{"role": "assistant", "content": ""},
                       _call(0, id="c", function={"name": "f", "arguments": ""})]
    upstream.endless = endless
    with pytest.raises(PromptrevError) as caught:
        _stream(upstream)
    assert "model server for 'm'" in caught.value.message
    assert upstream.sent < 128 * 1024 * 1024, "the whole endless answer was read"


def test_an_ordinary_streamed_tool_call_still_passes(upstream):
    upstream.deltas = [{"role": "assistant", "content": ""}, {"content": "Looking."},
                       _call(0, id="c", type="function",
                             function={"name": "f", "arguments": '{"a":'}),
                       _call(0, function={"arguments": ' 1}'})]
    pieces = _stream(upstream)
    assert pieces[0] == "Looking."
    assert "".join(p.arguments for p in pieces[1:]) == '{"a": 1}'


def test_an_answer_trickling_for_ever_is_cut_off_at_the_deadline(upstream):
    upstream.deltas = [{"role": "assistant", "content": ""}]
    upstream.endless, upstream.pause = {"content": "."}, 0.05
    start = time.monotonic()
    with pytest.raises(PromptrevError) as caught:
        _stream(upstream, stream_deadline=1)
    assert "stream_deadline" in caught.value.message
    assert time.monotonic() - start < 30
