"""GitHub Models prompt files (``.prompt.yml``), as ``gh models run/eval`` read them.

In: ``messages`` become a Handlebars body with Prompty role lines (``{{var}}`` is the only
placeholder GitHub Models has, so every other ``{{`` is escaped and stays text), one
``inputs`` entry per placeholder (``type: string``); ``model`` becomes
``model.configuration.name``; ``modelParameters`` (maxTokens, temperature, topP) become
``model.parameters``; ``jsonSchema``'s ``schema`` becomes ``outputs``, and
``responseFormat``, the rest of ``jsonSchema`` and ``evaluators`` are kept as written
under ``metadata.github_models`` (so an export writes them back).

``testData`` becomes a dataset (one case per item: ``expected`` is the case's expected
answer, every other key a variable) and ``evaluators`` become scorers, as
:func:`scorers_for` says; an evaluation spec comparing the imported version with the
latest one is then what ``gh models eval`` is, run with ``promptrev eval run``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from promptrev.errors import ValidationFailed

from .. import safe_yaml
from ..prompty import Prompt
from . import (
    Converted,
    Exported,
    Format,
    dump_yaml,
    front_matter,
    output_json_schema,
    register_format,
)
from .bodies import (
    HBS_SUBSTITUTION,
    ROLE_LINE,
    hbs_markers_to_role_lines,
    hbs_to_plain,
    jinja_to_hbs,
    plain_to_hbs,
    split_roles,
)

KEYS = ("name", "description", "model", "modelParameters", "responseFormat", "jsonSchema",
        "messages", "testData", "evaluators")
PARAMETERS = {"maxTokens": "max_tokens", "temperature": "temperature", "topP": "top_p"}
ROLES = ("system", "user", "assistant")
_WHOLE = re.compile(r"^\{\{([A-Za-z_][\w-]*)\}\}$")
_REGEX_SPECIAL = re.compile(r"([\\.^$*+?()\[\]{}|])")


def import_github_models(text: str, filename: str, **_: Any) -> Converted:
    """A ``.prompt.yml`` file as a prompt, a dataset and scorers."""
    data = safe_yaml.load(text, filename)
    if not isinstance(data, dict):
        raise ValidationFailed(f"{filename}: a GitHub Models prompt file is a YAML mapping")
    unknown = sorted(set(data) - set(KEYS))
    notes = [f"{filename}: unknown key(s) {', '.join(unknown)} kept under "
             "metadata.github_models"] if unknown else []
    body, variables = _body_in(data.get("messages"), filename, notes)
    front: dict[str, Any] = {}
    for key in ("name", "description"):
        if data.get(key) is not None:
            front[key] = data[key]
    model = _model_in(data, filename)
    if model:
        front["model"] = model
    if variables:
        front["inputs"] = {name: {"type": "string"} for name in variables}
    kept: dict[str, Any] = {key: data[key] for key in unknown}
    schema = _json_schema_in(data, filename, kept)
    if schema is not None:
        front["outputs"] = schema
    if data.get("responseFormat") is not None:
        kept["responseFormat"] = data["responseFormat"]
    evaluators = data.get("evaluators") or []
    if not isinstance(evaluators, list):
        raise ValidationFailed(f"{filename}: 'evaluators' must be a list")
    if evaluators:
        kept["evaluators"] = evaluators
    front["template"] = {"format": "handlebars"}
    if kept:
        front["metadata"] = {"github_models": kept}
    cases, expected_var = _cases(data.get("testData"), evaluators, filename)
    scorers = scorers_for(evaluators, expected_var, notes) if cases else []
    if evaluators and not cases:
        notes.append(f"{filename}: evaluators without testData: no evaluation is made")
    dataset = "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases) or None
    return Converted(front_matter(front, body), dataset, scorers, notes)


def _body_in(messages: Any, filename: str, notes: list[str]) -> tuple[str, list[str]]:
    if not isinstance(messages, list) or not messages:
        raise ValidationFailed(f"{filename}: 'messages' must list at least one message "
                               "({role, content})")
    parts, variables = [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ValidationFailed(f"{filename}: messages[{i}] needs a 'role' and a text "
                                   "'content'")
        role = str(message.get("role", "")).lower()
        if role not in ROLES:
            raise ValidationFailed(f"{filename}: messages[{i}] has role {message.get('role')!r}"
                                   f" (roles: {', '.join(ROLES)})")
        content = message["content"]
        if ROLE_LINE.search(content):
            notes.append(f"{filename}: messages[{i}] has a line that is a role word and a "
                         "colon; promptrev starts a new message there")
        for match in HBS_SUBSTITUTION.finditer(content):
            if match.group(1) not in variables:
                variables.append(match.group(1))
        parts.append(f"{role}:\n{plain_to_hbs(content).strip(chr(10))}\n")
    return "\n".join(parts), variables


def _model_in(data: dict[str, Any], filename: str) -> dict[str, Any]:
    model: dict[str, Any] = {}
    if data.get("model") is not None:
        model["configuration"] = {"name": str(data["model"])}
    params = data.get("modelParameters") or {}
    if not isinstance(params, dict):
        raise ValidationFailed(f"{filename}: 'modelParameters' must be a mapping")
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise ValidationFailed(f"{filename}: unknown modelParameters {', '.join(unknown)} "
                               f"(known: {', '.join(PARAMETERS)})")
    if params:
        model["parameters"] = {PARAMETERS[k]: v for k, v in params.items()}
    return {"api": "chat", **model} if model else {}


def _json_schema_in(data: dict[str, Any], filename: str, kept: dict[str, Any]) -> Any:
    raw = data.get("jsonSchema")
    if raw is None:
        return None
    as_text = isinstance(raw, str)
    if as_text:
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ValidationFailed(f"{filename}: jsonSchema is not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("schema"), dict):
        raise ValidationFailed(f"{filename}: jsonSchema needs a 'name' and a 'schema' object")
    kept["jsonSchema"] = {**{k: v for k, v in raw.items() if k != "schema"},
                          **({"asText": True} if as_text else {})}
    return raw["schema"]


def _cases(test_data: Any, evaluators: list, filename: str) -> tuple[list[dict], str]:
    if test_data is None:
        return [], "expected"
    if not isinstance(test_data, list) or not all(isinstance(t, dict) for t in test_data):
        raise ValidationFailed(f"{filename}: 'testData' must be a list of mappings")
    wanted = [m.group(1) for ev in evaluators if isinstance(ev, dict)
              for value in (ev.get("string") or {}).values() if isinstance(value, str)
              for m in [_WHOLE.match(value)] if m]
    expected_var = wanted[0] if wanted else "expected"
    cases = []
    for i, item in enumerate(test_data, start=1):
        variables = {k: v for k, v in item.items() if k != "expected"}
        case: dict[str, Any] = {"id": str(i), "vars": variables}
        if expected_var in item:
            case["expected"] = item[expected_var]
        cases.append(case)
    return cases, expected_var


def scorers_for(evaluators: list, expected_var: str, notes: list[str]) -> list[Any]:
    """promptrev scorer specs doing what GitHub Models' evaluators do.

    String checks (``equals`` is case-sensitive, the others ignore case, as in
    ``gh models eval``): a literal becomes a ``regex`` scorer on the escaped text; a value
    that is one placeholder (``{{expected}}``) compares with the case's expected answer
    (``exact`` for equals, ``contains`` ignoring case). LLM evaluators (``llm:``, ``uses:
    github/…``) need GitHub's judge and have no equivalent here: each gets a note.
    """
    specs: list[Any] = []
    for i, ev in enumerate(evaluators):
        name = str(ev.get("name") or f"evaluator-{i + 1}") if isinstance(ev, dict) else None
        check = ev.get("string") if isinstance(ev, dict) else None
        if not isinstance(check, dict) or len(check) != 1:
            what = (f"uses: {ev['uses']}" if isinstance(ev, dict) and ev.get("uses")
                    else "an llm judge" if isinstance(ev, dict) and ev.get("llm")
                    else "not a string check")
            closest = (" (for a similarity to the expected answer without a judge, the "
                       "embedding scorer is the nearest)") if what.endswith("similarity") \
                else ""
            notes.append(f"evaluator '{name}' ({what}) is run by GitHub Models' own LLM "
                         "judge and has no promptrev equivalent: it is left out of the "
                         "evaluation (add a judge scorer with a judge prompt to score "
                         f"it here){closest}")
            continue
        (kind, value), = check.items()
        spec = _string_check(kind, str(value), name, expected_var)
        if spec is None:
            notes.append(f"evaluator '{name}' ({kind}: {value!r}) cannot be mapped: a "
                         "placeholder is supported only as the whole value with equals or "
                         "contains, and only one placeholder name per file; left out")
            continue
        specs.append(spec)
    return specs


def _string_check(kind: str, value: str, name: str, expected_var: str) -> Any:
    whole = _WHOLE.match(value)
    if whole:
        if whole.group(1) != expected_var:
            return None
        if kind == "equals":
            return {"exact": {"name": name}}
        if kind == "contains":
            return {"contains": {"name": name, "ignore_case": True}}
        return None
    if "{{" in value:
        return None
    literal = _REGEX_SPECIAL.sub(r"\\\1", value)
    patterns = {"equals": (literal, False, True), "contains": (literal, True, False),
                "startsWith": ("^" + literal, True, False),
                "endsWith": (literal + "$", True, False)}
    if kind not in patterns:
        return None
    pattern, ignore_case, full = patterns[kind]
    return {"regex": {"name": name, "pattern": pattern, "ignore_case": ignore_case,
                      "full": full}}


# ---- out ------------------------------------------------------------------------------

def export_github_models(prompt: Prompt, text: str, name: str, *,
                         cases: list | None = None) -> Exported:
    """The stored prompt as a ``.prompt.yml`` (with its dataset as ``testData``)."""
    front = prompt.front
    what = f"prompt '{name}'"
    notes: list[str] = []
    out: dict[str, Any] = {}
    out["name"] = front.get("name", name.rsplit("/", 1)[-1])
    if front.get("description") is not None:
        out["description"] = front["description"]
    kept = (front.get("metadata") or {}).get("github_models") or {}
    _model_out(prompt, out, notes)
    if kept.get("responseFormat") is not None:
        out["responseFormat"] = kept["responseFormat"]
    schema = kept.get("jsonSchema")
    if front.get("outputs"):
        meta = {k: v for k, v in (schema or {}).items() if k != "asText"}
        full = {"name": meta.pop("name", out["name"]), **meta,
                "schema": output_json_schema(front["outputs"])}
        as_text = schema is None or schema.get("asText")
        out["jsonSchema"] = json.dumps(full, indent=2) if as_text else full
        out.setdefault("responseFormat", "json_schema")
    out["messages"] = _messages_out(prompt, what)
    if cases:
        out["testData"] = [{**c.vars, **({"expected": c.expected}
                                        if c.expected is not None else {})} for c in cases]
    if kept.get("evaluators"):
        out["evaluators"] = kept["evaluators"]
    for key, value in kept.items():
        if key not in KEYS and key not in ("jsonSchema",):
            out[key] = value
    return Exported({f"{name.rsplit('/', 1)[-1]}.prompt.yml": dump_yaml(out)}, notes)


def _model_out(prompt: Prompt, out: dict[str, Any], notes: list[str]) -> None:
    conf = prompt.model.get("configuration")
    conf = conf if isinstance(conf, dict) else {}
    model = conf.get("name") or conf.get("model") or conf.get("azure_deployment")
    if model:
        out["model"] = str(model)
    back = {v: k for k, v in PARAMETERS.items()}
    params = {back[k]: v for k, v in prompt.parameters.items() if k in back}
    dropped = sorted(k for k in prompt.parameters if k not in back)
    if dropped:
        notes.append(f"model parameters {', '.join(dropped)} have no GitHub Models "
                     "equivalent (maxTokens, temperature, topP) and are not written")
    if params:
        out["modelParameters"] = params


def _messages_out(prompt: Prompt, what: str) -> list[dict[str, str]]:
    engine = prompt.engine.name
    if engine == "handlebars":
        sections = split_roles(hbs_markers_to_role_lines(prompt.body), "user")
        convert = hbs_to_plain
    elif engine == "jinja2":
        sections = split_roles(prompt.body, "system")

        def convert(text: str, label: str) -> str:
            return hbs_to_plain(jinja_to_hbs(text, label), label)
    elif engine == "text":
        sections = split_roles(prompt.body, "system")

        def convert(text: str, label: str) -> str:
            return text
    else:
        raise ValidationFailed(f"{what} cannot be converted: its template format has no "
                               "GitHub Models equivalent; export it as prompty")
    messages = []
    for role, content in sections:
        if role not in ROLES:
            raise ValidationFailed(f"{what} cannot be converted: GitHub Models has no "
                                   f"'{role}' messages (roles: {', '.join(ROLES)})")
        messages.append({"role": role, "content": convert(content, what)})
    return messages


register_format(Format("prompt.yml", (".prompt.yml", ".prompt.yaml"), import_github_models,
                       export_github_models))
