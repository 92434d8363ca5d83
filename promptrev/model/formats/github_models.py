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
:func:`scorers_for` says (an LLM evaluator becomes a judge prompt of its own, stored
beside the prompt); an evaluation spec comparing the imported version with the latest one
is then what ``gh models eval`` is, run with ``promptrev eval run``.
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
    text_to_hbs,
)

KEYS = ("name", "description", "model", "modelParameters", "responseFormat", "jsonSchema",
        "messages", "testData", "evaluators")
PARAMETERS = {"maxTokens": "max_tokens", "temperature": "temperature", "topP": "top_p"}
ROLES = ("system", "user", "assistant")
_PLACEHOLDER = re.compile(r"\{\{([^{}]+)\}\}")  # what gh models fills: {{key}}, exactly
_NAME = re.compile(r"[A-Za-z_][\w-]*")  # a key a Handlebars template can name


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
    cases = _cases(data.get("testData"), filename)
    keys = list(dict.fromkeys(k for c in data.get("testData") or [] for k in c))
    scorers, judges = scorers_for(evaluators, notes, keys, filename) if cases else ([], {})
    if evaluators and not cases:
        notes.append(f"{filename}: evaluators without testData: no evaluation is made")
    dataset = "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases) or None
    return Converted(front_matter(front, body), dataset, scorers, notes, judges)


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


def _cases(test_data: Any, filename: str) -> list[dict]:
    if test_data is None:
        return []
    if not isinstance(test_data, list) or not all(isinstance(t, dict) for t in test_data):
        raise ValidationFailed(f"{filename}: 'testData' must be a list of mappings")
    cases = []
    for i, item in enumerate(test_data, start=1):
        case: dict[str, Any] = {"id": str(i),
                                "vars": {k: v for k, v in item.items() if k != "expected"}}
        if "expected" in item:
            case["expected"] = item["expected"]
        cases.append(case)
    return cases


STRING_CHECKS = {"equals": "equals", "contains": "contains", "startsWith": "starts_with",
                 "endsWith": "ends_with"}
JUDGE_SUFFIX = "-judge-"  # an LLM evaluator's judge prompt: NAME-judge-EVALUATOR


def scorers_for(evaluators: list, notes: list[str], keys: list[str] | None = None,
                filename: str = "") -> tuple[list[Any], dict[str, str]]:
    """promptrev scorer specs doing what GitHub Models' evaluators do, and the judge
    prompts they use (by name suffix, see :class:`Converted`).

    String checks become ``text_check`` scorers: the value is a template whose
    ``{{name}}`` is filled from each case's row (its test data, ``expected`` included),
    and the answer is compared as ``gh models eval`` compares it: trimmed, ``equals``
    case-sensitive, ``contains``/``startsWith``/``endsWith`` ignoring case.

    An LLM evaluator (``llm: {modelId, prompt, choices, systemPrompt}``) becomes a judge
    prompt (``systemPrompt`` as the system message, verbatim; ``prompt`` as the user
    message, its ``{{completion}}`` the answer and its other ``{{name}}`` the case's row;
    ``modelId`` its model) and a ``judge`` scorer scoring by ``choices``. A built-in
    evaluator (``uses: github/…``) is GitHub's own prompt, not in the file: each gets a
    note saying how to run it here.
    """
    specs: list[Any] = []
    judges: dict[str, str] = {}
    for i, ev in enumerate(evaluators):
        name = str(ev.get("name") or f"evaluator-{i + 1}") if isinstance(ev, dict) else \
            f"evaluator-{i + 1}"
        check = ev.get("string") if isinstance(ev, dict) else None
        llm = ev.get("llm") if isinstance(ev, dict) else None
        if isinstance(check, dict):
            spec = _string_check(check, name, notes)
        elif isinstance(llm, dict):
            spec = _llm_judge(llm, name, keys or [], filename, notes, judges)
        else:
            uses = ev.get("uses") if isinstance(ev, dict) else None
            if uses:
                notes.append(f"evaluator '{name}' (uses: {uses}) is one of gh models' "
                             "built-in LLM judges, whose prompt is GitHub's and not in the "
                             "file; it has no promptrev equivalent and is left out of the "
                             "evaluation (write it out as an 'llm:' evaluator, with its "
                             "prompt, choices and modelId, and it runs here as a judge)")
            else:
                notes.append(f"evaluator '{name}' has no 'string', 'llm' or 'uses': left "
                             "out of the evaluation")
            continue
        if spec is not None:
            specs.append(spec)
    return specs, judges


