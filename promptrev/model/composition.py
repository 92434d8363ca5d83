"""Shared parts: the references a prompt's body makes to other prompts.

A prompt includes another prompt's body with Jinja2's own statement,
``{% include "shared/tone@3" %}``: pinned to a version (``@3``), to a label
(``@production``), to the version current at a commit (``@3f2a9c1``), or floating
(``shared/tone``, the latest). ``{% import %}``, ``{% from … import %}`` and
``{% extends %}`` name parts the same way. The name inside the quotes is a prompt
reference (:mod:`.references`); it must be a constant string, so the registry can know
every part a prompt uses without rendering it.

A Handlebars body (Dotprompt's) includes a part with a partial, ``{{> shared/tone}}`` or
``{{> "shared/tone@3"}}`` (quoted: ``@`` is no Handlebars name character): a partial the
prompt does not carry itself (``template.partials``, ``{{#*inline}}``) names a registry
prompt. How a body names its parts depends on its template engine: each engine that can
include registers its reader with :func:`register_includes` (Jinja2's is here, reading
``nodes.Include`` and its kin with Jinja2's parser; Handlebars' is in :mod:`.handlebars`).
The registry resolves the references (``promptrev.composition``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jinja2
from jinja2 import nodes

from promptrev.errors import InvalidReference, ValidationFailed

from .references import Reference, parse_reference

# The statements that load another template, and the words that must appear for a body
# to hold one (most bodies hold none, and are never parsed here).
_LOADING = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)
_WORDS = ("include", "import", "extends")
_PARSER = jinja2.Environment()  # parsing only: the default syntax the sandbox renders


@dataclass(frozen=True)
class Include:
    """One reference to a part, as written in the body, and where."""

    text: str  # as written: "shared/tone@3"
    reference: Reference
    line: int  # in the file

    @property
    def name(self) -> str:
        """The part's name."""
        return self.reference.name

    @property
    def selector(self) -> str | None:
        """``3``, ``production``, a commit prefix, or None (floating)."""
        return self.reference.selector

    @property
    def pinned(self) -> bool:
        """Whether it names one version for good (a number or a commit)."""
        return self.reference.number is not None or (
            self.selector is not None and not self.reference.may_be_label)

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict."""
        return {"ref": self.text, "name": self.name, "selector": self.selector,
                "line": self.line}


@dataclass(frozen=True)
class IncludeReader:
    """How one template engine's bodies name their parts.

    ``may`` is a cheap test (no parse) that a text can hold a reference at all; ``read``
    returns the references of a parsed prompt's body, raising :class:`ValidationFailed`
    for one that cannot be checked (a computed name).
    """

    may: Callable[[str], bool]
    read: Callable[..., list[Include]]  # (prompt, filename) -> includes


READERS: dict[str, IncludeReader] = {}


def register_includes(engine: str, reader: IncludeReader) -> None:
    """Make prompts of template engine ``engine`` name their parts as ``reader`` reads."""
    READERS[engine] = reader


def may_include(body: str) -> bool:
    """Whether a text can hold a reference at all, in any engine (cheap: no parse)."""
    return any(reader.may(body) for reader in READERS.values())


def _jinja_may_include(body: str) -> bool:
    return "{%" in body and any(word in body for word in _WORDS)


def reference_of(text: str, filename: str, line: int) -> Include:
    """One reference as written at ``line``; :class:`ValidationFailed` if it is none."""
    try:
        reference = parse_reference(text, "prompt")
    except InvalidReference as exc:
        raise ValidationFailed(f"{filename}, line {line}: {exc.message}", [
            {"file": filename, "line": line, "message": exc.message}]) from None
    return Include(text, reference, line)


def body_includes(body: str, body_line: int = 1, filename: str = "<prompt>") -> list[Include]:
    """The references of a Jinja2 body, in order; :class:`ValidationFailed` names a
    reference that is not a constant prompt reference, with its line."""
    if not _jinja_may_include(body):
        return []
    try:
        ast = _PARSER.parse(body)
    except (jinja2.TemplateSyntaxError, RecursionError):
        return []  # the prompt's own validation reports it
    found = []
    for node in ast.find_all(_LOADING):
        line = body_line + node.lineno - 1
        target = node.template
        if not isinstance(target, nodes.Const) or not isinstance(target.value, str):
            raise ValidationFailed(
                f"{filename}, line {line}: an include must name its part in quotes, such "
                "as {% include \"shared/tone@3\" %} (a computed name cannot be checked)",
                [{"file": filename, "line": line, "message": "include of a computed name"}])
        found.append(reference_of(target.value, filename, line))
    return found


def _jinja_includes(prompt, filename: str) -> list[Include]:
    return body_includes(prompt.body, prompt.body_line, filename)


register_includes("jinja2", IncludeReader(_jinja_may_include, _jinja_includes))


def includes_of(prompt, filename: str = "<prompt>") -> list[Include]:
    """The references of a parsed prompt, read as its engine writes them (none for an
    engine that cannot include)."""
    reader = READERS.get(prompt.engine.name)
    if reader is None or not reader.may(prompt.body):
        return []
    return reader.read(prompt, filename)


def text_includes(text: str, filename: str = "<prompt>") -> list[Include]:
    """The references of a stored prompt text; [] for one that does not parse (storage
    never holds one: every route that stores a prompt validated it)."""
    if not may_include(text):
        return []
    from .prompty import parse_prompt

    try:
        return includes_of(parse_prompt(text, filename), filename)
    except ValidationFailed:
        return []
