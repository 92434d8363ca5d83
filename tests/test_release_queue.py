"""A release policy's evaluation queued on the server, and ``promptrev eval gate --server``:
a real ``promptrev serve`` on loopback that runs the tiny local model (configured as
``tiny``), the API, the label confirmation page, and the CLI talking to the server.

``sentiment/zero-shot`` has versions 1-3 and a gated ``production`` (non-inferior within
0.02 on exact, six cases) held by 1; nothing has been evaluated when the module starts.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from promptrev import Registry
from promptrev.cli.main import main
from promptrev.evaluation.gate import queue_evidence
from promptrev.evaluation.runs import Evaluator
from promptrev.runner.base import model_specs
from promptrev.runner.execute import Runner

from .conftest import at, label_at
from .live import ADMIN_PASSWORD, LiveServer, start_server
from .test_git_http import Git
from .test_release_gate import EVALUATION, policy_at, rule, write

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

NAME = "sentiment/zero-shot"
LABELS = ("production", "staging", "beta")


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny):
    tmp = tmp_path_factory.mktemp("queue")
    models = tmp / "models.yaml"
    models.write_text(f"tiny:\n  backend: hf\n  path: {tiny.model}\n")
    server = start_server(tmp, workers=2, env={"PROMPTREV_MODELS": str(models)})
    server.cli("user", "add", "vera", "--role", "viewer")
    server.tokens = {"admin": server.token(), "viewer": server.token("vera")}
    server.models = models
    admin = Git(tmp / "admin-git", server, server.tokens["admin"])
    work = admin.clone()
    for n in (2, 3):
        path = work / at(NAME)
        path.write_text(path.read_text().replace("sentiment classifier",
                                                 f"sentiment classifier (v{n})", 1))
        admin.commit(work, f"zero-shot v{n}")
    write(work / label_at(NAME), "".join(f"{label}: 1\n" for label in LABELS))
    write(work / policy_at(NAME), yaml.safe_dump({label: rule() for label in LABELS}))
    admin.commit(work, "labels and release policies")
    admin("push", "-q", "origin", "main", cwd=work)
    yield server
    server.stop()


def api(server: LiveServer, method: str, path: str, role: str = "admin", **kw):
    return httpx.request(method, server.url + "/api/v1" + path, timeout=120,
                         headers={"Authorization": f"Bearer {server.tokens[role]}"}, **kw)


def holder(server: LiveServer, label: str) -> int:
    return api(server, "GET", "/labels", params={"name": NAME}).json()["labels"][label]


def finished(server: LiveServer, run_id: int, timeout: float = 300) -> dict:
    """Poll ``GET /evaluations/run`` until the run is no longer running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = api(server, "GET", "/evaluations/run", params={"id": run_id})
        assert r.status_code == 200, r.text
        if r.json()["status"] != "running":
            return r.json()
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} still running after {timeout} s")


def test_a_refused_move_queues_the_policys_evaluation_then_moves_on_its_evidence(live):
    params = {"name": NAME, "label": "production"}
    r = api(live, "PUT", "/labels", params=params, json={"version": 2, "evaluate": True})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["moved"] is False and body["refused"]["code"] == "evidence_required"
    run = body["evaluation"]
    assert run["started"] is True and run["url"].endswith(f"/eval/{run['run']}")
    assert holder(live, "production") == 1  # nothing moved yet
    done = finished(live, run["run"])
    assert done["status"] == "done", done
    # The run is the policy's evaluation: holder as baseline, target as candidate.
    report = done["report"]
    assert report["dataset"] == "sentiment@1" and report["cases"] == EVALUATION["limit"]
    assert [v["prompt"] for v in report["variants"]] == [f"{NAME}@1", f"{NAME}@2"]
    assert report["baseline"] == report["variants"][0]["name"]
    # Now the move goes through on that run's evidence.
    r = api(live, "PUT", "/labels", params=params, json={"version": 2})
    assert r.status_code == 200, r.text
    assert r.json()["clearance"]["evidence"]["run"] == run["run"]
    assert holder(live, "production") == 2


def test_evaluate_on_a_move_that_needs_no_run_just_moves_or_refuses(live):
    # No policy on this label: evaluate changes nothing.
    r = api(live, "PUT", "/labels", params={"name": NAME, "label": "canary"},
            json={"version": 3, "evaluate": True})
    assert r.status_code == 200 and r.json()["clearance"]["how"] == "ungated", r.text
    # A viewer may not move labels, evaluate or not.
    r = api(live, "PUT", "/labels", "viewer", params={"name": NAME, "label": "staging"},
            json={"version": 3, "evaluate": True})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
    r = api(live, "PUT", "/labels", params={"name": NAME, "label": "staging"},
            json={"version": 3, "evaluate": "yes"})
    assert r.status_code == 400 and "'evaluate'" in r.json()["error"]["message"]
    r = api(live, "GET", "/evaluations/run", params={"id": 999999})
    assert r.status_code == 404 and "no evaluation run 999999" in r.json()["error"]["message"]


