"""A split that stops itself: outcomes posted through the API until the always-valid test
decides, then one commit (by the ``auto-stop`` account, with the statistics in its
message) that promotes the winner or rolls the loser back; the release gate still holds.
"""

from __future__ import annotations

import json
import random
import re

import numpy as np
import yaml
from click.testing import CliRunner

from promptrev import Registry
from promptrev.cli.main import main
from promptrev.evaluation.auto_stop import decide
from promptrev.model.artifacts import KINDS
from promptrev.storage.gitstore import Signature

from .conftest import PROMPT

RATES = {1: 0.3, 2: 0.8}  # success rates of the two versions


def split(server_env, mode: str, label: str = "staging", per_arm: int = 300):
    api = server_env.api
    api("PUT", "/artifact?name=summarize", headers={"If-Match": "1"},
        json={"text": PROMPT, "message": "v2"})
    assert api("PUT", f"/labels?name=summarize&label={label}", json={"version": 1}
               ).status_code == 200
    r = api("PUT", f"/splits?name=summarize&label={label}", role="editor", json={
        "arms": {"1": 50, "2": 50}, "plan": {"per_arm": per_arm, "auto_stop": mode}})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["plan"]["auto_stop"] == mode
    assert r.get_json()["plan"]["stop_metric"] == "success"


def post_until_stopped(server_env, rates: dict[int, float], label: str = "staging",
                       limit: int = 1500) -> tuple[dict, int]:
    """Callers resolve the label, then post their outcome; until the split stops itself."""
    api, rng = server_env.api, random.Random(7)
    token = server_env.accounts.create_token("viewer", "app", ("outcomes",))[0]
    for i in range(limit):
        version = api("GET", f"/artifact?ref=summarize@{label}&key=u{i}",
                      role="viewer").get_json()["version"]
        r = api("POST", "/outcomes", role=None, headers={"Authorization": f"Bearer {token}"},
                json={"ref": f"summarize@{label}", "key": f"u{i}",
                      "value": rng.random() < rates[version]})
        assert r.status_code == 201, r.get_json()
        if "auto_stop" in r.get_json():
            return r.get_json()["auto_stop"], i + 1
    raise AssertionError(f"no automatic stop after {limit} outcomes")


def newest(server_env) -> dict:
    return server_env.api("GET", "/audit?limit=1").get_json()["entries"][0]


def test_promote_moves_the_label_to_the_winner_in_one_commit_with_its_statistics(
        server_env):
    split(server_env, "promote")
    stopped, posted = post_until_stopped(server_env, RATES)
    assert stopped["stopped"] and stopped["action"] == "promote" and stopped["winner"] == 2
    assert posted >= 60  # no decision before 30 outcomes per arm
    api = server_env.api
    assert api("GET", "/labels?name=summarize").get_json()["labels"]["staging"] == 2
    assert api("GET", "/splits?name=summarize").get_json()["splits"] == {}
    entry = newest(server_env)
    assert entry["account"] == "auto-stop" and entry["commit"] == stopped["commit"]
    assert entry["action"] == "split"
    message = entry["message"]
    assert message.startswith("split summarize@staging stopped by auto-stop: staging -> 2")
    assert "Auto-Stop: promote on success" in message
    stats = re.search(r"Auto-Stop-Statistics: success: v2 − v1 = \+([0-9.]+), always-valid "
                      r"\S+ CI \[\+([0-9.]+), \+[0-9.]+\], mSPRT p=(\S+) .* n=(\d+) and "
                      r"(\d+): v2 is higher than v1", message)
    assert stats, message
    assert float(stats.group(2)) > 0 and float(stats.group(3)) < 0.05
    assert int(stats.group(4)) + int(stats.group(5)) == posted
    # the label moved and the split ended in that one commit; the plan is gone
    assert [(m["label"], m["from"], m["to"]) for m in entry["label_moves"]] == [
        ("staging", 1, 2)]
    assert api("GET", "/experiments?name=summarize&label=staging").get_json()["plan"] is None


def test_rollback_drops_the_worse_arm_and_keeps_the_holder(server_env):
    split(server_env, "rollback")
    stopped, _ = post_until_stopped(server_env, {1: 0.8, 2: 0.3})
    assert stopped["action"] == "rollback" and stopped["losers"] == [2]
    assert stopped["split"] == {}
    api = server_env.api
    assert api("GET", "/labels?name=summarize").get_json()["labels"]["staging"] == 1
    assert api("GET", "/splits?name=summarize").get_json()["splits"] == {}
    message = newest(server_env)["message"]
    assert message.startswith("split summarize@staging stopped by auto-stop: v2 rolled back, "
                              "split ended")
    assert "v1 is higher than v2" in message


