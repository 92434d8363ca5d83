"""``promptrev eval gate`` end to end through the CLI, on the tiny local model: a passing
gate, a failing one that reuses the finished run, and bad input named clearly.

The candidate is the label's holder itself (``sentiment/zero-shot@1``): identical
variants are non-inferior within any margin and never superior, so both verdicts are
certain whatever the random tiny model answers.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import yaml
from click.testing import CliRunner

from promptrev.cli.main import main

from .live import ROOT

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

NAME = "sentiment/zero-shot"
SPEC = {"name": "gate", "dataset": "sentiment@1", "model": "tiny",
        "params": {"max_tokens": 3}, "limit": 12, "batch_size": 12, "scorers": ["exact"],
        "variants": [{"name": "candidate", "prompt": f"{NAME}@1"}]}
POLICY = {"production": {"evaluation": {"dataset": "sentiment@1", "scorers": ["exact"]},
                         "metric": "exact", "require": "non-inferior", "margin": 0.02,
                         "alpha": 0.05}}


def cli(env: dict, *args, code: int | None = 0):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env,
                                catch_exceptions=False)
    assert code is None or result.exit_code == code, result.output
    return result


@pytest.fixture(scope="module")
def gated(tmp_path_factory, tiny):
    """A registry with ``production`` on version 1, a spec, a policy file, and one run of
    a passing gate with its reports."""
    tmp = tmp_path_factory.mktemp("cigate")
    models = tmp / "models.yaml"
    models.write_text(f"tiny:\n  backend: hf\n  path: {tiny.model}\n")
    env = {"PROMPTREV_REGISTRY": str(tmp / "reg"), "PROMPTREV_MODELS": str(models),
           "PROMPTREV_AUTHOR": "CI <ci@example.org>", "PROMPTREV_URL": "https://reg.test/"}
    cli(env, "init")
    cli(env, "import", ROOT / "prompts")
    cli(env, "label", "set", NAME, "production", 1)
    (tmp / "gate.yaml").write_text(yaml.safe_dump(SPEC))
    (tmp / "policy.yaml").write_text(yaml.safe_dump(POLICY))
    first = cli(env, "eval", "gate", tmp / "gate.yaml", "--baseline", "production",
                "--policy", tmp / "policy.yaml", "--junit", tmp / "pass.xml",
                "--markdown", tmp / "pass.md")
    return tmp, env, first


def test_a_passing_gate_exits_0_with_its_reports(gated):
    tmp, _, first = gated
    assert "gate (" in first.stdout and "passed" in first.stdout
    assert "non-inferior met" in first.stdout and "reused" not in first.stderr
    suite = ET.parse(tmp / "pass.xml").getroot()
    assert suite.tag == "testsuite" and suite.get("tests") == "1"
    assert suite.get("failures") == "0" and suite.find("testcase/failure") is None
    md = (tmp / "pass.md").read_text()
    assert "✅ passed" in md and "| metric | variant | prompt | mean | interval | n |" in md
    assert f"| exact | baseline (production) | `{NAME}@1` |" in md
    assert "| exact: candidate − baseline (production) |" in md
    assert "+0 tokens" in md and "per 1,000 calls" in md
    run = first.stdout.split("promptrev eval show ")[1].split(",")[0].strip()
    assert f"https://reg.test/eval/{run}" in first.stdout and f"eval show {run}`" in md


def test_a_failing_gate_exits_1_and_reuses_the_finished_run(gated):
    tmp, env, first = gated
    run = first.stdout.split("promptrev eval show ")[1].split(",")[0].strip()
    out = cli(env, "eval", "gate", tmp / "gate.yaml", "--baseline", "production",
              "--require", "superior", "--metric", "exact", "--junit", tmp / "fail.xml",
              "--markdown", tmp / "fail.md", code=1)
    assert f"reused run {run}" in out.stderr and "superior not met" in out.stdout
    suite = ET.parse(tmp / "fail.xml").getroot()
    assert suite.get("failures") == "1"
    failure = suite.find("testcase/failure")
    assert failure is not None and "superior not met" in failure.get("message")
    assert "❌ failed" in (tmp / "fail.md").read_text()
    # Another dataset slice is another evaluation: not reused.
    (tmp / "other.yaml").write_text(yaml.safe_dump({**SPEC, "limit": 4}))
    out = cli(env, "eval", "gate", tmp / "other.yaml", "--baseline", "production",
              "--policy", tmp / "policy.yaml")
    assert "reused" not in out.stderr and "evaluation run" in out.stderr


def test_bad_input_is_named(gated):
    tmp, env, _ = gated
    spec = tmp / "gate.yaml"
    out = cli(env, "eval", "gate", spec, "--baseline", "staging", "--policy",
              tmp / "policy.yaml", code=3)
    assert "no label 'staging'" in out.output
    (tmp / "bad.yaml").write_text("production: {metric: exact}\n")
    out = cli(env, "eval", "gate", spec, "--baseline", "production", "--policy",
              tmp / "bad.yaml", code=6)
    assert "bad.yaml" in out.output and "evaluation" in out.output
    (tmp / "other-label.yaml").write_text(yaml.safe_dump({"beta": POLICY["production"]}))
    out = cli(env, "eval", "gate", spec, "--baseline", "production", "--policy",
              tmp / "other-label.yaml", code=6)
    assert "has no rule for label 'production' (labels: beta)" in out.output
    out = cli(env, "eval", "gate", spec, "--baseline", "production", code=3)
    assert "has no release policy for label 'production'" in out.output
    out = cli(env, "eval", "gate", spec, "--baseline", "production", "--require",
              "superior", "--metric", "contains", code=6)
    assert "--metric" in out.output and "must name one of the evaluation's scorers (exact)" \
        in out.output
    out = cli(env, "eval", "gate", spec, "--baseline", "production", "--require",
              "superior", "--metric", "exact", "--policy", tmp / "policy.yaml", code=2)
    assert "not both" in out.output
    (tmp / "two.yaml").write_text(yaml.safe_dump({**SPEC, "variants": [
        {"name": "a", "prompt": f"{NAME}@1"}, {"name": "b", "prompt": f"{NAME}@1"}]}))
    out = cli(env, "eval", "gate", tmp / "two.yaml", "--baseline", "production",
              "--policy", tmp / "policy.yaml", code=6)
    assert "--candidate VARIANT" in out.output


def test_the_registrys_policy_judges_a_new_version_against_the_holder(tmp_path, tiny):
    """No --policy: the release policy the registry holds (arriving by a pull, as policies
    do) judges version 2 against ``production``'s holder, named in the spec this time."""
    from promptrev.model.artifacts import KINDS

    from .test_remotes import Teammate, git

    models = tmp_path / "models.yaml"
    models.write_text(f"tiny:\n  backend: hf\n  path: {tiny.model}\n")
    env = {"PROMPTREV_REGISTRY": str(tmp_path / "reg"), "PROMPTREV_MODELS": str(models),
           "PROMPTREV_AUTHOR": "CI <ci@example.org>"}
    cli(env, "init")
    cli(env, "import", ROOT / "prompts")
    cli(env, "label", "set", NAME, "production", 1)
    bare = tmp_path / "team.git"
    git("init", "-q", "--bare", "--initial-branch=main", bare)
    cli(env, "remote", "add", "origin", bare)
    cli(env, "push")
    mate = Teammate(bare, tmp_path / "mate")
    mate.write(KINDS["prompt"].policy_path(NAME), yaml.safe_dump(POLICY))
    mate.commit("gate production")
    mate.push()
    cli(env, "pull")
    longer = tmp_path / "zero-shot.prompty"
    longer.write_text((ROOT / "prompts" / "sentiment" / "zero-shot.prompty").read_text()
                      + "Answer with one word.\n")
    cli(env, "save", longer, "--name", NAME, "--base", 1)
    (tmp_path / "gate.yaml").write_text(yaml.safe_dump({**SPEC, "variants": [
        {"name": "holder", "prompt": f"{NAME}@production"},
        {"name": "v2", "prompt": f"{NAME}@2"}]}))
    out = cli(env, "eval", "gate", tmp_path / "gate.yaml", "--baseline", "production",
              "--markdown", tmp_path / "gate.md", code=None)
    assert out.exit_code in (0, 1) and "exact v2 − holder" in out.stdout
    assert KINDS["prompt"].policy_path(NAME) in out.stdout  # the rule's source
    md = (tmp_path / "gate.md").read_text()
    assert f"`{NAME}@2` against `production` (`{NAME}@1`)" in md
    assert "| exact | v2 | `sentiment/zero-shot@2` |" in md and "+0 tokens" not in md
