"""Diffs a reviewer reads: text, front-matter fields, rendered messages, dataset cases.

The text diff comes as a unified diff and as rows a web page can draw side by side, each
side split into segments flagged changed/unchanged at word level.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from promptrev.errors import PromptrevError, ValidationFailed

from .prompty import Prompt, outputs_by_name, parse_prompt

CONTEXT = 3  # unchanged lines shown on each side of a change; longer runs are folded
_WORD = re.compile(r"\d+(?:\.\d+)+|\w+|\s+|[^\w\s]")


@dataclass(frozen=True)
class Segment:
    """A run of text on one side of a row; ``changed`` marks word-level differences."""

    text: str
    changed: bool


@dataclass(frozen=True)
class Row:
    """One side-by-side row: equal, insert, delete or replace."""

    op: str
    left_no: int | None
    right_no: int | None
    left: list[Segment]
    right: list[Segment]


@dataclass(frozen=True)
class FieldChange:
    """One changed front-matter field; ``contract`` flags input/output changes.

    A contract change is one whole input or output (``inputs.tone``): ``before`` and
    ``after`` hold its name, type, default and description, ``breaking`` whether callers
    written for the old version may fail, and ``why`` says why in a sentence.
    """

    path: str
    change: str
    old: Any = None
    new: Any = None
    contract: bool = False
    breaking: bool | None = None
    why: str = ""
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None

    def describe(self) -> str:
        """Human summary, e.g. ``model.parameters.temperature: 0.7 → 0.2``."""
        if self.contract and self.breaking is not None:
            return self._describe_contract()
        if self.change == "added":
            return f"{self.path}: added ({_short(self.new)})"
        if self.change == "removed":
            return f"{self.path}: removed (was {_short(self.old)})"
        return f"{self.path}: {_short(self.old)} → {_short(self.new)}"

    def _describe_contract(self) -> str:
        spec = _spec_summary(self.after if self.change == "added" else self.before)
        if self.change == "changed":
            spec = f"{_spec_summary(self.before)} → {_spec_summary(self.after)}"
        verdict = "breaking" if self.breaking else "not breaking"
        return f"{self.path}: {self.change} ({spec}); {verdict}: {self.why}"


@dataclass(frozen=True)
class Block:
    """Consecutive side-by-side rows; ``folded`` runs of unchanged lines start collapsed."""

    folded: bool
    rows: list[Row]


@dataclass
class TextDiff:
    """Unified diff plus side-by-side rows."""

    unified: str
    rows: list[Row]
    added: int
    removed: int

    def blocks(self, context: int = CONTEXT) -> list[Block]:
        """The rows with unchanged runs beyond ``context`` lines of a change folded."""
        return fold_rows(self.rows, context)


@dataclass
class RenderedDiff:
    """Both versions rendered with the same variables; messages compared in order."""

    variables: dict[str, Any]
    left: list[dict[str, str]] | None
    right: list[dict[str, str]] | None
    left_error: str | None = None
    right_error: str | None = None
    unified: str = ""

    def pairs(self) -> list[MessagePair]:
        """The messages side by side, in order, with word-level changes marked."""
        lm, rm = self.left or [], self.right or []
        out = []
        for i in range(max(len(lm), len(rm))):
            a = lm[i] if i < len(lm) else None
            b = rm[i] if i < len(rm) else None
            if a is None or b is None or a == b:
                out.append(MessagePair("equal" if a == b else "insert" if a is None else "delete",
                                       a and a["role"], b and b["role"],
                                       [Segment(a["content"], False)] if a else [],
                                       [Segment(b["content"], False)] if b else []))
            else:
                ls, rs = _word_segments(a["content"], b["content"])
                out.append(MessagePair("replace", a["role"], b["role"], ls, rs))
        return out


@dataclass(frozen=True)
class MessagePair:
    """Message ``i`` of both renderings; segments mark changed words like the text diff."""

    op: str
    left_role: str | None
    right_role: str | None
    left: list[Segment]
    right: list[Segment]


@dataclass
class Diff:
    """Everything a reviewer sees between two versions."""

    left: str
    right: str
    text: TextDiff
    fields: list[FieldChange] = field(default_factory=list)
    rendered: RenderedDiff | None = None
    cases: list[dict[str, Any]] = field(default_factory=list)
    weights: list[dict[str, Any]] = field(default_factory=list)  # adapters: per-module change
    # a shared part: the prompts that include it, each rendered before and after
    impact: list[dict[str, Any]] = field(default_factory=list)

    @property
    def contract_changes(self) -> list[FieldChange]:
        """Changes to declared inputs or outputs (called out on top in reviews)."""
        return [f for f in self.fields if f.contract]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        out = asdict(self)
        out["contract_changes"] = [asdict(f) for f in self.contract_changes]
        return out


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


# Items (lines, words, messages) on both sides past which difflib's matcher hands over to
# Git's diff (libgit2's xdiff, in C, with its cost limits): difflib is quadratic on
# repeated or pairwise-swapped lines, so a few thousand lines of "x" held a worker for
# minutes, and a viewer could send them as a diff's variables.
EXACT_DIFF_ITEMS = 2000
# Hunks ``(old_start, old_lines, new_start, new_lines)`` of two texts of one item a line,
# as Git numbers them. The model imports no Git library: storage registers libgit2's
# (storage/gitstore.py, ``use_line_diff``).
LineDiff = Callable[[bytes, bytes], Iterable[tuple[int, int, int, int]]]
_line_diff: LineDiff | None = None


def use_line_diff(diff: LineDiff) -> None:
    """Register the near-linear line diff :func:`opcodes` uses on large sides."""
    global _line_diff
    _line_diff = diff


def opcodes(a: Sequence[Any], b: Sequence[Any]) -> list[tuple[str, int, int, int, int]]:
    """``difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()`` for hashable
    items, in time that stays near linear however large or repetitive the sides are.

    Without a registered line diff (the model used alone), large sides fall back to
    difflib with its "popular items are junk" heuristic: fast, but coarser.
    """
    if len(a) + len(b) <= EXACT_DIFF_ITEMS:
        return difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    if _line_diff is None:
        return difflib.SequenceMatcher(None, a, b, autojunk=True).get_opcodes()
    ids: dict[Any, int] = {}
    old = b"".join(b"%d\n" % ids.setdefault(x, len(ids)) for x in a)
    new = b"".join(b"%d\n" % ids.setdefault(x, len(ids)) for x in b)
    ops: list[tuple[str, int, int, int, int]] = []
    i = j = 0
    for old_start, old_lines, new_start, new_lines in _line_diff(old, new):
        i1 = old_start - 1 if old_lines else old_start
        j1 = new_start - 1 if new_lines else new_start
        if i1 > i:
            ops.append(("equal", i, i1, j, j1))
        i2, j2 = i1 + old_lines, j1 + new_lines
        ops.append(("replace" if old_lines and new_lines
                    else "delete" if old_lines else "insert", i1, i2, j1, j2))
        i, j = i2, j2
    if i < len(a) or j < len(b):
        ops.append(("equal", i, len(a), j, len(b)))
    return ops


def _unified(a: list[str], b: list[str], old_name: str, new_name: str) -> str:
    """``difflib.unified_diff`` (3 lines of context, no line ends) over :func:`opcodes`."""
    if len(a) + len(b) <= EXACT_DIFF_ITEMS:
        return "\n".join(difflib.unified_diff(a, b, old_name, new_name, lineterm=""))
    matcher = difflib.SequenceMatcher(None, [], [])
    matcher.opcodes = opcodes(a, b)  # what get_grouped_opcodes reads
    out: list[str] = []
    for group in matcher.get_grouped_opcodes(3):
        if not out:
            out += [f"--- {old_name}", f"+++ {new_name}"]
        first, last = group[0], group[-1]
        out.append(f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out += [" " + line for line in a[i1:i2]]
                continue
            out += ["-" + line for line in a[i1:i2]]
            out += ["+" + line for line in b[j1:j2]]
    return "\n".join(out)


def _range(start: int, stop: int) -> str:
    """A unified diff's ``start,length`` (as difflib writes it)."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start if not length else start + 1},{length}"


