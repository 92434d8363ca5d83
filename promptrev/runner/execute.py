"""Run prompt versions: render, pick the backend from the front matter, validate output.

Everything that affects a call lives in the prompt version (Prompty's ``model`` section:
``configuration`` says which backend and model, ``parameters`` the sampling), so running
``summarize@production`` is reproducible from the version alone. ``${env:NAME:default}``
values in ``configuration`` are filled from the ``env`` mapping the edge passes in (the
core never reads the environment itself), as far as the runner's :class:`Trust` allows:
by default (a server's rules) a prompt only names a configured model, and reads no
variable; the CLI passes :meth:`Trust.local`.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from promptrev.model.adapter_cards import AdapterSource
from promptrev.model.patterns import re2_validator, schema_problem
from promptrev.model.prompty import Prompt, outputs_by_name
from promptrev.model.tools import SENT_KINDS, function_tools, property_schema, tool_bindings

from ..errors import InvalidRequest, ModelNotConfigured, ValidationFailed
from .base import (
    ALIASES,
    Generation,
    GenerationRequest,
    ModelSpec,
    ToolCallDelta,
    get_backend,
)
from .trust import Trust

_FENCE = re.compile(r"^```(?:json)?\s*\n(.*?)\n```\s*$", re.S)
_JSON_TYPES = {"string", "number", "integer", "boolean", "array", "object", "null"}
_SAMPLING = ("max_tokens", "temperature", "top_p", "stop", "seed", "frequency_penalty",
             "presence_penalty")
# Prompty v2 ``model.connection`` fields and the backend settings they are.
_CONNECTION = {"endpoint": "base_url", "apiKey": "api_key", "name": "connection"}
_LOCK = threading.Lock()  # guards backend creation (backends may be shared by runners)


@dataclass
class RunResult:
    """A run of one prompt version on one input: the answer and what it took."""

    ref: str
    text: str
    generation: Generation
    messages: list[dict[str, Any]]
    parsed: Any = None  # the validated JSON answer when the prompt declares outputs
    attempts: int = 1
    usage: dict[str, int] = field(default_factory=dict)
    error: str | None = None  # an answer that never validated (with on_invalid="record")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"ref": self.ref, "text": self.text, "parsed": self.parsed,
                "attempts": self.attempts, "usage": self.usage, "error": self.error,
                "generation": self.generation.to_dict()}


class Runner:
    """Runs prompt versions from a registry; backends are created once and reused."""

    def __init__(self, registry, *, env: Mapping[str, str] | None = None,
                 models: Mapping[str, ModelSpec] | None = None, output_retries: int = 2,
                 backends: dict[tuple, Any] | None = None, trust: Trust | None = None):
        self.registry = registry
        self.env = dict(env or {})
        self.models = dict(models or {})
        self.output_retries = output_retries
        # What stored prompts may choose; the default is a server's (safe) rules.
        self.trust = trust or Trust.server()
        # Pass a shared dict to share loaded backends (models) between runners.
        self._backends: dict[tuple, Any] = {} if backends is None else backends
        self._lock = _LOCK

    # ---- what to run -----------------------------------------------------------------
    def model_spec(self, prompt: Prompt, override: str | None = None) -> ModelSpec:
        """The backend and model a prompt asks for (or ``override``, a configured name)."""
        if override:
            return self.named_model(override)
        conf, where = model_configuration(prompt)
        if not self.trust.connections:
            return self._configured(conf, where)
        conf = {k: self.trust.env_value(v, self.env, where[k]) for k, v in conf.items()}
        reference = conf.get("connection")
        if isinstance(reference, str) and reference in self.models:
            return self.models[reference]  # v2 ``connection: {kind: reference, name}``
        name = conf.get("name") or conf.get("model") or conf.get("azure_deployment")
        if name and name in self.models and not conf.get("type"):
            return self.models[name]
        kind = str(conf.get("type") or "").lower()
        if not kind:
            raise InvalidRequest("the prompt's model.configuration has no 'type' (Prompty "
                                 "v2: model.provider), e.g. 'hf' or 'openai'; set one or "
                                 "pick a configured model")
        if not name:
            raise InvalidRequest("the prompt's model names no model: model.id (Prompty v2), "
                                 "or model.configuration's 'name', 'model' or "
                                 "'azure_deployment' (v1)")
        if name in self.models and ALIASES.get(kind, kind) == self.models[name].backend:
            return self.models[name]
        base_url = conf.get("base_url") or conf.get("endpoint") or conf.get("azure_endpoint")
        api_key = conf.get("api_key") or conf.get("key")
        options = {k: v for k, v in conf.items() if k not in (
            "type", "name", "model", "base_url", "endpoint", "api_key", "key", "connection")}
        return ModelSpec(ALIASES.get(kind, kind), str(name), conf.get("revision"), base_url,
                         api_key, options)

    def warnings(self, prompt: Prompt) -> list[str]:
        """What of the prompt these rules or this runner leave out, said for its reader."""
        out = []
        conf, where = model_configuration(prompt)
        ignored = self.trust.ignored(conf)
        if ignored:
            out.append(f"{', '.join(where[k] for k in ignored)} ignored: on this server a "
                       "prompt runs on a configured model, with the operator's connection "
                       "(PROMPTREV_MODELS)")
        kept = [f"{t['name']} ({t.get('kind')})" for t in prompt.tools
                if t.get("kind") not in SENT_KINDS]
        if kept:
            out.append(f"tools {', '.join(kept)} not sent to the model: the runner passes "
                       "only function tools (it does not connect to MCP servers, OpenAPI "
                       "services or other prompts)")
        return out

    def _configured(self, conf: dict[str, Any], where: dict[str, str]) -> ModelSpec:
        """A server's choice: the configured model the prompt names, nothing of its own.

        Only ``name`` / ``model`` / ``azure_deployment`` are read (``${env:}`` as allowed);
        whatever else the configuration says (``base_url``, ``api_key``, a local path, any
        backend option) is never resolved, so it can neither choose a destination nor
        read a secret, and the answer is the same whatever exists on this machine.
        """
        field, name = next(((k, conf[k]) for k in ("name", "model", "azure_deployment")
                            if conf.get(k)), ("name", None))
        # A v2 reference connection names a configured model; else the model's name does.
        names = [("connection", conf["connection"])] if conf.get("connection") else []
        for key, value in [*names, (field, name)]:
            value = self.trust.env_value(value, self.env, where.get(key, key))
            if isinstance(value, str) and value in self.models:
                return self.models[value]
            if key == field:
                name = value
        raise self._not_configured(conf, where, field, name)

    def _not_configured(self, conf: dict[str, Any], where: dict[str, str], field: str,
                        name: Any) -> ModelNotConfigured:
        """Why a server will not run this configuration, and how an operator fixes it."""
        known = ", ".join(sorted(self.models)) or "none configured"
        ignored = self.trust.ignored(conf)
        shown = [k if where.get(k, "").startswith("model.configuration.") else where[k]
                 for k in ignored]
        path = where.get(field, f"model.configuration.{field}")
        said = "names no model" if not name else (
            f"names model {repr(name)[:200]}, which is not a configured model of this server"
            if conf.get(field) == name else  # never repeat a value read from the environment
            "names a model (from an environment variable) that is not configured here")
        return ModelNotConfigured(
            f"the prompt's {path} {said} (models: {known}). On a "
            "server a prompt names one of the operator's configured models"
            + (f"; its own {', '.join(shown)} {'is' if len(ignored) == 1 else 'are'} "
               "ignored" if ignored else "")
            + ". An operator adds a model, its base_url and key to the models file "
            "(PROMPTREV_MODELS), e.g. 'NAME: {backend: openai, name: MODEL, base_url: URL, "
            "api_key: ${env:KEY_VARIABLE}}'",
            details={"field": path, "ignored": ignored,
                     "models": sorted(self.models)})

    def named_model(self, name: str) -> ModelSpec:
        """A model configured by name on this server or CLI."""
        if not isinstance(name, str) or name not in self.models:
            known = ", ".join(sorted(self.models)) or "none configured"
            raise InvalidRequest(f"unknown model {name!r} (models: {known})")
        return self.models[name]

    def backend(self, spec: ModelSpec):
        """The backend for a spec, created once per runner."""
        with self._lock:
            if spec.key not in self._backends:
                self._backends[spec.key] = get_backend(spec)
            return self._backends[spec.key]

    # ---- running ---------------------------------------------------------------------
    def prepare(self, ref: str, variables: dict[str, Any] | None = None, *,
                extra_messages: list[dict[str, str]] | None = None,
                adapter: str | AdapterSource | None = None,
                params: dict[str, Any] | None = None) -> tuple[Prompt, GenerationRequest, str]:
        """Render ``ref`` and build the request its front matter describes."""
        version = self.registry.resolve(ref, "prompt")
        prompt = self.registry.prompt(version.ref)
        api = prompt.model.get("apiType")
        if api not in (None, "chat"):
            raise InvalidRequest(f"{version.ref} is a Prompty '{api}' prompt "
                                 "(model.apiType); the runner runs chat completions only")
        values = {**prompt.defaults(), **(variables or {})}
        messages = [m.to_dict() for m in prompt.render(values)]
        messages += list(extra_messages or [])
        request = build_request(messages, prompt.parameters, params)
        request.tools = function_tools(prompt.tools) or None
        request.tool_bindings = tool_bindings(prompt.tools, values) or None
        if adapter is not None:
            request.adapter = adapter if isinstance(adapter, AdapterSource) else \
                self.registry.adapter_source(adapter)
        return prompt, request, version.ref

    def run(self, ref: str, variables: dict[str, Any] | None = None, **kwargs) -> RunResult:
        """Run one prompt version once (with output validation and bounded retries)."""
        return self.run_many(ref, [variables or {}], **kwargs)[0]

    def run_many(self, ref: str, inputs: list[dict[str, Any]], *,
                 adapter: str | AdapterSource | None = None, model: str | None = None,
                 params: dict[str, Any] | None = None,
                 on_invalid: str = "raise") -> list[RunResult]:
        """Run one prompt version on many inputs, batched by the backend.

        An answer that still fails the prompt's ``outputs`` after the retries raises
        :class:`ValidationFailed`, or with ``on_invalid="record"`` is kept with ``error``
        set (evaluations score every case rather than stop at the first bad answer).
        """
        if isinstance(adapter, str):
            adapter = self.registry.adapter_source(adapter)
        prepared = [self.prepare(ref, values, adapter=adapter, params=params)
                    for values in inputs]
        if not prepared:
            return []
        prompt, _, resolved = prepared[0]
        backend = self.backend(self.model_spec(prompt, model))
        requests = [request for _, request, _ in prepared]
        schema = output_schema(prompt)
        results = [RunResult(resolved, g.text, g, r.messages)
                   for g, r in zip(backend.generate(requests), requests, strict=True)]
        for result, request in zip(results, requests, strict=True):
            _count(result, result.generation)
            if schema is not None:
                try:
                    self._validate(backend, request, result, schema)
                except ValidationFailed as exc:
                    if on_invalid != "record":
                        raise
                    result.error = exc.message
        return results

    def complete(self, request: GenerationRequest, spec: ModelSpec, ref: str,
                 prompt: Prompt | None = None) -> RunResult:
        """Run one prepared request (validating the output when the prompt declares it)."""
        schema = output_schema(prompt) if prompt is not None else None
        backend = self.backend(spec)
        generation = backend.generate([request])[0]
        result = RunResult(ref, generation.text, generation, request.messages)
        _count(result, generation)
        if schema is not None:
            self._validate(backend, request, result, schema)
        return result

    def stream(self, request: GenerationRequest, spec: ModelSpec
               ) -> Iterator[str | ToolCallDelta]:
        """Stream one request's answer: text pieces, and the pieces of its tool calls
        (:class:`ToolCallDelta`); the generator returns the final Generation."""
        return self.backend(spec).stream(request)

    def _validate(self, backend, request: GenerationRequest, result: RunResult,
                  schema: dict) -> None:
        """Check the answer; feed the error back to the model a bounded number of times."""
        messages = list(request.messages)
        for attempt in range(self.output_retries + 1):
            error, parsed = check_output(result.text, schema)
            if error is None:
                result.parsed = parsed
                return
            if attempt == self.output_retries:
                raise ValidationFailed(
                    f"{result.ref}: the answer did not match the prompt's outputs after "
                    f"{attempt + 1} attempts: {error}",
                    [{"file": result.ref, "line": None, "message": error,
                      "answer": result.text[:2000]}])
            messages += [{"role": "assistant", "content": result.text},
                         {"role": "user", "content": retry_message(error, schema)}]
            retry = replace(request, messages=list(messages))
            generation = backend.generate([retry])[0]
            result.text, result.generation = generation.text, generation
            result.attempts += 1
            _count(result, generation)


def model_configuration(prompt: Prompt) -> tuple[dict[str, Any], dict[str, str]]:
    """The backend settings a prompt's model section asks for, and where each is written.

    Prompty v1 ``model.configuration`` as written; v2 ``provider`` is ``type``, ``id`` is
    ``name``, ``connection.endpoint`` is ``base_url``, ``connection.apiKey`` is
    ``api_key``, a reference connection's ``name`` names a configured model
    (``connection``). Both go through the same :class:`Trust` rules.
    """
    model = prompt.model
    conf: dict[str, Any] = {}
    where: dict[str, str] = {}
    for key, written in (("type", "provider"), ("name", "id")):
        if model.get(written) not in (None, ""):
            conf[key], where[key] = model[written], f"model.{written}"
    connection = model.get("connection")
    for written, value in (connection.items() if isinstance(connection, dict) else ()):
        if written != "kind":
            key = _CONNECTION.get(written, str(written))
            conf[key], where[key] = value, f"model.connection.{written}"
    v1 = model.get("configuration")
    for key, value in (v1.items() if isinstance(v1, dict) else ()):
        conf[str(key)], where[str(key)] = value, f"model.configuration.{key}"
    return conf, where


def build_request(messages: list[dict[str, Any]], parameters: dict[str, Any],
                  overrides: dict[str, Any] | None = None) -> GenerationRequest:
    """A request from the prompt's parameters, with per-call overrides on top."""
    merged = {**{k: v for k, v in parameters.items() if k in _SAMPLING},
              **{k: v for k, v in (overrides or {}).items() if k in _SAMPLING and v is not None}}
    stop = merged.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    return GenerationRequest(
        messages, max_tokens=_parameter(merged, "max_tokens", 256, int),
        temperature=_parameter(merged, "temperature", 0.0, float),
        top_p=_parameter(merged, "top_p", 1.0, float), stop=stop,
        seed=_parameter(merged, "seed", None, int),
        frequency_penalty=_parameter(merged, "frequency_penalty", None, float),
        presence_penalty=_parameter(merged, "presence_penalty", None, float))


