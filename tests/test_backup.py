"""Backups and restores: real registries, Git, SQLite and PostgreSQL, mostly through the CLI.

Rows are compared with what the sqlite3 module (or a plain SQLAlchemy select) reads, not
with our own code; refs and remotes with what ``git`` prints.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from promptrev import remotes
from promptrev.accounts import Accounts, User
from promptrev.backup import ACCOUNTS_FILE, backup, restore
from promptrev.errors import Unauthorized
from promptrev.evaluation.online import Outcomes
from promptrev.evaluation.planning import plan_from
from promptrev.evaluation.store import EvalStore
from promptrev.jobs import FinetuneJobs
from promptrev.registry import Registry
from promptrev.reviews import Edit, Reviews
from promptrev.storage import migrations
from promptrev.storage.sql import create_engine
from promptrev.webhooks import Deliverer, Webhooks

from .conftest import ROOT
from .test_adapters import make_adapter

FIXTURE = ROOT / "tests" / "data" / "release_0_1_0" / "registry.tar.gz"
PG_URL = os.environ.get("PROMPTREV_TEST_POSTGRES_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="PROMPTREV_TEST_POSTGRES_URL not set")
INDEX, ACCOUNTS = "promptrev-index.sqlite", ACCOUNTS_FILE
DERIVED = ("commit", "artifact", "version", "label", "label_event")
MIRROR = "https://bot:hunter2@git.example.com/team/prompts.git"

GREET = """---
name: greet
inputs:
  who: {type: string, sample: Ann}
---
system:
Be kind.

user:
Hello {{ who }}!
"""
CASES = '{"id": "a", "vars": {"who": "Bo"}, "expected": "Hello Bo!"}\n'


# ---- helpers ---------------------------------------------------------------------------
def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def raw_rows(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table, read with the sqlite3 module (not our code)."""
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in tables}
    finally:
        conn.close()


