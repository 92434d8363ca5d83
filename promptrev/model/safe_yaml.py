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
from yaml.constructor import SafeConstructor

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


def inspect(root: yaml.Node, duplicate: DuplicateMessage = _default_duplicate,
            *, shared: bool = True) -> list[Finding]:
    """Everything in ``root`` that cannot be stored and shown safely, in document order.

    ``shared=False`` says the document has no aliases (its text has no ``*``): each node
    is then reached once, and the walk skips the bookkeeping that aliases need.
    """
    findings: list[Finding] = []
    sizes: dict[int, int] = {}  # id(node) -> values it expands to (aliased documents)
    active: set[int] = set()
    node_count = 0

    def walk(node: yaml.Node, path: tuple[str, ...], depth: int) -> int:
        nonlocal node_count
        if shared:
            key = id(node)
            if key in sizes:
                return sizes[key]
            if key in active:
                findings.append(Finding("a YAML alias refers to the value that contains it "
                                        "(a recursive anchor)", _line(node)))
                return 1
            active.add(key)
        node_count += 1
        size = 1
        tag = node.tag
        if tag not in ALLOWED_TAGS:
            findings.append(Finding(f"unsupported YAML tag {tag!r}", _line(node)))
        elif depth > MAX_DEPTH:
            findings.append(Finding(f"values nest more than {MAX_DEPTH} levels deep",
                                    _line(node)))
        elif isinstance(node, yaml.ScalarNode):
            if tag in _CHECKED_SCALARS:
                _check_scalar(node, findings)
            elif tag in _NESTING:
                findings.append(Finding(f"tag {tag.removeprefix(_TAG)!r} on a plain value",
                                        _line(node)))
        elif tag != (_SEQ if isinstance(node, yaml.SequenceNode) else _MAP):
            findings.append(Finding(f"tag {tag.removeprefix(_TAG)!r} on a list or mapping",
                                    _line(node)))
        elif tag == _SEQ:
            for child in node.value:
                size += walk(child, path, depth + 1)
        else:
            seen: dict[str, yaml.Node] = {}
            for key_node, value_node in node.value:
                key_tag = key_node.tag
                if key_tag not in _KEY_TAGS or not isinstance(key_node, yaml.ScalarNode):
                    what = "a list or mapping" if not isinstance(key_node, yaml.ScalarNode) \
                        else f"a {key_tag.removeprefix(_TAG)} value"
                    findings.append(Finding(f"a key must be plain text or a number, not {what}",
                                            _line(key_node)))
                    continue
                if key_tag in _CHECKED_SCALARS:
                    _check_scalar(key_node, findings)
                name = str(key_node.value)
                if key_tag != _MERGE:
                    if name in seen:
                        findings.append(Finding(duplicate(path, name, _line(seen[name])),
                                                _line(key_node)))
                    else:
                        seen[name] = key_node
                if isinstance(value_node, yaml.ScalarNode):
                    size += walk(value_node, path, depth + 1)  # no path needed
                else:
                    size += walk(value_node, path + (name,), depth + 1)
        if shared:
            active.discard(key)
            sizes[key] = size
        return size

    total = walk(root, (), 0)
    if total > MAX_VALUES and total > node_count:
        findings.append(Finding(f"YAML aliases expand this document to {total:,} values, more "
                                f"than the {MAX_VALUES:,} allowed", _line(root)))
    return findings


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


_SEQ, _MAP, _MERGE, _STR = _TAG + "seq", _TAG + "map", _TAG + "merge", _TAG + "str"
_SPECIAL_KEYS = frozenset({_MERGE, _TAG + "value"})  # keys the constructor rewrites
_NESTING = frozenset({_SEQ, _MAP})
_CHECKED_SCALARS = frozenset(_TAG + t for t in ("int", "float", "bool", "timestamp"))


_PLAIN_INT = re.compile(r"[-+]?[0-9]{1,18}")
_PLAIN_FLOAT = re.compile(r"[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]{1,2})?")


