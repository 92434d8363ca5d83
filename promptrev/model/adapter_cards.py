"""The adapter card format: what an adapter version is, checked without touching storage.

An adapter version is a folder on ``main``::

    adapters/<name>/adapter.yaml                the card: base model, PEFT type, lineage…
    adapters/<name>/adapter_config.json         PEFT's own config, as PEFT wrote it
    adapters/<name>/adapter_model.safetensors   a Git LFS pointer; bytes in the object store

The card records the sha256 of the other two files, so the card changes whenever anything
does: the card is the artifact's file for versions, labels and history, and a version
pins exactly one config and one set of weights. This module holds the format (build,
dump, parse, validate) and the checks of the files beside a card; reading folders,
the object store and the runner's copies are :mod:`promptrev.adapters`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, BinaryIO

import yaml

from promptrev.errors import ValidationFailed

from . import safe_yaml
from .lfs import Pointer
from .prompty import Problem

CARD = "adapter.yaml"
CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
SIDECARS = (CONFIG, WEIGHTS)
SUPPORTED_PEFT = ("LORA", "PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "IA3", "ADALORA")


@dataclass(frozen=True)
class AdapterFiles:
    """What a pushed adapter version consists of."""

    card: dict[str, Any]
    config_bytes: bytes
    weights: Pointer


@dataclass(frozen=True)
class AdapterSource:
    """A PEFT adapter folder on local disk, identified by the hash of its content.

    ``key`` is stable for identical adapter content (the registry uses the adapter card's
    blob id), so backends cache loaded adapters by it.
    """

    key: str
    path: str
    peft_type: str = "LORA"
    ref: str | None = None  # e.g. "support/tone@3", for messages and usage records




def validate_card(text: str, filename: str) -> list[Problem]:
    """Check an adapter card; raise :class:`ValidationFailed` naming file, line, problem."""
    _load_card(text, filename)
    return []


def _load_card(text: str, filename: str) -> dict[str, Any]:
    card = safe_yaml.load(text, filename)
    problems = _card_problems(card)
    if problems:
        raise ValidationFailed(f"{filename}: {problems[0]}",
                               [{"file": filename, "line": None, "message": p}
                                for p in problems])
    return card


def _card_problems(card: Any) -> list[str]:
    if not isinstance(card, dict):
        return ["an adapter card must be a YAML mapping"]
    problems = []
    base = card.get("base_model")
    if not isinstance(base, dict) or not isinstance(base.get("name"), str) or not base["name"]:
        problems.append("base_model.name is required (the model the adapter was trained on)")
    if card.get("peft_type") not in SUPPORTED_PEFT:
        problems.append(f"peft_type must be one of {', '.join(SUPPORTED_PEFT)}, not "
                        f"{card.get('peft_type')!r}")
    files = card.get("files")
    if not isinstance(files, dict):
        return problems + [f"files must list {CONFIG} and {WEIGHTS} with sha256 and size"]
    for name in SIDECARS:
        entry = files.get(name)
        if not isinstance(entry, dict):
            problems.append(f"files.{name} is missing")
            continue
        sha = entry.get("sha256")
        if not isinstance(sha, str) or len(sha) != 64 or any(
                c not in "0123456789abcdef" for c in sha):
            problems.append(f"files.{name}.sha256 must be 64 lowercase hex digits")
        if not isinstance(entry.get("size"), int) or entry["size"] < 0:
            problems.append(f"files.{name}.size must be a byte count")
    return problems


def build_card(config: dict[str, Any], config_bytes: bytes, weights: Pointer, *,
               lineage: dict | None = None, training: dict | None = None,
               metrics: dict | None = None, description: str | None = None) -> dict[str, Any]:
    """The card of an adapter: what it is, what it was trained on, what it pins."""
    peft_type = str(config.get("peft_type", "")).upper()
    card: dict[str, Any] = {
        "description": description or "",
        "peft_type": peft_type,
        "task_type": config.get("task_type"),
        "base_model": {"name": config.get("base_model_name_or_path") or "",
                       "revision": config.get("revision")},
    }
    if peft_type in ("LORA", "ADALORA"):
        modules = config.get("target_modules")
        card.update(rank=config.get("r"), alpha=config.get("lora_alpha"),
                    target_modules=sorted(modules) if isinstance(modules, list) else modules)
    if config.get("num_virtual_tokens"):
        card["num_virtual_tokens"] = config["num_virtual_tokens"]
    card["files"] = {
        CONFIG: {"sha256": hashlib.sha256(config_bytes).hexdigest(), "size": len(config_bytes)},
        WEIGHTS: {"sha256": weights.oid, "size": weights.size, "lfs": True},
    }
    card["lineage"] = lineage or {}
    card["training"] = training or {}
    card["metrics"] = metrics or {}
    return card


def dump_card(card: dict[str, Any]) -> str:
    """The card as YAML, in a stable order (so equal cards are equal bytes)."""
    return yaml.safe_dump(card, sort_keys=False, allow_unicode=True, width=100)


def parse_card(text: str) -> dict[str, Any]:
    """A card's YAML as a dict (validated)."""
    return _load_card(text, CARD)


MAX_HEADER = 100 * 1024 * 1024  # the largest safetensors header read


def safetensors_problem(fh: BinaryIO) -> str | None:
    """Why the file open at ``fh`` is not safetensors (its header length and JSON header),
    or None. The one check of weights, for ``adapter push`` and for ``git push`` alike."""
    head = fh.read(8)
    if len(head) < 8:
        return "not a safetensors file (too short)"
    length = int.from_bytes(head, "little")
    if length <= 0 or length > MAX_HEADER:
        return "not a safetensors file (bad header length)"
    try:
        header = json.loads(fh.read(length))
    except ValueError:
        return "not a safetensors file (bad header)"
    if not isinstance(header, dict):
        return "not a safetensors file (bad header)"
    return None


def config_problem(config_bytes: bytes) -> str | None:
    """Why PEFT's ``adapter_config.json`` is not a PEFT config, or None."""
    try:
        config = json.loads(config_bytes)
    except ValueError as exc:
        return f"not valid JSON: {exc}"
    if not isinstance(config, dict) or "peft_type" not in config:
        return "not a PEFT adapter config (no peft_type)"
    return None


def check_sidecars(card: dict[str, Any], config_bytes: bytes, pointer_text: str,
                   where: str) -> Pointer:
    """Check the files stored next to a card against it; return the weights pointer."""
    pointer = Pointer.parse(pointer_text, f"{where}/{WEIGHTS}")
    files = card["files"]
    if hashlib.sha256(config_bytes).hexdigest() != files[CONFIG]["sha256"]:
        raise ValidationFailed(f"{where}/{CONFIG} does not match the sha256 in its card")
    if pointer.oid != files[WEIGHTS]["sha256"] or pointer.size != files[WEIGHTS]["size"]:
        raise ValidationFailed(f"{where}/{WEIGHTS} points at other weights than its card")
    return pointer
