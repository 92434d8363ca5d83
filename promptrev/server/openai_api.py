"""The OpenAI-compatible endpoint: ``/v1/chat/completions`` and ``/v1/models``.

Applications keep the official ``openai`` client and point ``base_url`` at promptrev:

- ``model="prompt:support/reply@production"`` renders that prompt version with
  ``extra_body={"variables": {...}}`` (request messages are appended after the rendered
  ones) and runs it with the model its front matter names; moving the label changes what
  the application gets, with no deploy; with ``user=...`` a label with a traffic split
  gives that user their (sticky) version;
- ``model="adapter:support/tone@2"`` runs the adapter's base model (a configured model
  named in the card) with that adapter; a configured base-model name runs it plain, or
  with ``extra_body={"adapter": "support/tone@2"}``.

A prompt runs on the configured model it names, with the operator's connection: its own
``base_url``, ``api_key`` or local path is ignored (listed in ``promptrev.warnings``), and
``${env:NAME}`` reads only the names in ``PROMPTREV_ALLOW_ENV`` (see ``runner.trust``).

Authentication is the API's bearer token; errors use the API's one JSON error shape.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, g, request, stream_with_context

from promptrev.errors import InvalidRequest, NotFound, PromptrevError
from promptrev.runner.base import GenerationRequest, ModelSpec
from promptrev.runner.execute import Runner, build_request

from .auth import api_user, state
from .params import json_object
from .state import json_bytes

bp = Blueprint("openai", __name__, url_prefix="/v1")
_ROLES = ("system", "user", "assistant", "developer", "tool")
_PART_TYPES = ("text", "image_url", "input_audio", "file")


@bp.before_request
def _authenticate() -> None:
    g.user = api_user()


def _runner() -> Runner:
    """A runner under the server's rules: configured models, allowed variables only."""
    return state().runner(state().registry)


@bp.get("/models")
def models() -> Response:
    """Runnable prompt references, adapters, and configured base models."""
    reg, now = state().registry, int(time.time())
    data = [_model(name, now, "promptrev") for name in sorted(state().models)]
    for row in reg.list(kind="prompt"):
        data.append(_model(f"prompt:{row.name}", now))
        data += [_model(f"prompt:{row.name}@{label}", now) for label in sorted(row.labels)]
    for row in reg.list(kind="adapter"):
        data.append(_model(f"adapter:{row.name}", now))
        data += [_model(f"adapter:{row.name}@{label}", now) for label in sorted(row.labels)]
    return Response(json_bytes({"object": "list", "data": data}), mimetype="application/json")


def _model(model_id: str, created: int, owner: str = "promptrev-registry") -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owner}


