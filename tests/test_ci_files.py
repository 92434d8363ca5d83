"""The CI files in ``docs/ci/`` are real: each parses as YAML, and the ``promptrev`` steps
they contain run, as written, in a job-like workspace against a team remote (a bare Git
repository with the label, its release policy and the dataset), with ``ci/models.yaml``
pointing the spec's model at the tiny local model. The gate's exit code and its JUnit and
Markdown reports are checked; a second GitHub run restores the cached registry and reuses
the finished run; under a stricter policy the GitLab job's gate fails with exit 1.

The candidate the job saves is the holder's own text, so the verdicts are certain whatever
the random tiny model answers (identical variants: non-inferior, never superior).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from promptrev.cli.main import main
from promptrev.model.artifacts import KINDS

from .live import ROOT
from .test_remotes import Teammate, git

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

NAME = "sentiment/zero-shot"
DOCS = ROOT / "docs" / "ci"


def policy(require: str) -> str:
    rule = {"evaluation": {"dataset": "sentiment@1", "scorers": ["exact"]},
            "metric": "exact", "require": require, "alpha": 0.05}
    if require == "non-inferior":
        rule["margin"] = 0.02
    return yaml.safe_dump({"production": rule})


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> tuple[Path, Teammate]:
    """The team's remote: the starter library, production on v1, a release policy."""
    tmp = tmp_path_factory.mktemp("ci-team")
    bare = tmp / "team.git"
    git("init", "-q", "--bare", "--initial-branch=main", bare)
    env = {"PROMPTREV_REGISTRY": str(tmp / "reg"), "PROMPTREV_AUTHOR": "Op <op@example.org>"}
    for args in (["init"], ["import", str(ROOT / "prompts")],
                 ["label", "set", NAME, "production", "1"],
                 ["remote", "add", "origin", str(bare)], ["push"]):
        result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    mate = Teammate(bare, tmp / "mate")
    mate.write(KINDS["prompt"].policy_path(NAME), policy("non-inferior"))
    mate.commit("gate production")
    mate.push()
    return bare, mate


def workspace(tmp: Path, tiny) -> Path:
    """A checkout of the application: its prompt (unchanged), the gate spec, the models."""
    work = tmp / "workspace"
    (work / "prompts" / "sentiment").mkdir(parents=True)
    shutil.copy(ROOT / "prompts" / "sentiment" / "zero-shot.prompty",
                work / "prompts" / "sentiment" / "zero-shot.prompty")
    (work / "ci").mkdir()
    spec = yaml.safe_load((DOCS / "gate.yaml").read_text())
    spec.update(limit=12, batch_size=12)  # the shipped spec, on fewer cases
    (work / "ci" / "gate.yaml").write_text(yaml.safe_dump(spec))
    models = yaml.safe_load((DOCS / "models.yaml").read_text())
    assert set(models) == {spec["model"]}  # the shipped models file names the spec's model
    (work / "ci" / "models.yaml").write_text(
        yaml.safe_dump({spec["model"]: {"backend": "hf", "path": str(tiny.model)}}))
    return work


def github_job(values: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The gate job's env and the scripts of its steps that run promptrev."""
    doc = yaml.safe_load((DOCS / "github-actions.yml").read_text())
    job = doc["jobs"]["gate"]
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 (PyYAML) reads the key `on` as true
    assert triggers["pull_request"]["paths"] == ["prompts/**", "ci/gate.yaml"]

    def expand(text: str) -> str:  # ${{ github.workspace }}, ${{ secrets.X }}
        return re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", lambda m: values[m.group(1)], text)

    env = {k: expand(str(v)) for k, v in job["env"].items()}
    return env, [expand(s["run"]) for s in job["steps"] if _runs_promptrev(s.get("run"))]


def gitlab_job(values: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    doc = yaml.safe_load((DOCS / "gitlab-ci.yml").read_text())
    job = doc["prompt-gate"]
    assert job["artifacts"]["reports"]["junit"] == "gate.xml"
    env = {k: re.sub(r"\$(\w+)", lambda m: values[m.group(1)], str(v))
           for k, v in job["variables"].items()}
    return env, [s for s in job["script"] if _runs_promptrev(s)]


def _runs_promptrev(script: str | None) -> bool:
    return bool(script) and not script.startswith("pip install") and bool(
        re.search(r"^\s*promptrev ", script, re.M))


def run_job(work: Path, env: dict[str, str], scripts: list[str]
            ) -> list[subprocess.CompletedProcess]:
    """Each script in bash -e, with ``promptrev`` the CLI of this checkout."""
    prelude = f'promptrev() {{ "{sys.executable}" -m promptrev.cli "$@"; }}\n'
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT), "PROMPTREV_URL": env.get(
        "PROMPTREV_URL", "")}
    full.pop("PROMPTREV_SERVER", None)
    return [subprocess.run(["bash", "-e", "-c", prelude + script], cwd=work, env=full,
                           capture_output=True, text=True, timeout=600) for script in scripts]


def test_the_github_actions_job_gates_and_reuses_its_run(team, tmp_path, tiny):
    bare, _ = team
    work = workspace(tmp_path, tiny)
    env, scripts = github_job({"github.workspace": str(work),
                               "secrets.PROMPTREV_GIT_URL": str(bare),
                               "secrets.OPENAI_API_KEY": "unused"})
    assert env["PROMPTREV_REGISTRY"] == f"{work}/.registry"
    assert [s.split()[0] for s in scripts] == ["if", "promptrev", "promptrev"]
    assert scripts[-1].startswith("promptrev eval gate ci/gate.yaml --baseline production")
    done = run_job(work, env, scripts)
    for step in done:
        assert step.returncode == 0, step.stdout + step.stderr
    gate = done[-1]
    assert "gate (" in gate.stdout and "passed" in gate.stdout
    suite = ET.parse(work / "gate.xml").getroot()
    assert suite.get("tests") == "1" and suite.get("failures") == "0"
    md = (work / "gate.md").read_text()
    assert "✅ passed" in md and "https://prompts.example.org/eval/" in md
    # The next pipeline: the cache restored .registry, so init is skipped and the finished
    # run of the same versions is reused.
    again = run_job(work, env, scripts)
    assert all(step.returncode == 0 for step in again), again[-1].stderr
    assert "reused run" in again[-1].stderr
    assert "(reused)" in (work / "gate.md").read_text()


def test_the_gitlab_job_fails_its_gate_under_a_stricter_policy(team, tmp_path, tiny):
    bare, mate = team
    mate.write(KINDS["prompt"].policy_path(NAME), policy("superior"))
    mate.commit("production must improve")
    mate.push()
    work = workspace(tmp_path, tiny)
    env, scripts = gitlab_job({"CI_PROJECT_DIR": str(work)})
    env["PROMPTREV_GIT_URL"] = str(bare)  # a masked CI/CD variable in the real job
    assert [s.split()[0] for s in scripts] == ["if", "promptrev", "promptrev", "promptrev"]
    done = run_job(work, env, scripts)
    for step in done[:-1]:
        assert step.returncode == 0, step.stdout + step.stderr
    assert done[-1].returncode == 1, done[-1].stdout + done[-1].stderr
    assert "FAILED" in done[-1].stdout
    suite = ET.parse(work / "gate.xml").getroot()
    assert suite.get("failures") == "1"
    assert "superior not met" in suite.find("testcase/failure").get("message")
    assert "❌ failed" in (work / "gate.md").read_text()
