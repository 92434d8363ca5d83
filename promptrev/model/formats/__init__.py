"""Other prompt formats, in and out: Dotprompt (``.prompt``) and GitHub Models
(``.prompt.yml``), converted to and from the stored form, Prompty.

A format registers itself by name with the suffixes it reads (:func:`register_format`).
``importer`` turns one file into a :class:`Converted` (a ``.prompty`` text, and for
GitHub Models files the test data as a dataset and the evaluators as scorer specs);
``exporter`` turns a stored prompt back into the format's files. What each conversion
keeps is written down in the module of each format and proved by ``tests/test_formats``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from promptrev.errors import ValidationFailed

from ..prompty import Prompt


@dataclass
class Converted:
    """One imported file as promptrev stores it."""

    prompt: str  # the .prompty text
    dataset: str | None = None  # JSONL, one case per line, when the file carries test data
    scorers: list[Any] = field(default_factory=list)  # evaluation scorer specs
    notes: list[str] = field(default_factory=list)  # what did not map, said for the user
    # Prompts the scorers use (GitHub Models' LLM evaluators as judge prompts), by the
    # suffix of their name: stored as NAME + suffix, and a scorer spec whose
    # ``judge.prompt`` is that suffix is given the name (pinned to the version saved).
    prompts: dict[str, str] = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)  # registry prompts it includes
    part_defaults: dict[str, Any] = field(default_factory=dict)  # its parts' defaults


@dataclass
class Exported:
    """A stored prompt in another format: file name (relative to the prompt's folder) →
    text, and ``shared`` files (relative to the export's root: a registry part's)."""

    files: dict[str, str]
    notes: list[str] = field(default_factory=list)
    shared: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Format:
    """A prompt format promptrev reads and writes."""

    name: str
    suffixes: tuple[str, ...]  # longest first matters: ".prompt.yml" before ".yml"
    importer: Callable[..., Converted] | None
    exporter: Callable[..., Exported]


FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    """Make ``fmt`` known by its name; a duplicate name or suffix is refused."""
    if fmt.name in FORMATS:
        raise ValueError(f"format {fmt.name!r} is registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


def format_of(filename: str) -> Format | None:
    """The importable format a file name says, by suffix (longest suffix wins)."""
    lowered = filename.lower()
    best: tuple[int, Format] | None = None
    for fmt in FORMATS.values():
        if fmt.importer is None:
            continue
        for suffix in fmt.suffixes:
            if lowered.endswith(suffix) and (best is None or len(suffix) > best[0]):
                best = (len(suffix), fmt)
    return best[1] if best else None


def stem(filename: str, fmt: Format) -> str:
    """The file name without the format's suffix."""
    for suffix in sorted(fmt.suffixes, key=len, reverse=True):
        if filename.lower().endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def export(prompt: Prompt, text: str, name: str, format_name: str, *,
           cases: list | None = None) -> Exported:
    """The stored prompt ``name`` (parsed, and its text) in ``format_name``; ``cases`` (a
    dataset's) go with formats that carry test data."""
    fmt = FORMATS.get(format_name)
    if fmt is None:
        raise ValidationFailed(f"unknown format {format_name!r} (formats: "
                               f"{', '.join(sorted(FORMATS))})")
    return fmt.exporter(prompt, text, name, cases=cases)


def output_json_schema(outputs: dict[str, Any]) -> dict[str, Any]:
    """A prompt's ``outputs`` as one object JSON Schema (as the runner reads them: a
    Prompty-style ``{name: {type}}`` mapping has every field required)."""
    if outputs.get("type") == "object" and isinstance(outputs.get("properties"), dict):
        return outputs
    props = {k: {kk: vv for kk, vv in v.items() if kk not in ("sample", "default")}
             if isinstance(v, dict) else {} for k, v in outputs.items()}
    return {"type": "object", "properties": props, "required": list(props)}


def front_matter(front: dict[str, Any], body: str) -> str:
    """A YAML front matter and a body as one file (keys in the order given)."""
    return f"---\n{dump_yaml(front)}---\n{body}"


def dump_yaml(data: Any) -> str:
    """YAML as people write it: keys in order, text as is, long strings as blocks."""
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True,
                     width=100)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, the way hand-written prompt files have them."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not value.endswith((" ", "\t")) and \
        "\n " not in value.split("\n", 1)[0] else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _text)


def _prompty_exporter(prompt: Prompt, text: str, name: str, **_: Any) -> Exported:
    return Exported({name.rsplit("/", 1)[-1] + ".prompty": text})


register_format(Format("prompty", (".prompty",), None, _prompty_exporter))

from . import dotprompt, github_models  # noqa: E402,F401  (they register themselves)
