"""``template: {format: {kind: mustache}}``: Mustache bodies, rendered by chevron.

Held to promptrev's rules like the Jinja2 engine:

- a variable's value never starts a message: every value is handed to chevron as a
  placeholder (:data:`prompty._slots`), and the text is put back after the split;
  values are not HTML-escaped (a prompt is not HTML);
- a plain ``{{name}}`` outside any section whose variable is missing is an error naming
  it (as StrictUndefined does); a missing section or inverted-section name is false, as
  in Mustache;
- partials (``{{>name}}``) are refused: they would read files; a name segment that
  starts with ``_`` is refused, so no tag can reach a value's internals;
- a name is looked up in the input's mappings and lists only: chevron falls back on
  ``getattr``, which would print a method (``{{text.upper}}``, an address in its repr) or
  call one (``{{#text.format}}``), and would let a list item's method shadow an input
  (``{{#items}}{{count}}{{/items}}``); every value handed to chevron refuses that, and
  inside an inverted section (where chevron pushes a bool) the names of a bool's
  attributes (``real``, ``to_bytes``…) are refused when the prompt is checked;
- the render runs under the render budget: every item of a section's list counts as an
  iteration (and the clock is checked), and every literal text is counted as it is
  written, so a section repeated many times stops at ``max_chars`` instead of filling
  memory until the clock runs out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import chevron
import jinja2
from chevron.tokenizer import tokenize

from . import render_budget
from .prompty import (
    _SLOT,
    ROLES,
    Problem,
    Prompt,
    TemplateEngine,
    _nonce,
    _slots,
    register_engine,
)

_VALUE_TAGS = ("variable", "no escape")
_SECTION_TAGS = ("section", "inverted section")
# Inside ``{{^name}}`` chevron looks names up in the bool it pushed (``not value``) before
# the inputs, through getattr: these names would read the bool (``{{to_bytes}}`` prints a
# method with its address), so they are refused there.
_BOOL_NAMES = frozenset(n for n in dir(True) if not n.startswith("_"))


class MustacheEngine(TemplateEngine):
    """Mustache (``{{name}}``, ``{{#section}}``, ``{{^inverted}}``) through chevron."""

    name = "mustache"

    def check(self, body: str, body_line: int, problems: list[Problem]) -> set[str]:
        """Mustache syntax problems; the names read outside any section."""
        tokens = _tokens(body, body_line, problems)
        names: set[str] = set()
        open_sections: list[str] = []
        for tag, key in tokens:
            if tag == "partial":
                problems.append(Problem(f"mustache partials ({{{{>{key}}}}}) are not "
                                        "supported: a prompt is one file", body_line))
            elif tag in _VALUE_TAGS + _SECTION_TAGS and any(
                    part.startswith("_") for part in key.split(".")):
                problems.append(Problem(f"mustache tag '{key}': a name may not start with "
                                        "'_'", body_line))
            elif tag in _VALUE_TAGS + _SECTION_TAGS and "inverted section" in open_sections \
                    and key.split(".")[0] in _BOOL_NAMES:
                problems.append(Problem(
                    f"mustache tag '{key}' inside an inverted section ({{{{^…}}}}): there "
                    f"'{key.split('.')[0]}' is read from the section's true/false value "
                    "(chevron's lookup), not from the inputs: rename the input", body_line))
            elif tag in _VALUE_TAGS + _SECTION_TAGS and not open_sections and key != ".":
                names.add(key.split(".")[0])
            if tag in _SECTION_TAGS:
                open_sections.append(tag)
            elif tag == "end" and open_sections:
                open_sections.pop()
        return names

    def render(self, prompt: Prompt, values: dict[str, Any],
               budget: render_budget.Budget) -> str:
        """The body rendered by chevron, every value a placeholder until the split."""
        tokens = [(tag, _Literal(key) if tag == "literal" else key)
                  for tag, key in tokenize(prompt.body)]
        _require_plain_variables(tokens, values)
        slots = _slots.get()
        data = {str(k): _data(v, slots, budget) for k, v in values.items()}
        text = chevron.render(template=tokens, data=data, partials_path=None,
                              partials_dict={}, warn=False)
        budget.expect(len(text), "the rendered output")
        if slots is not None:
            for match in _SLOT.finditer(text):
                budget.add_output(len(slots[int(match.group(1))]))
        return text


def _tokens(body: str, body_line: int, problems: list[Problem]) -> list[tuple[str, str]]:
    try:
        return list(tokenize(body))
    except chevron.ChevronError as exc:
        problems.append(Problem(f"mustache syntax error: {exc}", body_line))
    return []


def _require_plain_variables(tokens: list[tuple[str, str]], values: dict[str, Any]) -> None:
    """A ``{{name}}`` outside sections whose variable is missing is an error naming it."""
    depth = 0
    for tag, key in tokens:
        if tag in _SECTION_TAGS:
            depth += 1
        elif tag == "end":
            depth -= 1
        elif tag in _VALUE_TAGS and depth == 0 and key != "." and \
                key.split(".")[0] not in values:
            raise jinja2.UndefinedError(f"'{key.split('.')[0]}' is undefined")


class _Literal(str):
    """A literal text of the body: chevron writes it with ``key.replace(...)``, which
    counts it against the render budget (size and clock) each time it is written."""

    __slots__ = ()

    def replace(self, old: Any, new: Any, count: Any = -1) -> str:  # type: ignore[override]
        budget = render_budget.current()
        if budget is not None:
            budget.add_output(len(self))
            budget.check_time()
        return str.replace(self, old, new, count)


def _no_attribute(key: Any) -> None:
    """chevron tries ``value[name]`` before ``getattr(value, name)``: a KeyError makes it
    go on to the enclosing scope, never to the value's attributes."""
    raise KeyError(key)


class _Text(str):
    """A text value (a placeholder): no methods reachable by name."""

    __slots__ = ()

    def __getitem__(self, key: Any) -> Any:
        _no_attribute(key)


class _Scalar(int):
    """0, True or False as chevron sees them (falsy as Mustache wants, printed as
    Python prints them), without their methods reachable by name."""

    def __getitem__(self, key: Any) -> Any:
        _no_attribute(key)

    def __str__(self) -> str:
        return self.shown

    __repr__ = __str__

    @classmethod
    def of(cls, value: int) -> _Scalar:
        made = cls(value)
        made.shown = str(value)
        return made


class _Items(list):
    """A section's list: each item drawn counts against the render budget; ``{{list.0}}``
    is its first item, and no other name reaches it."""

    def __iter__(self) -> Iterator[Any]:
        budget = render_budget.current()
        for item in super().__iter__():
            if budget is not None:
                budget.tick()
            yield item

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            if not key.isdigit():
                _no_attribute(key)
            key = int(key)
        return super().__getitem__(key)


def _data(value: Any, slots: list[str] | None, budget: render_budget.Budget) -> Any:
    """``value`` as chevron's data: containers copied, each text a placeholder (the clock
    is checked at every value: a list of millions of values takes seconds to copy)."""
    budget.check_time()
    if isinstance(value, dict):
        return {str(k): _data(v, slots, budget) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return _Items(_data(v, slots, budget) for v in value)
    if value is None:
        return value
    if isinstance(value, bool) or value == 0 and isinstance(value, int):
        return _Scalar.of(value)
    text = value if isinstance(value, str) else str(budget.check_size(value))
    budget.check_size(text)
    if slots is None or not text or text.strip().lower() in ROLES:
        return _Text(text)
    slots.append(text)
    return _Text(f"\x00{_nonce}{len(slots) - 1}\x00")


register_engine(MustacheEngine())