def text_diff(old: str, new: str, old_name: str = "a", new_name: str = "b") -> TextDiff:
    """Line diff with word-level segments for replaced lines."""
    a, b = old.splitlines(), new.splitlines()
    unified = _unified(a, b, old_name, new_name)
    rows: list[Row] = []
    added = removed = 0
    for op, i1, i2, j1, j2 in opcodes(a, b):
        if op == "equal":
            rows += [Row("equal", i1 + k + 1, j1 + k + 1, [Segment(a[i1 + k], False)],
                         [Segment(b[j1 + k], False)]) for k in range(i2 - i1)]
            continue
        removed += i2 - i1
        added += j2 - j1
        for k in range(max(i2 - i1, j2 - j1)):
            left = a[i1 + k] if i1 + k < i2 else None
            right = b[j1 + k] if j1 + k < j2 else None
            if left is not None and right is not None:
                ls, rs = _word_segments(left, right)
                rows.append(Row("replace", i1 + k + 1, j1 + k + 1, ls, rs))
            elif left is not None:
                rows.append(Row("delete", i1 + k + 1, None, [Segment(left, True)], []))
            else:
                rows.append(Row("insert", None, j1 + k + 1, [], [Segment(right, True)]))
    return TextDiff(unified, rows, added, removed)


def fold_rows(rows: list[Row], context: int = CONTEXT) -> list[Block]:
    """Split ``rows`` into blocks, folding each unchanged run longer than its context.

    A run keeps ``context`` lines next to each change it touches; folding a single line
    would hide nothing worth a click, so runs only fold when two or more lines would go.
    """
    blocks: list[Block] = []
    start = 0
    while start < len(rows):
        end = start
        equal = rows[start].op == "equal"
        while end < len(rows) and (rows[end].op == "equal") == equal:
            end += 1
        run = rows[start:end]
        if not equal:
            blocks.append(Block(False, run))
        else:
            head = context if start > 0 else 0
            tail = context if end < len(rows) else 0
            if len(run) - head - tail < 2:
                blocks.append(Block(False, run))
            else:
                blocks += [Block(False, run[:head]), Block(True, run[head:len(run) - tail]),
                           Block(False, run[len(run) - tail:])]
        start = end
    return [b for b in blocks if b.rows]


