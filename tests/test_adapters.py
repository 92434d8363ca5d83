"""Adapters as artifacts: card + PEFT config + LFS pointer, weights in the object store."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from safetensors.numpy import save_file

from promptrev.errors import NotFound, ValidationFailed
from promptrev.model.lfs import Pointer
from promptrev.storage.objects import CorruptObject

from .conftest import at


def folder_of(name: str) -> str:
    """The folder of an adapter's files in the registry's tree (in its bucket)."""
    return at(name, "adapter").rsplit("/", 1)[0]


def make_adapter(folder, seed: int = 0, *, rank: int = 4, peft_type: str = "LORA",
                 scale: float = 1.0):
    """A PEFT-format LoRA folder (config + safetensors) with seeded weights."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(2):
        for proj in ("q_proj", "v_proj"):
            key = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            tensors[f"{key}.lora_A.weight"] = rng.normal(size=(rank, 16)).astype("float32")
            tensors[f"{key}.lora_B.weight"] = (rng.normal(size=(16, rank)) * scale).astype(
                "float32")
    save_file(tensors, os.path.join(folder, "adapter_model.safetensors"))
    config = {"peft_type": peft_type, "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 8,
              "target_modules": ["v_proj", "q_proj"], "base_model_name_or_path": "tiny-llama",
              "revision": None}
    with open(os.path.join(folder, "adapter_config.json"), "w") as fh:
        json.dump(config, fh, indent=2)
    return folder