@bp.post("/chat/completions")
def chat_completions() -> Response:
    """Run a prompt version, an adapter, or a base model, OpenAI-style."""
    body = _body()
    _check_options(body)
    runner = _runner()
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required: 'prompt:NAME@REF', 'adapter:NAME@REF' or a "
                             "configured model name (see GET /v1/models)")
    messages = _messages(body.get("messages", []))
    params = _params(body)
    adapter = body.get("adapter")
    if adapter is not None and not isinstance(adapter, str):
        raise InvalidRequest("'adapter' must be a reference such as 'support/tone@2'")
    prompt, ref, warnings = None, model, []
    if model.startswith("prompt:"):
        variables = body.get("variables") or {}
        if not isinstance(variables, dict):
            raise InvalidRequest("'variables' must be an object")
        ref = model[len("prompt:"):]
        caller = body.get("user")  # OpenAI's end-user id: the key of a label's traffic split
        if isinstance(caller, str) and caller:
            ref = runner.registry.resolve_for(ref, caller, "prompt").ref
        prompt, req, ref = runner.prepare(ref, variables,
                                          extra_messages=messages, adapter=adapter,
                                          params=params)
        spec = runner.model_spec(prompt, body.get("base_model"))
        warnings = runner.warnings(prompt)
        ref = f"prompt:{ref}"
    else:
        if not messages:
            raise InvalidRequest("'messages' must hold at least one message")
        req = build_request(messages, {}, params)
        if model.startswith("adapter:"):
            adapter = model[len("adapter:"):]
        if adapter:
            req.adapter = runner.registry.adapter_source(adapter)
        spec = _base_model(runner, model, adapter)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return Response(stream_with_context(_sse(runner, req, spec, ref, include_usage)),
                        mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    result = runner.complete(req, spec, ref, prompt)
    gen = result.generation
    payload = {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
        "created": int(time.time()), "model": ref,
        "choices": [{"index": 0, "finish_reason": gen.finish_reason, "logprobs": None,
                     "message": _answer(result.text, gen.tool_calls)}],
        "usage": result.usage,
        "promptrev": {"ref": ref, "backend": spec.backend, "base_model": spec.name,
                      "adapter": req.adapter.ref if req.adapter else None,
                      "attempts": result.attempts, "parsed": result.parsed,
                      "warnings": warnings},
    }
    return Response(json_bytes(payload), mimetype="application/json")


def _answer(text: str, tool_calls: list[dict] | None) -> dict[str, Any]:
    """The assistant message: its text, and the prompt's tool calls when it made some."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _base_model(runner: Runner, model: str, adapter: str | None) -> ModelSpec:
    """A configured model: named directly, or the base model an adapter's card names."""
    if not model.startswith("adapter:"):
        return runner.named_model(model)
    card = runner.registry.adapter(adapter).card
    base = card["base_model"]["name"]
    for name, spec in state().models.items():
        if base in (name, spec.name):
            return spec
    raise NotFound(f"adapter {adapter} was trained on '{base}', which is not a configured "
                   f"model of this server (models: {', '.join(sorted(state().models)) or 'none'})")


def _sse(runner: Runner, req: GenerationRequest, spec: ModelSpec, ref: str,
         include_usage: bool) -> Iterator[bytes]:
    chunk_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def event(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
        payload = {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                   "model": ref, "choices": [{"index": 0, "delta": delta,
                                              "finish_reason": finish, "logprobs": None}]}
        if usage is not None:
            payload["choices"], payload["usage"] = [], usage
        return b"data: " + json_bytes(payload) + b"\n\n"

    yield event({"role": "assistant", "content": ""})
    pieces = runner.stream(req, spec)
    try:
        while True:
            piece = next(pieces)
            # text, or a piece of a tool call (index; id, type and name first; arguments)
            yield event({"content": piece} if isinstance(piece, str)
                        else {"tool_calls": [piece.to_dict()]})
    except StopIteration as done:
        final = done.value
    except PromptrevError as exc:  # headers are sent: report in-band, as OpenAI does
        yield b"data: " + json_bytes(exc.to_dict()) + b"\n\n"
        return
    yield event({}, final.finish_reason if final else "stop")
    if include_usage and final is not None:
        yield event({}, usage={"prompt_tokens": final.prompt_tokens,
                               "completion_tokens": final.completion_tokens,
                               "total_tokens": final.prompt_tokens + final.completion_tokens})
    yield b"data: [DONE]\n\n"


def _body() -> dict[str, Any]:
    return json_object(request.data or b"{}")


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise InvalidRequest("'messages' must be a list")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise InvalidRequest(f"messages[{i}] needs a role ({', '.join(_ROLES)})")
        content = m.get("content")
        if isinstance(content, list):
            content = _parts(content, i)
        elif not isinstance(content, str):
            raise InvalidRequest(f"messages[{i}].content must be text or a list of parts")
        out.append({"role": m["role"], "content": content})
    return out


def _parts(content: list[Any], i: int) -> str | list[dict[str, Any]]:
    """Content parts as sent upstream: text joined when there are only text parts."""
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _PART_TYPES or (kind == "text" and not isinstance(part.get("text"), str)):
            raise InvalidRequest(f"messages[{i}].content[{k}] must be a content part of type "
                                 f"{', '.join(_PART_TYPES)}")
    if all(p["type"] == "text" for p in content):
        return "".join(p["text"] for p in content)
    return [dict(p) for p in content]


# Sampling parameters a request may set: (lowest, highest, integers only). The JSON
# parser has already refused NaN, Infinity, 1e999 and integers beyond 64 bits.
_PARAM_RANGES: dict[str, tuple[int, int, bool]] = {
    "temperature": (0, 2, False), "top_p": (0, 1, False), "max_tokens": (1, 32768, True),
    "seed": (-(2**63), 2**63 - 1, True)}


def _params(body: dict[str, Any]) -> dict[str, Any]:
    params = {k: body.get(k) for k in ("temperature", "top_p", "stop", "seed")}
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None \
        else "max_tokens"
    params["max_tokens"] = body.get(key)
    for name, (low, high, integer) in _PARAM_RANGES.items():
        shown = key if name == "max_tokens" else name
        value = params[name]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise InvalidRequest(f"'{shown}' must be {'an integer' if integer else 'a number'}")
        if not low <= value <= high:
            raise InvalidRequest(f"'{shown}' must be between {low} and {high}, not {value}")
    stop = params["stop"]
    if stop is not None and not (isinstance(stop, str) or (
            isinstance(stop, list) and len(stop) <= 16 and all(isinstance(s, str) for s in stop))):
        raise InvalidRequest("'stop' must be a string or a list of up to 16 strings")
    return params


def _check_options(body: dict[str, Any]) -> None:
    """Refuse request options of the wrong type (``base_model`` given as a list)."""
    base_model = body.get("base_model")
    if base_model is not None and not isinstance(base_model, str):
        raise InvalidRequest("'base_model' must be the name of a configured model, not a "
                             f"{type(base_model).__name__}")
    if not isinstance(body.get("stream_options") or {}, dict):
        raise InvalidRequest("'stream_options' must be an object")
