"""YAML that can be stored, shown and run: bounded, acyclic, JSON-shaped.

``yaml.safe_load`` refuses Python objects but not everything that breaks a registry later:

- **alias bombs**: nine aliases of nine aliases… compose to a few nodes but expand to
  millions of values wherever the document is walked, dumped or sent as JSON;
- **cycles**: ``a: &x [*x]`` composes into a node that contains itself;
- **values JSON cannot carry**: a 5,000-digit integer (Python refuses to print it), a
  list or mapping used as a key, ``.inf`` and ``.nan``, ``!!binary`` and ``!!set``.

:func:`inspect` walks the composed nodes once (each shared node once), reports each of
these with its line, and also reports keys that appear twice. :func:`load` composes,
inspects and builds the Python value, or raises :class:`ValidationFailed`. Every YAML
file promptrev stores (prompt front matter, evaluation specs, adapter cards, labels) is
read through here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from promptrev.errors import ValidationFailed

# libyaml's parser when present (about 2x faster; same nodes and line marks).
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_VALUES = 100_000  # values a document may expand to through aliases
MAX_DEPTH = 100  # nesting of lists and mappings
MAX_INT_BITS = 64

_TAG = "tag:yaml.org,2002:"
# Tags whose values JSON can carry (timestamps are kept as text).
ALLOWED_TAGS = frozenset(_TAG + t for t in (
    "str", "int", "float", "bool", "null", "seq", "map", "timestamp", "merge"))
_KEY_TAGS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "null", "merge"))
_DIGITS = re.compile(r"[0-9a-fA-F]")


@dataclass(frozen=True)
class Finding:
    """One problem in a YAML document, with its 1-based line in the document."""

    message: str
    line: int


DuplicateMessage = Callable[[tuple[str, ...], str, int], str]


def _default_duplicate(path: tuple[str, ...], key: str, first: int) -> str:
    return f"key '{'.'.join(path + (key,))}' appears twice (first at line {first})"


def inspect(root: yaml.Node, duplicate: DuplicateMessage = _default_duplicate
            ) -> list[Finding]:
    """Everything in ``root`` that cannot be stored and shown safely, in document order."""
    findings: list[Finding] = []
    sizes: dict[int, int] = {}  # id(node) -> values it expands to
    active: set[int] = set()
    node_count = 0

    def line(node: yaml.Node) -> int:
        return node.start_mark.line + 1

    def walk(node: yaml.Node, path: tuple[str, ...], depth: int) -> int:
        nonlocal node_count
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            findings.append(Finding("a YAML alias refers to the value that contains it "
                                    "(a recursive anchor)", line(node)))
            return 1
        node_count += 1
        if depth > MAX_DEPTH:
            findings.append(Finding(f"values nest more than {MAX_DEPTH} levels deep",
                                    line(node)))
            sizes[key] = 1
            return 1
        if node.tag not in ALLOWED_TAGS:
            findings.append(Finding(f"unsupported YAML tag {node.tag!r}", line(node)))
            sizes[key] = 1
            return 1
        active.add(key)
        size = 1
        if isinstance(node, yaml.ScalarNode):
            _check_scalar(node, findings)
        elif isinstance(node, yaml.SequenceNode):
            for child in node.value:
                size += walk(child, path, depth + 1)
        elif isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _KEY_TAGS:
                    what = "a list or mapping" if not isinstance(key_node, yaml.ScalarNode) \
                        else f"a {key_node.tag.removeprefix(_TAG)} value"
                    findings.append(Finding(f"a key must be plain text or a number, not {what}",
                                            line(key_node)))
                    continue
                _check_scalar(key_node, findings)
                name = str(key_node.value)
                if key_node.tag != _TAG + "merge":
                    if name in seen:
                        findings.append(Finding(duplicate(path, name, seen[name]),
                                                line(key_node)))
                    else:
                        seen[name] = line(key_node)
                size += walk(value_node, path + (name,), depth + 1)
        active.discard(key)
        sizes[key] = size
        return size

    total = walk(root, (), 0)
    if total > MAX_VALUES and total > node_count:
        findings.append(Finding(f"YAML aliases expand this document to {total:,} values, more "
                                f"than the {MAX_VALUES:,} allowed", line(root)))
    return findings


def _check_scalar(node: yaml.ScalarNode, findings: list[Finding]) -> None:
    """Numbers JSON and Python can print; timestamps that parse."""
    if node.tag == _TAG + "int":
        if len(_DIGITS.findall(node.value)) > 24:  # before int() refuses 4,300 digits
            findings.append(Finding(f"integer {node.value[:20]}… is too large (at most "
                                    f"{MAX_INT_BITS} bits)", node.start_mark.line + 1))
            return
        try:
            value = yaml.SafeLoader("").construct_object(node)
        except (ValueError, yaml.YAMLError):
            value = 0
        if abs(value).bit_length() > MAX_INT_BITS:
            findings.append(Finding(f"integer {node.value} is too large (at most "
                                    f"{MAX_INT_BITS} bits)", node.start_mark.line + 1))
    elif node.tag == _TAG + "float":
        try:
            value = yaml.SafeLoader("").construct_object(node)
        except (ValueError, yaml.YAMLError):
            return
        if not math.isfinite(value):
            findings.append(Finding(f"number {node.value!r} is not finite",
                                    node.start_mark.line + 1))
    elif node.tag == _TAG + "timestamp":
        try:
            yaml.SafeLoader("").construct_object(node)
        except (ValueError, yaml.YAMLError) as exc:
            findings.append(Finding(f"bad date: {exc}", node.start_mark.line + 1))


class _JsonShapedLoader(yaml.SafeLoader):
    """The safe constructor, with timestamps kept as the text written (JSON has no dates)."""


_JsonShapedLoader.add_constructor(_TAG + "timestamp",
                                  lambda loader, node: loader.construct_scalar(node))


def construct(node: yaml.Node | None) -> Any:
    """The Python value of an inspected node: only str, int, float, bool, None, list, dict."""
    return _JsonShapedLoader("").construct_document(node) if node is not None else None


def compose(text: str) -> yaml.Node | None:
    """Compose ``text`` to nodes (raises ``yaml.YAMLError``)."""
    return yaml.compose(text, Loader=LOADER)


def load(text: str, filename: str, *, line_offset: int = 0) -> Any:
    """Parse one YAML document; raise :class:`ValidationFailed` naming file, line, problem."""
    try:
        node = compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 + line_offset if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _failed(filename, [Finding(f"invalid YAML: {problem}", line or 0)]) from None
    except RecursionError:
        raise _failed(filename, [Finding("invalid YAML: nested too deeply", 0)]) from None
    if node is None:
        return None
    findings = inspect(node)
    if findings:
        raise _failed(filename, [Finding(f.message, f.line + line_offset) for f in findings])
    return construct(node)


def _failed(filename: str, findings: list[Finding]) -> ValidationFailed:
    first = findings[0]
    where = f"{filename}, line {first.line}" if first.line else filename
    more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
    return ValidationFailed(f"{where}: {first.message}{more}", [
        {"file": filename, "line": f.line or None, "severity": "error", "message": f.message}
        for f in findings])
