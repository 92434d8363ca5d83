"""Dotprompt (``.prompt``): YAML front matter, a Handlebars body, Picoschema, partials.

In: stored as a ``.prompty`` whose body is the Dotprompt body unchanged, rendered by the
Handlebars engine (``template: {format: handlebars}``); a partial (``{{> name}}``) that is
a registry prompt (one the import makes of a partial named by its path, see
:mod:`promptrev.importing`, or one the registry holds) stays a reference to it; one from a
``_name.prompt`` file beside it is stored with it (``template.partials``).
``model`` becomes ``model.configuration.name``; ``config`` temperature, maxOutputTokens,
topP, topK and stopSequences become ``model.parameters``; ``input.schema`` (Picoschema or
JSON Schema) becomes ``inputs`` (optional fields ``required: false``, ``input.default``
their ``default``); ``output.schema`` becomes ``outputs`` (a JSON Schema). Everything
else (``tools``, ``output.format``, other ``config``, ``ext``…) is kept as written under
``metadata.dotprompt`` and written back on export.

Out: the same mapping backwards. A Jinja2 body of plain substitutions and
``{% include %}`` statements is converted (an include becomes a partial, its part a
partial file, see :func:`export_dotprompt`); one with other statements or filters is
refused (its Prompty export keeps it). Prompty fields
Dotprompt has no place for (``sample``, ``authors``, other model settings…) travel under
Dotprompt's free ``metadata.prompty`` and come back on import.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any

from promptrev.errors import PromptrevError, ValidationFailed

from .. import safe_yaml
from ..handlebars import HANDLEBARS
from ..prompty import Prompt, split_front_matter, template_format
from ..references import parse_reference
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
    ROLE_LINE,
    jinja_to_hbs,
    role_lines_to_hbs_markers,
    text_to_hbs,
)
from .picoschema import to_json_schema, to_picoschema

# Dotprompt config key → Prompty model parameter.
CONFIG = {"temperature": "temperature", "maxOutputTokens": "max_tokens", "topP": "top_p",
          "topK": "top_k", "stopSequences": "stop"}
_PARTIAL = re.compile(r"\{\{~?\s*(#?)>\s*(?:\"([^\"\n]+)\"|'([^'\n]+)'|([\w./@-]+))")
_SCHEMA_WORDS = {"type", "description", "items", "properties", "enum", "required",
                 "additionalProperties", "default"}


def import_dotprompt(text: str, filename: str, *,
                     partials: dict[str, str] | None = None,
                     shared: Collection[str] = (),
                     known: Callable[[str], bool] | None = None, **_: Any) -> Converted:
    """A ``.prompt`` file as a ``.prompty`` (see the module's docstring).

    ``partials`` are the partials it may carry (by the name it uses), ``shared`` the
    partials that are registry prompts (by their folder's path), ``known`` says whether a
    name is a prompt of the registry: a partial of those stays ``{{> name}}``, a registry
    include (the names are :attr:`Converted.parts`).
    """
    fm_text, body, body_line = split_front_matter(text)
    meta = safe_yaml.load(fm_text, filename) if fm_text else {}
    meta = meta or {}
    if not isinstance(meta, dict):
        raise ValidationFailed(f"{filename}: the front matter must be a YAML mapping")
    rest = dict(meta)
    prompty = rest.pop("metadata", {}) or {}
    carried = prompty.pop("prompty", {}) if isinstance(prompty, dict) else {}
    carried = dict(carried) if isinstance(carried, dict) else {}
    if prompty:
        rest["metadata"] = prompty
    dropped = _drop_part_defaults(rest, carried.pop("partDefaults", None))
    front: dict[str, Any] = {}
    for key in ("name", "description"):
        if key in rest:
            front[key] = rest.pop(key)
    model = _model_in(rest, carried.pop("model", None))
    if model:
        front["model"] = model
    inputs = _inputs_in(rest, filename, carried.pop("samples", None))
    if inputs:
        front["inputs"] = inputs
    output = rest.pop("output", None)
    if isinstance(output, dict) and "schema" in output:
        output = dict(output)
        front["outputs"] = to_json_schema(output.pop("schema"), f"{filename}: output.schema")
    if output:
        rest["output"] = output
    used, parts = _partials_used(body, partials or {}, filename, shared, known)
    front["template"] = {"format": "handlebars", **({"partials": used} if used else {})}
    front.update(carried)
    if rest:
        front["metadata"] = {"dotprompt": rest}
    notes = [f"{filename}, line {body_line + body[:m.start()].count(chr(10))}: "
             f"'{m.group(0).strip()}' alone on a line starts a message in promptrev (as a "
             "Prompty role line); Dotprompt keeps it as text"
             for m in ROLE_LINE.finditer(body)]
    return Converted(front_matter(front, body), notes=notes, parts=parts,
                     part_defaults=dropped)


def import_partial(text: str, filename: str, *, partials: dict[str, str] | None = None,
                   shared: Collection[str] = (),
                   known: Callable[[str], bool] | None = None,
                   front: dict[str, Any] | None = None,
                   defaults: dict[str, Any] | None = None) -> Converted:
    """A partial (``_name.prompt``) as a registry prompt: its text is the Handlebars body
    (a partial has no front matter); ``front`` is the front matter of the prompt file of
    the same name when there is one (an export writes both). Without one, ``defaults``
    (the parts' defaults its includers' exports carried) declare the inputs it reads."""
    used, parts = _partials_used(text, partials or {}, filename, shared, known)
    meta = dict(front or {})
    if front is None and defaults:
        reads = HANDLEBARS.check(text, 1, [])
        declared = {k: {"default": v} for k, v in sorted(defaults.items()) if k in reads}
        if declared:
            meta["inputs"] = declared
    template = dict(meta.pop("template", None) or {})
    template = {**template, "format": "handlebars"}
    template.pop("partials", None)
    if used:
        template["partials"] = used
    return Converted(front_matter({**meta, "template": template}, text), parts=parts)


def _drop_part_defaults(rest: dict[str, Any], names: Any) -> dict[str, Any]:
    """An export added its parts' defaults to ``input.default``: they are the parts'
    (returned, for a part imported from its partial alone)."""
    given = rest.get("input")
    defaults = given.get("default") if isinstance(given, dict) else None
    if not isinstance(names, list) or not isinstance(defaults, dict):
        return {}
    dropped = {k: v for k, v in defaults.items() if k in names}
    kept = {k: v for k, v in defaults.items() if k not in names}
    rest["input"] = {**given, "default": kept} if kept else \
        {k: v for k, v in given.items() if k != "default"}
    if not rest["input"]:
        del rest["input"]
    return dropped


def _model_in(rest: dict[str, Any], carried: Any) -> dict[str, Any]:
    model: dict[str, Any] = dict(carried) if isinstance(carried, dict) else {}
    if isinstance(rest.get("model"), str):
        model["configuration"] = {**(model.get("configuration") or {}),
                                  "name": rest.pop("model")}
    config = rest.pop("config", None)
    if isinstance(config, dict):
        config = dict(config)
        params = {CONFIG[k]: config.pop(k) for k in list(config) if k in CONFIG}
        if params:
            model["parameters"] = {**(model.get("parameters") or {}), **params}
        if config:
            rest["config"] = config
    elif config is not None:
        rest["config"] = config
    if model:
        model = {"api": "chat", **model}
    return model


def _inputs_in(rest: dict[str, Any], filename: str, samples: Any) -> dict[str, Any]:
    given = rest.pop("input", None)
    if not isinstance(given, dict):
        if given is not None:
            rest["input"] = given
        return {}
    given = dict(given)
    schema = to_json_schema(given.pop("schema", None), f"{filename}: input.schema")
    defaults = given.pop("default", None) or {}
    if given:
        rest["input"] = given
    if not schema:  # defaults alone declare the inputs they name
        schema = {"type": "object", "properties": {name: {} for name in defaults},
                  "required": list(defaults)}
    props = schema.get("properties") if schema.get("type", "object") == "object" else None
    if not isinstance(props, dict) or set(schema) - {"type", "properties", "required"}:
        if schema:  # a schema inputs cannot carry: kept whole
            rest.setdefault("input", {})["schema"] = schema
        return {}
    required = set(schema.get("required") or [])
    samples = samples if isinstance(samples, dict) else {}
    inputs: dict[str, Any] = {}
    for name, prop in props.items():
        spec = dict(prop) if isinstance(prop, dict) else {}
        if name not in required:
            spec["required"] = False
        if name in defaults:
            spec["default"] = defaults[name]
        if name in samples:
            spec["sample"] = samples[name]
        inputs[str(name)] = spec
    return inputs


def _partial_refs(body: str) -> list[tuple[str, bool]]:
    """(name, optional) of each partial ``body`` names; a ``{{#> name}}`` block is optional."""
    return [(m.group(2) or m.group(3) or m.group(4), bool(m.group(1)))
            for m in _PARTIAL.finditer(body)]


def _partials_used(body: str, available: dict[str, str], filename: str,
                   shared: Collection[str] = (), known: Callable[[str], bool] | None = None
                   ) -> tuple[dict[str, str], list[str]]:
    """The partials ``body`` carries (and those they include), by name, and the names that
    are registry prompts instead (in ``shared``, or only in the registry)."""
    used: dict[str, str] = {}
    parts: list[str] = []
    pending = _partial_refs(body)
    while pending:
        name, optional = pending.pop(0)
        if name in used or name in parts or name == "@partial-block":
            continue
        if not optional and (name in shared or (
                name not in available and known is not None and known(name))):
            parts.append(name)
            continue
        if name not in available:
            if optional:
                continue
            raise ValidationFailed(f"{filename}: partial '{name}' not found (a partial is a "
                                   f"file _{name.rsplit('/', 1)[-1]}.prompt beside the "
                                   "prompt, or in its folder under the imported one, or a "
                                   "prompt of the registry)")
        used[name] = available[name]
        pending += _partial_refs(available[name])
    return dict(sorted(used.items())), parts


# ---- out ------------------------------------------------------------------------------

def export_dotprompt(prompt: Prompt, text: str, name: str, **_: Any) -> Exported:
    """The stored prompt as a ``.prompt`` file (and its partials as ``_name.prompt``).

    The registry parts it includes become partials named by reference
    (``{{> shared/tone}}``, ``{{> "shared/tone@3"}}``), each written where Dotprompt's
    directory store loads it (``shared/_tone.prompt``, ``shared/_tone@3.prompt``: a copy
    of that version) with the parts they include; the defaults the parts declare for
    inputs the prompt does not are added to ``input.default`` (a partial has no front
    matter), listed in ``metadata.prompty.partDefaults`` so import leaves them to the part.
    """
    front = dict(prompt.front)
    base = name.rsplit("/", 1)[-1]
    shared: dict[str, str] = {}
    notes: list[str] = []
    body = _body_out(prompt, f"prompt '{name}'", _Parts(prompt, shared, notes))
    out: dict[str, Any] = {}
    carried: dict[str, Any] = {}
    for key in ("name", "description"):
        if key in front:
            out[key] = front.pop(key)
    kept = (front.pop("metadata", None) or {})
    dotprompt = dict(kept.pop("dotprompt", None) or {}) if isinstance(kept, dict) else {}
    if kept:
        carried["metadata"] = kept
    _model_out(front.pop("model", None), out, dotprompt, carried)
    _inputs_out(front.pop("inputs", None), out, dotprompt, carried)
    _part_defaults_out(prompt, out, carried)
    outputs = front.pop("outputs", None)
    if outputs:
        schema = output_json_schema(outputs)
        out["output"] = {**(dotprompt.pop("output", None) or {}),
                         "schema": to_picoschema(schema)}
    template = front.pop("template", None)
    partials = template.get("partials") if isinstance(template, dict) else None
    carried.update(front)  # sample, authors, tags… Dotprompt has no place for
    out.update(dotprompt)
    if carried:
        out["metadata"] = {**(out.get("metadata") or {}), "prompty": carried}
    files = {f"{base}.prompt": f"---\n{dump_yaml(out)}---\n{body}"}
    for partial, source in (partials or {}).items():
        files[f"_{partial}.prompt"] = source
    return Exported(files, notes=notes, shared=shared)


class _Parts:
    """The registry parts an export writes as partial files (root path → text)."""

    def __init__(self, prompt: Prompt, files: dict[str, str], notes: list[str]):
        self.resolve = prompt.includes
        self.files = files
        self.notes = notes
        self.done: set[str] = set()

    def __call__(self, ref: str) -> str:
        """The partial name of reference ``ref``; its file (and its parts') written."""
        reference = parse_reference(ref, "prompt")
        partial = reference.name + (f"@{reference.selector}" if reference.selector else "")
        if partial in self.done:
            return partial
        self.done.add(partial)
        if self.resolve is None:
            raise ValidationFailed(f"the prompt includes '{ref}', a part stored in a "
                                   "registry: export it from the registry")
        try:
            part = self.resolve(ref)
        except PromptrevError as exc:
            raise ValidationFailed(f"included part '{ref}': {exc.message}") from None
        folder, _, base = partial.rpartition("/")
        path = f"{folder}/_{base}.prompt" if folder else f"_{base}.prompt"
        self.files[path] = _body_out(part, f"included part '{ref}'", self, lead=False)
        if reference.selector:
            self.notes.append(f"'{ref}' is written as {{{{> \"{partial}\"}}}} and {path}, "
                              "a copy of that version (Dotprompt's directory store loads it "
                              "by that name)")
        return partial


def _body_out(prompt: Prompt, what: str, parts: _Parts | None = None, *,
              lead: bool = True) -> str:
    engine = prompt.engine.name
    body = prompt.body
    if engine == "handlebars":
        if parts is not None:
            for ref in prompt.part_references:
                parts(ref)
        return role_lines_to_hbs_markers(body)
    if engine == "jinja2":
        converted = role_lines_to_hbs_markers(jinja_to_hbs(body, what, parts))
    elif engine == "text":
        converted = role_lines_to_hbs_markers(text_to_hbs(body))
    else:
        fmt, _ = template_format(prompt.front.get("template"))
        raise ValidationFailed(f"{what} cannot be converted: template format {fmt!r} has "
                               "no Dotprompt equivalent; export it as prompty")
    # In Prompty the text before the first role line is the system's; in Dotprompt, the
    # user's: say so with a marker.
    first = ROLE_LINE.search(body)
    leading = body[: first.start()] if first else body
    if lead and leading.strip():
        converted = '{{role "system"}}\n' + converted
    return converted


def _part_defaults_out(prompt: Prompt, out: dict, carried: dict) -> None:
    defaults = prompt.part_defaults(prompt.includes)
    if defaults:
        given = out.setdefault("input", {})
        given["default"] = {**(given.get("default") or {}), **defaults}
        carried["partDefaults"] = sorted(defaults)


def _model_out(model: Any, out: dict, dotprompt: dict, carried: dict) -> None:
    if not isinstance(model, dict):
        return
    model = dict(model)
    conf = dict(model.pop("configuration", None) or {})
    if isinstance(conf.get("name"), str):
        out["model"] = conf.pop("name")
    params = dict(model.pop("parameters", None) or {})
    config = dict(dotprompt.pop("config", None) or {})
    back = {v: k for k, v in CONFIG.items()}
    for key in list(params):
        if key in back:
            config[back[key]] = params.pop(key)
    if config:
        out["config"] = config
    if model.get("api") == "chat":
        del model["api"]
    leftover = {**model, **({"configuration": conf} if conf else {}),
                **({"parameters": params} if params else {})}
    if leftover:
        carried["model"] = leftover


def _inputs_out(inputs: Any, out: dict, dotprompt: dict, carried: dict) -> None:
    given = dict(dotprompt.pop("input", None) or {})
    if isinstance(inputs, dict) and inputs:
        props: dict[str, Any] = {}
        required = []
        defaults: dict[str, Any] = {}
        samples: dict[str, Any] = {}
        for name, spec in inputs.items():
            spec = dict(spec) if isinstance(spec, dict) else {}
            if spec.get("required", True) is not False:
                required.append(name)
            if "default" in spec:
                defaults[name] = spec["default"]
            for key in ("sample", "example"):
                if key in spec:
                    samples[name] = spec[key]
            props[name] = {k: v for k, v in spec.items()
                           if k in _SCHEMA_WORDS and k not in ("required", "default")}
        schema: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            schema["required"] = required
        if any(props.values()) or set(props) - set(defaults):
            given["schema"] = to_picoschema(schema)  # (defaults alone declare the rest)
        if defaults:
            given["default"] = defaults
        if samples:
            carried["samples"] = samples
    if given:
        out["input"] = given


register_format(Format("dotprompt", (".prompt",), import_dotprompt, export_dotprompt))