def _parameter(merged: dict[str, Any], name: str, default: Any, kind: type) -> Any:
    """``merged[name]`` as a finite ``kind`` (``.inf`` and ``.nan`` in YAML are refused)."""
    value = merged.get(name)
    if value is None:
        return default
    try:
        number = kind(value)  # int(.inf) raises OverflowError
        if math.isfinite(number):
            return number
    except (TypeError, ValueError, OverflowError):
        pass
    raise InvalidRequest(f"invalid model parameter: {name} must be a finite "
                         f"{'integer' if kind is int else 'number'}, not {str(value)[:40]!r}")


def output_schema(prompt: Prompt) -> dict[str, Any] | None:
    """A JSON schema from the prompt's ``outputs`` (Prompty style or a full schema).

    Raises :class:`ValidationFailed` (before any model runs) for a schema that cannot be
    used safely: references, invalid schemas, patterns RE2 cannot run.
    """
    schema = _output_schema(prompt)
    problem = schema_problem(schema) if schema is not None else None
    if problem:
        raise ValidationFailed(f"the prompt's outputs cannot be used: {problem}",
                               [{"file": "outputs", "line": None, "message": problem}])
    return schema


def _output_schema(prompt: Prompt) -> dict[str, Any] | None:
    outputs = prompt.front.get("outputs")
    if isinstance(outputs, dict) and outputs.get("type") == "object" and \
            isinstance(outputs.get("properties"), dict):
        return outputs
    named = outputs_by_name(outputs)
    if not named:
        return None
    properties = {}
    for name, spec in named.items():
        kind = spec.get("type")
        if kind in _JSON_TYPES:
            properties[name] = {k: v for k, v in spec.items() if k != "sample"}
        else:  # Prompty v2: {kind, description, enumValues}
            properties[name] = property_schema(spec) if "kind" in spec else {}
    return {"type": "object", "properties": properties, "required": sorted(properties)}


