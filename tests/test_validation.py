"""Bulk validation on helper processes, and its fallback to this process."""

import sys

import pytest

from promptrev.errors import ValidationFailed
from promptrev.model import validation

from .conftest import PROMPT

ITEMS = [(f"p{i}", PROMPT) for i in range(validation.PARALLEL_MIN_ITEMS)]
ITEMS[7] = ("bad", "---\nname: [x\n---\nuser:\nhi\n")


@pytest.fixture
def fresh_helpers():
    validation._stop_helpers()
    yield
    validation._stop_helpers()


def check(results):
    assert len(results) == len(ITEMS)
    assert all(error is None for i, (_, error) in enumerate(results) if i != 7)
    error = results[7][1]
    assert isinstance(error, ValidationFailed)
    assert error.problems[0]["file"] == "prompts/bad.prompty" and error.problems[0]["line"]


@pytest.mark.skipif((__import__("os").cpu_count() or 1) < 2, reason="needs 2+ cores")
def test_helpers_check_in_parallel(fresh_helpers):
    check(validation.check_many("prompt", ITEMS, 10**6))
    helpers = validation._helpers
    assert len(helpers) == (__import__("os").cpu_count() or 1) - 1
    assert all(h.poll() is None for h in helpers)


def test_helpers_that_cannot_start_fall_back(fresh_helpers, monkeypatch):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    check(validation.check_many("prompt", ITEMS, 10**6))
    assert validation._helpers == []


@pytest.mark.skipif((__import__("os").cpu_count() or 1) < 2, reason="needs 2+ cores")
def test_helpers_that_die_fall_back(fresh_helpers):
    validation.check_many("prompt", ITEMS[:300], 10**6)
    for helper in validation._helpers:
        helper.kill()
        helper.wait()
    check(validation.check_many("prompt", ITEMS, 10**6))
    assert validation._helpers == []  # not restarted after a failure


@pytest.mark.skipif((__import__("os").cpu_count() or 1) < 2, reason="needs 2+ cores")
def test_a_crash_in_this_process_share_leaves_no_unread_answers(fresh_helpers, monkeypatch):
    validation.check_many("prompt", ITEMS, 10**6)  # helpers started
    real = validation.check_content

    def crash_on_first(kind, name, content, max_bytes):
        if name == ITEMS[0][0]:
            raise RuntimeError("boom")
        return real(kind, name, content, max_bytes)

    monkeypatch.setattr(validation, "check_content", crash_on_first)
    with pytest.raises(RuntimeError):
        validation.check_many("prompt", ITEMS, 10**6)
    monkeypatch.setattr(validation, "check_content", real)
    check(validation.check_many("prompt", ITEMS, 10**6))  # answers of this call, not the last


def test_large_transactions_hold_off_the_collector_and_restore_it(registry):
    import gc

    from promptrev.transactions import _collection_paused

    assert gc.isenabled()
    with _collection_paused(validation.PARALLEL_MIN_ITEMS):
        assert not gc.isenabled()
        with _collection_paused(validation.PARALLEL_MIN_ITEMS):  # nested: left off
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with _collection_paused(1):  # small: untouched
        assert gc.isenabled()
    with pytest.raises(ValidationFailed), registry.transaction(message="m") as tx:
        tx.save_many([(f"p{i}", "---\nname: [x\n---\nuser:\nhi\n")
                      for i in range(validation.PARALLEL_MIN_ITEMS)])
    assert gc.isenabled()  # restored after a refused import too
