import subprocess
from pathlib import Path

import pytest

from promptrev import Registry
from promptrev.errors import (
    AmbiguousReference,
    ArtifactDeleted,
    Conflict,
    InvalidName,
    NotFound,
    RenderFailed,
    TooLarge,
    ValidationFailed,
)
from promptrev.server.errors import http_status

from .conftest import at, label_at, variant


def git(*args, cwd=None):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def state(reg: Registry):
    """Everything that must not change when a write is refused."""
    return reg.store.head(), reg.index.dump()


def test_save_creates_numbered_versions(registry, prompt_text):
    v1 = registry.save("greet", prompt_text, message="first", author="Ada <ada@x.org>")
    v2 = registry.save("greet", variant(prompt_text, 2), message="second", base=1)
    assert (v1.number, v2.number) == (1, 2)
    assert (v1.author, v1.email, v1.message) == ("Ada", "ada@x.org", "first")
    assert registry.get("greet").text == variant(prompt_text, 2)
    assert registry.get("greet@1").text == prompt_text
    assert [v.number for v in registry.history("greet")] == [2, 1]
    commit = registry.store.repo[v1.commit]
    assert commit.author.name == "Ada" and commit.message == "first"


def test_repository_is_bare_and_fsck_clean(registry, prompt_text):
    registry.save("greet", prompt_text)
    path = registry.path
    assert git("rev-parse", "--is-bare-repository", cwd=path).strip() == "true"
    assert git("show", f"main:{at('greet')}", cwd=path) == prompt_text
    git("fsck", "--full", "--no-dangling", cwd=path)
    assert registry.fsck()["ok"]


def test_saving_identical_content_makes_no_version(registry, prompt_text):
    v1 = registry.save("greet", prompt_text)
    head = registry.store.head()
    assert registry.save("greet", prompt_text) == v1
    assert registry.store.head() == head


def test_stale_base_is_a_conflict_with_what_changed(registry, prompt_text):
    registry.save("greet", prompt_text)
    registry.save("greet", variant(prompt_text, 2), base=1, author="Bob <b@x>", message="tone")
    before = state(registry)
    with pytest.raises(Conflict) as err:
        registry.save("greet", variant(prompt_text, 3), base=1)
    exc = err.value
    assert http_status(exc) == 409
    assert "changed since version 1" in exc.message and "version 2" in exc.message
    assert "Bob" in exc.message and "tone" in exc.message
    assert exc.details["current"] == 2
    assert [c["version"] for c in exc.details["changes"]] == [2]
    assert "+You are friendly (variant 2)." in exc.details["diff"]
    assert state(registry) == before


def test_base_zero_means_create_only(registry, prompt_text):
    registry.save("greet", prompt_text, base=0)
    with pytest.raises(Conflict):
        registry.save("greet", variant(prompt_text, 2), base=0)


def test_base_from_the_future_is_a_conflict(registry, prompt_text):
    registry.save("greet", prompt_text)
    with pytest.raises(Conflict, match="no version 5"):
        registry.save("greet", variant(prompt_text, 2), base=5)


def test_transaction_is_one_commit(registry, prompt_text):
    with registry.transaction(message="batch", author="Ada <a@x>") as tx:
        tx.save("a", prompt_text)
        tx.save("team/b", variant(prompt_text, 1))
        tx.save("cases", '{"id": 1, "vars": {"who": "x"}}\n', kind="dataset")
    assert len({v.commit for v in tx.versions}) == 1
    assert sorted((v.kind, v.name) for v in tx.versions) == [
        ("dataset", "cases"), ("prompt", "a"), ("prompt", "team/b")]
    assert git("log", "--format=%s", "main", cwd=registry.path).splitlines() == [
        "batch", "initialize registry"]


def test_failing_transaction_writes_nothing(registry, prompt_text):
    registry.save("a", prompt_text)
    before = state(registry)
    with pytest.raises(ValidationFailed):
        with registry.transaction(message="batch") as tx:
            tx.save("b", prompt_text)
            tx.save("c", "---\nname: [broken\n---\nuser:\nhi\n")
    with pytest.raises(RuntimeError):
        with registry.transaction(message="batch") as tx:
            tx.save("b", prompt_text)
            raise RuntimeError("caller changed its mind")
    assert state(registry) == before


def test_same_artifact_twice_in_transaction_is_refused(registry, prompt_text):
    with pytest.raises(ValidationFailed, match="twice"):
        with registry.transaction(message="x") as tx:
            tx.save("a", prompt_text)
            tx.save("a", variant(prompt_text, 2))


