"""Regular expressions users write, run in linear time (google-re2).

Patterns come from evaluation specs (the ``regex`` scorer), JSON schemas (``pattern``,
``patternProperties``) of scorers and of prompts' ``outputs``. Python's backtracking
``re`` takes seconds on ``^(a+)+$`` against 24 characters; RE2 takes microseconds, at the
price of no backreferences or lookaround (refused with a reason) and ASCII-only
``\\d``/``\\w``/``\\b``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import re2  # google-re2: linear-time matching for patterns users write


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _short(value: Any, limit: int = 80) -> str:
    text = _text(value)
    return repr(text if len(text) <= limit else text[:limit] + "…")


MAX_PATTERN = 2000  # characters of one regex scorer pattern


def compile_regex(pattern: Any, ignore_case: bool) -> tuple[Any, str | None]:
    """``pattern`` compiled by RE2, or the reason it cannot be.

    RE2 matches in time linear in the text, whatever the pattern (``^(a+)+$`` against
    ``aaaa…!`` takes microseconds, where Python's ``re`` takes seconds); the price is
    that it has no backreferences and no lookaround, and ``\\d``/``\\w``/``\\b`` are ASCII.
    """
    text = _text(pattern)
    if len(text) > MAX_PATTERN:
        return None, f"longer than {MAX_PATTERN} characters"
    return _re2(text, ignore_case)


@functools.lru_cache(maxsize=512)
def _re2(text: str, ignore_case: bool) -> tuple[Any, str | None]:
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = not ignore_case
    try:
        return re2.compile(text, options), None
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        return None, (f"{reason} (patterns run on RE2, in linear time: no backreferences or "
                      "lookaround)")


def schema_patterns(schema: Any) -> list[str]:
    """Every regular expression in a JSON schema: ``pattern`` values, ``patternProperties`` keys."""
    found, stack = [], [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                found.append(node["pattern"])
            if isinstance(node.get("patternProperties"), dict):
                found += [k for k in node["patternProperties"] if isinstance(k, str)]
            stack += node.values()
        elif isinstance(node, list):
            stack += node
    return found


def re2_validator(schema: dict[str, Any]):
    """A validator for ``schema`` whose regular expressions run on RE2 (linear time).

    jsonschema matches ``pattern`` and ``patternProperties`` (and, through them,
    ``additionalProperties``) with Python's backtracking ``re``, so a schema pattern like
    ``^(a+)+$`` could hold a worker for minutes on one answer.
    """
    import jsonschema
    from jsonschema.exceptions import ValidationError

    def search(pattern: str, text: str) -> bool:
        return compile_regex(pattern, False)[0].search(text) is not None

    def pattern(validator, patrn, instance, schema):
        if validator.is_type(instance, "string") and not search(patrn, instance):
            yield ValidationError(f"{_short(instance)} does not match {_short(patrn)}")

    def pattern_properties(validator, patterns, instance, schema):
        if validator.is_type(instance, "object"):
            for patrn, subschema in patterns.items():
                for key, value in instance.items():
                    if search(patrn, key):
                        yield from validator.descend(value, subschema, path=key,
                                                     schema_path=patrn)

    def additional_properties(validator, extra, instance, schema):
        if not validator.is_type(instance, "object"):
            return
        known, patterns = schema.get("properties", {}), schema.get("patternProperties", {})
        extras = sorted(k for k in instance if k not in known
                        and not any(search(p, k) for p in patterns))
        if validator.is_type(extra, "object"):
            for key in extras:
                yield from validator.descend(instance[key], extra, path=key)
        elif extra is False and extras:
            yield ValidationError("additional properties are not allowed ("
                                  f"{', '.join(_short(k) for k in extras[:5])} unexpected)")

    base = jsonschema.validators.validator_for(schema)
    cls = jsonschema.validators.extend(base, {
        "pattern": pattern, "patternProperties": pattern_properties,
        "additionalProperties": additional_properties})
    return cls(schema, registry=_LOCAL_ONLY())


def _LOCAL_ONLY():  # noqa: N802 - built on first use: referencing is jsonschema's dependency
    """A reference registry that never fetches: no URL, no ``file://``, no network."""
    from referencing import Registry
    from referencing.exceptions import NoSuchResource

    def refuse(uri: str):
        raise NoSuchResource(ref=uri)

    return Registry(retrieve=refuse)


# Keywords that make a schema point elsewhere: a remote or file reference would make the
# server fetch what an editor chose, and local ones can nest exponentially.
_REFERENCES = ("$ref", "$dynamicRef", "$recursiveRef")
MAX_SCHEMA_NODES = 10_000


def schema_problem(schema: Any) -> str | None:
    """Why ``schema`` (written by a user) cannot be used to check answers, or None.

    Refused: references (``$ref`` and its kin: write the schema inline), schemas larger
    than 10,000 values, invalid schemas, and patterns RE2 cannot run.
    """
    import jsonschema

    if not isinstance(schema, dict):
        return "a JSON schema must be an object"
    seen, stack = 0, [schema]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_SCHEMA_NODES:
            return f"the schema has more than {MAX_SCHEMA_NODES:,} values"
        if isinstance(node, dict):
            for keyword in _REFERENCES:
                if keyword in node:
                    return (f"{keyword} is not supported ({_short(node[keyword])}): write the "
                            "schema inline")
            stack += node.values()
        elif isinstance(node, list):
            stack += node
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"the schema is not valid: {exc.message}"
    for pattern in schema_patterns(schema):
        problem = compile_regex(pattern, False)[1]
        if problem:
            return f"invalid pattern '{pattern[:80]}': {problem}"
    return None