def check_output(text: str, schema: dict[str, Any]) -> tuple[str | None, Any]:
    """(None, parsed JSON) when ``text`` satisfies ``schema``, else (error, None).

    The schema's patterns run on RE2 (linear time): a prompt's ``outputs`` pattern such as
    ``^(a+)+$`` cannot hold a worker, and one RE2 cannot run is reported as the error.
    """
    import jsonschema

    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        return f"the answer is not JSON ({exc.msg} at position {exc.pos})", None
    except RecursionError:  # an answer of thousands of nested brackets
        return "the answer is nested too deeply to read as JSON", None
    if not schema:
        return None, parsed
    problem = schema_problem(schema)
    if problem:
        return f"the output schema cannot be used: {problem}", None
    try:
        failure = jsonschema.exceptions.best_match(re2_validator(schema).iter_errors(parsed))
    except RecursionError:
        return "the answer is nested too deeply to check", None
    if failure is not None:
        where = "/".join(str(p) for p in failure.absolute_path) or "the answer"
        return f"{where}: {failure.message}", None
    return None, parsed


def retry_message(error: str, schema: dict[str, Any]) -> str:
    """What the model is told when its answer did not validate."""
    return (f"Your answer was not valid: {error}. Reply again with only a JSON object that "
            f"matches this schema, and nothing else:\n{json.dumps(schema)}")


def _count(result: RunResult, generation: Generation) -> None:
    usage = result.usage
    usage["prompt_tokens"] = usage.get("prompt_tokens", 0) + generation.prompt_tokens
    usage["completion_tokens"] = usage.get("completion_tokens", 0) + \
        generation.completion_tokens
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