def test_delete_is_a_version_and_can_be_restored(registry, prompt_text):
    registry.save("greet", prompt_text)
    gone = registry.delete("greet", message="retire")
    assert (gone.number, gone.deleted) == (2, True)
    with pytest.raises(ArtifactDeleted) as err:
        registry.get("greet")
    assert http_status(err.value) == 410 and "rollback greet --to 1" in err.value.message
    assert registry.get("greet@1").text == prompt_text
    assert registry.list() == []
    assert [a.name for a in registry.list(include_deleted=True)] == ["greet"]
    restored = registry.rollback("greet", to=1)
    assert (restored.number, restored.deleted) == (3, False)
    assert registry.get("greet").text == prompt_text
    assert at("greet") in git("ls-tree", "-r", "--name-only", "main", cwd=registry.path)


def test_delete_missing_artifact(registry, prompt_text):
    with pytest.raises(NotFound):
        registry.delete("nope")
    registry.save("a", prompt_text)
    registry.delete("a")
    with pytest.raises(NotFound, match="already deleted"):
        registry.delete("a")


def test_labels_are_commits_with_author(registry, prompt_text):
    registry.save("greet", prompt_text)
    registry.save("greet", variant(prompt_text, 2))
    event = registry.set_label("greet", "production", 2, author="Ops <ops@x>", message="ship")
    assert (event.label, event.old, event.new, event.author) == ("production", None, 2, "Ops")
    assert registry.resolve("greet@production").number == 2
    registry.set_label("greet", "staging", 1)
    assert registry.labels("greet") == {"production": 2, "staging": 1}
    assert git("show", f"main:{label_at('greet')}", cwd=registry.path) == (
        "production: 2\nstaging: 1\n")
    assert [v.labels for v in registry.history("greet")] == [("production",), ("staging",)]
    registry.remove_label("greet", "staging")
    assert registry.labels("greet") == {"production": 2}
    moves = [(e.label, e.old, e.new) for e in registry.label_history("greet")]
    assert moves == [("staging", 1, None), ("staging", None, 1), ("production", None, 2)]
    assert git("log", "-1", "--format=%an %s", "main", cwd=registry.path).strip() == (
        "promptrev remove label greet@staging")


def test_label_errors_write_nothing(registry, prompt_text):
    registry.save("greet", prompt_text)
    registry.delete("greet")
    before = state(registry)
    with pytest.raises(NotFound, match="no version 7"):
        registry.set_label("greet", "production", 7)
    with pytest.raises(ValidationFailed, match="deletion"):
        registry.set_label("greet", "production", 2)
    with pytest.raises(InvalidName):
        registry.set_label("greet", "latest", 1)
    with pytest.raises(NotFound, match="no label 'prod'"):
        registry.remove_label("greet", "prod")
    with pytest.raises(NotFound, match="no artifact named 'nope'"):
        registry.set_label("nope", "production", 1)
    assert state(registry) == before


def test_rollback_by_label_is_instant_and_audited(registry, prompt_text):
    for n in range(1, 4):
        registry.save("greet", variant(prompt_text, n))
    registry.set_label("greet", "production", 3)
    registry.rollback("greet", to=2, label="production", author="Ops <o@x>")
    assert registry.resolve("greet@production").number == 2
    last = registry.label_history("greet")[0]
    assert (last.old, last.new, last.author) == (3, 2, "Ops")
    assert "rollback" in last.message


def test_unknown_label_lists_known_ones(registry, prompt_text):
    registry.save("greet", prompt_text)
    registry.set_label("greet", "production", 1)
    with pytest.raises(NotFound, match=r"no label 'prod' \(labels: production\)"):
        registry.resolve("greet@prod")
    with pytest.raises(NotFound, match="no version 9"):
        registry.resolve("greet@9")
    with pytest.raises(NotFound, match="did you mean 'greet'"):
        registry.resolve("gret")


def test_reference_by_commit_prefix(registry, prompt_text):
    v1 = registry.save("greet", prompt_text)
    other = registry.save("other", prompt_text)
    v2 = registry.save("greet", variant(prompt_text, 2))
    assert registry.resolve(f"greet@{v1.commit[:7]}").number == 1
    assert registry.resolve(f"greet@{other.commit[:8]}").number == 1
    assert registry.resolve(f"greet@{v2.commit}").number == 2
    with pytest.raises(NotFound, match="did not exist yet"):
        registry.resolve(f"other@{v1.commit[:10]}")
    with pytest.raises(NotFound):
        registry.resolve("greet@abcdef0")


