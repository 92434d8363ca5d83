"""Shared parts: the references a prompt's body makes to other prompts.

A prompt includes another prompt's body with Jinja2's own statement,
``{% include "shared/tone@3" %}``: pinned to a version (``@3``), to a label
(``@production``), to the version current at a commit (``@3f2a9c1``), or floating
(``shared/tone``, the latest). ``{% import %}``, ``{% from … import %}`` and
``{% extends %}`` name parts the same way. The name inside the quotes is a prompt
reference (:mod:`.references`); it must be a constant string, so the registry can know
every part a prompt uses without rendering it.

This module reads the references out of a text with Jinja2's parser (``nodes.Include``
and its kin); the registry resolves them (``promptrev.composition``).
"""

from __future__ import annotations

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


def may_include(body: str) -> bool:
    """Whether a body can hold a reference at all (cheap: no parse)."""
    return "{%" in body and any(word in body for word in _WORDS)


def body_includes(body: str, body_line: int = 1, filename: str = "<prompt>") -> list[Include]:
    """The references of a Jinja2 body, in order; :class:`ValidationFailed` names a
    reference that is not a constant prompt reference, with its line."""
    if not may_include(body):
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
        try:
            reference = parse_reference(target.value, "prompt")
        except InvalidReference as exc:
            raise ValidationFailed(f"{filename}, line {line}: {exc.message}", [
                {"file": filename, "line": line, "message": exc.message}]) from None
        found.append(Include(target.value, reference, line))
    return found


def includes_of(prompt) -> list[Include]:
    """The references of a parsed prompt (none for a body that is not Jinja2)."""
    from .prompty import JINJA2

    if prompt.engine is not JINJA2:
        return []
    return body_includes(prompt.body, prompt.body_line)


def text_includes(text: str, filename: str = "<prompt>") -> list[Include]:
    """The references of a stored prompt text; [] for one that does not parse (storage
    never holds one: every route that stores a prompt validated it)."""
    if not may_include(text):
        return []
    from .prompty import JINJA2, parse_prompt

    try:
        prompt = parse_prompt(text, filename)
    except ValidationFailed:
        return []
    if prompt.engine is not JINJA2:
        return []
    try:
        return body_includes(prompt.body, prompt.body_line, filename)
    except ValidationFailed:
        return []
