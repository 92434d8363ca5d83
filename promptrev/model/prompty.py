"""The prompt format: Prompty files (YAML front matter + role-line chat template).

Parsing validates everything a reviewer would want flagged before a version is stored,
with the line of each problem. Rendering runs the template in Jinja2's
``ImmutableSandboxedEnvironment`` (the sandbox Prompty itself uses) with
``StrictUndefined`` and returns chat messages.

A body may include another prompt's body, ``{% include "shared/tone@3" %}``: the
render's ``includes`` (a registry's resolver, see :mod:`.composition`) turns the reference
into the part's parsed prompt, whose template renders in the includer's context.

Rendering follows Prompty: the body is rendered first, then split on role lines
(``system:``, ``user:``…), so loops may produce several messages. Unlike a plain
render-then-split, a variable's *value* can never create a role line: every ``{{ … }}``
output is replaced by a placeholder until the split is done. The one exception is a value
that is exactly a role word (``{{ item.role }}:`` in chat-history loops).

Both Prompty data models load: v1 (``model: {api, configuration, parameters}``, inputs
as a mapping) and v2 (``model: gpt-4`` or ``{id, provider, apiType, connection,
options}``, ``inputs``/``outputs`` as lists of properties with a ``kind``, ``tools``,
``metadata``). Inputs of the rich kinds (``thread``, ``image``, ``file``, ``audio``) are
placed after the split (:mod:`.content_parts`): a thread's messages take its place, a
media input becomes a content part of its message. ``template.format`` picks the engine
(:func:`register_engine`): ``jinja2`` (default), ``mustache`` (:mod:`.mustache`), ``text``.
"""

from __future__ import annotations

import contextvars
import difflib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import jinja2
import yaml
from jinja2 import nodes

from promptrev.errors import PromptrevError, RenderFailed, ValidationFailed

from . import render_budget, safe_yaml
from .content_parts import PROPERTY_KINDS, RICH_KINDS, media_part, parts_text, thread_messages
from .render_budget import BudgetedEnvironment, RenderLimits
from .tools import tool_problems

ROLES = ("system", "user", "assistant", "developer", "function", "tool")
_ROLE_LINE = re.compile(
    r"^[ \t]*#?[ \t]*(?P<role>" + "|".join(ROLES) + r")"
    r"(?P<attrs>\[[^\]\n]*\])?[ \t]*:[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_SUSPECT_ROLE = re.compile(r"^[ \t]*#?[ \t]*(?P<word>[A-Za-z][\w-]*)[ \t]*:[ \t]*$")
_ATTR = re.compile(r"\s*(\w+)\s*=\s*\"?([^\",\]]*)\"?\s*,?")
_FRONT_MATTER = re.compile(
    r"\A[ \t]*(?P<fence>---|\+\+\+)[ \t]*\r?\n(?P<yaml>.*?)^[ \t]*(?P=fence)[ \t]*(?:\r?\n|\Z)",
                           re.DOTALL | re.MULTILINE)
_slots: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("slots", default=None)
# The render's resolver of ``{% include %}`` references (None: a render without a registry).
_includes: contextvars.ContextVar[Callable[[str], Prompt] | None] = contextvars.ContextVar(
    "includes", default=None)
# Where an engine's media (Handlebars' ``{{media}}``) is placed during ``render``: the
# rich items of the render, placed as content parts after the split (None: no split).
_media: contextvars.ContextVar[list | None] = contextvars.ContextVar("media", default=None)
_nonce = secrets.token_hex(6)
_MAX_PARTS = 256  # parts read for their defaults, at most, per render
_SLOT = re.compile("\x00" + _nonce + r"(\d+)\x00")
# Where a rich input (thread, image, file, audio) was placed, until the messages are split.
_RICH = re.compile("\x00" + _nonce + r"r(\d+)\x00")
# Prompty v2 ``model.options`` and the parameter names the runner reads.
OPTION_NAMES = {"maxOutputTokens": "max_tokens", "temperature": "temperature",
                "topP": "top_p", "topK": "top_k", "stopSequences": "stop",
                "frequencyPenalty": "frequency_penalty",
                "presencePenalty": "presence_penalty", "seed": "seed",
                "allowMultipleToolCalls": "parallel_tool_calls"}


@dataclass(frozen=True)
class Problem:
    """One validation finding, with the 1-based line in the file when known."""

    message: str
    line: int | None = None
    severity: str = "error"

    def describe(self, filename: str) -> str:
        """Render as ``file, line N: message``."""
        where = f"{filename}, line {self.line}" if self.line else filename
        return f"{where}: {self.message}"

    def to_dict(self, filename: str) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"file": filename, "line": self.line, "severity": self.severity,
                "message": self.message}


