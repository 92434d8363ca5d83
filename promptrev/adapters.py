"""Adapters (LoRA, soft prompts) as versioned artifacts.

An adapter version is a folder on ``main``::

    adapters/<name>/adapter.yaml                the card: base model, PEFT type, lineage…
    adapters/<name>/adapter_config.json         PEFT's own config, as PEFT wrote it
    adapters/<name>/adapter_model.safetensors   a Git LFS pointer; bytes in the object store

The card records the sha256 of the other two files, so the card changes whenever anything
does: the card is the artifact's file for versions, labels and history, and a version
pins exactly one config and one set of weights. Weights never enter Git objects.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from promptrev.model.prompty import Problem

from .errors import NotFound, ValidationFailed
from .storage.objects import ObjectStore, Pointer

if TYPE_CHECKING:
    from promptrev.model.artifacts import Version
    from promptrev.model.diffing import Diff

    from .registry import Registry
    from .runner.base import AdapterSource

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


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~15x faster on cards


def validate_card(text: str, filename: str) -> list[Problem]:
    """Check an adapter card; raise :class:`ValidationFailed` naming file, line, problem."""
    _load_card(text, filename)
    return []


def _load_card(text: str, filename: str) -> dict[str, Any]:
    try:
        card = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise ValidationFailed(f"{filename}: invalid YAML: {getattr(exc, 'problem', exc)}",
                               [{"file": filename, "line": line,
                                 "message": f"invalid YAML: {getattr(exc, 'problem', exc)}"}]
                               ) from None
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


def read_folder(folder: str, objects: ObjectStore, *, lineage: dict | None = None,
                training: dict | None = None, metrics: dict | None = None,
                description: str | None = None) -> AdapterFiles:
    """Read a PEFT adapter folder, store its weights, and build its card."""
    config_path = os.path.join(folder, CONFIG)
    weights_path = os.path.join(folder, WEIGHTS)
    if not os.path.isfile(config_path):
        raise ValidationFailed(f"{folder}: no {CONFIG} (save the adapter with PEFT's "
                               "save_pretrained)")
    if not os.path.isfile(weights_path):
        hint = " (adapter_model.bin is not accepted: save with safe_serialization)" if \
            os.path.exists(os.path.join(folder, "adapter_model.bin")) else ""
        raise ValidationFailed(f"{folder}: no {WEIGHTS}{hint}")
    with open(config_path, "rb") as fh:
        config_bytes = fh.read()
    try:
        config = json.loads(config_bytes)
    except ValueError as exc:
        raise ValidationFailed(f"{config_path}: not valid JSON: {exc}") from None
    if not isinstance(config, dict) or "peft_type" not in config:
        raise ValidationFailed(f"{config_path}: not a PEFT adapter config (no peft_type)")
    _check_safetensors(weights_path)
    weights = objects.put_file(weights_path)
    card = build_card(config, config_bytes, weights, lineage=lineage, training=training,
                      metrics=metrics, description=description)
    return AdapterFiles(card, config_bytes, weights)


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


def materialize(dest_root: str, key: str, card: dict[str, Any], config_bytes: bytes,
                pointer: Pointer, objects: ObjectStore) -> str:
    """A local PEFT folder for one adapter version (cached by ``key``), weights verified.

    The cached copy's weights are checked against the pointer on every call, so a
    corrupted cache or object store is an error, never a silently wrong model.
    """
    folder = os.path.join(dest_root, key)
    weights = os.path.join(folder, WEIGHTS)
    if os.path.isdir(folder):
        ObjectStore.verify_file(weights, pointer)
        return folder
    os.makedirs(dest_root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".partial-", dir=dest_root)
    try:
        with open(os.path.join(tmp, CONFIG), "wb") as fh:
            fh.write(config_bytes)
        with open(os.path.join(tmp, CARD), "w", encoding="utf-8") as fh:
            fh.write(dump_card(card))
        objects.copy_to(pointer, os.path.join(tmp, WEIGHTS))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process materialized it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def weight_changes(old: bytes | None, new: bytes | None, card_old: dict | None,
                   card_new: dict | None) -> list[dict[str, Any]]:
    """Per-module norm of the weight change between two adapter versions.

    For LoRA the effective update of a module is ``B @ A * alpha / r``; factors are not
    unique, so the norm is taken of the difference of the products. Other tensors (soft
    prompt embeddings…) are compared directly. Needs numpy (via safetensors), not torch.
    """
    if not old or not new:
        return []
    from safetensors.numpy import load

    a, b = load(old), load(new)
    scale_a, scale_b = _lora_scale(card_old), _lora_scale(card_new)
    out, done = [], set()
    for key in sorted(set(a) | set(b)):
        if key in done:
            continue
        if ".lora_A." in key:
            key_b = key.replace(".lora_A.", ".lora_B.")
            done |= {key, key_b}
            module = key.split(".lora_A.")[0]
            delta_a = _product(a, key, key_b, scale_a)
            delta_b = _product(b, key, key_b, scale_b)
            out.append(_norms(module, delta_a, delta_b))
        elif ".lora_B." not in key:
            done.add(key)
            out.append(_norms(key, a.get(key), b.get(key)))
    return out


def _lora_scale(card: dict | None) -> float:
    if not card or not card.get("rank"):
        return 1.0
    return float(card.get("alpha") or card["rank"]) / float(card["rank"])


def _product(tensors: dict, key_a: str, key_b: str, scale: float):
    if key_a not in tensors or key_b not in tensors:
        return None
    return (tensors[key_b].astype("float64") @ tensors[key_a].astype("float64")) * scale


def _norms(module: str, old, new) -> dict[str, Any]:
    import numpy as np

    if old is None or new is None or old.shape != new.shape:
        return {"module": module, "change": "added" if old is None else (
            "removed" if new is None else "reshaped"), "delta_norm": None,
            "relative": None}
    old, new = old.astype("float64"), new.astype("float64")
    delta = float(np.linalg.norm(new - old))
    base = float(np.linalg.norm(old))
    return {"module": module, "change": "changed" if delta else "same",
            "delta_norm": delta, "relative": delta / base if base else None,
            "shape": list(new.shape)}


def _check_safetensors(path: str) -> None:
    """Refuse a file that is not safetensors (header length + JSON header)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValidationFailed(f"{path}: not a safetensors file (too short)")
        length = int.from_bytes(head, "little")
        if length <= 0 or length > 100 * 1024 * 1024:
            raise ValidationFailed(f"{path}: not a safetensors file (bad header length)")
        try:
            json.loads(fh.read(length))
        except ValueError:
            raise ValidationFailed(f"{path}: not a safetensors file (bad header)") from None