def _string_check(check: dict, name: str, notes: list[str]) -> Any:
    given = [(k, v) for k, v in check.items() if v not in (None, "")]
    if len(given) != 1 or given[0][0] not in STRING_CHECKS or \
            not isinstance(given[0][1], (str, int, float)) or isinstance(given[0][1], bool):
        notes.append(f"evaluator '{name}' (string: {check!r}) is not one of equals, contains, "
                     "startsWith or endsWith with a text: left out of the evaluation")
        return None
    kind, value = given[0]
    return {"text_check": {"name": name, STRING_CHECKS[kind]: str(value), "strip": True,
                           "ignore_case": kind != "equals"}}


def _llm_judge(llm: dict, name: str, keys: list[str], filename: str, notes: list[str],
               judges: dict[str, str]) -> Any:
    model, prompt, system = llm.get("modelId"), llm.get("prompt"), llm.get("systemPrompt")
    choices = llm.get("choices")
    problem = (
        "no modelId" if not isinstance(model, str) or not model else
        "no prompt text" if not isinstance(prompt, str) or not prompt.strip() else
        "a systemPrompt that is not text" if system is not None and not isinstance(system, str)
        else "no choices (a list of {choice, score})" if not isinstance(choices, list)
        or not choices or not all(isinstance(c, dict) and set(c) == {"choice", "score"}
                                  and isinstance(c["score"], (int, float))
                                  and not isinstance(c["score"], bool) for c in choices)
        else None)
    if problem:
        notes.append(f"evaluator '{name}' (llm) has {problem}: left out of the evaluation")
        return None
    if ROLE_LINE.search(prompt) or (system and ROLE_LINE.search(system)):
        notes.append(f"evaluator '{name}' (llm): its prompt has a line that is a role word "
                     "and a colon; promptrev starts a new message there")
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower())[:60].strip("-._") or "llm"
    suffix = JUDGE_SUFFIX + slug
    while suffix in judges:
        suffix += "-2"
    known = {*keys, "completion"}
    used = [n for n in dict.fromkeys(_PLACEHOLDER.findall(prompt)) if n in known]
    odd = [n for n in used if not _NAME.fullmatch(n)]
    if odd:
        notes.append(f"evaluator '{name}' (llm): {', '.join(map(repr, odd))} cannot be a "
                     "template variable here and stays in its prompt as written")
        used = [n for n in used if n not in odd]
    # gh models fills {{key}} of the row (and {{completion}}, the answer) in the prompt,
    # leaves any other {{…}} as written, and sends systemPrompt as it is.
    user = text_to_hbs(prompt)
    for variable in used:
        user = user.replace("\\{{" + variable + "}}", "{{" + variable + "}}")
    body = (f"system:\n{text_to_hbs(system)}\n\n" if system else "") + f"user:\n{user}\n"
    front: dict[str, Any] = {
        "name": f"{name} (judge)",
        "description": f"GitHub Models LLM evaluator '{name}'"
                       + (f" of {filename}" if filename else "") + ": answer with one of "
                       + ", ".join(repr(str(c["choice"])) for c in choices),
        "model": {"api": "chat", "configuration": {"name": model}}}
    if used:
        front["inputs"] = {v: {"type": "string"} for v in used}
    front["template"] = {"format": "handlebars"}
    judges[suffix] = front_matter(front, body)
    sources = {v: "output" if v == "completion" else "expected" if v == "expected"
               else f"vars.{v}" for v in used}
    return {"judge": {"name": name, "prompt": suffix, "scale": None, "vars": sources,
                      "choices": [{"choice": str(c["choice"]), "score": c["score"]}
                                  for c in choices]}}


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