def test_same_name_in_two_kinds_needs_a_kind(registry, prompt_text):
    registry.save("sentiment", prompt_text)
    registry.save("sentiment", '{"id": "a", "vars": {}}\n', kind="dataset")
    with pytest.raises(AmbiguousReference, match="prompt:sentiment"):
        registry.resolve("sentiment")
    assert registry.resolve("dataset:sentiment").kind == "dataset"
    assert registry.resolve("sentiment", kind="prompt").kind == "prompt"


def test_dataset_validation_names_line(registry):
    before = state(registry)
    bad = '{"id": 1, "vars": {}}\n{"id": 1, "vars": {}}\nnot json\n{"vars": {}}\n'
    with pytest.raises(ValidationFailed) as err:
        registry.save("cases", bad, kind="dataset")
    lines = [(p["line"], p["message"].split(" ")[0]) for p in err.value.problems]
    assert lines == [(2, "case"), (3, "invalid"), (4, "case")]
    assert "datasets/cases.jsonl, line 2" in err.value.message
    assert state(registry) == before


@pytest.mark.parametrize("name", ["../x", "a//b", ".hidden", "", "a/../../etc/passwd"])
def test_invalid_names_write_nothing(registry, prompt_text, name):
    before = state(registry)
    with pytest.raises(InvalidName):
        registry.save(name, prompt_text)
    assert state(registry) == before


def test_malformed_yaml_and_template_write_nothing(registry):
    before = state(registry)
    with pytest.raises(ValidationFailed, match=r"prompts/x.prompty, line \d+: bad YAML"):
        registry.save("x", "---\nname: : :\n  - [\n---\nuser:\nhi\n")
    with pytest.raises(ValidationFailed, match="template syntax error"):
        registry.save("x", "user:\n{% if %}\n")
    assert state(registry) == before


def test_non_utf8_bytes_are_refused(registry):
    before = state(registry)
    with pytest.raises(ValidationFailed, match="not UTF-8.*0xff at offset 6"):
        registry.save("x", b"user:\n\xff\xfe")
    with pytest.raises(ValidationFailed, match="NUL"):
        registry.save("x", "user:\nhi\x00")
    assert state(registry) == before


def test_size_limit(tmp_path, prompt_text):
    reg = Registry.init(tmp_path / "r", max_bytes=1000)
    before = state(reg)
    with pytest.raises(TooLarge, match="limit is 1,000 bytes") as err:
        reg.save("big", prompt_text + "x" * 1000)
    assert http_status(err.value) == 413
    assert state(reg) == before
    reg.close()


def test_fifty_megabyte_body_is_refused_by_default(registry):
    body = "user:\n" + "a" * (50 * 1024 * 1024)
    before = state(registry)
    with pytest.raises(TooLarge, match="52,428,806 bytes"):
        registry.save("big", body)
    assert state(registry) == before


def test_render_missing_variable_names_it(registry, prompt_text):
    registry.save("greet", prompt_text)
    with pytest.raises(RenderFailed, match="missing variable 'who'"):
        registry.render("greet", {})
    assert registry.render("greet", {"who": "Ada"})[1].content == "Say hello to Ada."


def test_warm_cache_sees_label_moves_from_another_process(registry, prompt_text):
    registry.save("greet", prompt_text)
    registry.save("greet", variant(prompt_text, 2))
    registry.set_label("greet", "production", 1)
    assert "friendly." in registry.render("greet@production", {"who": "x"})[0].content
    other = Registry.open(registry.path)
    other.set_label("greet", "production", 2)
    other.close()
    assert "variant 2" in registry.render("greet@production", {"who": "x"})[0].content


def test_index_catches_up_after_plain_git_push(registry, prompt_text, tmp_path):
    registry.save("greet", prompt_text)
    work = tmp_path / "clone"
    git("clone", "-q", "-b", "main", registry.path, str(work))
    git("config", "user.name", "Grace", cwd=work)
    git("config", "user.email", "grace@x.org", cwd=work)
    (work / at("greet")).write_text(variant(prompt_text, 9))
    (work / at("team/new")).parent.mkdir(parents=True)
    (work / at("team/new")).write_text(prompt_text)
    (work / label_at("greet")).parent.mkdir(parents=True)
    (work / label_at("greet")).write_text("production: 1\n")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "edit in my editor", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    latest = registry.resolve("greet")
    assert (latest.number, latest.author, latest.message) == (2, "Grace", "edit in my editor")
    assert registry.resolve("greet@production").number == 1
    assert registry.get("team/new").text == prompt_text
    assert registry.fsck()["ok"]


