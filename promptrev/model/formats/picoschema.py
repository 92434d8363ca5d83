"""Picoschema (Dotprompt's compact schemas) to JSON Schema and back.

``{name: string, count?: integer, tags(array, the tags): string, kind(enum): [a, b],
addr(object): {city: string}, "(*)": string}``: a ``?`` marks an optional field, the
parentheses give the kind (``array``, ``object``, ``enum``) and a description, a scalar
may carry its description after a comma (``"string, the user's name"``). A schema that
already is JSON Schema (it has a top-level ``type`` or ``properties``) is kept as it is.

Back to Picoschema is done where the JSON Schema says nothing Picoschema cannot; anything
else (``minimum``, ``format``, ``oneOf``…) is exported as JSON Schema, which Dotprompt
reads too.
"""

from __future__ import annotations

import re
from typing import Any

from promptrev.errors import ValidationFailed

SCALARS = ("string", "number", "integer", "boolean", "null", "any")
_KEY = re.compile(r"^(?P<name>[^?()]+?)(?P<optional>\?)?(?:\((?P<kind>[^,)]+)"
                  r"(?:,\s*(?P<description>[^)]*))?\))?$")


def is_json_schema(schema: Any) -> bool:
    """Whether ``schema`` is already JSON Schema, not Picoschema."""
    return isinstance(schema, dict) and ("type" in schema or "properties" in schema) and \
        not any(isinstance(k, str) and "(" in k for k in schema)


def to_json_schema(schema: Any, where: str = "schema") -> dict[str, Any]:
    """JSON Schema for a Picoschema (or a JSON Schema, returned as is)."""
    if schema is None:
        return {}
    if isinstance(schema, str):
        return _scalar(schema, where)
    if not isinstance(schema, dict):
        raise ValidationFailed(f"{where}: a schema is a type name or a mapping of fields, "
                               f"not {type(schema).__name__}")
    if is_json_schema(schema):
        return dict(schema)
    out: dict[str, Any] = {"type": "object", "properties": {}}
    required = []
    for key, value in schema.items():
        if key == "(*)":
            out["additionalProperties"] = to_json_schema(value, f"{where}.(*)")
            continue
        match = _KEY.match(str(key).strip())
        if not match:
            raise ValidationFailed(f"{where}: field {key!r} is not Picoschema "
                                   "(name, name?, name(kind) or name?(kind, description))")
        name, kind = match.group("name").strip(), (match.group("kind") or "").strip()
        prop = _field(kind, value, f"{where}.{name}")
        if match.group("description"):
            prop["description"] = match.group("description").strip()
        out["properties"][name] = prop
        if not match.group("optional"):
            required.append(name)
    if required:
        out["required"] = required
    return out


def _field(kind: str, value: Any, where: str) -> dict[str, Any]:
    if kind == "array":
        return {"type": "array", "items": to_json_schema(value, where)}
    if kind == "object":
        return to_json_schema(value if value is not None else {}, where)
    if kind == "enum":
        if not isinstance(value, list):
            raise ValidationFailed(f"{where}: an enum lists its values")
        return {"enum": list(value)}
    if kind:
        raise ValidationFailed(f"{where}: unknown kind {kind!r} (array, object or enum)")
    return to_json_schema(value, where)


def _scalar(text: str, where: str) -> dict[str, Any]:
    kind, _, description = text.partition(",")
    kind = kind.strip()
    if kind not in SCALARS:
        raise ValidationFailed(f"{where}: unknown type {kind!r} (types: {', '.join(SCALARS)})")
    out: dict[str, Any] = {} if kind == "any" else {"type": kind}
    if description.strip():
        out["description"] = description.strip()
    return out


# ---- back to Picoschema ---------------------------------------------------------------

def to_picoschema(schema: dict[str, Any]) -> Any:
    """Picoschema for an object JSON Schema, or the schema itself when Picoschema cannot
    say all of it."""
    pico = _pico_object(schema)
    return schema if pico is None else pico


def _pico_object(schema: dict[str, Any]) -> dict[str, Any] | None:
    if set(schema) - {"type", "properties", "required", "additionalProperties",
                      "description"} or schema.get("type", "object") != "object":
        return None
    if "description" in schema:
        return None
    required = set(schema.get("required") or [])
    out: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict) or any(c in str(name) for c in "?()"):
            return None
        made = _pico_field(prop)
        if made is None:
            return None
        kind, value, description = made
        key = str(name) + ("" if name in required else "?")
        if (kind or not isinstance(value, str)) and description and (
                "(" in description or ")" in description):
            return None
        if kind or (description and not isinstance(value, str)):
            key += f"({kind or 'object'}" + (f", {description}" if description else "") + ")"
        elif description:
            value = f"{value}, {description}"
        out[key] = value
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        made = _pico_field(extra)
        if made is None or made[0] or made[2]:
            return None
        out["(*)"] = made[1]
    elif extra not in (None, False):
        return None
    return out


def _pico_field(prop: dict[str, Any]) -> tuple[str, Any, str | None] | None:
    """(kind, value, description) of one field, or None when Picoschema cannot say it."""
    description = prop.get("description")
    if description is not None and not isinstance(description, str):
        return None
    rest = {k: v for k, v in prop.items() if k != "description"}
    if "enum" in rest:
        return ("enum", rest["enum"], description) if set(rest) == {"enum"} else None
    kind = rest.get("type", "any" if not rest else None)
    if kind == "array" and set(rest) == {"type", "items"} and isinstance(rest["items"], dict):
        inner = _pico_field(rest["items"])
        if inner is None or inner[0] or inner[2]:
            return None
        return "array", inner[1], description
    if kind == "object":
        inner = _pico_object(rest)
        return None if inner is None else ("object", inner, description)
    if kind in SCALARS and set(rest) <= {"type"}:
        return "", kind, description
    return None
