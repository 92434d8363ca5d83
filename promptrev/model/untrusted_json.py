"""Parsing JSON that a stranger wrote: bounded depth, finite numbers, valid Unicode.

Python's ``json`` accepts more than the JSON standard and more than the rest of promptrev
can hold: ``NaN`` and ``Infinity``, ``1e999`` (read as infinity), integers of any length
(a 400-digit one cannot become a float, nor a SQLite integer), strings with a lone UTF-16
surrogate such as ``"\\ud800"`` (which cannot be encoded as UTF-8, so the first write or
response that meets it fails), and nesting deep enough to exhaust the interpreter's
recursion limit. :func:`parse_untrusted_json` refuses each of these with an
:class:`~promptrev.errors.InvalidRequest` that names the field, so every edge reading JSON
from the network answers 400 instead of failing later.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..errors import InvalidRequest

MAX_DEPTH = 64  # arrays and objects inside one another
MAX_INT = 2**63 - 1  # what a SQL integer column (and most JSON parsers) can hold
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Refused:
    """A number that JSON spelled but promptrev will not hold, kept as written."""

    def __init__(self, text: str, problem: str):
        self.text, self.problem = text, problem


def _constant(text: str) -> _Refused:
    return _Refused(text, "must be a finite number (JSON has no NaN or Infinity)")


def _float(text: str) -> float | _Refused:
    value = float(text)
    return value if math.isfinite(value) else _Refused(text, "must be a finite number")


def _int(text: str) -> int | _Refused:
    digits = text.lstrip("-")
    if len(digits) > 19 or abs(int(text)) > MAX_INT:  # no int() of a huge digit string
        return _Refused(text, f"is an integer too large (at most {MAX_INT:,} in magnitude)")
    return int(text)


def parse_untrusted_json(raw: bytes | str, what: str = "request body") -> Any:
    """``raw`` parsed as JSON, refusing what promptrev cannot hold; errors name the field."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"{what} is not UTF-8: {exc.reason} at byte {exc.start}"
                                 ) from None
    try:
        data = json.loads(raw, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except RecursionError:
        raise InvalidRequest(f"{what} is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise InvalidRequest(f"{what} is not valid JSON: {exc}") from None
    check_untrusted(data, what)
    return data


def check_untrusted(data: Any, what: str = "request body") -> None:
    """Refuse deep nesting, refused numbers and lone surrogates anywhere in ``data``."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                raise InvalidRequest(f"{what} is nested deeper than {MAX_DEPTH} levels "
                                     f"(at {_where(path, what)})")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    _check_text(key, f"a key in {_where(path, what)}")
                stack.append((item, _join(path, key), depth + 1))
        elif isinstance(value, _Refused):
            shown = value.text if len(value.text) <= 40 else f"{value.text[:20]}… " \
                f"({len(value.text.lstrip('-'))} digits)"
            raise InvalidRequest(f"{_where(path, what)} {value.problem}, not {shown}")
        elif isinstance(value, str):
            _check_text(value, _where(path, what))


def _check_text(text: str, where: str) -> None:
    found = _SURROGATE.search(text)
    if found:
        raise InvalidRequest(f"{where} holds a lone surrogate (\\u{ord(found.group()):04x} "
                             f"at character {found.start()}), which is not valid Unicode")


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _where(path: str, what: str) -> str:
    if not path:
        return what
    shown = path if len(path) <= 80 else f"{path[:40]}…{path[-30:]}"
    return f"field '{shown}'" + ("" if what == "request body" else f" of {what}")
