"""The layer rules that import contracts cannot state (ARCHITECTURE.md).

``make lint`` runs import-linter's contracts (pyproject.toml, ``[tool.importlinter]``):
layers point down, edges import no storage, SQL or Git library. These tests add what a
contract on modules cannot see: names and attributes.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from promptrev.model.artifacts import KINDS, Kind, register_kind

from .conftest import ROOT

PACKAGE = ROOT / "promptrev"
EDGES = (PACKAGE / "cli", PACKAGE / "server")


def modules(*folders: Path):
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            yield path, ast.parse(path.read_text(), str(path))


def test_edges_import_no_private_name_of_another_module():
    found = []
    for path, tree in modules(*EDGES):
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                found += [f"{path.relative_to(ROOT)}:{node.lineno} {alias.name}"
                          for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert found == []


def test_edges_never_touch_an_engine_or_a_private_attribute_of_the_core():
    found = []
    for path, tree in modules(*EDGES):
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "engine":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .engine")
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name)
                    and node.value.id in ("reg", "registry", "store", "accounts")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert found == []


def test_edges_authorize_only_through_the_policy():
    """One authorization point: an edge never asks an account directly."""
    found = []
    for path, tree in modules(*EDGES):
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr.startswith("require")
                    and "policy" not in ast.unparse(node.func.value)):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node.func)}")
    assert found == []


def test_main_moves_in_one_place():
    """Only the registry's advance_main moves ``main`` (and only storage takes the lock)."""
    found = []
    for path, tree in modules(PACKAGE):
        if path.parent.name == "storage" or path.name == "registry.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in (
                    "move_main", "writer_lock", "_caches_at"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert found == []


def test_the_import_contracts_hold():
    """The layer contracts of pyproject.toml (also run by ``make lint``)."""
    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.exists():
        pytest.skip("import-linter is not installed (make install)")
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_kinds_refuse_a_duplicate_and_every_list_is_derived():
    prompt = KINDS["prompt"]
    with pytest.raises(ValueError, match="clashes with the registered kind 'prompt'"):
        register_kind(Kind("prompt", "other", ".txt", prompt.validate))
    with pytest.raises(ValueError, match="clashes"):
        register_kind(Kind("notes", prompt.folder, ".md", prompt.validate))
    assert list(KINDS) == ["prompt", "dataset", "adapter"]
    retyped = []
    for path, tree in modules(PACKAGE):
        for node in ast.walk(tree):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                words = [e.value for e in node.elts if isinstance(e, ast.Constant)]
                if {"prompt", "dataset", "adapter"} <= set(words):
                    retyped.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert retyped == [], "lists of kinds must come from promptrev.model.artifacts.KINDS"
