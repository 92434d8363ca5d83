"""The event outbox: storage records what happened; subscribers act in the same transaction."""

from __future__ import annotations

import sqlalchemy as sa

from promptrev import Registry
from promptrev.accounts import User
from promptrev.reviews import Edit, Reviews
from promptrev.storage import outbox
from promptrev.storage.tables import T_OUTBOX

from .conftest import PROMPT, variant


def names(reg: Registry) -> list[str]:
    return [e["name"] for e in outbox.recent(reg.engine, limit=1000)]


def test_commits_record_their_events_and_a_rebuild_records_none(registry):
    v1 = registry.save("greet", PROMPT, author="Ada <ada@example.org>")
    registry.set_label("greet", "production", 1)
    registry.save("greet", variant(PROMPT, 2), base=1)
    registry.set_label("greet", "production", 2)
    registry.rollback("greet", 1, label="production")
    assert names(registry) == ["version.saved", "label.moved", "version.saved", "label.moved",
                               "label.moved", "rollback"]
    first = outbox.recent(registry.engine, limit=1)[0]
    assert first["payload"] == {"kind": "prompt", "name": "greet", "version": 1,
                                "ref": "greet@1", "deleted": False, "commit": v1.commit,
                                "author": "Ada", "email": "ada@example.org",
                                "message": "save greet", "time": v1.time.isoformat()}
    assert [e["name"] for e in outbox.recent(registry.engine, after=first["id"], limit=1)] == [
        "label.moved"]
    registry.reindex()
    assert len(names(registry)) == 6  # old history is not news


def test_change_requests_record_their_events(registry):
    registry.save("greet", PROMPT)
    author = User(1, "ada", "ada@example.org", "editor")
    request = Reviews(registry).open(author, "Warmer", [Edit("greet", variant(PROMPT, 2))])
    Reviews(registry).reject(request.number, author, "not now")
    assert names(registry)[-2:] == ["change_request.opened", "change_request.rejected"]
    assert outbox.recent(registry.engine, limit=10)[-1]["payload"]["reason"] == "not now"


def test_subscribers_write_in_the_transaction_of_the_event(registry):
    seen: list[list[str]] = []

    def handler(conn, events):
        seen.append([name for name, _ in events])
        conn.execute(sa.text("UPDATE index_state SET writes = writes + 1000"))
        return 1

    woken = []
    outbox.subscribe(handler, wake=lambda: woken.append(True))
    outbox.subscribe(handler)  # subscribing twice calls it once
    try:
        registry.save("greet", PROMPT)
        assert seen == [["version.saved"]] and woken == [True]
        writes = "SELECT writes FROM index_state"
        with registry.engine.connect() as conn:
            before = conn.execute(sa.text(writes)).scalar()
        with registry.engine.connect() as conn:
            with conn.begin() as tx:  # rolled back: neither the event nor the handler's write
                assert outbox.record(conn, [("rollback", {"x": 1})]) == 1
                tx.rollback()
        with registry.engine.connect() as conn:
            assert conn.execute(sa.text(writes)).scalar() == before
        assert names(registry) == ["version.saved"]
    finally:
        outbox.unsubscribe(handler)
    registry.save("greet", variant(PROMPT, 2))
    assert len(seen) == 2  # unsubscribed


def test_prune_keeps_the_newest_events_and_none_too_old(registry):
    with registry.engine.begin() as conn:
        outbox.record(conn, [("label.moved", {"n": n}) for n in range(30)])
        conn.execute(T_OUTBOX.update().where(T_OUTBOX.c.id <= 5).values(created=0.0))
        assert outbox.prune(conn, keep=20) == 10  # ids 1-10: five too old, five too many
    kept = outbox.recent(registry.engine)
    assert [e["payload"]["n"] for e in kept] == list(range(10, 30))
    with registry.engine.begin() as conn:
        assert outbox.prune(conn) == 0


def test_the_indexer_prunes_on_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(outbox, "PRUNE_EVERY", 3)
    reg = Registry.init(tmp_path / "reg.git")
    original = outbox.prune
    monkeypatch.setattr(outbox, "prune", lambda conn: original(conn, keep=2))
    for n in range(1, 8):
        reg.save("greet", variant(PROMPT, n))
    assert 1 <= len(names(reg)) <= 4  # seven saves, pruned to two every third index write
    reg.close()