def test_rollback_mode_never_promotes(server_env):
    split(server_env, "rollback", per_arm=100)
    api, rng = server_env.api, random.Random(3)
    for i in range(400):
        version = api("GET", f"/artifact?ref=summarize@staging&key=w{i}").get_json()["version"]
        r = api("POST", "/outcomes", json={"ref": "summarize@staging", "key": f"w{i}",
                                           "value": rng.random() < RATES[version]})
        assert "auto_stop" not in r.get_json()
    assert api("GET", "/splits?name=summarize").get_json()["splits"] == {
        "staging": {"1": 50, "2": 50}}


def test_a_promotion_the_release_gate_refuses_leaves_the_split_running(server_env):
    """The winner of a gated label needs the offline evidence a manual move needs (here
    the policy arrives after the split was made: else its arms would have needed it)."""
    split(server_env, "promote")
    reg = Registry.open(server_env.settings.registry)
    try:
        policy = {"staging": {"evaluation": {"dataset": "sentiment@1", "scorers": ["exact"]},
                              "metric": "exact", "require": "superior", "alpha": 0.05}}
        store = reg.store
        with reg.writing():
            head = store.head()
            new = store.commit(head, {KINDS["prompt"].policy_path("summarize"):
                                      store.write_blob(yaml.safe_dump(policy).encode())},
                               "a release policy", Signature("Admin", "a@example.org"))
            reg.advance_main(head, new, "a release policy")
    finally:
        reg.close()
    stopped, _ = post_until_stopped(server_env, RATES)
    assert stopped["stopped"] is False and "needs evidence" in stopped["refused"]
    api = server_env.api
    assert api("GET", "/labels?name=summarize").get_json()["labels"]["staging"] == 1
    assert api("GET", "/splits?name=summarize").get_json()["splits"] == {
        "staging": {"1": 50, "2": 50}}


def test_bad_auto_stop_plans_are_named(server_env):
    api = server_env.api
    api("PUT", "/artifact?name=summarize", headers={"If-Match": "1"},
        json={"text": PROMPT, "message": "v2"})
    api("PUT", "/labels?name=summarize&label=staging", json={"version": 1})
    for plan, words in (({"auto_stop": "promote"}, "goes with a plan"),
                        ({"per_arm": 100, "auto_stop": "win"}, "'auto_stop' must be one of"),
                        ({"per_arm": 100, "stop_metric": "x"}, "goes with 'auto_stop'")):
        r = api("PUT", "/splits?name=summarize&label=staging",
                json={"arms": {"1": 50, "2": 50}, "plan": plan})
        assert r.status_code == 400 and words in r.get_json()["error"]["message"], r.get_json()
    assert api("GET", "/splits?name=summarize").get_json()["splits"] == {}


def test_cli_sets_the_automatic_stop_with_the_split(tmp_path):
    env = {"PROMPTREV_REGISTRY": str(tmp_path / "reg"), "PROMPTREV_AUTHOR": "Op <o@x.org>"}
    runner = CliRunner()
    assert runner.invoke(main, ["init"], env=env).exit_code == 0
    (tmp_path / "g.prompty").write_text(PROMPT)
    for _ in (1, 2):
        assert runner.invoke(main, ["save", str(tmp_path / "g.prompty"), "--name", "g",
                                    "--force"], env=env).exit_code == 0
        (tmp_path / "g.prompty").write_text(PROMPT.replace("friendly", "kind"))
    assert runner.invoke(main, ["label", "set", "g", "beta", "1"], env=env).exit_code == 0
    out = runner.invoke(main, ["label", "split", "g", "beta", "1=50", "2=50", "--planned",
                               "500", "--auto-stop", "rollback", "--stop-metric", "clicked"],
                        env=env)
    assert out.exit_code == 0, out.output
    assert "auto-stop: rollback on clicked" in out.output
    stats = json.loads(runner.invoke(main, ["ab", "stats", "g", "beta", "--json"],
                                     env=env).output)
    assert stats["plan"]["auto_stop"] == "rollback" and stats["plan"]["per_arm"] == 500
    out = runner.invoke(main, ["label", "split", "g", "beta", "1=50", "2=50", "--auto-stop",
                               "promote"], env=env)
    assert out.exit_code != 0 and "goes with a plan" in out.output


def test_identical_arms_rarely_stop_however_often_checked():
    """A/A: the always-valid p-value never goes up, so deciding after every outcome is
    deciding at the end; over 300 simulated splits the stop rate stays near alpha."""
    rng = np.random.default_rng(11)
    stops = 0
    for _ in range(300):
        versions = rng.integers(1, 3, 400)
        values = (rng.random(400) < 0.3).astype(float)
        decision = decide(list(zip(versions.tolist(), values.tolist(), strict=True)),
                          {1: 50, 2: 50}, 1, "promote", "success", 0.05, 200)
        stops += decision is not None
    assert stops / 300 <= 0.06, stops