def _check_scalar(node: yaml.ScalarNode, findings: list[Finding]) -> None:
    """Numbers JSON and Python can print; booleans and timestamps that parse."""
    tag, text = node.tag, node.value
    if tag == _TAG + "int" and _PLAIN_INT.fullmatch(text):
        return  # the common case, decided without building a constructor
    if tag == _TAG + "float" and _PLAIN_FLOAT.fullmatch(text):
        return
    if tag == _TAG + "bool" and text.lower() in yaml.SafeLoader.bool_values:
        return
    what = tag.removeprefix(_TAG)
    if tag == _TAG + "int" and len(_DIGITS.findall(text)) > 24:  # int() refuses 4,300
        findings.append(Finding(f"integer {text[:20]}… is too large (at most {MAX_INT_BITS} "
                                "bits)", _line(node)))
        return
    try:
        value = yaml.SafeLoader("").construct_object(node)
    except (ValueError, LookupError, TypeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        findings.append(Finding(f"{text[:40]!r} is not a valid {what} ({reason})",
                                _line(node)))
        return
    if tag == _TAG + "int" and abs(value).bit_length() > MAX_INT_BITS:
        findings.append(Finding(f"integer {text} is too large (at most {MAX_INT_BITS} bits)",
                                _line(node)))
    elif tag == _TAG + "float" and not math.isfinite(value):
        findings.append(Finding(f"number {text!r} is not finite", _line(node)))


class _JsonShapedConstructor(SafeConstructor):
    """The safe constructor, with timestamps kept as the text written (JSON has no dates).

    A constructor alone: building values from nodes needs no reader, scanner or resolver.
    """


_JsonShapedConstructor.add_constructor(_TAG + "timestamp",
                                       lambda loader, node: loader.construct_scalar(node))


def construct(node: yaml.Node | None) -> Any:
    """The Python value of an inspected node: only str, int, float, bool, None, list, dict.

    Text, lists and mappings are built directly (most of a front matter); numbers,
    booleans, null and dates by the constructor. A document with merge keys, or anything
    else unusual, is left to the constructor whole.
    """
    if node is None:
        return None
    try:
        return _Direct().build(node)
    except _Unusual:
        return _JsonShapedConstructor().construct_document(node)


class _Unusual(Exception):
    """A node the direct build leaves to the constructor."""


class _Direct:
    """Builds what the constructor would, for plain documents, without its generators."""

    def __init__(self) -> None:
        self.built: dict[int, Any] = {}  # id(node) -> value: an alias gives the same object
        self.scalars: _JsonShapedConstructor | None = None

    def build(self, node: yaml.Node) -> Any:
        key = id(node)
        if key in self.built:
            if self.built[key] is _Unusual:  # still being built: a cycle
                raise _Unusual
            return self.built[key]
        tag = node.tag
        if isinstance(node, yaml.ScalarNode):
            if tag == _STR:
                value = node.value
            else:
                if self.scalars is None:
                    self.scalars = _JsonShapedConstructor()
                value = self.scalars.construct_object(node)
        elif tag == _SEQ and isinstance(node, yaml.SequenceNode):
            self.built[key] = _Unusual
            value = [self.build(child) for child in node.value]
        elif tag == _MAP and isinstance(node, yaml.MappingNode):
            self.built[key] = _Unusual
            value = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag in _SPECIAL_KEYS:
                    raise _Unusual
                value[self.build(key_node)] = self.build(value_node)
        else:
            raise _Unusual
        self.built[key] = value
        return value


class _Loader(LOADER):  # type: ignore[misc, valid-type]
    """:data:`LOADER`, answering the resolver's commonest questions without its loop.

    The resolver tries the implicit patterns (numbers, booleans, null…) registered for a
    plain value's first character; a value starting with any other character, a quoted
    value, a list and a mapping get the default tags, which is what it would answer.
    """

    _FIRST = frozenset(k for k in LOADER.yaml_implicit_resolvers if k)
    _DIRECT = not LOADER.yaml_path_resolvers and None not in LOADER.yaml_implicit_resolvers \
        and "" in LOADER.yaml_implicit_resolvers

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        """The tag of a node without an explicit one."""
        if self._DIRECT:
            if kind is yaml.ScalarNode:
                if not implicit[0] or (value and value[0] not in self._FIRST):
                    return self.DEFAULT_SCALAR_TAG
            elif kind is yaml.MappingNode:
                return self.DEFAULT_MAPPING_TAG
            elif kind is yaml.SequenceNode:
                return self.DEFAULT_SEQUENCE_TAG
        return super().resolve(kind, value, implicit)


def compose(text: str) -> yaml.Node | None:
    """Compose ``text`` to nodes (raises ``yaml.YAMLError``)."""
    return yaml.compose(text, Loader=_Loader)


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
    findings = inspect(node, shared="*" in text)
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
