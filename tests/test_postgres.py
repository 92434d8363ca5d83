"""The index on PostgreSQL (the choice for several processes or machines).

Runs when PROMPTREV_TEST_POSTGRES_URL names a server, e.g.
``postgresql+psycopg://postgres@127.0.0.1:55432/promptrev_test``; skipped otherwise.
Each test gets its own schema.
"""

import json
import os

import pytest

from promptrev import Registry
from promptrev.errors import Conflict

from .conftest import variant
from .test_faults import spawn
from .workers import text_for

URL = os.environ.get("PROMPTREV_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not URL, reason="PROMPTREV_TEST_POSTGRES_URL not set")


def test_registry_on_postgres(tmp_path, pg_url, prompt_text):
    reg = Registry.init(tmp_path / "reg", index_url=pg_url)
    assert reg.engine.dialect.name == "postgresql"
    reg.save("greet", prompt_text)
    reg.save("greet", variant(prompt_text, 2), base=1)
    with pytest.raises(Conflict):
        reg.save("greet", variant(prompt_text, 3), base=1)
    reg.set_label("greet", "production", 1)
    reg.delete("greet")
    reg.rollback("greet", to=2)
    assert [v.number for v in reg.history("greet")] == [4, 3, 2, 1]
    assert reg.resolve("greet@production").number == 1
    incremental = reg.index.dump()
    reg.reindex()
    assert reg.index.dump() == incremental
    assert reg.fsck()["ok"]
    reg.close()


def test_concurrent_writers_share_a_postgres_index(tmp_path, pg_url):
    path = tmp_path / "reg"
    with Registry.init(path, index_url=pg_url) as reg, reg.transaction(message="seed") as tx:
        for name in ("a", "b"):
            tx.save(name, text_for(f"seed-{name}"))
    env_url = pg_url
    procs = [spawn("contend-url", path, w, 15, "a,b", env_url) for w in range(4)]
    accepted = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        accepted += [json.loads(x) for x in out.splitlines() if '"token"' in x]
    with Registry.open(path, index_url=pg_url) as reg:
        tokens = [v.message for n in ("a", "b") for v in reg.history(n)[:-1]]
        assert sorted(tokens) == sorted(r["token"] for r in accepted)
        assert reg.fsck()["ok"]


def test_change_requests_on_postgres(tmp_path, pg_url, prompt_text):
    from promptrev.accounts import User
    from promptrev.reviews import Edit, Reviews

    alice, bob = User(1, "alice", "a@x", "editor"), User(2, "bob", "b@x", "editor")
    with Registry.init(tmp_path / "reg", index_url=pg_url) as reg:
        reg.save("greet", prompt_text)
        rv = Reviews(reg)
        cr = rv.open(alice, "v2", [Edit("greet", variant(prompt_text, 2))])
        rv.comment(cr.number, bob, "ok", path="prompts/greet.prompty", line=1)
        rv.approve(cr.number, bob)
        assert rv.list("open")[0].approvals == [{}]
        merged = rv.merge(cr.number, bob)
        assert merged.versions == ["greet@2"] and reg.resolve("greet@2").author == "alice"
        incremental = reg.index.dump()
        reg.reindex()
        assert reg.index.dump() == incremental
        assert rv.get(cr.number).comments[0]["body"] == "ok"  # reindex keeps reviews