@dataclass(frozen=True)
class AdapterVersion:
    """One version of an adapter as stored: card, PEFT config, weights pointer."""

    version: Version
    card: dict[str, Any]
    config_bytes: bytes
    pointer: Pointer

    @property
    def files(self) -> AdapterFiles:
        """The same version as files to stage again (content rollback)."""
        return AdapterFiles(self.card, self.config_bytes, self.pointer)

    @property
    def config(self) -> dict[str, Any]:
        """PEFT's adapter_config.json."""
        return json.loads(self.config_bytes)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {**self.version.to_dict(), "card": self.card, "config": self.config,
                "weights": {"oid": self.pointer.oid, "size": self.pointer.size}}


def load_version(registry: Registry, ref) -> AdapterVersion:
    """Read an adapter version from Git and check its files against its card."""
    version = registry.resolve(ref, "adapter")
    if version.deleted:
        raise NotFound(f"adapter '{version.name}' version {version.number} is a deletion")
    card_text = registry.store.blob(version.blob).decode("utf-8")
    card = parse_card(card_text)
    folder = f"adapters/{version.name}"
    blobs = {}
    for filename in SIDECARS:
        blob = registry.store.blob_at(version.commit, f"{folder}/{filename}")
        if blob is None:
            raise NotFound(f"adapter {version.ref}: {folder}/{filename} is missing in Git")
        blobs[filename] = registry.store.blob(blob)
    pointer = check_sidecars(card, blobs[CONFIG], blobs[WEIGHTS].decode("utf-8", "replace"),
                             folder)
    return AdapterVersion(version, card, blobs[CONFIG], pointer)


def source(registry: Registry, ref) -> AdapterSource:
    """A verified local PEFT folder for an adapter version, for the runner."""
    from .runner.base import AdapterSource

    adapter = load_version(registry, ref)
    root = os.path.join(registry.path, "cache", "adapters")
    folder = materialize(root, adapter.version.blob, adapter.card, adapter.config_bytes,
                         adapter.pointer, registry.objects)
    return AdapterSource(adapter.version.blob, folder, adapter.card["peft_type"],
                         adapter.version.ref)


def adapter_diff(registry: Registry, a: Version, b: Version, text_a: str, text_b: str
                 ) -> Diff:
    """Card diff (text and fields) plus per-module norms of the weight change."""
    from promptrev.model.diffing import Diff, field_diff, text_diff

    cards, weights = [], []
    for version, text in ((a, text_a), (b, text_b)):
        if version.deleted or not text:
            cards.append({})
            weights.append(None)
            continue
        adapter = load_version(registry, version.ref)
        cards.append(adapter.card)
        weights.append(registry.objects.read(adapter.pointer))
    fields = field_diff(cards[0], cards[1], {}, {})
    diff = Diff(a.ref, b.ref, text_diff(text_a, text_b, a.ref, b.ref),
                [f for f in fields if f.path != "inputs"])
    diff.weights = weight_changes(weights[0], weights[1], cards[0], cards[1])
    return diff
