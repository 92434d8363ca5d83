"""Evidence-gated labels on every route: a real server on loopback, real ``git``, the CLI,
and real evaluation runs of the tiny local model (made once for the module).

``sentiment/zero-shot`` carries release policies: ``production`` (non-inferior within 0.02
on exact), ``release`` (superior) and ``staging`` (non-inferior, a label editors may move).
Version 2 has a finished evaluation against version 1 on six cases; versions 3-5 have
none (each test that overrides uses its own version: a version that held a label once may
come back without evidence).
``sentiment/few-shot`` has a gated ``staging`` and no evidence at all (the attacks).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from promptrev import Registry
from promptrev.accounts import operator
from promptrev.cli.main import main
from promptrev.errors import Conflict, ValidationFailed
from promptrev.model.artifacts import KINDS
from promptrev.model.release import parse_release_policy
from promptrev.policy import Policy

from .conftest import PROMPT, at, label_at, variant
from .live import ADMIN_PASSWORD, ROOT, LiveServer, start_server
from .test_git_http import Git
from .test_remotes import Teammate, git

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

NAME = "sentiment/zero-shot"
# Each test that moves a label to version 2 with evidence has a label of its own: once 2
# has held a label, moving back to it is a rollback.
GATED = ("production", "release", "staging", "beta", "gamma", "delta", "epsilon", "zeta",
         "eta")
OTHER = "sentiment/few-shot"
EVALUATION = {"dataset": "sentiment@1", "scorers": ["exact"], "model": "tiny",
              "params": {"max_tokens": 3}, "limit": 6, "batch_size": 6}


def rule(require: str = "non-inferior", **extra) -> dict:
    out = {"evaluation": EVALUATION, "metric": "exact", "require": require, "alpha": 0.05}
    if require == "non-inferior":
        out["margin"] = 0.02
    return {**out, **extra}


def policy_at(name: str) -> str:
    return KINDS["prompt"].policy_path(name)


# ---- the policy file ---------------------------------------------------------------------
def test_a_policy_file_parses_and_malformed_ones_are_named():
    rules = parse_release_policy(yaml.safe_dump({"production": rule()}), "p.yaml")
    assert rules["production"].margin == 0.02 and rules["production"].require == "non-inferior"
    bad = [({"production": {**rule(), "metric": "accuracy"}}, "'metric' must name one of"),
           ({"production": {**rule(), "require": "better"}}, "'require' must be one of"),
           ({"production": {k: v for k, v in rule().items() if k != "margin"}},
            "needs a 'margin'"),
           ({"production": rule("superior", margin=0.1)}, "applies to non-inferior only"),
           ({"production": {**rule(), "alpha": 0.7}}, "'alpha' must be"),
           ({"production": {**rule(), "evaluation": {"scorers": ["exact"]}}}, "'dataset'"),
           ({"production": {**rule(), "evaluation": {**EVALUATION, "variants": []}}},
            "unknown key(s) variants"),
           ({"bad label!": rule()}, "p.yaml"), (["production"], "maps labels to rules")]
    for data, words in bad:
        with pytest.raises(ValidationFailed) as caught:
            parse_release_policy(yaml.safe_dump(data), "p.yaml")
        assert words in caught.value.message and "p.yaml" in caught.value.message


# ---- a live server with evidence ---------------------------------------------------------
@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny):
    tmp = tmp_path_factory.mktemp("gate")
    server = start_server(tmp, workers=2)
    server.cli("user", "add", "erin", "--role", "editor")
    server.cli("user", "add", "ed", "--role", "editor")
    server.tokens = {"admin": server.token(), "editor": server.token("erin"),
                     "editor2": server.token("ed")}
    models = tmp / "models.yaml"
    models.write_text(f"tiny:\n  backend: hf\n  path: {tiny.model}\n")
    server.env = {"PROMPTREV_REGISTRY": str(server.registry),
                  "PROMPTREV_MODELS": str(models), "PROMPTREV_AUTHOR": "Op <op@example.org>"}
    # Versions 2 and 3, the labels and the policies arrive through an admin's git push.
    admin = Git(tmp / "admin-git", server, server.tokens["admin"])
    work = admin.clone()
    for n in (2, 3, 4, 5):
        path = work / at(NAME)
        path.write_text(path.read_text().replace("sentiment classifier",
                                                 f"sentiment classifier (v{n})", 1))
        admin.commit(work, f"zero-shot v{n}")
    path = work / at(OTHER)
    path.write_text(path.read_text().replace("sentiment", "sentiment (v2)", 1))
    admin.commit(work, "few-shot v2")
    write(work / label_at(NAME), "".join(f"{label}: 1\n" for label in (*GATED, "iota")))
    write(work / label_at(OTHER), "staging: 1\n")
    policies = {label: rule("superior" if label == "release" else "non-inferior")
                for label in GATED}
    # The same evaluation at other settings: the run at max_tokens 3 is no evidence for it.
    policies["iota"] = {**rule(), "evaluation": {**EVALUATION, "params": {"max_tokens": 2}}}
    write(work / policy_at(NAME), yaml.safe_dump(policies))
    write(work / policy_at(OTHER), yaml.safe_dump({"staging": rule()}))
    admin.commit(work, "labels and release policies")
    admin("push", "-q", "origin", "main", cwd=work)
    # Evidence: version 2 against version 1, a real run of the tiny model.
    spec = {**EVALUATION, "name": "v2 vs v1", "baseline": "holder",
            "variants": [{"name": "holder", "prompt": f"{NAME}@1"},
                         {"name": "candidate", "prompt": f"{NAME}@2"}]}
    (tmp / "gate.yaml").write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(main, ["eval", "run", str(tmp / "gate.yaml"), "--json"],
                                env=server.env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    server.run_id = report["run"]
    yield server
    server.stop()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def cli(server: LiveServer, *args, code: int = 0) -> str:
    """``promptrev`` in process on the server's registry, as the local operator."""
    result = CliRunner().invoke(main, [str(a) for a in args], env=server.env,
                                catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def api(server: LiveServer, method: str, path: str, role: str = "admin", **kw):
    return httpx.request(method, server.url + "/api/v1" + path, timeout=60,
                         headers={"Authorization": f"Bearer {server.tokens[role]}"}, **kw)


def holder(server: LiveServer, label: str, name: str = NAME) -> int:
    return api(server, "GET", "/labels", params={"name": name}).json()["labels"][label]


def newest_message(server: LiveServer) -> str:
    return api(server, "GET", "/audit", params={"limit": 1}).json()["entries"][0]["message"]


def reset(server: LiveServer, label: str, to: int = 1, name: str = NAME) -> None:
    """Back to the version that held the label (a rollback: no evidence needed)."""
    if holder(server, label, name) != to:
        r = api(server, "POST", "/rollback", json={"name": name, "to": to, "label": label})
        assert r.status_code == 200, r.text


def test_api_refuses_a_move_without_evidence_naming_what_is_missing(live):
    r = api(live, "PUT", "/labels", params={"name": NAME, "label": "production"},
            json={"version": 3})
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["code"] == "evidence_required"
    for words in ("sentiment@1", f"baseline {NAME}@1", f"candidate {NAME}@3", "exact",
                  "non-inferior", f"promptrev label set {NAME} production 3"):
        assert words in error["message"]
    assert error["details"]["baseline"] == f"{NAME}@1" and error["details"]["metric"] == "exact"
    assert holder(live, "production") == 1


def test_api_allows_a_move_with_evidence_and_records_it(live):
    r = api(live, "PUT", "/labels", params={"name": NAME, "label": "production"},
            json={"version": 2, "message": "ship v2"})
    assert r.status_code == 200, r.text
    evidence = r.json()["clearance"]["evidence"]
    assert evidence["run"] == live.run_id and evidence["passed"]
    assert evidence["confidence"] == pytest.approx(0.9) and evidence["n"] == 6
    message = newest_message(live)
    assert message.startswith("ship v2") and f"Release-Evidence: run {live.run_id}" in message
    assert holder(live, "production") == 2
    # Rollback to a version that held the label: no evaluation, recorded as a rollback.
    r = api(live, "POST", "/rollback", json={"name": NAME, "to": 1, "label": "production"})
    assert r.status_code == 200, r.text
    assert "Release-Rollback: version 1 held 'production' before" in newest_message(live)
    assert holder(live, "production") == 1


def test_a_run_at_other_settings_than_the_policys_is_no_evidence(live):
    r = api(live, "PUT", "/labels", params={"name": NAME, "label": "iota"},
            json={"version": 2})
    assert r.status_code == 403 and "None exists" in r.json()["error"]["message"], r.text


def test_a_verdict_short_of_the_policy_is_refused_with_its_evidence(live):
    r = api(live, "PUT", "/labels", params={"name": NAME, "label": "release"},
            json={"version": 2})
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert f"run {live.run_id}" in error["message"] and "superior not met" in error["message"]
    assert error["details"]["evidence"]["run"] == live.run_id


def test_override_needs_an_admin_and_a_written_reason(live):
    params = {"name": NAME, "label": "staging"}
    r = api(live, "PUT", "/labels", "editor", params=params,
            json={"version": 4, "override_reason": "hotfix"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
    r = api(live, "PUT", "/labels", params=params, json={"version": 4, "override_reason": " "})
    assert r.status_code == 400, r.text
    r = api(live, "PUT", "/labels", params=params,
            json={"version": 4, "override_reason": "incident 42: v1 leaks PII"})
    assert r.status_code == 200, r.text
    assert r.json()["clearance"]["how"] == "override"
    audit = api(live, "GET", "/audit", params={"limit": 1}).json()["entries"][0]
    assert "Release-Override: incident 42: v1 leaks PII" in audit["message"]
    assert audit["account"] == "admin"
    reset(live, "staging")


def test_an_editor_moves_a_gated_label_with_evidence_only(live):
    params = {"name": NAME, "label": "staging"}
    r = api(live, "PUT", "/labels", "editor", params=params, json={"version": 3})
    assert r.status_code == 403 and r.json()["error"]["code"] == "evidence_required"
    r = api(live, "PUT", "/labels", "editor", params=params, json={"version": 2})
    assert r.status_code == 200, r.text
    reset(live, "staging")


def test_removing_a_gated_label_needs_an_override(live):
    r = api(live, "DELETE", "/labels", params={"name": NAME, "label": "staging"})
    assert r.status_code == 403 and "override" in r.json()["error"]["message"]
    assert holder(live, "staging") == 1


def test_traffic_splits_need_evidence_for_each_arm(live):
    params = {"name": NAME, "label": "production"}
    r = api(live, "PUT", "/splits", params=params, json={"arms": {"1": 90, "3": 10}})
    assert r.status_code == 403 and f"{NAME}@3" in r.json()["error"]["message"], r.text
    r = api(live, "PUT", "/splits", "editor", params={"name": NAME, "label": "staging"},
            json={"arms": {"1": 90, "3": 10}})
    assert r.status_code == 403 and r.json()["error"]["code"] == "evidence_required"
    r = api(live, "PUT", "/splits", params=params, json={"arms": {"1": 90, "2": 10}})
    assert r.status_code == 200, r.text
    assert r.json()["clearance"]["how"] in ("evidence", "rollback")  # v2 held it earlier
    assert "Release-" in newest_message(live)
    assert api(live, "DELETE", "/splits", params=params).status_code == 200


def browser(server: LiveServer) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=60)
    page = client.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = client.post("/login", data={"name": "admin", "password": ADMIN_PASSWORD,
                                    "csrf_token": csrf})
    assert r.status_code == 302
    return client


def test_the_confirmation_page_shows_evidence_or_what_is_missing(live):
    client = browser(live)
    page = client.get("/label", params={"name": NAME, "label": "beta", "to": 2})
    assert page.status_code == 200
    assert 'id="gate-evidence"' in page.text and f"#{live.run_id}" in page.text
    assert "non-inferior met" in page.text
    page = client.get("/label", params={"name": NAME, "label": "production", "to": 5})
    assert 'id="gate-refused"' in page.text and 'name="override_reason"' in page.text
    assert f"promptrev label set {NAME} production 5" in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    form = {"csrf_token": csrf, "name": NAME, "kind": "prompt", "label": "production",
            "to": "5"}
    refused = client.post("/label", data=form)
    assert refused.status_code == 403 and holder(live, "production") == 1
    moved = client.post("/label", data={**form, "override_reason": "vendor outage"})
    assert moved.status_code == 302, moved.text
    assert holder(live, "production") == 5
    assert "Release-Override: vendor outage" in newest_message(live)
    # The rollback page: back to a version that held the label, without evidence.
    page = client.get("/rollback", params={"name": NAME, "label": "production", "to": 1})
    assert "Release-Rollback" in page.text
    r = client.post("/rollback", data={"csrf_token": csrf, "name": NAME, "kind": "prompt",
                                       "label": "production", "to": "1"})
    assert r.status_code == 302 and holder(live, "production") == 1


def test_cli_moves_show_evidence_and_refusals(live):
    out = cli(live, "label", "set", NAME, "production", 3, code=5)  # refused (cli/exit_codes.py)
    assert "needs evidence" in out and f"candidate {NAME}@3" in out
    out = cli(live, "label", "set", NAME, "gamma", 2)
    assert f"Release-Evidence: run {live.run_id}" in out and "non-inferior met" in out
    out = cli(live, "rollback", NAME, "--to", 1, "--label", "gamma")
    assert "Release-Rollback" in out
    out = cli(live, "label", "split", NAME, "production", "1=50", "3=50", code=5)
    assert "needs evidence" in out
    out = cli(live, "label", "set", NAME, "release", 4, "--override-reason", "board decision")
    assert "Release-Override: board decision" in out
    audit = json.loads(cli(live, "audit", "--limit", "1", "--json"))
    assert "Release-Override: board decision" in json.dumps(audit)
    cli(live, "rollback", NAME, "--to", 1, "--label", "release")


def admin_git(live: LiveServer, tmp_path: Path, role: str = "admin", home: str = ""
              ) -> tuple[Git, Path]:
    git = Git(tmp_path / (home or role), live, live.tokens[role])
    return git, git.clone()


def test_git_push_of_a_label_move_is_gated(live, tmp_path):
    git, work = admin_git(live, tmp_path)
    labels = work / label_at(NAME)
    labels.write_text(labels.read_text().replace("production: 1", "production: 3"))
    git.commit(work, "promote v3")
    out = git("push", "origin", "main", cwd=work, check=False)
    assert out.returncode != 0 and "needs evidence" in out.stderr
    assert f"candidate {NAME}@3" in out.stderr and holder(live, "production") == 1
    git("reset", "-q", "--hard", "origin/main", cwd=work)
    labels.write_text(labels.read_text().replace("delta: 1", "delta: 2"))
    git.commit(work, "promote v2")
    git("push", "-q", "origin", "main", cwd=work)
    assert holder(live, "delta") == 2


def test_a_malformed_policy_is_refused_naming_the_file(live, tmp_path):
    git, work = admin_git(live, tmp_path)
    write(work / policy_at(NAME), "production: {require: better}\n")
    git.commit(work, "bad policy")
    out = git("push", "origin", "main", cwd=work, check=False)
    assert out.returncode != 0 and policy_at(NAME) in out.stderr
    assert "label 'production'" in out.stderr and "'evaluation'" in out.stderr


def test_attack_one_push_cannot_weaken_the_policy_and_move_the_label(live, tmp_path):
    for role in ("editor", "admin"):
        git, work = admin_git(live, tmp_path, role)
        (work / policy_at(OTHER)).unlink()
        write(work / label_at(OTHER), "staging: 2\n")
        git.commit(work, "drop the gate and promote")
        out = git("push", "origin", "main", cwd=work, check=False)
        assert out.returncode != 0, role
        if role == "editor":  # changing a release policy is an admin's reviewed change
            assert "release policy of label 'staging'" in out.stderr
        else:  # the move is judged by the policy main held before the push
            assert "needs evidence" in out.stderr and f"candidate {OTHER}@2" in out.stderr
        assert holder(live, "staging", OTHER) == 1
    # Loosening first, in a commit of its own, then moving, also fails in one push.
    git, work = admin_git(live, tmp_path, "admin", "admin-again")
    write(work / policy_at(OTHER), yaml.safe_dump({"staging": rule(margin=1.0)}))
    git.commit(work, "loosen")
    write(work / label_at(OTHER), "staging: 2\n")
    git.commit(work, "promote")
    out = git("push", "origin", "main", cwd=work, check=False)
    assert out.returncode != 0 and "needs evidence" in out.stderr


def test_attack_a_traffic_split_cannot_route_around_the_gate(live, tmp_path):
    git, work = admin_git(live, tmp_path, "editor")
    write(work / KINDS["prompt"].split_path(OTHER), "staging: {1: 1, 2: 99}\n")
    git.commit(work, "split to v2")
    out = git("push", "origin", "main", cwd=work, check=False)
    assert out.returncode != 0 and "needs evidence" in out.stderr
    r = api(live, "PUT", "/splits", "editor", params={"name": OTHER, "label": "staging"},
            json={"arms": {"1": 1, "2": 99}})
    assert r.status_code == 403 and r.json()["error"]["code"] == "evidence_required"


def test_attack_a_change_request_merge_is_gated(live, tmp_path):
    git, work = admin_git(live, tmp_path, "editor")
    git("switch", "-q", "-c", "review/sneak", cwd=work)
    (work / policy_at(OTHER)).unlink()
    write(work / label_at(OTHER), "staging: 2\n")
    git.commit(work, "drop the gate and promote")
    out = git("push", "origin", "review/sneak", cwd=work)
    number = int(re.search(r"change request #(\d+)", out.stderr).group(1))
    assert api(live, "POST", f"/reviews/{number}/approve", "editor2",
               json={}).status_code == 200
    for role in ("editor", "admin"):  # even an admin's merge is judged by main's policy
        r = api(live, "POST", f"/reviews/{number}/merge", role, json={})
        assert r.status_code == 403, r.text
    assert "release policy" in api(live, "POST", f"/reviews/{number}/merge", "editor",
                                   json={}).json()["error"]["message"]
    assert "needs evidence" in r.json()["error"]["message"]
    assert holder(live, "staging", OTHER) == 1


def test_a_change_request_with_evidence_merges_and_says_so(live, tmp_path):
    git, work = admin_git(live, tmp_path, "editor")
    git("switch", "-q", "-c", "review/promote", cwd=work)
    labels = work / label_at(NAME)
    labels.write_text(labels.read_text().replace("epsilon: 1", "epsilon: 2"))
    git.commit(work, "epsilon to v2")
    number = int(re.search(r"change request #(\d+)",
                           git("push", "origin", "review/promote", cwd=work).stderr).group(1))
    assert api(live, "POST", f"/reviews/{number}/approve", "editor2",
               json={}).status_code == 200
    r = api(live, "POST", f"/reviews/{number}/merge", "editor", json={})
    assert r.status_code == 200, r.text
    assert holder(live, "epsilon") == 2
    assert f"Release-Evidence: run {live.run_id}" in newest_message(live)


def test_a_label_without_policy_moves_as_before(live):
    r = api(live, "PUT", "/labels", "editor", params={"name": NAME, "label": "canary"},
            json={"version": 3})
    assert r.status_code == 200 and r.json()["clearance"]["how"] == "ungated"
    assert "Release-" not in newest_message(live)


def test_cli_evaluate_runs_the_policy_evaluation_then_moves(live):
    out = cli(live, "label", "set", NAME, "zeta", 3, "--evaluate")
    assert "Release-Evidence: run" in out and "non-inferior met" in out
    assert holder(live, "zeta") == 3
    run = int(re.search(r"Release-Evidence: run (\d+)", out).group(1))
    assert run != live.run_id
    shown = json.loads(CliRunner().invoke(main, ["eval", "show", str(run), "--json"],
                                          env=live.env).stdout)
    assert shown["dataset"] == "sentiment@1" and shown["cases"] == 6
    assert [v["prompt"] for v in shown["variants"]] == [f"{NAME}@1", f"{NAME}@3"]
    assert shown["baseline"] == shown["variants"][0]["name"]


def test_a_clearance_is_void_once_the_label_moved_under_it(live):
    """Checked, then committed: if the holder moved in between, nothing is written."""
    reg = Registry.open(live.registry)
    try:
        cleared = Policy().require_move(operator("Op <op@example.org>"), reg, NAME, "eta", 2)
        assert cleared.how == "evidence"
        r = api(live, "PUT", "/labels", params={"name": NAME, "label": "eta"},
                json={"version": 4, "override_reason": "meanwhile, elsewhere"})
        assert r.status_code == 200, r.text
        with pytest.raises(Conflict):
            reg.set_label(NAME, "eta", 2, guard=cleared.guard,
                          message=cleared.message(None, "eta -> 2"))
    finally:
        reg.close()
    assert holder(live, "eta") == 4


# ---- pulls from a followed remote ----------------------------------------------------------
def test_a_pull_is_gated_and_cannot_weaken_the_policy_it_moves_under(run, tmp_path):
    prompt = tmp_path / "greet.prompty"
    prompt.write_text(PROMPT)
    run("save", prompt, "-m", "first")
    run("import", ROOT / "prompts" / "datasets")
    run("label", "set", "greet", "production", "1")
    bare = tmp_path / "team.git"
    git("init", "-q", "--bare", "--initial-branch=main", bare)
    run("remote", "add", "origin", bare)
    run("push")
    mate = Teammate(bare, tmp_path / "mate")
    policy = KINDS["prompt"].policy_path("greet")
    mate.write(policy, yaml.safe_dump({"production": rule()}))
    mate.commit("gate production")
    mate.push()
    assert "fast-forward" in run("pull").output  # the local operator is an admin

    mate.write(at("greet"), variant(PROMPT, 2))
    mate.write(label_at("greet"), "production: 2\n")
    mate.commit("ship v2")
    mate.push()
    refused = run("pull", ok=False)
    assert refused.exit_code != 0 and "needs evidence" in refused.output
    assert "candidate greet@2" in refused.output
    assert json.loads(run("label", "list", "greet", "--json").output) == {"production": 1}
    # Removing the policy later in the same history changes nothing: the move is judged
    # by the policy this registry held before the pull.
    mate.run("rm", "-q", policy)
    mate.commit("no more gate")
    mate.push()
    refused = run("pull", ok=False)
    assert refused.exit_code != 0 and "needs evidence" in refused.output
    assert json.loads(run("label", "list", "greet", "--json").output) == {"production": 1}