def url_rows(url: str) -> dict[str, list[tuple]]:
    """Every row of every table behind a SQLAlchemy URL, ordered by the first column."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            meta = sa.MetaData()
            meta.reflect(conn)
            return {t.name: [tuple(r) for r in conn.execute(
                sa.select(t).order_by(list(t.columns)[0]))] for t in meta.sorted_tables}
    finally:
        engine.dispose()


def kept(rows: dict[str, list[tuple]], database: str) -> dict[str, list[tuple]]:
    return {t: rows[t] for t in migrations.kept_tables(database, list(rows))}


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(path), *args], capture_output=True,
                          text=True, check=True).stdout


def refs(path: Path) -> str:
    return git(path, "for-each-ref", "--format=%(objectname) %(refname)")


def remote_config(path: Path) -> str:
    return git(path, "config", "--get-regexp", r"^remote\.")


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders a backup or restore left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(
        (".promptrev-partial", ".promptrev-restoring")))


def populate(path: Path, tmp_path: Path) -> dict:
    """Put something in every table a backup keeps, plus refs, remotes and weights."""
    reg = Registry.open(path)
    accounts = Accounts(sqlite_url(path / ACCOUNTS))
    root = accounts.add_user("root", "admin", email="root@example.com", password="pw-root-1")
    alice = accounts.add_user("alice", "editor", email="alice@example.com",
                              password="pw-alice-1")
    token, _ = accounts.create_token("alice", "laptop")
    old_token, old = accounts.create_token("root", "old")
    accounts.revoke_token(old.id)
    hooks = Webhooks(reg.engine)
    hooks.add("http://127.0.0.1:9/all", secret="s3cret")
    hooks.add("http://127.0.0.1:9/labels", events=["label.moved"], active=False)
    reg.save("greet", GREET, message="first greeting", author="Alice <alice@example.com>")
    reg.save("greet", GREET.replace("kind", "warm"), message="warmer")
    reg.set_label("greet", "production", 1)
    reg.save("cases", CASES, kind="dataset", message="cases")
    weights = make_adapter(tmp_path / "lora") / "adapter_model.safetensors"
    reg.push_adapter("support/tone", str(weights.parent), message="tone")
    as_alice = User(alice.id, "alice", "alice@example.com", "editor")
    as_root = User(root.id, "root", "root@example.com", "admin")
    reviews = Reviews(reg)
    cr = reviews.open(as_alice, "Friendlier", [Edit("greet", GREET.replace("kind", "nice"))],
                      description="Make it nicer")
    reviews.comment(cr.number, as_root, "Looks good")
    reviews.comment(cr.number, as_root, "This line?", path="prompts/greet.prompty", line=7)
    reviews.approve(cr.number, as_root)
    store = EvalStore(reg.engine)
    run = store.create(name="v1 vs v2", author="alice", dataset="cases@1", cases=1,
                       spec={"variants": {"A": "greet@1", "B": "greet@2"}})
    store.add_results([{"run_id": run, "variant": v, "case_id": "a", "case_index": 0,
                        "prompt": f"greet@{i}", "adapter": None, "backend": "openai",
                        "model": "gpt-4o-mini", "output": "Hello Bo!", "scores": {"exact": 1.0},
                        "details": {"exact": "match"}, "prompt_tokens": 5,
                        "completion_tokens": 3, "latency_s": 0.01, "cost": 0.0,
                        "error": None} for i, v in ((1, "A"), (2, "B"))])
    store.set_status(run, "done", report={"verdict": "no significant difference"})
    jobs = FinetuneJobs(reg)  # a fine-tuning job queued on the server, done
    job = jobs.create(name="support/tone", author="alice",
                      spec={"dataset": "cases@1", "model": "tiny", "config": {"max_steps": 1}})
    jobs.finish(job, "done", adapter="support/tone@1")
    reg.set_split("greet", "production", {1: 50, 2: 50})
    Outcomes(reg.engine).set_plan("greet", "production",
                                  plan_from({"mde": 0.05, "baseline": 0.2}))
    for i in range(4):
        Outcomes(reg.engine).record(reg, "greet@production", f"user-{i}", i % 2 == 0,
                                    "converted")
    deliverer = Deliverer(reg.engine, timeout=2)  # port 9 refuses: attempts and retries
    deliverer.run_once()
    deliverer.close()
    upstream = Registry.init(tmp_path / "upstream")
    upstream.save("other", GREET, message="upstream")
    upstream.close()
    remotes.add(reg, "origin", str(tmp_path / "upstream"))
    remotes.fetch(reg, "origin")  # a remote-tracking ref
    remotes.add(reg, "mirror", MIRROR)  # a URL with a password, never fetched
    reg.close()
    accounts.close()
    return {"token": token, "old_token": old_token, "weights": weights.read_bytes(),
            "cr": cr.number}


def snapshot_of(reg: Registry) -> dict:
    """What users read: histories, labels, splits, renders, listing."""
    return {"history": {n: [v.to_dict() for v in reg.history(n)]
                        for n in ("greet", "cases", "support/tone")},
            "labels": reg.labels("greet"), "splits": reg.splits("greet"),
            "render": [m.to_dict() for m in reg.render("greet@1", {"who": "Ann"})],
            "list": [a.to_dict() for a in reg.list()], "audit": [
                e.to_dict() for e in reg.audit()]}


# ---- round trips -----------------------------------------------------------------------
def test_round_trip_on_sqlite_keeps_every_row_ref_and_secret(tmp_path, cli):
    source, target, archive = tmp_path / "reg", tmp_path / "restored", tmp_path / "b.tgz"
    cli("-r", source, "init")
    made = populate(source, tmp_path)
    before_index, before_accounts = raw_rows(source / INDEX), raw_rows(source / ACCOUNTS)
    assert all(kept(before_index, "registry").values())  # a row in every kept table
    with Registry.open(source) as reg:
        before = snapshot_of(reg)

    out = cli("-r", source, "backup", archive).output
    assert "keep it private" in out and "webhook_delivery" in out
    assert (archive.stat().st_mode & 0o777) == 0o600
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[-1] == "manifest.json" and "registry.bundle" in names
    assert not any(n.startswith(tuple(f"tables/registry/{t}." for t in DERIVED))
                   for n in names)  # derived tables are rebuilt, never archived
    summary = json.loads(cli("restore", archive, "-r", target, "--json").output)
    assert summary["tables"]["accounts"]["account_user"] == 2
    assert summary["objects"]["count"] == 1

    after_index, after_accounts = raw_rows(target / INDEX), raw_rows(target / ACCOUNTS)
    assert kept(after_index, "registry") == kept(before_index, "registry")
    assert after_accounts == before_accounts
    for table in DERIVED:  # rebuilt from Git, equal to the incrementally kept ones
        assert after_index[table] == before_index[table], table
    assert after_index["index_state"][0][1] == before_index["index_state"][0][1]  # head
    assert refs(target) == refs(source) and "refs/remotes/origin/main" in refs(target)
    assert "refs/heads/review/1" in refs(target)
    assert remote_config(target) == remote_config(source) and "hunter2" in remote_config(
        target)

    with Registry.open(target) as reg:
        assert snapshot_of(reg) == before
        pulled = reg.adapter_source("support/tone@1")
        assert (Path(pulled.path) / "adapter_model.safetensors").read_bytes() == made["weights"]
        assert reg.fsck()["ok"]
        # it takes new writes, with ids after the restored ones
        assert reg.save("greet", GREET.replace("kind", "calm"), message="after").number == 3
        accounts = Accounts(sqlite_url(target / ACCOUNTS))
        assert accounts.authenticate(made["token"]).name == "alice"
        with pytest.raises(Unauthorized):
            accounts.authenticate(made["old_token"])
        root = accounts.login("root", "pw-root-1")
        carol = accounts.add_user("carol", "editor", password="pw-carol-1")
        assert carol.id == 3
        cr = Reviews(reg).open(User(carol.id, "carol", "c@example.com", "editor"), "Calmer",
                               [Edit("greet", GREET.replace("kind", "calm!"))])
        assert cr.number == made["cr"] + 1 and cr.branch == f"review/{cr.number}"
        Reviews(reg).approve(cr.number, User(root.id, "root", "root@example.com", "admin"))
        hook = Webhooks(reg.engine).add("http://127.0.0.1:9/new")
        assert hook["id"] == 3
        accounts.close()
    pending = raw_rows(target / INDEX)["webhook_delivery"]
    assert len(pending) > len(before_index["webhook_delivery"])  # the new save announced


@needs_pg
def test_round_trip_onto_postgresql_then_back_to_sqlite(tmp_path, cli, pg_url, monkeypatch):
    source, target, archive = tmp_path / "reg", tmp_path / "on-pg", tmp_path / "b.tgz"
    cli("-r", source, "init")
    made = populate(source, tmp_path)
    before_index, before_accounts = raw_rows(source / INDEX), raw_rows(source / ACCOUNTS)
    cli("-r", source, "backup", archive)
    cli("restore", archive, "-r", target, "--index-url", pg_url, "--accounts-url", pg_url)
    assert not [n for n in os.listdir(target) if "sqlite" in n]  # both databases on pg

    on_pg = url_rows(pg_url)
    assert kept(on_pg, "registry") == kept(before_index, "registry")
    assert kept(on_pg, "accounts") == kept(before_accounts, "accounts")
    for table in DERIVED:
        assert on_pg[table] == before_index[table], table
    with Registry.open(target, index_url=pg_url) as reg:
        assert reg.engine.dialect.name == "postgresql"
        assert reg.resolve("greet@production").number in (1, 2)
        assert reg.save("greet", GREET.replace("kind", "calm"), message="after").number == 3
        accounts = Accounts(pg_url)
        assert accounts.authenticate(made["token"]).name == "alice"
        assert accounts.add_user("carol", "editor").id == 3  # sequences moved past the ids
        carol = User(3, "carol", "c@example.com", "editor")
        assert Reviews(reg).open(carol, "Calmer", [Edit("greet", GREET)]).number == 2
        assert Webhooks(reg.engine).add("http://127.0.0.1:9/new")["id"] == 3
        assert EvalStore(reg.engine).create(name="again", author="carol", dataset="cases@1",
                                            cases=1, spec={}) == 2
        accounts.close()

    # ...and a PostgreSQL registry backs up (one REPEATABLE READ snapshot) to SQLite again
    monkeypatch.setenv("PROMPTREV_ACCOUNTS_URL", pg_url)
    cli("-r", target, "--index-url", pg_url, "backup", tmp_path / "again.tgz")
    monkeypatch.delenv("PROMPTREV_ACCOUNTS_URL")
    cli("restore", tmp_path / "again.tgz", "-r", tmp_path / "back")
    back, on_pg = raw_rows(tmp_path / "back" / INDEX), url_rows(pg_url)
    assert kept(back, "registry") == kept(on_pg, "registry")
    assert raw_rows(tmp_path / "back" / ACCOUNTS) == kept(on_pg, "accounts") | {
        "alembic_version_accounts": [(migrations.DATABASES["accounts"][1],)]}
    assert refs(tmp_path / "back") == refs(target)


def test_a_registry_made_by_0_1_0_is_backed_up_and_restored_with_every_row(tmp_path, cli):
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    source, target, archive = tmp_path / "registry", tmp_path / "restored", tmp_path / "b.tgz"
    before_index, before_accounts = raw_rows(source / INDEX), raw_rows(source / ACCOUNTS)
    assert "alembic_version" not in before_index  # made before migrations existed

    cli("-r", source, "backup", archive)  # today's code: opening upgrades it first
    cli("-r", target, "restore", archive)

    after_index, after_accounts = raw_rows(target / INDEX), raw_rows(target / ACCOUNTS)
    assert all(kept(before_index, "registry").values())
    after_kept, before_kept = kept(after_index, "registry"), kept(before_index, "registry")
    assert after_kept.pop("ab_plan") == []  # r0006: 0.1.0's splits have no plan
    # r0005: results of 0.1.0 do not say which shared a latency measurement
    assert after_kept.pop("eval_result") == [
        (*row, None) for row in before_kept.pop("eval_result")]
    # r0009: 0.1.0 queued no fine-tuning jobs, and its runs were held by no queue worker
    assert after_kept.pop("finetune_job") == []
    assert after_kept.pop("eval_run") == [
        (*row, None, None) for row in before_kept.pop("eval_run")]
    assert after_kept == before_kept
    # a0002 added a session generation (0) to every user and scopes ("") to every token,
    # and an empty login throttle
    grown = {"account_user": (0,), "account_token": ("",)}
    assert after_accounts.pop("account_throttle") == []
    assert kept(after_accounts, "accounts") == {
        t: [(*row, *grown.get(t, ())) for row in rows]
        for t, rows in kept(before_accounts, "accounts").items()}
    # Opening moved its files into buckets (model.fanout): one more commit, nothing else
    moved = after_index["commit"].pop()
    assert moved[0] == len(before_index["commit"]) + 1 and "into buckets" in moved[4], moved
    for table in DERIVED:
        # r0004 gave commits an account column, empty for those made before it existed
        width = len(before_index[table][0]) if before_index[table] else 0
        assert [row[:width] for row in after_index[table]] == before_index[table], table
    assert all(row[-1] is None for row in after_index["commit"])
    assert after_index["alembic_version"] == [(migrations.DATABASES["registry"][1],)]
    assert refs(target) == refs(source)
    with Registry.open(target) as reg:
        assert [v.number for v in reg.history("greet")] == [2, 1]
        [request] = Reviews(reg).list()
        assert len(Reviews(reg).get(request.number).comments) == 2
        assert reg.fsck()["ok"]
    accounts = Accounts(sqlite_url(target / ACCOUNTS))
    assert accounts.login("alice", "pw-al-12").name == "alice"
    accounts.close()


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=needs_pg)])
def test_backups_taken_while_saves_go_on_match_their_webhook_events(tmp_path, request,
                                                                    database):
    """Refs and tables are read at one instant: every version in a restored history has
    its version.saved delivery, and no delivery names a version the history lacks."""
    path = tmp_path / "reg"
    url = request.getfixturevalue("pg_url") if database == "postgresql" else None
    with Registry.init(path, index_url=url) as reg:
        Webhooks(reg.engine).add("http://127.0.0.1:9/saves", events=["version.saved"])
        reg.save("busy", GREET, message="v1")
        with reg.engine.begin() as conn:  # rows read before the deliveries: time for saves
            conn.execute(sa.text(
                "INSERT INTO ab_outcome (kind, name, label, version, key, metric, value, "
                "created) VALUES ('prompt', 'busy', 'ab', 1, :key, 'm', 1.0, 0)"),
                [{"key": f"k{i}"} for i in range(20000)])
    done = threading.Event()

    def write():
        with Registry.open(path, index_url=url) as writer:
            for n in range(2, 120):
                writer.save("busy", GREET.replace("kind", f"kind {n}"), message=f"v{n}")
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    archives = []
    with Registry.open(path, index_url=url) as reg:
        while not done.is_set() and len(archives) < 4:
            archives.append(tmp_path / f"b{len(archives)}.tgz")
            backup(reg, archives[-1])
    thread.join()
    for archive in archives:
        target = tmp_path / f"{archive.stem}-restored"
        restore(archive, target)
        with Registry.open(target) as reg:
            versions = {v.number for v in reg.history("busy")}
        with sqlite3.connect(target / INDEX) as conn:
            bodies = conn.execute("SELECT body FROM webhook_delivery").fetchall()
        announced = {json.loads(body)["payload"]["version"] for (body,) in bodies}
        assert versions == announced, archive


# ---- refusals and failures -----------------------------------------------------------------
@pytest.fixture(scope="module")
def small_archive(tmp_path_factory) -> Path:
    """A backup of a small registry with accounts and one stored object."""
    where = tmp_path_factory.mktemp("small")
    with Registry.init(where / "reg") as reg:
        reg.save("greet", GREET, message="first")
        reg.objects.put_bytes(b"weights" * 100)
        Webhooks(reg.engine).add("http://127.0.0.1:9/all")
        reg.save("greet", GREET.replace("kind", "warm"), message="second")
        accounts = Accounts(sqlite_url(where / "reg" / ACCOUNTS))
        accounts.add_user("alice", "editor", password="pw-alice-1")
        accounts.close()
        backup(reg, where / "small.tgz")
    return where / "small.tgz"


def members_of(archive: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(archive) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def write_members(archive: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def edited(source: Path, dest: Path, edit) -> Path:
    """A copy of ``source`` whose manifest went through ``edit`` (hashes left as they were)."""
    members = members_of(source)
    manifest = json.loads(dict(members)["manifest.json"])
    edit(manifest)
    return write_members(dest, [(n, json.dumps(manifest).encode() if n == "manifest.json"
                                 else d) for n, d in members])


def rewritten(source: Path, dest: Path, name: str, data: bytes) -> Path:
    """A consistent archive (manifest updated) whose member ``name`` now holds ``data``."""
    import hashlib

    members = dict(members_of(source))
    members[name] = data
    manifest = json.loads(members.pop("manifest.json"))
    manifest["members"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    database, table = name[len("tables/"):-len(".jsonl")].split("/")
    manifest["tables"][database][table] = data.count(b"\n")
    return write_members(dest, [*members.items(),
                                ("manifest.json", json.dumps(manifest).encode())])


def flipped(source: Path, dest: Path) -> Path:
    """The archive with one byte of a table's rows changed (the gzip stream stays valid)."""
    raw = bytearray(gzip.decompress(source.read_bytes()))
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        member = tar.getmember("tables/accounts/account_user.jsonl")
    raw[member.offset_data + 10] ^= 0x01
    dest.write_bytes(gzip.compress(bytes(raw)))
    return dest


