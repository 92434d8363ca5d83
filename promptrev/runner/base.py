"""What every backend speaks: requests in, generations out; backends registered by name."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from promptrev.model.adapter_cards import AdapterSource

from ..errors import InvalidRequest


@dataclass(frozen=True)
class ModelSpec:
    """Which model to run: a backend name plus that backend's settings.

    ``name`` is a local model folder for ``hf``, a model id for ``openai``.
    """

    backend: str
    name: str
    revision: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        """A hashable identity (``options`` is a dict), for caches of loaded backends."""
        return (self.backend, self.name, self.revision, self.base_url, self.api_key,
                json.dumps(self.options, sort_keys=True, default=str))


@dataclass
class GenerationRequest:
    """One chat completion to produce."""

    messages: list[dict[str, Any]]  # [{"role", "content"}], already rendered
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] | None = None
    seed: int | None = None
    adapter: AdapterSource | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    # The prompt's function tools, as chat completions' ``tools`` (bindings removed), and
    # per tool the arguments its bindings fill in the model's calls.
    tools: list[dict[str, Any]] | None = None
    tool_bindings: dict[str, dict[str, Any]] | None = None


@dataclass
class Generation:
    """One answer, with what it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"
    latency_s: float
    model: str
    adapter: str | None = None
    # Answers of one batched call share this key: their ``latency_s`` is the batch's wall
    # time, one measurement for all of them, not one per answer. None: measured alone.
    latency_batch: str | None = None
    # The model's tool calls (OpenAI's form, bound arguments filled in), if it made any.
    tool_calls: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        out = {"text": self.text, "prompt_tokens": self.prompt_tokens,
               "completion_tokens": self.completion_tokens,
               "finish_reason": self.finish_reason, "latency_s": self.latency_s,
               "model": self.model, "adapter": self.adapter,
               "latency_batch": self.latency_batch}
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        return out


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed tool call, as OpenAI streams one (a backend's ``stream`` yields
    these between its text pieces): the call's ``index``; its ``id`` and function ``name``
    on its first piece only; its arguments (JSON text) in chunks."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The piece as a chat completion chunk's ``delta.tool_calls`` item."""
        out: dict[str, Any] = {"index": self.index}
        function: dict[str, Any] = {}
        if self.id is not None:
            out["id"], out["type"] = self.id, "function"
        if self.name is not None:
            function["name"] = self.name
        function["arguments"] = self.arguments
        out["function"] = function
        return out


def text_messages(messages: list[dict[str, Any]], backend: str) -> list[dict[str, str]]:
    """``messages`` with text content only, for a backend that reads text.

    Text parts are joined; an image, audio or file part is refused, naming the message.
    """
    out = []
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, list):
            other = [p.get("type") for p in content
                     if not isinstance(p, dict) or p.get("type") != "text"]
            if other:
                raise InvalidRequest(
                    f"message {i + 1} ({message.get('role')}) has a {other[0]} part, and the "
                    f"{backend} backend runs text-only chat models: run this prompt on a "
                    "model that accepts images, audio or files (an OpenAI-compatible one)",
                    details={"message": i, "part": other[0], "backend": backend})
            content = "\n".join(str(p.get("text", "")) for p in content)
        out.append({**message, "content": content})
    return out


class Backend(Protocol):
    """A way to run a model."""

    name: str

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Answer every request (in order); batches where the backend can."""

    def stream(self, request: GenerationRequest) -> Iterator[str | ToolCallDelta]:
        """Yield the answer's text in pieces as it is produced (and its tool calls, for a
        backend that has them, as :class:`ToolCallDelta` pieces)."""


_BACKENDS: dict[str, Callable[[ModelSpec], Backend]] = {}
# Built-in backends, imported on first use (they import torch / openai).
_LAZY = {"hf": "promptrev.runner.hf", "openai": "promptrev.runner.openai_backend"}
# Prompty's `model.configuration.type` values and what runs them.
ALIASES = {"huggingface": "hf", "transformers": "hf", "local": "hf",
           "azure_openai": "openai", "azure": "openai", "vllm": "openai", "ollama": "openai",
           "serverless": "openai", "lmstudio": "openai"}


def backend(name: str):
    """Register a backend factory under ``name`` (a class taking a :class:`ModelSpec`)."""

    def register(factory: Callable[[ModelSpec], Backend]):
        _BACKENDS[name] = factory
        return factory

    return register


def get_backend(spec: ModelSpec) -> Backend:
    """A backend instance for ``spec`` (its module imported on first use)."""
    name = ALIASES.get(spec.backend, spec.backend)
    if name not in _BACKENDS and name in _LAZY:
        importlib.import_module(_LAZY[name])
    if name not in _BACKENDS:
        known = sorted(set(_BACKENDS) | set(_LAZY))
        raise InvalidRequest(f"unknown backend {spec.backend!r} (backends: {', '.join(known)})")
    return _BACKENDS[name](spec)


def model_specs(models: dict, env: dict) -> dict:
    """``ModelSpec`` per configured name (``${env:NAME}`` values filled from ``env``).

    ``models`` is the operator's own configuration (PROMPTREV_MODELS), not stored
    content, so its ``${env:NAME}`` may read any variable of ``env``: this is where a
    server's model keys come from. Stored prompts read only what :class:`Trust` allows.
    """
    def fill(value):
        if isinstance(value, str) and value.startswith("${env:") and value.endswith("}"):
            name, _, default = value[6:-1].partition(":")
            return env.get(name, default or None)
        return value

    specs = {}
    for name, conf in models.items():
        if not isinstance(conf, dict) or not conf.get("backend"):
            raise InvalidRequest(f"model {name!r}: needs at least 'backend' (hf or openai)")
        conf = {k: fill(v) for k, v in conf.items()}
        known = ("backend", "name", "path", "revision", "base_url", "api_key")
        specs[name] = ModelSpec(ALIASES.get(conf["backend"], conf["backend"]),
                                str(conf.get("path") or conf.get("name") or name),
                                conf.get("revision"), conf.get("base_url"), conf.get("api_key"),
                                {k: v for k, v in conf.items() if k not in known})
    return specs
