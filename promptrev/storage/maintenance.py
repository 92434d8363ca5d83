"""Consistency checks of a registry (``promptrev fsck``).

Uses GitPython to run real ``git fsck``: object-level checking is where Git's own
behaviour matters, and this is not a hot path.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import git
from sqlalchemy.engine import Engine

from promptrev.model.adapter_cards import CONFIG, WEIGHTS, check_sidecars, parse_card
from promptrev.model.artifacts import KINDS

from ..errors import PromptrevError
from .gitstore import GitStore
from .index import IndexReader, create_index_engine
from .indexer import catch_up
from .objects import ObjectStore


def check(store: GitStore, engine: Engine) -> dict[str, Any]:
    """Return a report: Git objects, index vs a fresh rebuild, artifact validity, locks."""
    problems: list[str] = []
    try:
        git.Repo(store.path).git.fsck("--full", "--no-dangling", "--no-progress")
    except git.GitCommandError as exc:
        problems.append(f"git fsck: {exc.stderr.strip() or exc}")
    for lock in store.stale_ref_locks():
        problems.append(f"stale lock file {lock} (left by a killed writer)")
    catch_up(store, engine)
    current = IndexReader(engine).dump()
    with tempfile.TemporaryDirectory() as tmp:
        fresh_engine = create_index_engine("sqlite:///" + os.path.join(tmp, "rebuild.sqlite"))
        try:
            catch_up(store, fresh_engine, rebuild=True)
            rebuilt = IndexReader(fresh_engine).dump()
        finally:
            fresh_engine.dispose()
    for table in rebuilt:
        if rebuilt[table] != current.get(table):
            problems.append(f"index table '{table}' differs from a rebuild from Git "
                            "(run 'promptrev reindex')")
    invalid = _invalid_artifacts(store)
    problems += invalid
    return {"ok": not problems, "problems": problems, "head": store.head(),
            "rows": {t: len(r) for t, r in current.items()}}


def _invalid_artifacts(store: GitStore) -> list[str]:
    head = store.head()
    if head is None:
        return []
    out = []
    tree = store.repo[head].tree
    for kind in KINDS.values():
        if kind.folder not in tree:
            continue
        for path, blob in _walk(store, tree[kind.folder], kind.folder):
            name = kind.artifact_of(path)
            if name is None:
                continue
            try:
                text = store.blob(blob).decode("utf-8")
                kind.validate(text, path)
                if kind.sidecars:
                    _check_sidecars(store, head, path.rsplit("/", 1)[0], text)
            except UnicodeDecodeError:
                out.append(f"{path}: not UTF-8")
            except PromptrevError as exc:
                out.append(exc.message)
    return out


def _check_sidecars(store: GitStore, head: str, folder: str, card_text: str) -> None:
    """An adapter's config and weights must be the ones its card pins, and intact."""
    blobs = {}
    for name in (CONFIG, WEIGHTS):
        blob = store.blob_at(head, f"{folder}/{name}")
        if blob is None:
            raise PromptrevError(f"{folder}/{name} is missing")
        blobs[name] = store.blob(blob)
    pointer = check_sidecars(parse_card(card_text), blobs[CONFIG],
                             blobs[WEIGHTS].decode("utf-8", "replace"), folder)
    ObjectStore(os.path.join(store.path, "lfs", "objects")).verify(pointer)


def _walk(store: GitStore, entry, prefix: str):
    obj = store.repo[entry.id]
    if obj.type_str != "tree":
        yield prefix, str(entry.id)
        return
    for child in obj:
        yield from _walk(store, child, f"{prefix}/{child.name}")