def truncated(source: Path, dest: Path) -> Path:
    data = source.read_bytes()
    dest.write_bytes(data[: len(data) // 2])
    return dest


def _newer_format(m):
    m["format"] = 2


def _unknown_revision(m):
    m["schema"]["registry"] = "r9999"


BAD_ARCHIVES = {
    "truncated": (truncated, "damaged, cut short or not a promptrev backup"),
    "flipped byte": (flipped, "account_user.jsonl in"),
    "not a tar": (lambda s, d: (d.write_bytes(os.urandom(4096)), d)[1],
                  "damaged, cut short or not a promptrev backup"),
    "no manifest": (lambda s, d: write_members(d, [(n, b) for n, b in members_of(s)
                                                   if n != "manifest.json"]),
                    "has no manifest.json"),
    "newer format": (lambda s, d: edited(s, d, _newer_format),
                     "backup format 2, made by a newer release"),
    "unknown schema revision": (lambda s, d: edited(s, d, _unknown_revision),
                                "schema revision r9999, which this release of promptrev "
                                "does not know"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_a_bad_archive_is_refused_clearly_and_leaves_nothing(tmp_path, cli, small_archive,
                                                            case):
    make, message = BAD_ARCHIVES[case]
    bad = make(small_archive, tmp_path / "bad.tgz")
    target = tmp_path / "restored"
    result = cli("restore", bad, "-r", target, ok=False)
    assert result.exit_code != 0
    assert "error:" in result.output and message in result.output, result.output
    assert "Traceback" not in result.output
    assert not target.exists() and leftovers(tmp_path) == []
    if case == "flipped byte":
        assert "damaged: its sha256 is" in result.output


def test_restore_refuses_a_folder_that_is_not_empty(tmp_path, cli, small_archive):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    result = cli("restore", small_archive, "-r", target, ok=False)
    assert result.exit_code != 0 and "is not empty" in result.output
    assert "Traceback" not in result.output
    assert os.listdir(target) == ["notes.txt"] and leftovers(tmp_path) == []
    cli("restore", small_archive, "-r", tmp_path / "empty-is-fine")


def test_restore_refuses_a_database_that_holds_rows_and_changes_nothing(tmp_path, cli,
                                                                       small_archive):
    with Registry.init(tmp_path / "other") as reg:
        reg.save("mine", GREET, message="mine")
        Webhooks(reg.engine).add("http://127.0.0.1:9/mine")
    other_db = tmp_path / "other" / INDEX
    before = raw_rows(other_db)
    result = cli("restore", small_archive, "-r", tmp_path / "restored", "--index-url",
                 sqlite_url(other_db), ok=False)
    assert result.exit_code != 0 and "already holds data: " in result.output
    assert "webhook (1 row)" in result.output and "Traceback" not in result.output
    assert raw_rows(other_db) == before
    assert not (tmp_path / "restored").exists() and leftovers(tmp_path) == []


def test_a_restore_that_fails_midway_removes_what_it_made(tmp_path, cli, small_archive):
    # No webhook for the deliveries to belong to: inserting them breaks a foreign key
    # after the Git repository, the objects and the accounts are in place.
    bad = rewritten(small_archive, tmp_path / "orphans.tgz", "tables/registry/webhook.jsonl",
                    b"")
    db = tmp_path / "elsewhere" / "index.sqlite"
    db.parent.mkdir()
    result = cli("restore", bad, "-r", tmp_path / "restored", "--index-url", sqlite_url(db),
                 ok=False)
    assert result.exit_code != 0 and "FOREIGN KEY" in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "restored").exists() and leftovers(tmp_path) == []
    assert os.listdir(db.parent) == []  # the SQLite file it created is gone too
    cli("restore", small_archive, "-r", tmp_path / "restored", "--index-url", sqlite_url(db))


def test_empty_tables_at_the_backups_revision_are_filled_and_emptied_again(
        tmp_path, cli, small_archive):
    db = tmp_path / "made-earlier.sqlite"
    create_engine(sqlite_url(db), database="registry").dispose()  # empty, at head
    bad = rewritten(small_archive, tmp_path / "orphans.tgz", "tables/registry/webhook.jsonl",
                    b"")
    args = ("-r", tmp_path / "restored", "--index-url", sqlite_url(db))
    assert "FOREIGN KEY" in cli("restore", bad, *args, ok=False).output
    assert all(rows == [] for t, rows in raw_rows(db).items() if t != "alembic_version")
    cli("restore", small_archive, *args)
    assert len(raw_rows(db)["webhook"]) == 1

    other = tmp_path / "older.sqlite"
    engine = create_engine(sqlite_url(other), database="registry")
    migrations.downgrade(engine, "registry", "r0001")
    engine.dispose()
    result = cli("restore", small_archive, "-r", tmp_path / "again", "--index-url",
                 sqlite_url(other), ok=False)
    head = migrations.DATABASES["registry"][1]
    assert f"is at schema revision r0001 and the backup at {head}" in result.output
    assert not (tmp_path / "again").exists()


@needs_pg
def test_a_restore_that_fails_midway_on_postgresql_drops_its_tables(tmp_path, cli,
                                                                   small_archive, pg_url):
    bad = rewritten(small_archive, tmp_path / "orphans.tgz", "tables/registry/webhook.jsonl",
                    b"")
    result = cli("restore", bad, "-r", tmp_path / "restored", "--index-url", pg_url,
                 "--accounts-url", pg_url, ok=False)
    assert result.exit_code != 0 and "foreign key" in result.output.lower(), result.output
    assert "Traceback" not in result.output and not (tmp_path / "restored").exists()
    assert all(rows == [] for rows in url_rows(pg_url).values())
    assert not set(url_rows(pg_url)) - {"alembic_version", "alembic_version_accounts"}
    cli("restore", small_archive, "-r", tmp_path / "restored", "--index-url", pg_url,
        "--accounts-url", pg_url)  # a retry starts clean
    assert len(url_rows(pg_url)["account_user"]) == 1


def test_a_killed_backup_leaves_no_archive_and_the_next_one_cleans_up(tmp_path):
    path, out = tmp_path / "reg", tmp_path / "nightly.tgz"
    with Registry.init(path) as reg:
        reg.save("greet", GREET, message="first")
        big = tmp_path / "big.bin"
        with open(big, "wb") as fh:
            for _ in range(96):
                fh.write(os.urandom(1024 * 1024))  # random: gzip is slow on it
        oid = reg.objects.put_file(str(big)).oid
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMPTREV_AUTHOR": "T <t@example.org>"}
    env.pop("PROMPTREV_ACCOUNTS_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "promptrev.cli", "-r", str(path), "backup",
                             str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partial = leftovers(tmp_path)
        if partial and (tmp_path / partial[0]).stat().st_size > 2 * 1024 * 1024:
            break  # well into the weights
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    else:
        pytest.fail("the backup never got going")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    [partial] = leftovers(tmp_path)
    assert partial.startswith(".nightly.tgz.")  # clearly named, beside the target

    os.unlink(os.path.join(path, "lfs", "objects", oid[:2], oid[2:4], oid))  # quicker now
    done = subprocess.run([sys.executable, "-m", "promptrev.cli", "-r", str(path), "backup",
                             str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.exists() and leftovers(tmp_path) == []