def _word_segments(left: str, right: str) -> tuple[list[Segment], list[Segment]]:
    a, b = _WORD.findall(left), _WORD.findall(right)
    ls: list[Segment] = []
    rs: list[Segment] = []
    for op, i1, i2, j1, j2 in opcodes(a, b):
        if i2 > i1:
            ls.append(Segment("".join(a[i1:i2]), op != "equal"))
        if j2 > j1:
            rs.append(Segment("".join(b[j1:j2]), op != "equal"))
    return ls, rs


def field_diff(old_front: dict[str, Any], new_front: dict[str, Any],
               old_inputs: dict[str, Any], new_inputs: dict[str, Any]) -> list[FieldChange]:
    """Dotted-path changes of the front matter; inputs, outputs and tools changes flagged
    as contract (outputs and tools by name, whether written as a list or a mapping)."""
    old = {k: v for k, v in old_front.items() if k != "inputs"}
    new = {k: v for k, v in new_front.items() if k != "inputs"}
    old["inputs"], new["inputs"] = old_inputs, new_inputs
    for side in (old, new):
        if isinstance(side.get("outputs"), list):
            side["outputs"] = outputs_by_name(side["outputs"])
        if isinstance(side.get("tools"), list):
            side["tools"] = {str(t["name"]): t for t in side["tools"]
                             if isinstance(t, dict) and "name" in t}
    changes: list[FieldChange] = []
    _walk("", old, new, changes)
    return changes


def _walk(prefix: str, old: Any, new: Any, out: list[FieldChange]) -> None:
    if prefix in _CONTRACT and isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if old.get(key, _MISSING) != new.get(key, _MISSING):
                out.append(contract_change(prefix, str(key), old.get(key, _MISSING),
                                           new.get(key, _MISSING)))
    elif isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(FieldChange(path, "added", new=new[key], contract=_contract(path)))
            elif key not in new:
                out.append(FieldChange(path, "removed", old=old[key], contract=_contract(path)))
            else:
                _walk(path, old[key], new[key], out)
    elif old != new:
        out.append(FieldChange(prefix, "changed", old, new, _contract(prefix)))


def _contract(path: str) -> bool:
    return path.split(".")[0] in _CONTRACT


_CONTRACT = ("inputs", "outputs", "tools")
_MISSING: Any = object()
_SPEC_KEYS = ("type", "kind", "default", "description", "parameters", "bindings", "strict")


def contract_change(section: str, name: str, old: Any, new: Any) -> FieldChange:
    """One input or output that was added, removed or changed, and whether it breaks callers.

    ``old``/``new`` are its specs, or ``_MISSING`` where it does not exist on that side.
    """
    before = None if old is _MISSING else _spec(name, old)
    after = None if new is _MISSING else _spec(name, new)
    change = "added" if before is None else "removed" if after is None else "changed"
    verdict = {"inputs": _input_verdict, "tools": _tool_verdict}.get(section, _output_verdict)
    breaking, why = verdict(before, after)
    return FieldChange(f"{section}.{name}", change, None if before is None else old,
                       None if after is None else new, True, breaking, why, before, after)


def _spec(name: str, spec: Any) -> dict[str, Any]:
    spec = spec if isinstance(spec, dict) else {"sample": spec}
    out: dict[str, Any] = {"name": name}
    out.update({k: spec[k] for k in _SPEC_KEYS if k in spec})
    return out


def _input_verdict(before: dict | None, after: dict | None) -> tuple[bool, str]:
    if before is None:
        assert after is not None
        if "default" in after:
            return False, (f"callers that do not pass '{after['name']}' get the default "
                           f"{_short(after['default'])}")
        return True, f"callers must now pass '{after['name']}': it has no default"
    if after is None:
        return True, f"callers that pass '{before['name']}' pass an input it no longer declares"
    return _changed_verdict(before, after, "callers")


