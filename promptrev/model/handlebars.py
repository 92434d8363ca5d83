"""``template: {format: handlebars}``: bodies written in Handlebars, as Dotprompt writes them.

Rendered by ``dotpromptz-handlebars`` (Google's pure-Python Handlebars, the one Dotprompt's
Python SDK uses; Handlebars.js 4.7 semantics), with HTML escaping off (prompts go to a
model, not a browser) and strict paths: printing a missing variable is an error naming it,
as in every promptrev template; a condition on a missing one is simply false.

Messages follow Dotprompt: text before the first role marker is the user's, and
``{{role "system"}}`` (``user``, ``model``/``assistant``, ``tool``…) starts a message. Role
lines as Prompty writes them (``system:`` alone on a line) start one too, so a body
converted from a Prompty or GitHub Models file keeps its messages. ``{{history}}`` inserts
the ``history`` variable (a list of ``{role, content}``) as messages. ``{{json value}}``
prints JSON; ``ifEquals``/``unlessEquals`` and ``{{section}}`` are Dotprompt's helpers.
``{{media url=... contentType=...}}`` places an image (``image/*``, or no type), audio
(``audio/*``, a ``data:`` URL) or file (any other type) content part, in OpenAI's chat
format, in the message it is written in; its URL must be a string, ``http(s):`` or
``data:`` (never ``file:`` or a path of the machine rendering it).

A partial the prompt does not carry (``template.partials``, ``{{#*inline}}``) is a part
stored in the registry, ``{{> shared/tone}}`` or ``{{> "shared/tone@3"}}``, resolved
through the render's resolver as Jinja2's ``{% include %}`` is (:mod:`.composition`), and
rendered with the includer's context.

The sandbox is the library's (a template calls only the helpers registered here, never a
function of the input) plus promptrev's render budget: every value printed goes through
:func:`promptrev.model.prompty._finalize` (size, and the placeholder that keeps a value
from starting a message), every item a loop draws counts against the iteration and time
budget, every partial rendered counts as an iteration (partials calling two partials each,
thirty deep, would otherwise render a billion times with no loop to stop them), every
literal text is counted as it is written (a loop over literal text stops at ``max_chars``
instead of filling memory until the clock runs out), templates and partials nest at most
60 deep (deeper is the depth limit), and the whole output is held to ``max_chars``.
Partials imported with a prompt are stored with it: ``template: {format: handlebars,
partials: {name: source}}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from promptrev.errors import RenderFailed

from . import prompty, render_budget
from .composition import Include, IncludeReader, reference_of, register_includes
from .content_parts import media_part
from .prompty import (
    _ROLE_LINE,
    ROLES,
    Problem,
    Prompt,
    TemplateEngine,
    _finalize,
    register_engine,
)

# Dotprompt's role names, and the chat roles promptrev sends for them.
ROLE_NAMES = {**{role: role for role in ROLES}, "model": "assistant"}
HELPERS = ("role", "history", "json", "media", "section", "ifEquals", "unlessEquals",
           "lookup", "log")
_SCOPED_BLOCKS = ("each", "with")  # their bodies read the item, not the prompt's inputs
_MAX_NESTING = 60


class _Text(str):
    """A string value of the input: printing it goes through the render budget."""

    __slots__ = ()

    def __str__(self) -> str:
        return _finalize(str.__str__(self))


class _Items(list):
    """A list value of the input: every item a loop draws is counted."""

    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        return _counted(list.__iter__(self))


class _Fields(dict):
    """A mapping value of the input: ``{{#each}}`` over it counts every entry."""

    __slots__ = ()

    def items(self):  # noqa: D102 - dict.items, counted
        return list(_counted(iter(dict.items(self))))


def _counted(items: Iterator[Any]) -> Iterator[Any]:
    budget = render_budget.current()
    return items if budget is None else budget.iterate(items)


def _wrap(value: Any) -> Any:
    """The input as the template sees it: strings, lists and mappings under the budget."""
    if isinstance(value, str):
        return _Text(value)
    if isinstance(value, (list, tuple)):
        return _Items(_wrap(item) for item in value)
    if isinstance(value, dict):
        # Keys are values too ({{@key}} prints them): they go through the budget as well.
        return _Fields((_Text(key), _wrap(item)) for key, item in value.items())
    return value


# ---- helpers ------------------------------------------------------------------------

def _role_line(role: Any) -> Any:
    from dotpromptz_handlebars import SafeString

    name = ROLE_NAMES.get(str.__str__(role).lower()) if isinstance(role, str) else None
    if name is None:
        raise ValueError(f"{{{{role}}}} names no chat role: {role!r} (roles: "
                         f"{', '.join(sorted(ROLE_NAMES))})")
    return SafeString(f"\n{name}:\n")


def _role_helper(args: list[Any], options: Any) -> Any:
    return _role_line(args[0] if args else None)


def _history_helper(args: list[Any], options: Any) -> Any:
    """The ``history`` variable's messages, each content a value (it cannot add roles)."""
    from dotpromptz_handlebars import SafeString

    root = options.data.get("root")
    history = root.get("history") if isinstance(root, dict) else None
    if history is None:
        return SafeString("")
    if not isinstance(history, list):
        raise ValueError("'history' must be a list of {role, content} messages")
    out = []
    for message in history:
        if not isinstance(message, dict) or "role" not in message:
            raise ValueError("each message of 'history' needs a 'role' and a 'content'")
        out.append(_role_line(message["role"]) + _finalize(_content_text(message)))
    # What follows the history is the user's again, as in Dotprompt.
    return SafeString("".join(out) + "\n" + _IMPLICIT_USER)


def _content_text(message: dict) -> str:
    content = message.get("content", "")
    if isinstance(content, list):  # Dotprompt's parts: [{text: ...}]
        return "".join(str.__str__(p["text"]) for p in content
                       if isinstance(p, dict) and isinstance(p.get("text"), str))
    return str.__str__(content) if isinstance(content, str) else json.dumps(content)


def _json_helper(args: list[Any], options: Any) -> Any:
    from dotpromptz_handlebars import SafeString

    indent = options.hash.get("indent")
    indent = indent if isinstance(indent, int) and 0 <= indent <= 8 else None
    budget = render_budget.current()
    if budget is not None and args:
        budget.check_size(args[0])
    # As JSON.stringify writes it (Dotprompt's helper): no spaces unless indented.
    text = json.dumps(args[0] if args else None, indent=indent, ensure_ascii=False,
                      separators=None if indent else (",", ":"))
    return SafeString(_finalize(text))


_MEDIA_SCHEMES = ("http://", "https://", "data:")


def _media_helper(args: list[Any], options: Any) -> Any:
    """An image, audio or file content part of the message it is written in."""
    from dotpromptz_handlebars import SafeString

    url = options.hash.get("url", args[0] if args else None)
    if not isinstance(url, str) or not url:
        raise ValueError(f"{{{{media}}}} needs url= a http(s) or data: URL as text, not "
                         f"{_shown(url)}")
    url = str.__str__(url)
    budget = render_budget.current()
    if budget is not None:
        budget.check_size(url)
    if not url.lower().startswith(_MEDIA_SCHEMES):
        raise ValueError(f"{{{{media}}}} url {_short(url)!r} is refused: only http(s) and "
                         "data: URLs are sent to a model (never file: or a local path)")
    content_type = options.hash.get("contentType")
    if content_type is not None and not isinstance(content_type, str):
        raise ValueError(f"{{{{media}}}} contentType must be text, not {_shown(content_type)}")
    media_type = str.__str__(content_type) if content_type else _data_type(url)
    kind = "image" if not media_type or media_type.lower().startswith("image/") else \
        "audio" if media_type.lower().startswith("audio/") else "file"
    if kind == "audio" and not url.lower().startswith("data:"):
        raise ValueError("{{media}} audio must be a data: URL (OpenAI takes audio as data)")
    part = media_part(kind, {"url": url, "mediaType": media_type}, "media")
    if kind == "file" and media_type and "url" in part["file"]:
        part["file"]["filename"] = url.rsplit("/", 1)[-1][:200]
    return SafeString(prompty.place_media(kind, part, _finalize(url)))


def _data_type(url: str) -> str | None:
    if url.lower().startswith("data:") and "," in url:
        return url[5:].split(",", 1)[0].split(";", 1)[0] or None
    return None


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


def _shown(value: Any) -> str:
    if value is None:
        return "nothing"
    kind = "mapping" if isinstance(value, dict) else "list" if isinstance(value, list) \
        else "text" if isinstance(value, str) else type(value).__name__
    return f"a {kind}"


def _equals_helper(negate: bool):
    def helper(args: list[Any], options: Any) -> Any:
        a, b = (list(args) + [None, None])[:2]
        same = a == b
        return options.fn(options.context) if same != negate else \
            options.inverse(options.context)

    return helper


def _nothing(args: list[Any], options: Any) -> Any:
    return ""


@lru_cache(maxsize=256)
def _compiled(body: str, partials: tuple[tuple[str, str], ...]) -> Any:
    from dotpromptz_handlebars import Handlebars

    hb = Handlebars(escape_html=False, strict=True, max_depth=_MAX_NESTING)
    hb.register_template("prompt", body)
    _instrument(hb._templates["prompt"], program=False)  # the parsed body, counted
    for name, helper in (("role", _role_helper), ("history", _history_helper),
                         ("json", _json_helper), ("media", _media_helper),
                         ("section", _nothing), ("log", _nothing),
                         ("ifEquals", _equals_helper(False)),
                         ("unlessEquals", _equals_helper(True))):
        hb.register_helper(name, helper)
    for name, source in partials:
        # Parsed here so that its nodes are counted (the library renders a parsed partial
        # as it is, and parses a text one itself).
        hb.register_partial(name, _instrument(_parse(source), program=True))
    return lambda context: hb.render("prompt", context)


class _Program(list):
    """A partial's nodes: each time it is rendered counts as an iteration."""

    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        budget = render_budget.current()
        if budget is not None:
            budget.tick()
        return list.__iter__(self)


@lru_cache(maxsize=1)
def _counted_text_class() -> type:
    from dotpromptz_handlebars import Text

    stored = Text.__dict__["value"]  # the dataclass's slot

    class CountedText(Text):
        """Literal text of the template, counted against the budget when written."""

        __slots__ = ()

        @property
        def value(self) -> str:
            text = stored.__get__(self, Text)
            budget = render_budget.current()
            if budget is not None:
                budget.add_output(len(text))
                budget.check_time()
            return text

        @value.setter
        def value(self, text: str) -> None:
            stored.__set__(self, text)

    return CountedText


def _instrument(nodes: list, *, program: bool) -> list:
    """``nodes`` (parsed) with literal text counted, and partial bodies as
    :class:`_Program`; changed in place."""
    from dotpromptz_handlebars import Block, PartialBlock, Text
    from dotpromptz_handlebars._types import InlinePartial

    counted = _counted_text_class()
    for i, node in enumerate(nodes):
        if type(node) is Text:
            nodes[i] = counted(node.value)
        elif isinstance(node, Block):
            _instrument(node.body, program=False)
            _instrument(node.inverse, program=False)
        elif isinstance(node, (PartialBlock, InlinePartial)):
            node.body = _instrument(node.body, program=True)
    return _Program(nodes) if program else nodes



def partials_of(front: dict[str, Any]) -> dict[str, str]:
    """The partials a prompt's front matter stores (``template.partials``)."""
    template = front.get("template")
    partials = template.get("partials") if isinstance(template, dict) else None
    if not isinstance(partials, dict):
        return {}
    return {str(k): v for k, v in partials.items() if isinstance(v, str)}


# ---- the engine -------------------------------------------------------------------------

class HandlebarsEngine(TemplateEngine):
    """Renders ``template: {format: handlebars}`` bodies (Dotprompt's template language)."""

    name = "handlebars"

    def check(self, body: str, body_line: int, problems: list[Problem]) -> set[str]:
        """Parse the body; return the top-level variables it reads."""
        try:
            program = _parse(body)
        except (ValueError, RecursionError) as exc:
            problems.append(Problem(f"template syntax error (handlebars): {exc}", body_line))
            return set()
        names: set[str] = set()
        unknown: set[str] = set()
        _walk(program, names, unknown)
        for helper in sorted(unknown):
            if helper.startswith("role "):
                problems.append(Problem(f"template syntax error (handlebars): {{{{{helper}}}}} "
                                        f"names no chat role (roles: "
                                        f"{', '.join(sorted(ROLE_NAMES))})", body_line))
                continue
            problems.append(Problem(f"template syntax error (handlebars): no helper named "
                                    f"'{helper}' (helpers: {', '.join(HELPERS)})", body_line))
        return names - {"history"}

    def render(self, prompt: Prompt, values: dict[str, Any],
               budget: render_budget.Budget) -> str:
        """The body rendered; text before the first role is the user's (as in Dotprompt)."""
        from dotpromptz_handlebars import StrictModeError

        partials = partials_of(prompt.front)
        partials.update(_registry_partials(prompt, partials, budget))
        render = _compiled(prompt.body, tuple(sorted(partials.items())))
        try:
            text = render(_wrap(values))
        except StrictModeError as exc:
            declared = ", ".join(sorted(prompt.inputs)) or "none"
            raise RenderFailed(f"missing variable '{exc.path}' (declared inputs: "
                               f"{declared})", details={
                                   "declared_inputs": sorted(prompt.inputs)}) from None
        budget.expect(len(text), "the rendered output")
        return _implicit_turns(_IMPLICIT_USER + text)


def _registry_partials(prompt: Prompt, embedded: dict[str, str],
                       budget: render_budget.Budget) -> dict[str, str]:
    """The registry parts the body includes, and those they include: reference → body."""
    if not prompt.part_references:
        return {}
    resolve = prompty._includes.get()
    if resolve is None:
        raise RenderFailed(f"the template includes '{prompt.part_references[0]}', a part "
                           "stored in a registry: render it through the registry")
    found: dict[str, str] = {}
    pending = list(prompt.part_references)
    while pending:
        text = pending.pop(0)
        if text in found or text in embedded:
            continue
        budget.tick()
        part = resolve(text)
        if part.engine is not HANDLEBARS:
            raise RenderFailed(f"the included part '{text}' is not a Handlebars template "
                               f"(template format {part.engine.name!r})")
        found[text] = part.body
        for name, source in partials_of(part.front).items():
            embedded.setdefault(name, source)  # what a part carries, for its own body
        pending += part.part_references
    return found


# ---- references to registry parts ------------------------------------------------------

_MAY_INCLUDE = re.compile(r"\{\{~?\s*>")
_PARTIAL_AT = r"\{{\{{~?\s*>\s*[\"']?{}"


def _may_include(body: str) -> bool:
    return _MAY_INCLUDE.search(body) is not None


def _includes(prompt: Prompt, filename: str) -> list[Include]:
    """The partials of the body that name registry prompts (see the module's docstring)."""
    names = _partial_names(prompt.body, tuple(sorted(partials_of(prompt.front))))
    found = []
    for name in names:
        at = re.search(_PARTIAL_AT.format(re.escape(name)), prompt.body)
        line = _line_at(prompt, at.start() if at else 0)
        found.append(reference_of(name, filename, line))
    return found


def _line_at(prompt: Prompt, offset: int) -> int:
    """The file line of ``offset`` in the body."""
    return prompt.body_line + prompt.body.count("\n", 0, offset)


@lru_cache(maxsize=1024)
def _partial_names(body: str, embedded: tuple[str, ...]) -> tuple[str, ...]:
    try:
        nodes = _parse(body)
    except (ValueError, RecursionError):
        return ()  # the prompt's own check reports it
    used: list[str] = []
    inline: set[str] = set(embedded)
    _partials_in(nodes, used, inline)
    return tuple(n for n in dict.fromkeys(used) if n not in inline)


def _partials_in(nodes: list, used: list[str], inline: set[str]) -> None:
    from dotpromptz_handlebars import Block, Partial, PartialBlock
    from dotpromptz_handlebars._types import InlinePartial

    for node in nodes:
        if isinstance(node, Partial):
            # A computed name ({{> (lookup ...)}}) can only be one the prompt carries.
            if not node.name.startswith("(") and node.name != "@partial-block":
                used.append(node.name)
        elif isinstance(node, Block):
            _partials_in(node.body, used, inline)
            _partials_in(node.inverse, used, inline)
        elif isinstance(node, InlinePartial):
            inline.add(node.name)
            _partials_in(node.body, used, inline)
        elif isinstance(node, PartialBlock):  # {{#> name}}fallback{{/name}}: optional
            _partials_in(node.body, used, inline)


# Where Dotprompt makes the text that follows the user's (the start, after a history); the
# turn is dropped when nothing but white space follows before the next role line.
_IMPLICIT_USER = "\x00implicit-user\x00\n"


def _implicit_turns(text: str) -> str:
    parts = text.split(_IMPLICIT_USER)
    out = [parts[0]]
    for part in parts[1:]:
        following = _ROLE_LINE.search(part)
        said = part[:following.start()] if following else part
        out.append("user:\n" + part if said.strip() else part.lstrip("\n"))
    return "".join(out)


def _parse(body: str) -> list:
    """The body's parsed nodes (the parser ``Handlebars.compile`` runs, without a render).

    The package exports the node types (``Block``, ``Mustache``…) but not the parser
    itself, so it is taken from its module.
    """
    from dotpromptz_handlebars._render import compile_template

    return compile_template(body, max_depth=_MAX_NESTING)


def _walk(nodes: list, names: set[str], unknown: set[str]) -> None:
    """Collect the input names ``nodes`` read at the top level, and unknown helpers."""
    from dotpromptz_handlebars import Block, Mustache, Partial, PartialBlock

    for node in nodes:
        if isinstance(node, Mustache):
            _call_names(node.call, names, unknown, block=False)
        elif isinstance(node, Block):
            name = node.call["name"]
            _call_names(node.call, names, unknown, block=True)
            scoped = name in _SCOPED_BLOCKS or (
                name not in HELPERS and name not in ("if", "unless") and not node.call["args"])
            if not scoped:
                _walk(node.body, names, unknown)
            _walk(node.inverse, names, unknown)
        elif isinstance(node, (Partial, PartialBlock)):
            for token in ([node.context_path] if node.context_path else []) + list(
                    node.hash.values()):
                _token_name(token, names)
            if isinstance(node, PartialBlock):
                _walk(node.body, names, unknown)


def _call_names(call: dict, names: set[str], unknown: set[str], *, block: bool) -> None:
    name, args, hashed = call["name"], call["args"], call["hash"]
    if name == "role" and args and args[0][:1] in "\"'" and \
            args[0][1:-1].lower() not in ROLE_NAMES:
        unknown.add(f"role {args[0]}")
    builtin = name in ("if", "unless", "each", "with")
    if not builtin and name not in HELPERS:
        if args or hashed:
            unknown.add(name)
        elif not call.get("literal"):
            _token_name(name, names)
    for token in [*args, *hashed.values()]:
        _token_name(token, names)


def _token_name(token: str, names: set[str]) -> None:
    if not token or token[0] in "\"'@" or token in ("true", "false", "null", "undefined"):
        return
    if token.startswith("("):
        for inner in token[1:-1].split()[1:]:
            _token_name(inner, names)
        return
    if token.lstrip("-").replace(".", "", 1).isdigit():
        return
    first = token.replace("/", ".").split(".")[0].split("[")[0]
    if first and first not in ("this", ".."):
        names.add(first)


HANDLEBARS = HandlebarsEngine()
register_engine(HANDLEBARS, "hbs")
register_includes(HANDLEBARS.name, IncludeReader(_may_include, _includes))
