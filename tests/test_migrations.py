"""Schema migrations: an old registry upgrades keeping every row, models match revisions.

The fixture ``tests/data/release_0_1_0/registry.tar.gz`` was made by release 0.1.0 (see
``make.py`` beside it), before promptrev had migrations: its databases have no version
table, and 0.1.0 wrote ``index_state.schema_version``, which revision r0002 drops.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from promptrev.accounts import Accounts
from promptrev.evaluation.online import Outcomes
from promptrev.evaluation.store import EvalStore
from promptrev.registry import Registry
from promptrev.reviews import Reviews
from promptrev.storage import migrations
from promptrev.storage.sql import create_engine
from promptrev.webhooks import Webhooks

from .conftest import PROMPT, ROOT

FIXTURE = ROOT / "tests" / "data" / "release_0_1_0" / "registry.tar.gz"


def unpack_0_1_0(where: Path) -> Path:
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(where, filter="data")
    return where / "registry"


def raw_rows(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table, read with the sqlite3 module (not our code)."""
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in tables}
    finally:
        conn.close()


def test_the_heads_in_code_are_the_heads_of_the_revision_files():
    scripts = ScriptDirectory.from_config(migrations.config())
    for database, (_table, head) in migrations.DATABASES.items():
        assert scripts.get_heads() and scripts.get_revision(f"{database}@head").revision == head
    assert len(scripts.get_heads()) == len(migrations.DATABASES)  # no stray branch


@pytest.mark.parametrize("database", sorted(migrations.DATABASES))
def test_a_fresh_database_migrated_to_head_matches_the_models(tmp_path, database):
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", database=database)
    with engine.connect() as conn:
        diff = migrations.compare(conn, database)
    engine.dispose()
    assert diff == [], "the models changed without a migration (see migrations/README.md)"


def test_upgrading_a_0_1_0_registry_keeps_every_row(tmp_path):
    path = unpack_0_1_0(tmp_path)
    index_db, accounts_db = path / "promptrev-index.sqlite", path / "promptrev-accounts.sqlite"
    before_index, before_accounts = raw_rows(index_db), raw_rows(accounts_db)
    assert "alembic_version" not in before_index  # made before migrations existed
    kept = migrations.kept_tables("registry", list(before_index))
    assert sorted(kept) == ["ab_outcome", "eval_result", "eval_run", "review_approval",
                            "review_comment", "review_request", "webhook",
                            "webhook_attempt", "webhook_delivery"]
    assert all(before_index[t] for t in kept)  # the fixture has rows in every kept table

    reg = Registry.open(path)
    accounts = Accounts(f"sqlite:///{accounts_db}")
    after_index, after_accounts = raw_rows(index_db), raw_rows(accounts_db)

    assert after_index.pop("alembic_version") == [("r0009",)]
    assert after_index.pop("prompt_include") == []  # r0007: 0.1.0 prompts include no parts
    assert after_index.pop("ab_plan") == []  # r0006: splits of 0.1.0 have no plan
    assert after_index.pop("event") == []  # r0003's outbox starts empty
    # r0004: commits made before accounts were recorded have none
    commits = after_index.pop("commit")
    # opening moved its files into buckets (model.fanout): one commit that makes no version
    moved = commits.pop()
    assert moved[4].startswith("Move files into buckets"), moved
    assert commits == [row + (None,) for row in before_index.pop("commit")]
    # r0005: results stored before it do not say which share a latency measurement
    assert after_index.pop("eval_result") == [
        row + (None,) for row in before_index.pop("eval_result")]
    # r0009: runs made before it were never on the job queue (no holder, no heartbeat)
    assert after_index.pop("finetune_job") == []
    assert after_index.pop("eval_run") == [
        row + (None, None) for row in before_index.pop("eval_run")]
    assert after_accounts.pop("alembic_version_accounts") == [("a0002",)]
    assert after_accounts.pop("account_throttle") == []  # a0002's throttle starts empty
    # a0002 gave every user session generation 0 and every token no scopes
    assert after_accounts.pop("account_user") == [
        (*row, 0) for row in before_accounts.pop("account_user")]
    assert after_accounts.pop("account_token") == [
        (*row, "") for row in before_accounts.pop("account_token")]
    assert after_accounts == before_accounts
    # index_state lost its unread schema_version column and nothing else
    (state_id, head, _schema_version, writes), = before_index.pop("index_state")
    assert after_index.pop("index_state") == [(state_id, moved[1], writes + 1)]
    assert after_index == before_index

    # ...and the upgraded registry works, through each of those tables' owners
    assert reg.resolve("greet@production").number == 1
    assert [v.number for v in reg.history("greet")] == [2, 1]
    [request] = Reviews(reg).list()
    assert (request.title, len(Reviews(reg).get(request.number).comments)) == ("Friendlier", 2)
    assert [h["url"] for h in Webhooks(reg.engine).list()] == [
        "http://127.0.0.1:9/all", "http://127.0.0.1:9/labels"]
    [run] = EvalStore(reg.engine).runs()
    assert len(EvalStore(reg.engine).results(run["id"])) == 2
    report = Outcomes(reg.engine).report(reg, "greet", "production")
    [converted] = report["metrics"]
    assert sum(arm["n"] for arm in converted["arms"].values()) == 4
    assert accounts.login("alice", "pw-al-12").name == "alice"
    reg.save("greet", reg.get("greet@2").text.replace("warm", "kind"), message="after")
    with reg.engine.connect() as conn:  # the active hook got the new version's events
        pending = conn.execute(sa.text(
            "SELECT count(*) FROM webhook_delivery WHERE status = 'pending'")).scalar()
    assert pending > len(before_index["webhook_delivery"]) - 5
    assert reg.fsck()["ok"]
    reg.close()
    accounts.close()


