"""Evaluation datasets: JSONL files, one case per line.

A case is ``{"id": ..., "vars": {...}, "expected": ..., "tags": [...]}``; ``expected``
and ``tags`` are optional. Validation names the line of every problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from promptrev.errors import ValidationFailed

from .prompty import Problem


@dataclass(frozen=True)
class Case:
    """One evaluation case."""

    id: str
    vars: dict[str, Any]
    expected: Any = None
    tags: tuple[str, ...] = ()


def parse_dataset(text: str, filename: str = "<dataset>") -> list[Case]:
    """Parse and validate JSONL text; raise :class:`ValidationFailed` listing every problem."""
    problems: list[Problem] = []
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(f"invalid JSON: {exc.msg} (column {exc.colno})", number))
            continue
        except RecursionError:  # hostile nesting: thousands of [ or {
            problems.append(Problem("invalid JSON: nested too deeply", number))
            continue
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            problems.append(Problem(f"invalid JSON: {exc}", number))
            continue
        case = _case(obj, number, problems)
        if case is None:
            continue
        if case.id in seen:
            problems.append(Problem(f"case id {case.id!r} repeats (first at line {seen[case.id]})",
                                    number))
            continue
        seen[case.id] = number
        cases.append(case)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValidationFailed(problems[0].describe(filename) + more,
                               [p.to_dict(filename) for p in problems])
    return cases


def _case(obj: Any, number: int, problems: list[Problem]) -> Case | None:
    if not isinstance(obj, dict):
        problems.append(Problem("each line must be a JSON object", number))
        return None
    if not isinstance(obj.get("id"), (str, int)) or isinstance(obj.get("id"), bool):
        problems.append(Problem("case needs an 'id' (string or integer)", number))
        return None
    if not isinstance(obj.get("vars"), dict):
        problems.append(Problem("case needs 'vars', an object of template variables", number))
        return None
    tags = obj.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        problems.append(Problem("'tags' must be a list of strings", number))
        return None
    return Case(str(obj["id"]), obj["vars"], obj.get("expected"), tuple(tags))