def test_asking_twice_gives_the_run_already_going(live):
    """Two requests for the same evidence share one run (started, not yet executed)."""
    reg = Registry.open(live.registry)
    try:
        runner = Runner(reg, env={}, models=model_specs(
            yaml.safe_load(live.models.read_text()), {}))
        evaluator = Evaluator(reg, runner)
        first, started = queue_evidence(evaluator, None, NAME, "beta", 3, author="A <a@b>")
        again, started_again = queue_evidence(evaluator, None, NAME, "beta", 3,
                                              author="B <b@b>")
        assert started and not started_again and again["id"] == first["id"]
        assert [v["prompt"] for v in first["spec"]["variants"]] == [f"{NAME}@1", f"{NAME}@3"]
        evaluator.store.set_status(first["id"], "failed", error="stopped by the test")
        third, started = queue_evidence(evaluator, None, NAME, "beta", 3, author="A <a@b>")
        assert started and third["id"] != first["id"]  # a failed run is not waited on
        evaluator.store.set_status(third["id"], "failed", error="stopped by the test")
    finally:
        reg.close()


def browser(server: LiveServer) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=120)
    page = client.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = client.post("/login", data={"name": "admin", "password": ADMIN_PASSWORD,
                                    "csrf_token": csrf})
    assert r.status_code == 302
    return client


def test_the_confirmation_page_starts_the_evaluation(live):
    client = browser(live)
    page = client.get("/label", params={"name": NAME, "label": "staging", "to": 3})
    assert 'id="gate-refused"' in page.text and 'id="gate-evaluate"' in page.text
    form = re.search(r'<form method="post" action="([^"]+)" id="gate-evaluate">(.*?)</form>',
                     page.text, re.S)
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form.group(2)))
    assert fields["to"] == "3" and fields["label"] == "staging"
    r = client.post(form.group(1), data=fields)
    assert r.status_code == 302, r.text
    run_id = int(re.search(r"/eval/(\d+)$", r.headers["location"]).group(1))
    assert "evaluation run" in client.get(r.headers["location"]).text
    assert finished(live, run_id)["status"] == "done"
    page = client.get("/label", params={"name": NAME, "label": "staging", "to": 3})
    assert 'id="gate-cleared"' in page.text and f"#{run_id}" in page.text
    r = client.post("/eval/release", data={**fields, "to": "x"})
    assert r.status_code == 400 and "must be an integer, not &#39;x&#39;" in r.text


# ---- promptrev eval gate --server ----------------------------------------------------------
def gate(live: LiveServer, tmp: Path, *args, code: int):
    spec = {"name": "gate", "dataset": "sentiment@1", "model": "tiny",
            "params": {"max_tokens": 3}, "limit": 6, "batch_size": 6, "scorers": ["exact"],
            "variants": [{"name": "candidate", "prompt": f"{NAME}@1"}]}
    (tmp / "gate.yaml").write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(
        main, ["eval", "gate", str(tmp / "gate.yaml"), "--baseline", "canary",
               "--server", live.url, *map(str, args)],
        env={"PROMPTREV_TOKEN": live.tokens["admin"], "PROMPTREV_REGISTRY": str(tmp / "none")},
        catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def test_eval_gate_through_the_server_passes_then_fails_on_the_same_run(live, tmp_path):
    # canary holds version 3 (moved without a policy above); the candidate is 3 itself.
    api(live, "PUT", "/labels", params={"name": NAME, "label": "canary"}, json={"version": 1})
    first = gate(live, tmp_path, "--require", "non-inferior", "--metric", "exact",
                 "--margin", "0.02", "--junit", tmp_path / "pass.xml",
                 "--markdown", tmp_path / "pass.md", code=0)
    assert "started on the server" in first.stderr and "passed" in first.stdout
    suite = ET.parse(tmp_path / "pass.xml").getroot()
    assert suite.get("tests") == "1" and suite.get("failures") == "0"
    run_id = int(re.search(r"run (\d+)", suite.find("testcase/system-out").text).group(1))
    md = (tmp_path / "pass.md").read_text()
    assert "✅ passed" in md and f"/eval/{run_id}" in md and "(reused)" not in md
    failed = gate(live, tmp_path, "--require", "superior", "--metric", "exact",
                  "--junit", tmp_path / "fail.xml", "--markdown", tmp_path / "fail.md",
                  code=1)
    assert "FAILED" in failed.stdout
    suite = ET.parse(tmp_path / "fail.xml").getroot()
    assert suite.get("failures") == "1"
    assert "superior not met" in suite.find("testcase/failure").get("message")
    assert f"run {run_id} (reused)" in (tmp_path / "fail.md").read_text()
    # Bad input is named: a missing label (exit 3), no rule for it (exit 3), no server.
    result = CliRunner().invoke(main, [
        "eval", "gate", str(tmp_path / "gate.yaml"), "--baseline", "nosuch",
        "--server", live.url, "--require", "superior", "--metric", "exact"],
        env={"PROMPTREV_TOKEN": live.tokens["admin"]})
    assert result.exit_code == 3 and "nosuch" in result.output, result.output
    result = CliRunner().invoke(main, [
        "eval", "gate", str(tmp_path / "gate.yaml"), "--baseline", "canary",
        "--server", "http://127.0.0.1:9", "--require", "superior", "--metric", "exact"])
    assert result.exit_code == 1 and "cannot reach" in result.output, result.output
