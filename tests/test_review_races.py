"""Change requests opened, approved and merged while other processes save to ``main``.

Every feature transaction that reads before it writes must take SQLite's write lock up
front (``storage.sql.writing``): a deferred transaction that has read cannot become a
writer after another process committed, and SQLite then answers "database is locked" at
once, whatever the busy timeout.
"""

from __future__ import annotations

import multiprocessing
import time

from promptrev.accounts import User
from promptrev.errors import Busy
from promptrev.policy import Policy
from promptrev.registry import Registry
from promptrev.reviews import Edit, Reviews

from .conftest import PROMPT

SAVERS, SAVES, MERGES = 4, 25, 15


def _text(tag: str) -> str:
    return PROMPT.replace("Greets a user.", f"Greets {tag}.")


def _save(path: str, worker: int) -> list[int]:
    numbers = []
    with Registry.open(path) as reg:
        for k in range(SAVES):
            while True:
                try:
                    numbers.append(reg.save(f"s{worker}", _text(f"{worker}-{k}")).number)
                    break
                except Busy:
                    time.sleep(0.01)
    return numbers


def _review(path: str) -> int:
    admin, editor = User(1, "root", "r@x", "admin"), User(2, "ed", "e@x", "editor")
    with Registry.open(path) as reg:
        reviews = Reviews(reg, Policy(required_approvals=1))
        for k in range(MERGES):
            request = reviews.open(editor, f"t{k}", [Edit(f"cr{k % 3}", _text(f"cr{k}"))])
            reviews.comment(request.number, admin, "looks fine")
            reviews.approve(request.number, admin)
            reviews.merge(request.number, admin)
    return MERGES


def test_reviews_and_saves_from_several_processes(tmp_path):
    path = str(tmp_path / "reg")
    Registry.init(path).close()
    with multiprocessing.get_context("spawn").Pool(SAVERS + 1) as pool:
        saves = [pool.apply_async(_save, (path, w)) for w in range(SAVERS)]
        merges = pool.apply_async(_review, (path,))
        numbers = [s.get(timeout=300) for s in saves]
        assert merges.get(timeout=300) == MERGES
    with Registry.open(path) as reg:
        for worker, got in enumerate(numbers):
            assert got == list(range(1, SAVES + 1))
            assert len(reg.history(f"s{worker}")) == SAVES
        assert [len(reg.history(f"cr{k}")) for k in range(3)] == [5, 5, 5]
        assert [r.status for r in Reviews(reg).list("merged")] == ["merged"] * MERGES
        assert reg.fsck()["ok"]