def _output_verdict(before: dict | None, after: dict | None) -> tuple[bool, str]:
    if before is None:
        return False, "a new output; existing readers can ignore it"
    if after is None:
        return True, f"readers of '{before['name']}' no longer get it"
    return _changed_verdict(before, after, "readers")


def _tool_verdict(before: dict | None, after: dict | None) -> tuple[bool, str]:
    if before is None:
        assert after is not None
        return True, (f"the model may now call '{after['name']}': callers must handle "
                      "its calls")
    if after is None:
        return True, f"the model can no longer call '{before['name']}'"
    if _kind(before) != _kind(after):
        return True, (f"its kind changed from {_kind(before)} to {_kind(after)}; callers "
                      "run its calls differently")
    for key in ("parameters", "bindings", "strict"):
        if before.get(key) != after.get(key):
            return True, (f"its {key} changed: the arguments the model sends, or those "
                          "callers fill, are not the same")
    return False, "same name, kind and parameters; only its description changed"


def _kind(spec: dict) -> str:
    return str(spec.get("type", spec.get("kind", "unspecified")))


def _changed_verdict(before: dict, after: dict, who: str) -> tuple[bool, str]:
    if _kind(before) != _kind(after):
        return True, (f"its type changed from {_kind(before)} to "
                      f"{_kind(after)}; {who} may send or expect the old one")
    if "default" in before and "default" not in after:
        return True, f"its default was removed: {who} that relied on it must now pass it"
    return False, "same name and type; only its default or description changed"


def _spec_summary(spec: dict[str, Any] | None) -> str:
    if not spec:
        return ""
    parts = [str(spec.get("type", spec.get("kind", "untyped")))]
    if "default" in spec:
        parts.append(f"default {_short(spec['default'])}")
    return ", ".join(parts)


def prompt_diff(old_text: str, new_text: str, old_name: str, new_name: str,
                variables: dict[str, Any] | None = None,
                includes: Callable[[str], Prompt] | None = None) -> Diff:
    """Text, field and rendered diff between two prompt texts (``includes`` resolves
    their ``{% include %}`` parts)."""
    diff = Diff(old_name, new_name, text_diff(old_text, new_text, old_name, new_name))
    try:
        old, new = parse_prompt(old_text, old_name), parse_prompt(new_text, new_name)
    except ValidationFailed:
        return diff
    old.includes = new.includes = includes
    diff.fields = field_diff(old.front, new.front, old.inputs, new.inputs)
    diff.rendered = rendered_diff(old, new, variables, old_name, new_name)
    return diff


def rendered_diff(old: Prompt | None, new: Prompt | None,
                  variables: dict[str, Any] | None = None, old_name: str = "a",
                  new_name: str = "b") -> RenderedDiff:
    """Both versions rendered with the same variables: their samples, then ``variables``.

    A missing version (``None``: deleted) renders no messages.
    """
    values = {**(old.sample() if old else {}), **(new.sample() if new else {}),
              **(variables or {})}
    rendered = RenderedDiff(values, None, None)
    try:
        rendered.left = [m.text_dict() for m in old.render(values)] if old else []
    except PromptrevError as exc:
        rendered.left_error = exc.message
    try:
        rendered.right = [m.text_dict() for m in new.render(values)] if new else []
    except PromptrevError as exc:
        rendered.right_error = exc.message
    rendered.unified = text_diff(_messages_text(rendered.left), _messages_text(rendered.right),
                                 old_name, new_name).unified
    return rendered


def _messages_text(messages: list[dict[str, str]] | None) -> str:
    if not messages:
        return ""
    return "\n".join(f"[{m['role']}]\n{m['content']}\n" for m in messages)


def dataset_diff(old_text: str, new_text: str, old_name: str, new_name: str) -> Diff:
    """Text diff plus per-case changes (added, removed, changed case ids)."""
    diff = Diff(old_name, new_name, text_diff(old_text, new_text, old_name, new_name))
    old, new = _cases_by_id(old_text), _cases_by_id(new_text)
    for case_id in sorted(set(old) | set(new)):
        if case_id not in old:
            diff.cases.append({"id": case_id, "change": "added"})
        elif case_id not in new:
            diff.cases.append({"id": case_id, "change": "removed"})
        elif old[case_id] != new[case_id]:
            diff.cases.append({"id": case_id, "change": "changed"})
    return diff


def _cases_by_id(text: str) -> dict[str, Any]:
    out = {}
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "id" in obj:
            out[str(obj["id"])] = obj
    return out
