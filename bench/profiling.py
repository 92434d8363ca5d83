"""Where does a write's time go? Temporarily wraps core functions with timers.

Used only in a separate phase after the headline measurements (the wrappers cost a few
microseconds per call), to explain the figures; nothing in promptrev is modified on disk.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator


@contextlib.contextmanager
def component_timers() -> Iterator[dict[str, float]]:
    """Yield a dict label -> total seconds, filled while the block runs."""
    import promptrev.registry as registry_mod
    import promptrev.transactions as transactions_mod
    from promptrev.model.artifacts import KINDS
    from promptrev.storage import indexer
    from promptrev.storage.gitstore import GitStore

    totals: dict[str, float] = defaultdict(float)
    undo: list[tuple[object, str, object, bool]] = []

    def wrap(owner: object, attr: str, label: str) -> None:
        original = getattr(owner, attr, None)
        if original is None:  # the core changed shape: say so, and time what still exists
            print(f"  [profiling] {getattr(owner, '__name__', owner)}.{attr} no longer "
                  f"exists: '{label}' is not timed", flush=True)
            return

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                totals[label] += time.perf_counter() - start

        frozen = False
        try:
            setattr(owner, attr, timed)
        except AttributeError:  # frozen dataclass instance (dataclasses.FrozenInstanceError)
            object.__setattr__(owner, attr, timed)
            frozen = True
        undo.append((owner, attr, original, frozen))

    kind = KINDS["prompt"]
    wrap(kind, "validate", "validate: parse_prompt (YAML + Jinja compile)")
    wrap(GitStore, "write_blob", "git: write_blob")
    wrap(GitStore, "write_commit", "git: build trees + commit")
    wrap(GitStore, "move_main", "git: move main (ref CAS)")
    wrap(GitStore, "changes", "index catch_up: GitStore.changes (tree diff)")
    wrap(indexer._Applier, "__init__", "index catch_up: _Applier init (SELECT max ids)")
    wrap(indexer._Applier, "_load", "index catch_up: _load artifacts")
    wrap(indexer._Applier, "_flush", "index catch_up: _flush inserts/updates")
    wrap(registry_mod, "catch_up", "index catch_up (total, all calls)")
    wrap(transactions_mod, "check_many", "validate: check_many (bulk, all cores)")
    wrap(transactions_mod.Transaction, "_changes", "Transaction._changes (artifact lookups)")
    wrap(transactions_mod.Transaction, "_made_versions", "Transaction._made_versions")
    wrap(transactions_mod.Transaction, "_record_label_event",
         "Transaction._record_label_event")
    try:
        yield totals
    finally:
        for owner, attr, original, frozen in reversed(undo):
            if frozen:
                object.__setattr__(owner, attr, original)
            else:
                setattr(owner, attr, original)


def describe(totals: dict[str, float], per: int, unit: str = "ms") -> dict[str, float]:
    """Totals divided by ``per`` operations, in ms, largest first."""
    scale = 1e3 if unit == "ms" else 1e6
    return {k: round(v / per * scale, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
