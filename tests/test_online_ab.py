"""Online A/B: label splits with sticky assignment, outcomes posted back, live statistics."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from promptrev.errors import InvalidRequest, NotFound, ValidationFailed
from promptrev.evaluation.online import Outcomes, independent_test
from promptrev.model.labels import assign

from .conftest import PROMPT, variant


@pytest.fixture
def split_registry(registry):
    registry.save("g", PROMPT)
    registry.save("g", variant(PROMPT, 1), base=1)
    registry.save("g", variant(PROMPT, 2), base=2)
    registry.set_label("g", "production", 1)
    registry.set_split("g", "production", {1: 90, 2: 10})
    return registry


def test_assignment_is_sticky_and_follows_the_weights(split_registry):
    reg = split_registry
    assert reg.splits("g") == {"production": {1: 90, 2: 10}}
    got = Counter(reg.resolve_for("g@production", f"user-{i}").number for i in range(5000))
    assert set(got) == {1, 2} and 0.08 < got[2] / 5000 < 0.12
    for key in ("alice", "bob", "user-17"):
        first = reg.resolve_for("g@production", key).number
        assert all(reg.resolve_for("g@production", key).number == first for _ in range(5))
    assert reg.resolve("g@production").number == 1  # callers without a key: the label
    assert reg.resolve_for("g@3", "alice").number == 3  # not a split label: as written
    # A 50/50 split keeps 90/10's version-2 users on version 2 only by chance; the hash is
    # a function of the key and the split arms only.
    assert assign("prompt", "g", "production", "alice", {1: 90, 2: 10}) == \
        reg.resolve_for("g@production", "alice").number


def test_splits_are_commits_validated_and_can_end(split_registry):
    reg = split_registry
    assert [e.action for e in reg.audit(1)] == ["split"]
    with pytest.raises(NotFound, match="no version 9"):
        reg.set_split("g", "production", {1: 50, 9: 50})
    with pytest.raises(ValidationFailed, match="at least two versions"):
        reg.set_split("g", "production", {1: 100})
    with pytest.raises(ValidationFailed, match="positive integer"):
        reg.set_split("g", "production", {1: 0, 2: 5})
    reg.set_split("g", "production", {})
    assert reg.splits("g") == {}
    assert {reg.resolve_for("g@production", f"k{i}").number for i in range(200)} == {1}
    with pytest.raises(NotFound, match="no split"):
        reg.set_split("g", "production", {})
    assert reg.fsck()["ok"]


def test_outcomes_and_live_statistics(split_registry):
    reg = split_registry
    reg.set_split("g", "production", {1: 50, 2: 50})
    outcomes = Outcomes(reg.engine)
    rng = random.Random(0)
    for i in range(600):
        key = f"user-{i}"
        arm = reg.resolve_for("g@production", key).number
        rate = 0.3 if arm == 1 else 0.6  # version 2 converts twice as often
        outcomes.record(reg, "g@production", key, rng.random() < rate, "converted")
        outcomes.record(reg, "g@production", key, rng.gauss(1.0, 0.2), "latency")
    report = outcomes.report(reg, "g", "production")
    assert report["split"] == {"1": 50, "2": 50}
    metrics = {m["metric"]: m for m in report["metrics"]}
    converted = metrics["converted"]["comparisons"][0]
    # always valid by default; no plan, so the fixed-horizon numbers are hidden, saying why
    assert converted["significant"] and converted["test"] == "fisher-exact"
    sequential = converted["sequential"]
    assert sequential["low"] < 0.3 < sequential["high"]  # the true difference
    assert sequential["p_value"] < 0.05 and sum(converted["n"]) == 600
    assert converted["p_value"] is None and converted["low"] is None
    assert not converted["fixed_horizon"]["shown"]
    assert "no planned size" in converted["fixed_horizon"]["reason"]
    latency = metrics["latency"]["comparisons"][0]
    assert not latency["significant"] and latency["test"] == "welch-t"
    assert latency["sequential"]["low"] < 0 < latency["sequential"]["high"]
    assert any("no significant difference" in line for line in report["verdict"])
    # once every arm has its planned size, the fixed-horizon test is shown beside it
    smallest = min(converted["n"])
    outcomes.set_plan("g", "production", {"per_arm": smallest + 1, "alpha": 0.05})
    hidden = outcomes.report(reg, "g", "production")["metrics"][0]["comparisons"][0]
    assert hidden["p_value"] is None and f"planned {smallest + 1}" in \
        hidden["fixed_horizon"]["reason"]
    outcomes.set_plan("g", "production", {"per_arm": smallest, "alpha": 0.05})
    report = outcomes.report(reg, "g", "production")
    converted = report["metrics"][0]["comparisons"][0]
    assert converted["fixed_horizon"]["shown"] and converted["p_value"] < 0.05
    assert converted["low"] < 0.3 < converted["high"]  # the bootstrap interval
    assert converted["sequential"]["tuned_per_arm"] == smallest
    assert any("fixed-horizon at the planned" in line for line in report["verdict"])
    with pytest.raises(InvalidRequest, match="traffic split"):
        outcomes.record(reg, "g@3", "k", 1)
    with pytest.raises(InvalidRequest, match="number"):
        outcomes.record(reg, "g@production", "k", "yes")


def test_false_positive_rate_of_the_online_test_is_near_nominal():
    rng = random.Random(1)
    rejections = 0
    for _ in range(300):
        a = [float(rng.random() < 0.4) for _ in range(120)]
        b = [float(rng.random() < 0.4) for _ in range(130)]
        rejections += independent_test(a, b)["p_value"] < 0.05
    assert rejections / 300 <= 0.07


def test_split_api_and_outcomes_endpoint(server_env):
    api = server_env.api
    api("PUT", "/artifact?name=summarize", headers={"If-Match": "1"},
        json={"text": PROMPT, "message": "v2"})
    api("PUT", "/labels?name=summarize&label=staging", json={"version": 1})
    r = api("PUT", "/splits?name=summarize&label=staging", role="editor",
            json={"arms": {"1": 50, "2": 50}})
    assert r.status_code == 200 and r.get_json()["arms"] == {"1": 50, "2": 50}
    assert api("PUT", "/splits?name=summarize&label=production", role="editor",
               json={"arms": {"1": 50, "2": 50}}).status_code == 403  # protected label
    assert api("GET", "/splits?name=summarize").get_json()["splits"] == {
        "staging": {"1": 50, "2": 50}}
    seen = {}
    for i in range(40):
        got = api("GET", f"/artifact?ref=summarize@staging&key=user-{i}", role="viewer")
        assert got.status_code == 200
        seen[f"user-{i}"] = got.get_json()["version"]
        again = api("GET", f"/artifact?ref=summarize@staging&key=user-{i}", role="viewer")
        assert again.get_json()["version"] == seen[f"user-{i}"]
    assert set(seen.values()) == {1, 2}
    # the application posts with a token granted the 'outcomes' scope (a plain viewer: 403)
    assert api("POST", "/outcomes", role="viewer", json={
        "ref": "summarize@staging", "key": "user-0", "value": True}).status_code == 403
    app_token = server_env.accounts.create_token("viewer", "app", ("outcomes",))[0]
    for key, version in seen.items():
        r = api("POST", "/outcomes", role=None, headers={"Authorization": f"Bearer {app_token}"},
                json={"ref": "summarize@staging", "key": key, "value": version == 2})
        assert r.status_code == 201 and r.get_json()["version"] == version
    stats = api("GET", "/experiments?name=summarize&label=staging").get_json()
    arms = stats["metrics"][0]["arms"]
    assert arms["v1"]["mean"] == 0 and arms["v2"]["mean"] == 1
    assert api("POST", "/outcomes", json={"ref": "summarize@staging", "key": "k"}
               ).status_code == 400
    assert api("DELETE", "/splits?name=summarize&label=staging").status_code == 200
    assert api("GET", "/splits?name=summarize").get_json()["splits"] == {}


def test_split_and_stats_from_the_cli(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from promptrev import Registry
    from promptrev.cli.main import main

    monkeypatch.setenv("PROMPTREV_REGISTRY", str(tmp_path / "reg"))
    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    run("init")
    reg = Registry.open(tmp_path / "reg")
    reg.save("g", PROMPT)
    reg.save("g", variant(PROMPT, 1), base=1)
    reg.set_label("g", "production", 1)
    assert "g@production: v1 80, v2 20" in run("label", "split", "g", "production", "1=80",
                                                "2=20")
    for i in range(50):
        Outcomes(reg.engine).record(reg, "g@production", f"k{i}", i % 3 == 0)
    report = json.loads(run("ab", "stats", "g", "production", "--json"))
    assert report["split"] == {"1": 80, "2": 20} and report["metrics"][0]["metric"] == "success"
    assert report["plan"] is None and "sequential" in report["metrics"][0]["comparisons"][0]
    shown = run("ab", "stats", "g", "production")
    assert "v1" in shown and "always-valid p=" in shown and "no planned size" in shown
    assert "fixed-horizon p-values hidden" in shown
    assert "not VERSION=WEIGHT" in run("label", "split", "g", "production", "x", code=2)
    # the planner, alone and with the split; bad input is a message, not a traceback
    assert run("ab", "plan", "--mde", "0.02", "--baseline", "0.1").startswith(
        "3841 outcomes per arm")
    assert json.loads(run("ab", "plan", "--mde", "0.5", "--sd", "1", "--json"))["per_arm"] == 63
    assert "'alpha' must be" in run("ab", "plan", "--mde", "0.02", "--baseline", "0.1",
                                    "--alpha", "2", code=6)
    assert "whole number" in run("label", "split", "g", "production", "1=50", "2=50",
                                 "--planned", "-4", code=6)
    assert Outcomes(reg.engine).plan("g", "production") is None  # refused before writing
    out = run("label", "split", "g", "production", "1=50", "2=50", "--mde", "0.2",
              "--baseline", "0.3")
    assert "planned: " in out
    planned = Outcomes(reg.engine).plan("g", "production")
    assert planned["per_arm"] > 50 and planned["mde"] == 0.2 and planned["baseline"] == 0.3
    assert f"planned {planned['per_arm']} per arm" in run("ab", "stats", "g", "production")
    run("label", "split", "g", "production", "1=50", "2=50", "--planned", "5")
    shown = run("ab", "stats", "g", "production")  # 50 outcomes, at least 5 in each arm
    assert "fixed-horizon at the planned 5 per arm" in shown
    assert "split ended" in run("label", "split", "g", "production", "--end")
    assert Outcomes(reg.engine).plan("g", "production") is None
    reg.close()


def test_live_statistics_on_the_artifact_page(server_env):
    api = server_env.api
    api("PUT", "/artifact?name=summarize", headers={"If-Match": "1"},
        json={"text": PROMPT, "message": "v2"})
    api("PUT", "/labels?name=summarize&label=staging", json={"version": 1})
    api("PUT", "/splits?name=summarize&label=staging", json={"arms": {"1": 70, "2": 30}})
    page = server_env.login("viewer").get("/a/summarize").get_data(as_text=True)
    assert 'id="experiments"' in page and "v1 70 / v2 30" in page
    assert "No outcomes posted yet" in page
    for i in range(30):
        api("POST", "/outcomes", json={"ref": "summarize@staging", "key": f"u{i}",
                                       "value": i % 2 == 0})
    page = server_env.login("viewer").get("/a/summarize").get_data(as_text=True)
    section = page[page.index('id="experiments"'):page.index("<h2>History")]
    assert "success" in section and "v1" in section and "Outcomes" in section


def test_three_arms_are_compared_pairwise_with_holm_and_bonferroni_intervals(split_registry):
    reg = split_registry
    reg.set_split("g", "production", {1: 34, 2: 33, 3: 33})
    outcomes = Outcomes(reg.engine)
    rng = random.Random(5)
    for i in range(900):
        key = f"user-{i}"
        arm = reg.resolve_for("g@production", key).number
        outcomes.record(reg, "g@production", key, rng.random() < (0.6 if arm == 3 else 0.3))
    metric = outcomes.report(reg, "g", "production")["metrics"][0]
    pairs = {(c["a"], c["b"]): c for c in metric["comparisons"]}
    assert set(pairs) == {("v1", "v2"), ("v1", "v3"), ("v2", "v3")}
    assert metric["correction"].startswith("Holm over 3 comparisons")
    for c in pairs.values():
        seq = c["sequential"]
        assert seq["confidence"] == pytest.approx(1 - 0.05 / 3)
        assert seq["p_adjusted"] >= seq["p_value"] and seq["low"] <= c["diff"] <= seq["high"]
    assert pairs[("v1", "v3")]["significant"] and pairs[("v2", "v3")]["significant"]
    assert not pairs[("v1", "v2")]["significant"]
    with pytest.raises(InvalidRequest, match="'alpha' must be"):
        outcomes.report(reg, "g", "production", alpha=0)