def test_rewritten_history_rebuilds_the_index(registry, prompt_text, tmp_path):
    v1 = registry.save("greet", prompt_text)
    registry.save("greet", variant(prompt_text, 2))
    registry.save("other", prompt_text)
    assert registry.resolve("greet").number == 2
    git("update-ref", "refs/heads/main", v1.commit, cwd=registry.path)
    assert registry.resolve("greet").number == 1
    with pytest.raises(NotFound):
        registry.resolve("other")


def test_rebuilt_index_equals_incremental(registry, prompt_text, tmp_path):
    for n in range(5):  # accounts (and a trailer typed to claim one) survive a rebuild
        registry.save(f"p{n % 3}", variant(prompt_text, n), account="alice" if n % 2 else None,
                      message=f"save {n}\n\nPromptrev-Account: mallory")
    with registry.transaction(message="batch", account="carol") as tx:
        tx.save("team/a", prompt_text)
        tx.save("x", prompt_text)  # x.prompty sorts before x/…, but a tree walk finds x/ first
        tx.save("x/y", prompt_text)
        tx.save("x-y", prompt_text)
        tx.save("cases", '{"id": 1, "vars": {}}\n', kind="dataset")
        tx.set_label("p0", "production", 1)
    registry.set_label("p1", "production", 1, account="bob")
    registry.delete("p2")
    registry.rollback("p0", to=1, label="production")
    registry.set_label("p0", "production", 2)
    registry.rollback("p2", to=1, account="bob")
    incremental = registry.index.dump()
    accounts = {e.message: e.account for e in registry.audit()}
    assert accounts == {**{f"save {n}": "alice" if n % 2 else None for n in range(5)},
                        "batch": "carol", "label p1@production -> 1": "bob",
                        "rollback p2 to version 1": "bob", **{m: None for m in (
                            "initialize registry", "delete p2",
                            "label p0@production -> 2")}}
    assert registry.history("p2")[0].account == "bob"
    fresh = Registry.open(registry.path, index_url=f"sqlite:///{tmp_path / 'other.sqlite'}")
    assert fresh.history("p0") == registry.history("p0")
    assert fresh.index.dump() == incremental
    fresh.close()
    registry.reindex()
    assert registry.index.dump() == incremental


def test_diff_between_versions(registry, prompt_text):
    registry.save("greet", prompt_text)
    changed = prompt_text.replace("temperature: 0.7", "temperature: 0.2").replace(
        "  who:\n    type: string\n", "  who:\n    type: string\n  tone:\n    type: string\n"
    ).replace("Say hello to {{ who }}.", "Say hello to {{ who }} in a {{ tone }} tone.")
    changed = changed.replace("  who: Ada\n", "  who: Ada\n  tone: warm\n")
    registry.save("greet", changed)
    diff = registry.diff("greet@1", "greet@2")
    described = [f.describe() for f in diff.fields]
    assert "model.parameters.temperature: 0.7 → 0.2" in described
    assert [f.path for f in diff.contract_changes] == ["inputs.tone"]
    assert diff.rendered.left[1]["content"] == "Say hello to Ada."
    assert diff.rendered.right[1]["content"] == "Say hello to Ada in a warm tone."
    replaced = [r for r in diff.text.rows if r.op == "replace"]
    assert any(s.changed and "0.2" in s.text for r in replaced for s in r.right)
    assert any(not s.changed and "temperature" in s.text for r in replaced for s in r.right)
    assert diff.to_dict()["contract_changes"][0]["path"] == "inputs.tone"


def test_diff_of_datasets_lists_cases(registry):
    registry.save("cases", '{"id": 1, "vars": {}}\n{"id": 2, "vars": {}}\n', kind="dataset")
    registry.save("cases", '{"id": 1, "vars": {"a": 1}}\n{"id": 3, "vars": {}}\n',
                  kind="dataset")
    diff = registry.diff("cases@1", "cases@2")
    assert diff.cases == [{"id": "1", "change": "changed"}, {"id": "2", "change": "removed"},
                          {"id": "3", "change": "added"}]


def test_open_missing_registry(tmp_path):
    with pytest.raises(NotFound, match="promptrev init"):
        Registry.open(tmp_path / "nothing")


