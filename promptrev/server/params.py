"""Reading a JSON API request: query parameters, the JSON body, If-Match; writing JSON.

Shared by the API's blueprints (artifacts, reviews, webhooks). Every refusal is an
:class:`~promptrev.errors.InvalidRequest` that names the parameter or field.
"""

from __future__ import annotations

from typing import Any

from flask import Response, request

from promptrev.errors import InvalidRequest
from promptrev.model.artifacts import KINDS
from promptrev.model.untrusted_json import parse_untrusted_json

from .auth import state
from .state import json_bytes


def registry():
    """This worker's registry."""
    return state().registry


# ---- request parsing -------------------------------------------------------------------
def arg(name: str, default: Any = ..., *, max_len: int = 1024) -> str:
    """Query parameter ``name`` (required unless ``default`` is given), at most ``max_len``."""
    value = request.args.get(name)
    if value is None or value == "":
        if default is ...:
            raise InvalidRequest(f"query parameter '{name}' is required")
        return default
    if len(value) > max_len:
        raise InvalidRequest(f"query parameter '{name}' is longer than {max_len} characters")
    return value


MAX_INT_FIELD = 1_000_000  # versions, weights, lines: the largest integer a field takes


def int_arg(name: str, default: int | None, lo: int = 0, hi: int = MAX_INT_FIELD
            ) -> int | None:
    """Query parameter ``name`` as an integer in ``lo..hi``, or ``default``."""
    value = request.args.get(name)
    if value in (None, ""):
        return default
    return to_int(value, name, lo, hi)


def to_int(value: Any, name: str, lo: int = 0, hi: int = MAX_INT_FIELD) -> int:
    """``value`` as an integer in ``lo..hi``; the error names ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidRequest(f"'{name}' must be an integer")
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be an integer, not {str(value)[:40]!r}") from None
    if not lo <= number <= hi:
        raise InvalidRequest(f"'{name}' must be between {lo} and {hi}")
    return number


def bool_arg(name: str) -> bool:
    """Query parameter ``name`` as true/false (default false)."""
    value = arg(name, "false")
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise InvalidRequest(f"query parameter '{name}' must be true or false, not "
                             f"{value[:40]!r}")
    return value in ("true", "1", "yes")


def kind_arg(default: str | None = None) -> str | None:
    """The ``kind`` query parameter (or ``default``), checked against the known kinds."""
    return valid_kind(request.args.get("kind") or default)


def valid_kind(kind: str | None) -> str | None:
    """``kind`` if it is a registered kind (or None)."""
    if kind is not None and kind not in KINDS:
        raise InvalidRequest(f"unknown kind {kind!r} (kinds: {', '.join(sorted(KINDS))})")
    return kind


def json_body() -> dict[str, Any]:
    """The request body as a JSON object (``{}`` when empty).

    Every JSON body of every route is read here (or through :func:`json_object`):
    nesting, NaN/Infinity, numbers too large to hold and lone surrogates are refused
    with a 400 that names the field (:mod:`promptrev.model.untrusted_json`).
    """
    if not request.data:
        return {}
    return json_object(request.data)


def json_object(raw: bytes | str, what: str = "request body") -> dict[str, Any]:
    """``raw`` parsed as untrusted JSON that must be an object; ``what`` names it in errors."""
    data = parse_untrusted_json(raw, what)
    if not isinstance(data, dict):
        raise InvalidRequest(f"{what} must be a JSON object")
    return data


def field(data: dict[str, Any], name: str, kind: type, default: Any = ...) -> Any:
    """``data[name]`` checked to be a ``kind`` (required unless ``default`` is given)."""
    if name not in data or data[name] is None:
        if default is ...:
            raise InvalidRequest(f"field '{name}' is required")
        return default
    value = data[name]
    if kind is int:
        if isinstance(value, str):  # a JSON number, as documented; "3" only in a query
            raise InvalidRequest(f"field '{name}' must be an integer")
        return to_int(value, name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise InvalidRequest(f"field '{name}' must be a {kind.__name__}")
    return value


def if_match() -> int | None:
    """The base version an update started from: ``If-Match: "3"`` (or ``3``)."""
    header = request.headers.get("If-Match")
    if header is None:
        return None
    value = header.strip().removeprefix("W/").strip('"')
    if value.isascii() and value.isdigit() and len(value) < 10:
        return int(value)
    raise InvalidRequest(f"If-Match must carry the version the change is based on, e.g. "
                         f'If-Match: "3"; got {header[:40]!r}')


def json_response(payload: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    """``payload`` as a JSON response."""
    return Response(json_bytes(payload), status, headers, mimetype="application/json")
