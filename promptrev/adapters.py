"""Adapters (LoRA, soft prompts) as versioned artifacts: the registry's adapter service.

An adapter version is a card plus PEFT's config and a weights pointer, in one folder on
``main`` (the format and its checks: :mod:`promptrev.model.adapter_cards`). Here is what
needs the registry or the disk: reading a PEFT folder into a version (weights to the
object store; they never enter Git objects), loading a version back with its files
checked, a verified local copy for the runner, and the weight diff between two versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from promptrev.model.adapter_cards import (
    CARD,
    CONFIG,
    SIDECARS,
    WEIGHTS,
    AdapterFiles,
    AdapterSource,
    build_card,
    check_sidecars,
    config_problem,
    dump_card,
    parse_card,
    safetensors_problem,
)
from promptrev.model.artifacts import KINDS
from promptrev.model.diffing import Diff, field_diff, text_diff
from promptrev.model.lfs import Pointer

from .errors import NotFound, ValidationFailed
from .storage.objects import ObjectStore

if TYPE_CHECKING:
    from promptrev.model.artifacts import Version

    from .registry import Registry


def read_folder(folder: str, objects: ObjectStore, *, lineage: dict | None = None,
                training: dict | None = None, metrics: dict | None = None,
                description: str | None = None) -> AdapterFiles:
    """Read a PEFT adapter folder, store its weights, and build its card."""
    config, config_bytes = _checked_folder(folder)
    weights = objects.put_file(os.path.join(folder, WEIGHTS))
    card = build_card(config, config_bytes, weights, lineage=lineage, training=training,
                      metrics=metrics, description=description)
    return AdapterFiles(card, config_bytes, weights)


def card_of_folder(folder: str, *, lineage: dict | None = None,
                   description: str | None = None) -> dict[str, Any]:
    """The card of a PEFT folder, checked as ``adapter push`` checks it, storing nothing.

    For a ``git push`` of an adapter version from a clone: git-lfs uploads the weights,
    the card beside them says what they are.
    """
    config, config_bytes = _checked_folder(folder)
    with open(os.path.join(folder, WEIGHTS), "rb") as fh:
        digest, size = hashlib.sha256(), 0
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return build_card(config, config_bytes, Pointer(digest.hexdigest(), size),
                      lineage=lineage, description=description)


def _checked_folder(folder: str) -> tuple[dict[str, Any], bytes]:
    """PEFT's config of a folder (parsed, and as bytes), its weights checked."""
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
    problem = config_problem(config_bytes)
    if problem:
        raise ValidationFailed(f"{config_path}: {problem}")
    _check_safetensors(weights_path)
    return json.loads(config_bytes), config_bytes


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
        problem = safetensors_problem(fh)
    if problem:
        raise ValidationFailed(f"{path}: {problem}")


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
    kind = KINDS["adapter"]
    # The card's own path at that commit: in its bucket, or where versions made before
    # buckets (model.fanout) kept it.
    card_path = next((p for p in kind.paths(version.name)
                      if registry.store.blob_at(version.commit, p) == version.blob),
                     kind.path(version.name))
    folder = card_path.rsplit("/", 1)[0]
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
    adapter = load_version(registry, ref)
    root = os.path.join(registry.path, "cache", "adapters")
    folder = materialize(root, adapter.version.blob, adapter.card, adapter.config_bytes,
                         adapter.pointer, registry.objects)
    return AdapterSource(adapter.version.blob, folder, adapter.card["peft_type"],
                         adapter.version.ref)


def adapter_diff(registry: Registry, a: Version, b: Version, text_a: str, text_b: str
                 ) -> Diff:
    """Card diff (text and fields) plus per-module norms of the weight change."""
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