def test_import_starter_library(registry):
    from promptrev.importing import import_folder

    root = Path(__file__).resolve().parent.parent / "prompts"
    report = import_folder(registry, str(root))
    assert "dataset:sentiment" in report.created
    assert {"sentiment/zero-shot", "sentiment/few-shot", "summarize"} <= set(report.created)
    assert import_folder(registry, str(root)).commit is None
    assert len(registry.get("dataset:sentiment").text.splitlines()) >= 50


def test_all_digit_commit_prefix_resolves_when_no_such_version(registry, prompt_text):
    """``name@2718281`` from ``git log --oneline`` works: a number that is no version is
    tried as a commit prefix (about 4% of 7-character prefixes are all digits)."""
    found = None
    for n in range(80):  # each commit id starts with 4+ digits with probability 15%
        version = registry.save("greet", variant(prompt_text, n))
        digits = len(version.commit) - len(version.commit.lstrip("0123456789"))
        if digits >= 4 and int(version.commit[:digits]) > 80:
            found = version, version.commit[:digits]
            break
    assert found, "no commit id with a numeric prefix in 80 tries (p < 1e-5)"
    version, prefix = found
    assert registry.resolve(f"greet@{prefix}").number == version.number
    assert registry.resolve("greet@1").number == 1  # a version number wins when it exists
    with pytest.raises(NotFound, match="no version 99999"):
        registry.resolve("greet@99999")


@pytest.mark.parametrize("count", [5, 300])  # 300 takes the parallel path
def test_save_many_validates_all_and_stages_all_or_nothing(registry, prompt_text, count):
    from promptrev.model.validation import PARALLEL_MIN_ITEMS

    assert (count >= PARALLEL_MIN_ITEMS) == (count == 300)
    items = [(f"team/p{i:03d}", variant(prompt_text, i)) for i in range(count)]
    bad = list(items)
    bad[1] = ("team/bad-yaml", "---\nname: [x\n---\nuser:\nhi\n")
    bad[3] = ("team/bad-bytes", b"user:\n\xff")
    before = state(registry)
    with pytest.raises(ValidationFailed) as err:
        with registry.transaction(message="bulk") as tx:
            tx.save_many(bad)
    files = [p["file"] for p in err.value.problems]
    assert files == ["prompts/team/bad-yaml.prompty", "prompts/team/bad-bytes.prompty"]
    assert "bad YAML" in err.value.problems[0]["message"]
    assert err.value.problems[0]["line"] is not None
    assert "not UTF-8" in err.value.problems[1]["message"]
    assert state(registry) == before
    items[2] = ("team/warned", prompt_text.replace("{{ who }}", "{{ who }} {{ extra }}"))
    with registry.transaction(message="bulk") as tx:
        tx.save_many(items)
    assert len(tx.versions) == count and len({v.commit for v in tx.versions}) == 1
    assert [w.message for w in tx.warnings] == [
        "variable 'extra' is used but not declared in inputs"]
    assert registry.get(f"team/p{count - 1:03d}").text == variant(prompt_text, count - 1)


def _object_files(path):
    packs = list((Path(path) / "objects/pack").glob("*.pack"))
    loose = list((Path(path) / "objects").glob("??/*"))
    return packs, loose


def test_git_maintenance_consolidates_packs_and_loose_objects(registry, prompt_text,
                                                                monkeypatch):
    import promptrev.registry as registry_module
    from promptrev.storage.gitstore import FAST_IMPORT_MIN_BLOBS

    for key, value in (("gc.autoPackLimit", "4"), ("gc.auto", "20"), ("gc.autoDetach", "false")):
        git("config", key, value, cwd=registry.path)
    for batch in range(6):  # each large transaction arrives as one pack
        with registry.transaction(message=f"bulk {batch}") as tx:
            tx.save_many([(f"b{batch}/p{i}", variant(prompt_text, i))
                          for i in range(FAST_IMPORT_MIN_BLOBS)])
    packs, _ = _object_files(registry.path)
    assert len(packs) <= 4  # without maintenance there would be one per transaction
    # Single saves ask too, every MAINTAIN_EVERY_COMMITS commits. (Whether Git then packs
    # loose objects depends on its sample of objects/17/, so only the call is checked.)
    calls = []
    monkeypatch.setattr(registry_module, "MAINTAIN_EVERY_COMMITS", 3)
    monkeypatch.setattr(type(registry.store), "maintain", lambda store: calls.append(1))
    registry.commits_since_maintenance = 0
    for n in range(7):
        registry.save("single", variant(prompt_text, 100 + n))
    assert len(calls) == 2
    assert registry.get("b5/p63").text == variant(prompt_text, 63)
    assert registry.fsck()["ok"]