def test_push_stores_card_config_and_pointer(registry, tmp_path):
    folder = make_adapter(tmp_path / "lora")
    v1 = registry.push_adapter("support/tone", str(folder), message="first",
                               lineage={"dataset": "dataset:sentiment@1"})
    assert (v1.kind, v1.number) == ("adapter", 1)
    head = registry.store.head()
    folder_in_git = folder_of("support/tone")
    files = {p: registry.store.blob(registry.store.blob_at(head, f"{folder_in_git}/{p}"))
             for p in ("adapter.yaml", "adapter_config.json", "adapter_model.safetensors")}
    pointer = Pointer.parse(files["adapter_model.safetensors"].decode())
    weights = (folder / "adapter_model.safetensors").read_bytes()
    assert pointer.size == len(weights) and len(files["adapter_model.safetensors"]) < 200
    assert registry.objects.read(pointer) == weights
    assert files["adapter_config.json"] == (folder / "adapter_config.json").read_bytes()
    adapter = registry.adapter("support/tone@1")
    assert adapter.card["peft_type"] == "LORA" and adapter.card["rank"] == 4
    assert adapter.card["target_modules"] == ["q_proj", "v_proj"]
    assert adapter.card["base_model"]["name"] == "tiny-llama"
    assert adapter.card["lineage"] == {"dataset": "dataset:sentiment@1"}
    # Pushing the same folder with the same card again is not a new version.
    again = registry.push_adapter("support/tone", str(folder),
                                  lineage={"dataset": "dataset:sentiment@1"})
    assert again.number == 1
    # Weights never enter Git objects: the repository holds no blob that large.
    sizes = subprocess.run(["git", "--git-dir", registry.path, "cat-file",
                            "--batch-all-objects", "--batch-check=%(objectsize)"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert max(map(int, sizes)) < len(weights)


def test_identical_weights_are_stored_once(registry, tmp_path):
    folder = make_adapter(tmp_path / "a")
    registry.push_adapter("a", str(folder))
    registry.push_adapter("b", str(folder), description="same weights, another name")
    registry.push_adapter("a", str(folder), description="new card, same weights")
    stored = [f for _, _, files in os.walk(registry.objects.root) for f in files
              if not f.startswith(".")]
    assert len(stored) == 1
    assert [v.number for v in registry.history("a", "adapter")] == [2, 1]


def test_versions_labels_history_and_diff(registry, tmp_path):
    registry.push_adapter("tone", str(make_adapter(tmp_path / "v1", seed=1)))
    registry.push_adapter("tone", str(make_adapter(tmp_path / "v2", seed=2, rank=8)), base=1)
    registry.set_label("tone", "production", 1)
    assert registry.adapter("tone@production").version.number == 1
    diff = registry.diff("tone@1", "tone@2")
    changed = {f.path for f in diff.fields}
    assert "rank" in changed and "files.adapter_model.safetensors.sha256" in changed
    modules = {w["module"] for w in diff.weights}
    assert "base_model.model.model.layers.0.self_attn.q_proj" in modules
    # rank 4 -> 8: shapes differ per factor, but the effective update has one shape.
    assert all(w["change"] == "changed" and w["delta_norm"] > 0 for w in diff.weights)
    same = registry.diff("tone@1", "tone@1")
    assert all(w["change"] == "same" and w["delta_norm"] == 0 for w in same.weights)


def test_delta_norm_is_of_the_effective_update(registry, tmp_path):
    base = make_adapter(tmp_path / "base", seed=3)
    registry.push_adapter("t", str(base))
    # Same effective update B @ A with different factors: no change.
    from safetensors.numpy import load_file

    tensors = load_file(str(base / "adapter_model.safetensors"))
    for key in list(tensors):
        if ".lora_A." in key:
            tensors[key] = tensors[key] * 2
        elif ".lora_B." in key:
            tensors[key] = tensors[key] / 2
    other = tmp_path / "refactored"
    other.mkdir()
    save_file(tensors, str(other / "adapter_model.safetensors"))
    (other / "adapter_config.json").write_bytes((base / "adapter_config.json").read_bytes())
    registry.push_adapter("t", str(other), base=1)
    diff = registry.diff("t@1", "t@2")
    assert all(w["delta_norm"] < 1e-4 for w in diff.weights)


def test_corrupted_object_is_an_error_never_a_wrong_model(registry, tmp_path):
    registry.push_adapter("x", str(make_adapter(tmp_path / "x")))
    adapter = registry.adapter("x")
    path = registry.objects.path(adapter.pointer.oid)
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\xff\xff")
    with pytest.raises(CorruptObject, match="corrupt"):
        registry.adapter_source("x")
    with pytest.raises(CorruptObject):
        registry.diff("x@1", "x@1")
    assert not registry.fsck()["ok"]


def test_materialized_folder_is_cached_and_verified(registry, tmp_path):
    folder = make_adapter(tmp_path / "m")
    registry.push_adapter("m", str(folder))
    source = registry.adapter_source("m")
    assert sorted(os.listdir(source.path)) == ["adapter.yaml", "adapter_config.json",
                                               "adapter_model.safetensors"]
    assert (tmp_path / "m" / "adapter_model.safetensors").read_bytes() == open(
        os.path.join(source.path, "adapter_model.safetensors"), "rb").read()
    assert registry.adapter_source("m").path == source.path  # cached by content
    with open(os.path.join(source.path, "adapter_model.safetensors"), "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(CorruptObject):
        registry.adapter_source("m")


def test_delete_restore_and_rollback(registry, tmp_path):
    registry.push_adapter("r", str(make_adapter(tmp_path / "1", seed=1)))
    registry.push_adapter("r", str(make_adapter(tmp_path / "2", seed=2)), base=1)
    deleted = registry.delete("r", kind="adapter")
    assert deleted.deleted and deleted.number == 3
    head = registry.store.head()
    assert registry.store.blob_at(head, f"{folder_of('r')}/adapter_config.json") is None
    assert registry.store.blob_at(head, f"{folder_of('r')}/adapter_model.safetensors") is None
    with pytest.raises(NotFound):
        registry.adapter("r")
    restored = registry.rollback("r", 1, kind="adapter")
    assert restored.number == 4
    assert registry.adapter("r").pointer == registry.adapter("r@1").pointer
    fsck = registry.fsck()
    assert fsck["ok"], fsck["problems"]


def test_bad_adapter_folders_are_refused(registry, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValidationFailed, match="adapter_config.json"):
        registry.push_adapter("bad", str(empty))
    folder = make_adapter(tmp_path / "f")
    (folder / "adapter_model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(ValidationFailed, match="safetensors"):
        registry.push_adapter("bad", str(folder))
    folder = make_adapter(tmp_path / "g")
    (folder / "adapter_config.json").write_text("{nope")
    with pytest.raises(ValidationFailed, match="JSON"):
        registry.push_adapter("bad", str(folder))
    with pytest.raises(ValidationFailed, match="push_adapter"):
        registry.save("bad", "peft_type: LORA\n", kind="adapter")
    assert registry.list(kind="adapter") == []


def test_card_edited_by_plain_git_must_match_its_files(registry, tmp_path):
    from promptrev.storage.gitstore import Signature

    registry.push_adapter("p", str(make_adapter(tmp_path / "p")))
    store = registry.store
    head = store.head()
    bad = store.write_blob(b'{"peft_type": "LORA", "r": 99}')
    sha = store.commit(head, {f"{folder_of('p')}/adapter_config.json": bad}, "edit config",
                       Signature.parse("Eve <eve@example.org>"))
    store.move_main(head, sha, "test")
    problems = registry.fsck()["problems"]
    assert any("adapter_config.json" in p for p in problems)


def test_adapter_cli(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from promptrev.cli.main import main

    monkeypatch.setenv("PROMPTREV_REGISTRY", str(tmp_path / "reg"))
    monkeypatch.setenv("PROMPTREV_AUTHOR", "Tester <t@example.org>")
    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    run("init")
    out = run("adapter", "push", make_adapter(tmp_path / "a1", seed=1), "--name", "tone",
              "--lineage", '{"dataset": "dataset:sentiment@1"}', "-m", "first")
    assert "tone@1  LORA  base tiny-llama" in out
    run("adapter", "push", make_adapter(tmp_path / "a2", seed=2), "--name", "tone", "--base", 1)
    card = json.loads(run("adapter", "show", "tone@1", "--json"))
    assert card["card"]["lineage"] == {"dataset": "dataset:sentiment@1"}
    assert card["config"]["r"] == 4 and card["weights"]["size"] > 0
    diff = run("diff", "adapter:tone@1", "adapter:tone@2")
    assert "files.adapter_model.safetensors.sha256" in diff
    assert "layers.0.self_attn.q_proj: changed" in diff
    run("adapter", "pull", "tone@1", tmp_path / "out")
    assert (tmp_path / "out" / "adapter_model.safetensors").read_bytes() == (
        tmp_path / "a1" / "adapter_model.safetensors").read_bytes()
    assert "tone" in run("list")
    assert "error" in run("adapter", "push", tmp_path / "out", "--name", "tone", "--base", 1,
                          code=4)