@dataclass(frozen=True)
class Message:
    """One chat message produced by rendering.

    ``content`` is text, or a list of OpenAI content parts when an ``image``, ``file`` or
    ``audio`` input was placed in it; :attr:`text` is always text.
    """

    role: str
    content: str | list[dict[str, Any]]
    name: str | None = None

    @property
    def text(self) -> str:
        """The content as text (a media part shown as ``[image: URL]``)."""
        return parts_text(self.content)

    def to_dict(self) -> dict[str, Any]:
        """Return the OpenAI-style dict form."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name:
            out["name"] = self.name
        return out

    def text_dict(self) -> dict[str, str]:
        """:meth:`to_dict` with the content as text (what diffs and token counts read)."""
        return {**self.to_dict(), "content": self.text}


def _finalize(value: Any) -> str:
    budget = render_budget.current()
    if value.__class__ is str:
        text = value
    else:
        if budget is not None:
            budget.check_size(value)  # before str() of a list builds its text
        text = "" if value is None else str(value)
    if budget is not None:
        budget.add_output(len(text))
    slots = _slots.get()
    if slots is None or text.strip().lower() in ROLES:
        return text
    slots.append(text)
    return f"\x00{_nonce}{len(slots) - 1}\x00"


class _PartLoader(jinja2.BaseLoader):
    """Loads an ``{% include "name@ref" %}`` target through the running render's resolver.

    A part is trusted like the includer's own template (it is a stored, validated prompt,
    not a variable's value): its text may start messages with role lines.
    """

    def load(self, environment: jinja2.Environment, name: str,
             globals: Any = None) -> jinja2.Template:  # noqa: A002 - Jinja2's signature
        resolve = _includes.get()
        if resolve is None:
            raise RenderFailed(f"the template includes '{name}', a part stored in a "
                               "registry: render it through the registry")
        budget = render_budget.current()
        if budget is not None:
            budget.tick()
        part = resolve(name)
        if part.engine is not JINJA2:
            raise RenderFailed(f"the included part '{name}' is not a Jinja2 template "
                               f"(template format {part.engine.name!r})")
        return part.template


_ENV = BudgetedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    finalize=_finalize,
    loader=_PartLoader(),
    cache_size=0,  # a part's template is the resolver's to cache, per commit
)


@dataclass
class Prompt:
    """A parsed, validated prompt. ``front`` is the front matter as written."""

    front_node: yaml.MappingNode | None
    body: str
    body_line: int
    inputs: dict[str, dict[str, Any]]
    variables: frozenset[str]
    warnings: list[Problem] = field(default_factory=list)
    engine: TemplateEngine = field(default_factory=lambda: JINJA2)
    # How ``{% include %}`` references resolve when ``render`` is given none (a registry
    # sets its own on the prompts it hands out).
    includes: Callable[[str], Prompt] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def front(self) -> dict[str, Any]:
        """The front matter as a dict (built on first use: saving needs only parts of it)."""
        return _construct(self.front_node) if self.front_node is not None else {}

    @cached_property
    def template(self) -> jinja2.Template:
        """The compiled template (compiled on first render: saving only needs the parse)."""
        return _ENV.from_string(self.body)

    @property
    def model(self) -> dict[str, Any]:
        """The ``model`` section, possibly empty: v1 (api, configuration, parameters) or
        v2 (id, provider, apiType, connection, options); ``model: gpt-4`` is ``{id: gpt-4}``.
        """
        model = self.front.get("model")
        if isinstance(model, str) and model:
            return {"id": model}
        return model if isinstance(model, dict) else {}

    @property
    def parameters(self) -> dict[str, Any]:
        """Model parameters such as temperature and max_tokens.

        v1 ``parameters`` as written; v2 ``options`` by the runner's names
        (``maxOutputTokens`` is ``max_tokens``, ``topP`` is ``top_p``, ``stopSequences`` is
        ``stop``...; ``additionalProperties`` passed through). ``parameters`` wins a tie.
        """
        params = self.model.get("parameters")
        params = dict(params) if isinstance(params, dict) else {}
        options = self.model.get("options")
        for key, value in (options.items() if isinstance(options, dict) else ()):
            if key == "additionalProperties" and isinstance(value, dict):
                for extra, extra_value in value.items():
                    params.setdefault(str(extra), extra_value)
            else:
                params.setdefault(OPTION_NAMES.get(key, key), value)
        return params

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The ``tools`` section (checked when parsed): each with a name and a kind."""
        tools = self.front.get("tools")
        return [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        """Declared outputs by name (the list form ``[{name, kind}]`` or a mapping)."""
        return outputs_by_name(self.front.get("outputs"))

    def kind_of(self, name: str) -> str | None:
        """The declared ``kind`` (or ``type``) of input ``name``."""
        spec = self.inputs.get(name) or {}
        kind = spec.get("kind", spec.get("type"))
        return kind if isinstance(kind, str) else None

    def sample(self) -> dict[str, Any]:
        """Variables to preview with: per-input sample/default, overridden by ``sample``."""
        values: dict[str, Any] = {}
        for name, spec in self.inputs.items():
            for key in ("sample", "default", "example"):
                if key in spec:
                    values[name] = spec[key]
                    break
        top = self.front.get("sample")
        if isinstance(top, dict):
            values.update(top)
        return values

    def defaults(self) -> dict[str, Any]:
        """Declared input defaults, applied when a render call omits the variable.

        A ``thread`` input without a default is an empty conversation.
        """
        return dict(self._defaults)

    @cached_property
    def _defaults(self) -> dict[str, Any]:
        out = {n: s["default"] for n, s in self.inputs.items() if "default" in s}
        for name in self.inputs:
            if name not in out and self.kind_of(name) == "thread":
                out[name] = []
        return out

    @cached_property
    def part_references(self) -> tuple[str, ...]:
        """The references to parts its body makes, as written (read once per prompt)."""
        from .composition import includes_of

        try:
            return tuple(dict.fromkeys(i.text for i in includes_of(self)))
        except ValidationFailed:
            return ()

    def part_defaults(self, resolve: Callable[[str], Prompt] | None) -> dict[str, Any]:
        """The input defaults its parts declare (first found wins, nearest parts first),
        for the names it does not declare itself; parts ``resolve`` cannot give are left
        to the render to report."""
        out: dict[str, Any] = {}
        if resolve is None or not self.part_references:
            return out
        seen: set[str] = set()
        pending: list[Prompt] = [self]
        while pending and len(seen) < _MAX_PARTS:
            for text in pending.pop(0).part_references:
                if text in seen:
                    continue
                seen.add(text)
                try:
                    part = resolve(text)
                except PromptrevError:
                    continue
                for name, value in part._defaults.items():
                    if name not in self.inputs:
                        out.setdefault(name, value)
                pending.append(part)
        return out

    def render(self, variables: dict[str, Any] | None = None,
               limits: RenderLimits | None = None,
               includes: Callable[[str], Prompt] | None = None) -> list[Message]:
        """Render to chat messages; a missing variable is an error naming it.

        The render is held to ``limits`` (the process default when None): time, size,
        iterations and depth, each refused with :class:`RenderLimitExceeded`.
        ``includes`` resolves ``{% include "name@ref" %}`` (default: ``self.includes``).
        """
        values = self._values(variables, includes)
        rich: list[tuple[str, str, Any]] = []
        for name in self.inputs:
            kind = self.kind_of(name)
            if kind in RICH_KINDS and name in values:
                rich.append((name, kind, values[name]))
                values[name] = f"\x00{_nonce}r{len(rich) - 1}\x00"
        slots: list[str] = []
        media = _media.set(rich)
        try:
            text = self._render_slotted(values, slots, limits, includes)
        finally:
            _media.reset(media)
        messages = _split_messages(text, slots)
        return _place_rich(messages, rich) if rich else messages

    def render_text(self, variables: dict[str, Any] | None = None,
                    limits: RenderLimits | None = None,
                    includes: Callable[[str], Prompt] | None = None) -> str:
        """The body rendered to text, before it is split into messages (Prompty's
        ``render``); rich inputs render as their values' text."""
        slots: list[str] = []
        text = self._render_slotted(self._values(variables, includes), slots, limits,
                                    includes)
        return _SLOT.sub(lambda m: slots[int(m.group(1))], text)

    def _values(self, variables: dict[str, Any] | None,
                includes: Callable[[str], Prompt] | None = None) -> dict[str, Any]:
        """Defaults with ``variables`` on top; a required input with neither is an error.

        The defaults of the parts it includes (and theirs) come first, for the names this
        prompt does not declare: its own inputs and the values given win.
        """
        resolve = includes or self.includes or _includes.get()
        values = {**self.part_defaults(resolve), **self.defaults(), **(variables or {})}
        missing = [n for n, s in self.inputs.items() if s.get("required") is True
                   and n not in values]
        if missing:
            raise RenderFailed(f"missing required input '{missing[0]}' (declared inputs: "
                               f"{', '.join(sorted(self.inputs))})",
                               details={"declared_inputs": sorted(self.inputs),
                                        "missing": missing})
        return values

    def _render_slotted(self, values: dict[str, Any], slots: list[str],
                        limits: RenderLimits | None,
                        includes: Callable[[str], Prompt] | None = None) -> str:
        """The engine's text, each value a placeholder indexing ``slots``."""
        token = _slots.set(slots)
        parts = _includes.set(includes or self.includes or _includes.get())
        try:
            text = render_budget.run(
                limits, lambda budget: self.engine.render(self, values, budget))
        except RenderFailed:
            raise
        except jinja2.UndefinedError as exc:
            raise RenderFailed(_undefined_message(exc, self), details={
                "declared_inputs": sorted(self.inputs)}) from None
        except jinja2.exceptions.SecurityError as exc:
            raise RenderFailed(f"template refused by the sandbox: {exc}") from None
        except jinja2.TemplateError as exc:
            raise RenderFailed(f"template failed to render: {exc}") from None
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise RenderFailed(f"template failed to render: {type(exc).__name__}: {exc}") from None
        finally:
            _includes.reset(parts)
            _slots.reset(token)
        return text

    def _render_text(self, values: dict[str, Any], budget: render_budget.Budget) -> str:
        """The template's output, its length counted chunk by chunk (a loop of literal text
        is refused as it grows, not once it is whole)."""
        template = self.template
        chunks = []
        limit = budget.limits.max_chars
        total = 0
        for chunk in template.root_render_func(template.new_context(values)):
            total += len(chunk)
            if total + budget.output > limit:
                budget.add_output(total)  # raises, naming the limit
            chunks.append(chunk)
        return "".join(chunks)


def place_media(kind: str, part: dict[str, Any], text: str) -> str:
    """Where an engine's media item goes: a placeholder the split turns into content part
    ``part`` of its message, or ``text`` when the render is not split into messages."""
    media = _media.get()
    if media is None:
        return text
    media.append(("media", kind, part))
    return f"\x00{_nonce}r{len(media) - 1}\x00"


def _undefined_message(exc: jinja2.UndefinedError, prompt: Prompt) -> str:
    match = re.match(r"'([^']+)' is undefined", str(exc))
    if match:
        declared = ", ".join(sorted(prompt.inputs)) or "none"
        return f"missing variable '{match.group(1)}' (declared inputs: {declared})"
    return f"undefined value in template: {exc}"


def _split_messages(text: str, slots: list[str]) -> list[Message]:
    def restore(chunk: str) -> str:
        return _SLOT.sub(lambda m: slots[int(m.group(1))], chunk)

    messages: list[Message] = []
    matches = list(_ROLE_LINE.finditer(text))
    lead = text[: matches[0].start()] if matches else text
    if lead.strip():
        messages.append(Message("system", restore(lead).strip()))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        # As in Prompty, a role line followed by another keeps its (empty) message.
        content = restore(text[match.end():end]).strip()
        attrs = dict(_ATTR.findall(match.group("attrs")[1:-1])) if match.group("attrs") else {}
        messages.append(Message(match.group("role").lower(), content, attrs.get("name")))
    return messages


def _place_rich(messages: list[Message], rich: list[tuple[str, str, Any]]) -> list[Message]:
    """Messages with each rich input in its place: a thread's messages between the text
    around it, an image, file or audio as a content part of its message."""
    out: list[Message] = []
    for message in messages:
        if not isinstance(message.content, str) or not _RICH.search(message.content):
            out.append(message)
            continue
        parts: list[dict[str, Any]] = []
        pieces = _RICH.split(message.content)
        for k, piece in enumerate(pieces):
            if k % 2 == 0:
                if piece.strip():
                    parts.append({"type": "text", "text": piece.strip()})
                continue
            name, kind, value = rich[int(piece)]
            if kind != "thread":
                parts.append(media_part(kind, value, name))
                continue
            if parts:
                out.append(_with_parts(message, parts))
                parts = []
            out += [Message(m["role"], m["content"], m.get("name"))
                    for m in thread_messages(value, name, ROLES)]
        if parts:
            out.append(_with_parts(message, parts))
    return out


def _with_parts(message: Message, parts: list[dict[str, Any]]) -> Message:
    content: str | list[dict[str, Any]] = parts
    if len(parts) == 1 and parts[0]["type"] == "text":
        content = parts[0]["text"]
    return Message(message.role, content, message.name)


def outputs_by_name(raw: Any) -> dict[str, dict[str, Any]]:
    """Outputs by name, from the list form ``[{name, kind, ...}]`` or a mapping.

    A full JSON schema (``{type: object, properties: {...}}``) gives its properties.
    """
    if isinstance(raw, list):
        return {str(o["name"]): {k: v for k, v in o.items() if k != "name"}
                for o in raw if isinstance(o, dict) and "name" in o}
    if not isinstance(raw, dict):
        return {}
    if raw.get("type") == "object" and isinstance(raw.get("properties"), dict):
        raw = raw["properties"]
    return {str(k): (dict(v) if isinstance(v, dict) else {"sample": v}) for k, v in raw.items()}


def split_front_matter(text: str) -> tuple[str | None, str, int]:
    """Return (front matter YAML or None, body, 1-based file line where the body starts)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    match = _FRONT_MATTER.match(text)
    if not match:
        return None, text, 1
    return match.group("yaml"), text[match.end():], text[: match.end()].count("\n") + 1


def parse_prompt(text: str, filename: str = "<prompt>") -> Prompt:
    """Parse and validate a ``.prompty`` text; raise :class:`ValidationFailed` listing problems."""
    problems: list[Problem] = []
    warnings: list[Problem] = []
    fm_text, body, body_line = split_front_matter(text)
    stripped = text.lstrip("\ufeff")
    # Found front matter was matched on ``stripped`` itself (it can follow one BOM only).
    if fm_text is None and stripped.startswith(("---", "+++")) and \
            not _FRONT_MATTER.match(stripped):
        # A markdown horizontal rule opens many real prompts: it is body text.
        fence = stripped[:3]
        warnings.append(Problem(f"the text starts with '{fence}' but no closing '{fence}' "
                                "line follows, so it has no front matter: the whole text "
                                "is the template", 1, "warning"))
    node = _compose_front_matter(fm_text, problems) if fm_text is not None else None
    inputs = _normalise_inputs(_construct(_value_node(node, "inputs")), fm_text, problems)
    engine = _template_engine(_construct(_value_node(node, "template")), problems, warnings)
    _check_kinds(inputs, fm_text, warnings)
    tool_errors, tool_warnings = tool_problems(_construct(_value_node(node, "tools")), inputs)
    line = _key_line(fm_text, "tools")
    problems += [Problem(m, line) for m in tool_errors]
    warnings += [Problem(m, line, "warning") for m in tool_warnings]
    _check_roles(body, body_line, warnings)
    variables = engine.check(body, body_line, problems) if engine else set()
    if problems:
        first = problems[0].describe(filename)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValidationFailed(first + more, [p.to_dict(filename) for p in problems])
    for name in sorted(variables - set(inputs)):
        warnings.append(Problem(f"variable '{name}' is used but not declared in inputs",
                                _line_of_variable(body, name, body_line), "warning"))
    return Prompt(node, body, body_line, inputs, frozenset(variables), warnings,
                  engine or JINJA2)


def _compose_front_matter(fm_text: str, problems: list[Problem]) -> yaml.MappingNode | None:
    """Parse the front matter to YAML nodes and check them (no Python objects yet).

    :func:`safe_yaml.inspect` refuses what could not be stored and shown safely: alias
    bombs, recursive anchors, keys that are lists, numbers JSON cannot carry, odd tags.
    """
    try:
        node = safe_yaml.compose(fm_text)
    except yaml.YAMLError as exc:
        problems.append(Problem(f"bad YAML in front matter: {_yaml_problem(exc)}",
                                _yaml_line(exc)))
        return None
    if node is None:
        return None
    if not isinstance(node, yaml.MappingNode):
        problems.append(Problem("front matter must be a YAML mapping (key: value lines)",
                                node.start_mark.line + 2))
        return None
    findings = safe_yaml.inspect(node, _duplicate_message, shared="*" in fm_text)
    problems.extend(Problem(f.message, f.line + 1) for f in findings)
    return None if findings else node


def _duplicate_message(path: tuple[str, ...], key: str, first: int) -> str:
    if path == ("inputs",):
        return f"input '{key}' is declared twice (first at line {first + 1})"
    return f"key '{'.'.join(path + (key,))}' appears twice (first at line {first + 1})"


def _value_node(node: yaml.MappingNode | None, key: str) -> yaml.Node | None:
    if node is None:
        return None
    for key_node, value_node in node.value:
        if key_node.value == key:
            return value_node
    return None


def _construct(node: yaml.Node | None) -> Any:
    """Python objects for a checked node (it was inspected, so this cannot fail)."""
    return safe_yaml.construct(node)


def _yaml_line(exc: yaml.YAMLError) -> int | None:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return mark.line + 2 if mark is not None else None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if problem:
        return f"{context} {problem}" if context else problem
    return str(exc).splitlines()[0]


def _normalise_inputs(raw: Any, fm_text: str | None, problems: list[Problem]) -> dict[str, dict]:
    if raw is None:
        return {}
    line = _key_line(fm_text, "inputs")
    inputs: dict[str, dict[str, Any]] = {}
    if isinstance(raw, dict):
        for name, spec in raw.items():
            inputs[str(name)] = dict(spec) if isinstance(spec, dict) else {"sample": spec}
        return inputs
    if isinstance(raw, list):
        for item in raw:
            if not isinstance(item, dict) or "name" not in item:
                problems.append(Problem("each entry of 'inputs' must be a mapping with a 'name'",
                                        line))
                continue
            name = str(item["name"])
            if name in inputs:
                problems.append(Problem(f"input '{name}' is declared twice", line))
            inputs[name] = {k: v for k, v in item.items() if k != "name"}
        return inputs
    problems.append(Problem("'inputs' must be a mapping of input names to their specs", line))
    return {}


def _check_kinds(inputs: dict[str, dict], fm_text: str | None,
                 warnings: list[Problem]) -> None:
    """Warn about an input ``kind`` Prompty does not define (it is kept as written)."""
    for name, spec in inputs.items():
        kind = spec.get("kind")
        if kind is not None and kind not in PROPERTY_KINDS:
            warnings.append(Problem(
                f"input '{name}' has kind {kind!r}, which Prompty does not define "
                f"(kinds: {', '.join(PROPERTY_KINDS)}); it renders as a plain value",
                _key_line(fm_text, "inputs"), "warning"))


def _key_line(fm_text: str | None, key: str) -> int | None:
    if fm_text is None:
        return None
    for i, line in enumerate(fm_text.splitlines()):
        if line.startswith(f"{key}:"):
            return i + 2
    return None


class TemplateEngine:
    """How one ``template.format`` turns a body into text before it is split on role lines.

    ``check`` finds syntax problems and returns the variables the body reads; ``render``
    produces the text under the render budget. An engine must keep a variable's value
    from starting a message (the Jinja2 engine does it with placeholders, see
    :func:`_finalize`).
    """

    name = "jinja2"

    def check(self, body: str, body_line: int, problems: list[Problem]) -> set[str]:
        """Add the body's syntax problems to ``problems``; return the variables it reads."""
        return _check_template(body, body_line, problems)

    def render(self, prompt: Prompt, values: dict[str, Any],
               budget: render_budget.Budget) -> str:
        """The body rendered with ``values``, before it is split into messages."""
        return prompt._render_text(values, budget)


class TextEngine(TemplateEngine):
    """``template: {format: text}``: no template engine; the body is sent verbatim.

    For prompts whose braces are not Jinja2 (code samples with ``{{``): nothing is
    substituted, and no variable is read.
    """

    name = "text"

    def check(self, body: str, body_line: int, problems: list[Problem]) -> set[str]:
        """Nothing to check: the body is not a template."""
        return set()

    def render(self, prompt: Prompt, values: dict[str, Any],
               budget: render_budget.Budget) -> str:
        """The body itself."""
        budget.add_output(len(prompt.body))
        return prompt.body


JINJA2 = TemplateEngine()
ENGINES: dict[str, TemplateEngine] = {}
PARSERS = ("prompty",)


def register_engine(engine: TemplateEngine, *aliases: str) -> None:
    """Make ``template.format`` ``engine.name`` (and each alias) render with ``engine``."""
    for name in (engine.name, *aliases):
        ENGINES[name] = engine


register_engine(JINJA2, "jinja")
register_engine(TextEngine(), "none", "plain")


def template_format(template: Any) -> tuple[Any, Any]:
    """The (format, parser) a ``template`` section names, in any of Prompty's spellings.

    ``template: jinja2`` (v1), ``template: {format: jinja2, parser: prompty}`` (v1) and
    ``template: {format: {kind: jinja2}, parser: {kind: prompty}}`` (v2) are the same.
    """
    if isinstance(template, dict):
        fmt, parser = template.get("format"), template.get("parser")
    else:
        fmt, parser = template, None
    if isinstance(fmt, dict):
        fmt = fmt.get("kind")
    if isinstance(parser, dict):
        parser = parser.get("kind")
    return fmt, parser


def _template_engine(template: Any, problems: list[Problem],
                     warnings: list[Problem]) -> TemplateEngine | None:
    fmt, parser = template_format(template)
    if parser is not None and parser not in PARSERS:
        problems.append(Problem(f"template parser {parser!r} is not supported "
                                f"(supported: {', '.join(PARSERS)})"))
    if fmt is None:
        return JINJA2
    engine = ENGINES.get(str(fmt).lower()) if isinstance(fmt, str) else None
    if engine is not None:
        return engine
    supported = ", ".join(sorted({e.name for e in ENGINES.values()}))
    problems.append(Problem(f"template format {fmt!r} is not supported "
                            f"(supported: {supported})"))
    return None


def _check_roles(body: str, body_line: int, warnings: list[Problem]) -> None:
    """Warn about a line that is almost a role line (``asistant:``); never refuse one.

    As in Prompty, only the known role words start a message: ``Context:``, ``Prompt:`` or
    ``messages:`` on a line of its own is content.
    """
    for offset, line in enumerate(body.splitlines()):
        if not line.strip() or _ROLE_LINE.match(line):
            continue
        suspect = _SUSPECT_ROLE.match(line)
        if suspect:
            word = suspect.group("word")
            close = _near_miss(word.lower())
            if close:
                warnings.append(Problem(
                    f"'{word}:' is not a role, so this line is content of the message "
                    f"above (did you mean '{close[0]}'?); roles are {', '.join(ROLES)}",
                    body_line + offset, "warning"))


def _near_miss(word: str) -> list[str]:
    """The role ``word`` looks like a typo of: close, but not a heading built from a role
    word (``Use:`` is a prefix of ``user``, ``Tools:`` a plural of ``tool``)."""
    close = difflib.get_close_matches(word, ROLES, n=1, cutoff=0.75)
    if close and (close[0].startswith(word) or word in (close[0] + "s", close[0] + "es")):
        return []
    return close


_IMPLICIT_NAMES = frozenset({"loop", "self", "caller", "varargs", "kwargs", "super"})


def _check_template(body: str, body_line: int, problems: list[Problem]) -> set[str]:
    """Check the template's syntax and filter/test names; return the variables it reads.

    Walking the AST is cheaper than Jinja's code generation and also catches an unknown
    filter inside an ``{% if %}`` block, which Jinja would only report at render time.
    """
    simple = _simple_variables(body)
    if simple is not None:
        return simple - set(_ENV.globals) - _IMPLICIT_NAMES
    return _parsed_variables(body, body_line, problems)


def _parsed_variables(body: str, body_line: int, problems: list[Problem]) -> set[str]:
    """:func:`_check_template` for any body, through Jinja's parser."""
    try:
        ast = _ENV.parse(body)
    except jinja2.TemplateSyntaxError as exc:
        line = body_line + (exc.lineno or 1) - 1
        problems.append(Problem(f"template syntax error: {exc.message}", line))
        return set()
    except RecursionError:
        problems.append(Problem("template nests too deeply to parse", body_line))
        return set()
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        is_filter = isinstance(node, nodes.Filter)
        if node.name not in (_ENV.filters if is_filter else _ENV.tests):
            what = "filter" if is_filter else "test"
            problems.append(Problem(f"template syntax error: no {what} named '{node.name}'",
                                    body_line + node.lineno - 1))
    names = list(ast.find_all(nodes.Name))
    stored = {n.name for n in names if n.ctx in ("store", "param")}
    loaded = {n.name for n in names if n.ctx == "load"}
    return loaded - stored - set(_ENV.globals) - _IMPLICIT_NAMES


# Most bodies are text with ``{{ name }}`` substitutions and no other markup. Such a body
# gives the parser nothing to refuse (no blocks, comments, filters or tests), so its
# variables are read off directly, at a fifth of a parse; any other body is parsed.
# Names the parser reads as constants or operators are left to it.
_SUBSTITUTION = re.compile(r"\{\{[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*\}\}")
_NOT_PLAIN_NAMES = frozenset({"true", "false", "none", "True", "False", "None", "not",
                              "and", "or", "in", "is", "if", "else"})
_DEFAULT_SYNTAX = (
    (_ENV.block_start_string, _ENV.variable_start_string, _ENV.variable_end_string,
     _ENV.comment_start_string, _ENV.line_statement_prefix, _ENV.line_comment_prefix,
     bool(_ENV.extensions)) == ("{%", "{{", "}}", "{#", None, None, False))


def _simple_variables(body: str) -> set[str] | None:
    """The names a body of plain ``{{ name }}`` substitutions reads; None for any other.

    Scans as Jinja's lexer does: every ``{{`` opens an expression, which must be one
    plain name and the closing ``}}``.
    """
    if not _DEFAULT_SYNTAX or "{%" in body or "{#" in body:
        return None
    names = set()
    start = body.find("{{")
    while start != -1:
        match = _SUBSTITUTION.match(body, start)
        if match is None or match.group(1) in _NOT_PLAIN_NAMES:
            return None
        names.add(match.group(1))
        start = body.find("{{", match.end())
    return names


def _line_of_variable(body: str, name: str, body_line: int) -> int | None:
    pattern = re.compile(r"\b" + re.escape(name) + r"\b")
    for offset, line in enumerate(body.splitlines()):
        if ("{{" in line or "{%" in line) and pattern.search(line):
            return body_line + offset
    return None


from . import mustache  # noqa: E402,F401 - registers the mustache engine (it uses the above)
