"""The ``openai`` backend: any OpenAI-compatible server through the official client.

Works with OpenAI, vLLM (a LoRA adapter is served under its own model name, so the
adapter's name becomes ``model``), Ollama, LM Studio and promptrev's own ``/v1``.
Transient errors (connection, timeout, 429, 5xx) are retried with exponential backoff by
the client itself (``max_retries``); token usage comes from the server's answer.

What cannot work is said at once, without retries: OpenAI's own API with no key (neither
the model's ``api_key`` nor ``OPENAI_API_KEY``), and a server that nothing answers at
(connection refused, a host that does not resolve), checked before the first request.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from ..errors import (
    Busy,
    InvalidRequest,
    ModelNotConfigured,
    ModelUnavailable,
    PromptrevError,
    RemoteFailed,
)
from .base import Generation, GenerationRequest, ModelSpec, ToolCallDelta, backend
from .trust import redact

DEFAULT_RETRIES = 4
DEFAULT_CONCURRENCY = 8
OPENAI_HOST = ("api.openai.com", 443)  # the client's default base URL
PROBE_SECONDS = 3.0
# What a streamed answer may hold: the upstream is not trusted to end (or to keep to
# max_tokens); beyond these the stream is cut off with an error naming the model server.
MAX_STREAM_CHARS = 16 * 1024 * 1024
MAX_TOOL_CALLS = 128
STREAM_DEADLINE = 600.0  # seconds a streamed answer may take in all (option stream_deadline)
SETUP = ("point promptrev at a model: set OPENAI_API_KEY for OpenAI's API, or list an "
         "OpenAI-compatible server (Ollama, vLLM, llama.cpp) in the models file "
         "PROMPTREV_MODELS, e.g. 'NAME: {backend: openai, name: MODEL, base_url: "
         "http://localhost:11434/v1}', and run with --model NAME (README: 'Your first run "
         "on a model')")


class BackendFailed(RemoteFailed):
    """The model server refused or failed the request."""

    code = "backend_error"


@backend("openai")
class OpenAIBackend:
    """Chat completions over HTTP; many requests run concurrently."""

    name = "openai"

    def __init__(self, spec: ModelSpec):
        import openai

        self.spec = spec
        options = spec.options
        api_key = spec.api_key or (None if spec.base_url else os.environ.get("OPENAI_API_KEY"))
        if not api_key and not spec.base_url:
            raise ModelNotConfigured(
                f"model {spec.name!r} runs on OpenAI's API, but no API key is set (neither "
                f"OPENAI_API_KEY nor the model's api_key); {SETUP}",
                details={"model": spec.name, "missing": "OPENAI_API_KEY",
                         "reason": "OpenAI's API needs a key: OPENAI_API_KEY is not set"})
        self._reached = False  # set once a connection to the server was made
        self.client = openai.OpenAI(
            base_url=spec.base_url, api_key=api_key or "not-needed",
            max_retries=int(options.get("max_retries", DEFAULT_RETRIES)),
            timeout=float(options.get("timeout", 120)))
        self.concurrency = int(options.get("concurrency", DEFAULT_CONCURRENCY))
        # The longest a streamed answer may take in all (``timeout`` is per read: an
        # upstream trickling a piece now and then would otherwise hold a thread for ever).
        self.stream_deadline = float(options.get("stream_deadline", STREAM_DEADLINE))
        # vLLM multi-LoRA: which served model name each adapter has (default: its name).
        self.adapter_models: dict[str, str] = dict(options.get("adapter_models") or {})
        self._errors = openai

    def model_for(self, request: GenerationRequest) -> str:
        """The ``model`` to ask for: the base model, or the adapter's served name."""
        if request.adapter is None:
            return self.spec.name
        ref = request.adapter.ref or request.adapter.key
        name = ref.split("@", 1)[0]
        return self.adapter_models.get(ref, self.adapter_models.get(name, name))

    def reachable(self) -> None:
        """Raise :class:`ModelUnavailable` at once if nothing answers where the model is.

        One TCP connection before the first request (and after each failed one): the
        client's retries with backoff are for transient failures, not for a server that is
        not running or a name that does not resolve. Skipped behind an HTTP proxy (the
        proxy, not this machine, reaches the server). The URL is never repeated.
        """
        if self._reached or _proxied():
            return
        host, port = _host_port(self.spec.base_url)
        try:
            socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
        except socket.gaierror:
            raise self._unavailable("its host name does not resolve") from None
        except ConnectionRefusedError:
            raise self._unavailable("the connection was refused: nothing listens there") \
                from None
        except OSError:
            return  # a timeout or a routing problem may pass: the client retries those
        self._reached = True

    def _unavailable(self, why: str) -> ModelUnavailable:
        if not self.spec.base_url:
            return ModelUnavailable(f"cannot reach OpenAI's API for model {self.spec.name!r}: "
                                    f"{why} (is this machine offline?); or {SETUP}",
                                    details={"model": self.spec.name,
                                             "reason": f"OpenAI's API: {why}"})
        return ModelUnavailable(f"cannot reach the server configured for model "
                                f"{self.spec.name!r} (its base_url): {why}. Start the model "
                                f"server or fix its base_url; or {SETUP}",
                                details={"model": self.spec.name,
                                         "reason": f"not answering: {why}"})

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Answer every request; up to ``concurrency`` in flight at once."""
        self.reachable()
        if len(requests) <= 1:
            return [self._one(r) for r in requests]
        with ThreadPoolExecutor(min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests))

    def stream(self, request: GenerationRequest) -> Iterator[str | ToolCallDelta]:
        """Yield the answer in pieces (text, and tool calls as :class:`ToolCallDelta`);
        the generator returns the final Generation.

        A tool call's pieces pass on as they arrive, except for a tool with bindings: its
        arguments are only complete at the end, where the binding fills them in (as in
        :func:`_tool_calls`), so that call comes whole, after the model's last piece, and
        so do the calls after it (clients assemble calls in index order).
        """
        self.reachable()
        model = self.model_for(request)
        bindings = request.tool_bindings or {}
        start = time.perf_counter()
        pieces, finish, usage = [], "stop", None
        calls: dict[int, _StreamedCall] = {}
        holding = False  # a call with bindings began: it and the later ones come at the end
        received = 0  # characters of text and tool calls so far (held: MAX_STREAM_CHARS)
        chunks = None
        try:
            chunks = self.client.chat.completions.create(
                model=model, messages=request.messages, stream=True,
                stream_options={"include_usage": True}, **self._params(request))
            for chunk in chunks:
                if time.perf_counter() - start > self.stream_deadline:
                    raise self._hostile(f"its answer was still going after "
                                        f"{self.stream_deadline:g} s (the model's "
                                        "stream_deadline option) and was cut off")
                usage = chunk.usage or usage
                if not chunk.choices:
                    continue
                finish = chunk.choices[0].finish_reason or finish
                delta = chunk.choices[0].delta
                if delta.content:
                    received += self._piece_size(delta.content, "a text piece", received)
                    pieces.append(delta.content)
                    yield delta.content
                for item in getattr(delta, "tool_calls", None) or []:
                    index = getattr(item, "index", None)
                    if not isinstance(index, int) or isinstance(index, bool) \
                            or not 0 <= index < MAX_TOOL_CALLS:
                        raise self._hostile(f"a tool call's index is {str(index)[:40]!r}, not "
                                            f"a number from 0 to {MAX_TOOL_CALLS - 1}")
                    if index not in calls and len(calls) >= MAX_TOOL_CALLS:
                        raise self._hostile(f"more than {MAX_TOOL_CALLS} tool calls")
                    call = calls.setdefault(index, _StreamedCall(index))
                    function = getattr(item, "function", None)
                    for what in ("name", "arguments"):
                        value = getattr(function, what, None) if function else None
                        if value is not None:
                            received += self._piece_size(
                                value, f"a tool call's {what}", received)
                    call.add(item)
                    holding = holding or call.name in bindings
                    piece = None if holding or call.name is None else call.next()
                    if piece is not None:
                        yield piece
        except self._errors.APIError as exc:
            raise self._translate(exc) from None
        finally:
            if chunks is not None:
                chunks.close()  # an answer cut off (or abandoned) is not read on
        for call in sorted(calls.values(), key=lambda c: c.index):
            piece = call.finish(bindings)
            if piece is not None:
                yield piece
        return Generation("".join(pieces), usage.prompt_tokens if usage else 0,
                          usage.completion_tokens if usage else 0, finish,
                          time.perf_counter() - start, model,
                          request.adapter.ref if request.adapter else None,
                          tool_calls=[c.to_dict(bindings) for c in sorted(
                              calls.values(), key=lambda c: c.index)] or None)

    def _piece_size(self, value, what: str, received: int) -> int:
        """The length of one streamed piece, refused unless it is text and the answer
        stays within :data:`MAX_STREAM_CHARS` (an upstream's answer may never end)."""
        if not isinstance(value, str):
            raise self._hostile(f"{what} is {type(value).__name__}, not text")
        if received + len(value) > MAX_STREAM_CHARS:
            raise self._hostile(f"its answer passed {MAX_STREAM_CHARS:,} characters "
                                "(text and tool calls together) and was cut off")
        return len(value)

    def _hostile(self, why: str) -> BackendFailed:
        return BackendFailed(f"model server for {self.spec.name!r} streamed what is not a "
                             f"chat completion: {why}")

    def _one(self, request: GenerationRequest) -> Generation:
        model = self.model_for(request)
        start = time.perf_counter()
        try:
            answer = self.client.chat.completions.create(
                model=model, messages=request.messages, **self._params(request))
        except self._errors.APIError as exc:
            raise self._translate(exc) from None
        choice = answer.choices[0]
        usage = answer.usage
        return Generation(
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason or "stop",
            latency_s=time.perf_counter() - start, model=answer.model or model,
            adapter=request.adapter.ref if request.adapter else None,
            tool_calls=_tool_calls(choice.message, request.tool_bindings or {}))

    @staticmethod
    def _params(request: GenerationRequest) -> dict:
        params = {"max_tokens": request.max_tokens, "temperature": request.temperature,
                  "top_p": request.top_p}
        if request.stop:
            params["stop"] = request.stop
        for name in ("seed", "frequency_penalty", "presence_penalty"):
            if getattr(request, name) is not None:
                params[name] = getattr(request, name)
        if request.tools:
            params["tools"] = request.tools
        return params

    def _translate(self, exc: Exception) -> PromptrevError:
        """A promptrev error for a client error: no URL, no key, nothing that looks like one.

        The model server's own message is kept (it says what was wrong), with the key and
        anything credential-like hidden; the URL is never repeated (it may be internal).
        """
        where = f"model server for {self.spec.name!r}"
        hidden = [self.spec.api_key, self.spec.base_url, _origin(self.spec.base_url)]
        detail = redact(str(getattr(exc, "message", None) or exc), hidden)[:500]
        if isinstance(exc, (self._errors.APIConnectionError, self._errors.RateLimitError)):
            return Busy(f"{where} unavailable after retries: {detail}")
        status = getattr(exc, "status_code", None)
        if status in (400, 404, 422):
            return InvalidRequest(f"{where} refused the request ({status}): {detail}")
        return BackendFailed(f"{where} failed ({status or 'no status'}): {detail}")


def _tool_calls(message, bindings: dict[str, dict]) -> list[dict] | None:
    """The answer's tool calls, OpenAI's form, each bound argument set by its binding.

    As in Prompty, a binding wins over a value the model gave; arguments that are not a
    JSON object are passed on as the model wrote them.
    """
    calls = getattr(message, "tool_calls", None) or []
    out = []
    for call in calls:
        function = getattr(call, "function", None)
        if function is None:
            continue
        out.append({"id": call.id, "type": "function",
                    "function": {"name": function.name,
                                 "arguments": _bound(function.name, function.arguments,
                                                     bindings)}})
    return out or None


def _bound(name: str | None, arguments: str | None, bindings: dict[str, dict]) -> str:
    """A call's arguments with its tool's bindings set (the binding wins)."""
    arguments = arguments or "{}"
    bound = bindings.get(name or "")
    if bound:
        try:
            parsed = json.loads(arguments)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            arguments = json.dumps({**parsed, **bound})
    return arguments


class _StreamedCall:
    """One tool call as its pieces arrive (the upstream's ``index``, ``id``, ``name`` and
    arguments so far), and what of it was passed on."""

    def __init__(self, index: int):
        self.index = index
        self.id: str | None = None
        self.name: str | None = None
        self.arguments = ""
        self.started = False  # its id and name were passed on
        self.sent = 0  # how much of ``arguments`` was passed on

    def add(self, item) -> None:
        """Take one upstream piece."""
        function = getattr(item, "function", None)
        self.id = self.id or getattr(item, "id", None)
        self.name = self.name or (getattr(function, "name", None) if function else None)
        self.arguments += (getattr(function, "arguments", None) or "") if function else ""

    def next(self) -> ToolCallDelta | None:
        """The piece to pass on now: id and name first, then the arguments not yet sent."""
        chunk = self.arguments[self.sent:]
        if self.started and not chunk:
            return None
        piece = ToolCallDelta(self.index, None if self.started else (self.id or ""),
                              None if self.started else (self.name or ""), chunk)
        self.started, self.sent = True, len(self.arguments)
        return piece

    def finish(self, bindings: dict[str, dict]) -> ToolCallDelta | None:
        """What is left to pass on at the end: a held call whole, its bindings filled in."""
        if self.started:
            return self.next()
        self.started, self.sent = True, len(self.arguments)
        return ToolCallDelta(self.index, self.id or "", self.name or "",
                             _bound(self.name, self.arguments, bindings))

    def to_dict(self, bindings: dict[str, dict]) -> dict:
        """The whole call, OpenAI's form, bound (the final Generation's)."""
        return {"id": self.id or "", "type": "function",
                "function": {"name": self.name or "",
                             "arguments": _bound(self.name, self.arguments, bindings)}}


def _host_port(url: str | None) -> tuple[str, int]:
    """The host and port a base URL (None: OpenAI's API) connects to."""
    if not url:
        return OPENAI_HOST
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname or "", port or (443 if parts.scheme == "https" else 80)


def _proxied() -> bool:
    return any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                                                  "http_proxy", "ALL_PROXY", "all_proxy"))


def _origin(url: str | None) -> str | None:
    """``scheme://host:port`` of ``url`` (how a server's error may repeat where it is)."""
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None
