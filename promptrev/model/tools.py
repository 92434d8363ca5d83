"""Prompty's tools and property lists, as the JSON a chat-completions request carries.

A ``function`` tool's ``parameters`` (a list of Prompty properties, ``{properties: [...]}``,
or a JSON schema) become the JSON schema the model sees, less the parameters its
``bindings`` fill: those are the caller's to set (``{input: NAME}`` takes the value of an
input), and the model never sees them. ``mcp``, ``openapi``, ``prompty`` and other kinds
are kept in the file and in diffs; the runner does not connect to MCP servers or read
OpenAPI documents, so only ``function`` tools reach a model.
"""

from __future__ import annotations

from typing import Any

_JSON_TYPES = {"string": "string", "integer": "integer", "float": "number",
               "number": "number", "boolean": "boolean", "array": "array",
               "object": "object"}
SENT_KINDS = ("function",)


def properties_schema(properties: Any, strict: bool = False) -> dict[str, Any]:
    """A JSON schema object for a Prompty property list (or a schema, returned as is).

    ``[{name, kind, description, required, enumValues, items, properties}]`` becomes
    ``{type: object, properties: {...}, required: [...]}``. With ``strict`` (OpenAI's
    strict mode) every property is required and an optional one may be null.
    """
    if isinstance(properties, dict):
        if isinstance(properties.get("properties"), list):
            properties = properties["properties"]
        elif "type" in properties or "properties" in properties:
            return dict(properties)
        else:  # {name: spec} mapping
            properties = [{"name": k, **(v if isinstance(v, dict) else {"default": v})}
                          for k, v in properties.items()]
    schema: dict[str, Any] = {"type": "object", "properties": {}}
    required = []
    for prop in properties or []:
        if not isinstance(prop, dict) or "name" not in prop:
            continue
        name = str(prop["name"])
        optional = strict and not prop.get("required")
        schema["properties"][name] = property_schema(prop, strict, optional)
        if strict or prop.get("required"):
            required.append(name)
    if required:
        schema["required"] = required
    if strict:
        schema["additionalProperties"] = False
    return schema


def property_schema(prop: dict[str, Any], strict: bool = False,
                    nullable: bool = False) -> dict[str, Any]:
    """The JSON schema of one Prompty property (recursing into items and properties)."""
    kind = prop.get("kind", prop.get("type"))
    out: dict[str, Any] = {}
    json_type = _JSON_TYPES.get(kind) if isinstance(kind, str) else None
    if json_type:
        out["type"] = [json_type, "null"] if nullable else json_type
    if json_type == "array" and isinstance(prop.get("items"), dict):
        out["items"] = property_schema(prop["items"], strict)
    if json_type == "object" and isinstance(prop.get("properties"), (list, dict)):
        out.update({k: v for k, v in properties_schema(prop["properties"], strict).items()
                    if k != "type"})
    if prop.get("description"):
        out["description"] = prop["description"]
    enum = prop.get("enumValues", prop.get("enum"))
    if isinstance(enum, list) and enum:
        out["enum"] = enum
    return out


def function_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``tools`` of a chat-completions request: the ``function`` tools, bindings removed.

    Returns an empty list when the prompt has none (the request then sends no ``tools``).
    """
    wire = []
    for tool in tools:
        if tool.get("kind") not in SENT_KINDS:
            continue
        strict = bool(tool.get("strict"))
        parameters = properties_schema(tool.get("parameters") or [], strict)
        bound = set(tool.get("bindings") or {})
        if bound:
            parameters = dict(parameters)
            parameters["properties"] = {k: v for k, v in
                                        (parameters.get("properties") or {}).items()
                                        if k not in bound}
            if "required" in parameters:
                parameters["required"] = [r for r in parameters["required"] if r not in bound]
                if not parameters["required"]:
                    del parameters["required"]
        function: dict[str, Any] = {"name": str(tool["name"]), "parameters": parameters}
        if tool.get("description"):
            function["description"] = str(tool["description"])
        if strict:
            function["strict"] = True
        wire.append({"type": "function", "function": function})
    return wire


def tool_bindings(tools: list[dict[str, Any]], values: dict[str, Any]
                  ) -> dict[str, dict[str, Any]]:
    """Per tool name, the arguments its ``bindings`` fill (``{input: NAME}`` from ``values``).

    A binding that names an input the call did not pass is left out.
    """
    out: dict[str, dict[str, Any]] = {}
    for tool in tools:
        filled = {}
        for param, binding in (tool.get("bindings") or {}).items():
            if isinstance(binding, dict) and "input" in binding:
                if binding["input"] in values:
                    filled[str(param)] = values[binding["input"]]
            elif isinstance(binding, dict) and "value" in binding:
                filled[str(param)] = binding["value"]
            elif not isinstance(binding, dict):
                filled[str(param)] = binding
        if filled:
            out[str(tool["name"])] = filled
    return out


def tool_problems(raw: Any, inputs: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(problems, warnings) of a ``tools`` section: each a mapping with a unique name."""
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        return ["'tools' must be a list of tools, each with a 'name' and a 'kind'"], []
    problems, warnings, seen = [], [], set()
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) \
                or not tool["name"]:
            problems.append(f"tool {i + 1} must be a mapping with a 'name'")
            continue
        name = tool["name"]
        if name in seen:
            problems.append(f"tool '{name}' is declared twice")
        seen.add(name)
        if not isinstance(tool.get("kind"), str):
            problems.append(f"tool '{name}' needs a 'kind' (function, mcp, openapi, "
                            "prompty...)")
        bindings = tool.get("bindings")
        if bindings is not None and not isinstance(bindings, dict):
            problems.append(f"tool '{name}': 'bindings' must map parameter names to values")
            continue
        for param, binding in (bindings or {}).items():
            if isinstance(binding, dict) and "input" in binding and \
                    binding["input"] not in inputs:
                warnings.append(f"tool '{name}' binds '{param}' to input "
                                f"'{binding['input']}', which is not declared in inputs")
    return problems, warnings