def test_several_processes_opening_an_old_registry_migrate_it_once(tmp_path):
    path = unpack_0_1_0(tmp_path)
    code = ("import sys, json; from promptrev.registry import Registry; "
            "r = Registry.open(sys.argv[1]); print(json.dumps(r.history('greet')[0].number))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert json.loads(out) == 2
    rows = raw_rows(path / "promptrev-index.sqlite")
    assert rows["alembic_version"] == [("r0009",)]
    assert len(rows["review_comment"]) == 2


def test_a_database_from_a_newer_release_is_refused_with_a_clear_error(tmp_path, run):
    reg_path = Path(os.environ["PROMPTREV_REGISTRY"])
    db = reg_path / "promptrev-index.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'r9999'")
    with pytest.raises(migrations.MigrationError, match="r9999.*newer release"):
        Registry.open(reg_path)
    result = run("list", ok=False)
    assert result.exit_code == 1
    assert "schema revision r9999" in result.output and "upgrade promptrev" in result.output
    assert "Traceback" not in result.output


def test_downgrade_then_upgrade_keeps_the_rows(tmp_path):
    path = unpack_0_1_0(tmp_path)
    Registry.open(path).close()
    db = path / "promptrev-index.sqlite"
    at_head = raw_rows(db)
    engine = create_engine(f"sqlite:///{db}", migrate=False)
    migrations.downgrade(engine, "registry", "r0001")
    down = raw_rows(db)
    assert down["alembic_version"] == [("r0001",)]
    # schema_version is back (at the end of the row, as 0.1.0 filled it: 1)
    assert [row[:3] for row in down["index_state"]] == at_head["index_state"]
    assert [row[3] for row in down["index_state"]] == [1]
    migrations.upgrade(engine, "registry")
    engine.dispose()
    assert raw_rows(db) == at_head


def test_postgres_migrates_both_databases_into_one_and_matches_the_models(pg_url):
    for database in migrations.DATABASES:  # both share one PostgreSQL database here
        engine = create_engine(pg_url, database=database)
        with engine.connect() as conn:
            assert migrations.current(conn, database) == [migrations.DATABASES[database][1]]
            diff = migrations.compare(conn, database)
        assert diff == []
        engine.dispose()


def test_postgres_downgrade_and_upgrade_keep_rows(tmp_path, pg_url):
    reg = Registry.init(tmp_path / "reg", index_url=pg_url)
    reg.save("greet", PROMPT)
    Webhooks(reg.engine).add("http://127.0.0.1:9/x", secret="s")
    head = reg.store.head()
    reg.close()
    engine = create_engine(pg_url, migrate=False)
    migrations.downgrade(engine, "registry", "r0001")
    migrations.upgrade(engine, "registry")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT head FROM index_state")).scalar() == head
        assert conn.execute(sa.text("SELECT count(*) FROM webhook")).scalar() == 1
    engine.dispose()
