"""The ``openai`` backend: any OpenAI-compatible server through the official client.

Works with OpenAI, vLLM (a LoRA adapter is served under its own model name, so the
adapter's name becomes ``model``), Ollama, LM Studio and promptrev's own ``/v1``.
Transient errors (connection, timeout, 429, 5xx) are retried with exponential backoff by
the client itself (``max_retries``); token usage comes from the server's answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from ..errors import Busy, InvalidRequest, PromptrevError, RemoteFailed
from .base import Generation, GenerationRequest, ModelSpec, backend
from .trust import redact

DEFAULT_RETRIES = 4
DEFAULT_CONCURRENCY = 8


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
        self.client = openai.OpenAI(
            base_url=spec.base_url, api_key=spec.api_key or "not-needed",
            max_retries=int(options.get("max_retries", DEFAULT_RETRIES)),
            timeout=float(options.get("timeout", 120)))
        self.concurrency = int(options.get("concurrency", DEFAULT_CONCURRENCY))
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

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Answer every request; up to ``concurrency`` in flight at once."""
        if len(requests) <= 1:
            return [self._one(r) for r in requests]
        with ThreadPoolExecutor(min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests))

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Yield the answer in pieces; the generator returns the final Generation."""
        model = self.model_for(request)
        start = time.perf_counter()
        pieces, finish, usage = [], "stop", None
        try:
            chunks = self.client.chat.completions.create(
                model=model, messages=request.messages, stream=True,
                stream_options={"include_usage": True}, **self._params(request))
            for chunk in chunks:
                usage = chunk.usage or usage
                if not chunk.choices:
                    continue
                finish = chunk.choices[0].finish_reason or finish
                if chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
                    yield chunk.choices[0].delta.content
        except self._errors.APIError as exc:
            raise self._translate(exc) from None
        return Generation("".join(pieces), usage.prompt_tokens if usage else 0,
                          usage.completion_tokens if usage else 0, finish,
                          time.perf_counter() - start, model,
                          request.adapter.ref if request.adapter else None)

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
            adapter=request.adapter.ref if request.adapter else None)

    @staticmethod
    def _params(request: GenerationRequest) -> dict:
        params = {"max_tokens": request.max_tokens, "temperature": request.temperature,
                  "top_p": request.top_p}
        if request.stop:
            params["stop"] = request.stop
        if request.seed is not None:
            params["seed"] = request.seed
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


def _origin(url: str | None) -> str | None:
    """``scheme://host:port`` of ``url`` (how a server's error may repeat where it is)."""
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None
