"""Evaluation runs end to end: the starter sentiment dataset on the tiny local model,
zero-shot vs few-shot vs an adapter fine-tuned here, through the CLI; kill and resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml
from click.testing import CliRunner

from promptrev.cli.main import main

from .live import ROOT

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def cli_env(tmp_path, monkeypatch, tiny):
    models = tmp_path / "models.yaml"
    models.write_text(f"tiny:\n  backend: hf\n  path: {tiny.model}\n")
    env = {"PROMPTREV_REGISTRY": str(tmp_path / "reg"), "PROMPTREV_MODELS": str(models),
           "PROMPTREV_AUTHOR": "Tester <t@example.org>"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    run("init")
    run("import", ROOT / "prompts")
    return run, env


def _spec(tmp_path, **extra) -> str:
    spec = {"name": "sentiment: zero-shot vs few-shot vs lora", "dataset": "sentiment@1",
            "model": "tiny", "params": {"max_tokens": 3},
            "variants": [{"name": "zero-shot", "prompt": "sentiment/zero-shot@1"},
                         {"name": "few-shot", "prompt": "sentiment/few-shot"},
                         {"name": "lora", "prompt": "sentiment/zero-shot",
                          "adapter": "sentiment-lora@1"}],
            "scorers": ["exact", {"contains": {"ignore_case": True}}],
            "baseline": "zero-shot", "batch_size": 8,
            "prices": {"tiny": {"input_per_1k": 0.5, "output_per_1k": 1.5}},
            "training_prices": {"cpu_hour": 3600.0}, **extra}
    path = tmp_path / "ab.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_zero_shot_few_shot_and_adapter_through_the_cli(cli_env, tmp_path, tiny):
    run, _ = cli_env
    out = run("finetune", "--dataset", "sentiment@1", "--model", "tiny", "--name",
              "sentiment-lora", "--prompt", "sentiment/zero-shot@1", "--max-steps", "4",
              "--batch-size", "8", "--rank", "4")
    assert "sentiment-lora@1" in out
    report = json.loads(run("eval", "run", _spec(tmp_path), "--json"))
    assert report["cases"] == 60 and report["scored"] == {"zero-shot": 60, "few-shot": 60,
                                                          "lora": 60}
    assert [v["prompt"] for v in report["variants"]] == [
        "sentiment/zero-shot@1", "sentiment/few-shot@1", "sentiment/zero-shot@1"]
    assert report["variants"][2]["adapter"] == "sentiment-lora@1"
    metrics = {m["metric"]: m for m in report["metrics"]}
    assert set(metrics) == {"exact", "contains"}
    exact = metrics["exact"]
    assert set(exact["variants"]) == {"zero-shot", "few-shot", "lora"}
    for iv in exact["variants"].values():
        assert iv["n"] == 60 and iv["low"] <= iv["mean"] <= iv["high"]
    assert len(exact["comparisons"]) == 2  # both against the baseline
    assert "Holm" in exact["correction"] or "holm" in exact["correction"].lower()
    assert report["verdict"] and all(isinstance(line, str) for line in report["verdict"])
    costs = report["costs"]
    few, zero = costs["per_1k"]["few-shot"], costs["per_1k"]["zero-shot"]
    assert few > zero > 0  # the few-shot prompt is longer, so every call costs more
    assert costs["training"]["lora"] > 0
    assert {(b["adapter_variant"], b["prompt_variant"]) for b in costs["break_even"]} == {
        ("lora", "zero-shot"), ("lora", "few-shot")}
    listed = run("eval", "list")
    assert "sentiment@1" in listed and "done" in listed
    shown = json.loads(run("eval", "show", str(report["run"]), "--json", "--cases"))
    rows = shown["results"]
    assert len(rows) == 180 and {r["model"] for r in rows} == {str(tiny.model)}
    assert {r["backend"] for r in rows} == {"hf"}
    assert all(r["prompt_tokens"] > 0 for r in rows)
    text = run("eval", "show", str(report["run"]))
    assert "verdict" in text and "per 1k requests" in text


def _count(db: str, run_id: int) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM eval_result WHERE run_id = ?",
                            (run_id,)).fetchone()[0]


def test_kill_and_resume_gives_the_same_results_and_scores_no_case_twice(cli_env, tmp_path):
    run, env = cli_env
    spec = _spec(tmp_path, variants=[{"name": "zero-shot", "prompt": "sentiment/zero-shot@1"},
                                     {"name": "few-shot", "prompt": "sentiment/few-shot@1"}],
                 batch_size=4)
    full = json.loads(run("eval", "run", spec, "--json"))
    db = os.path.join(env["PROMPTREV_REGISTRY"], "promptrev-index.sqlite")
    interrupted_id = full["run"] + 1
    process = subprocess.Popen([sys.executable, "-m", "promptrev.cli", "eval", "run", spec],
                               cwd=ROOT, env={**os.environ, **env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if _count(db, interrupted_id) >= 12:
                break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = _count(db, interrupted_id)
    assert 0 < before < 120, "the run was not killed midway"
    with sqlite3.connect(db) as conn:
        early = conn.execute("SELECT id, variant, case_id, created FROM eval_result "
                             "WHERE run_id = ?", (interrupted_id,)).fetchall()
        status = conn.execute("SELECT status FROM eval_run WHERE id = ?",
                              (interrupted_id,)).fetchone()[0]
    assert status == "running"
    resumed = json.loads(run("eval", "resume", str(interrupted_id), "--json"))
    assert _count(db, interrupted_id) == 120
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, variant, case_id, created FROM eval_result "
                            "WHERE run_id = ?", (interrupted_id,)).fetchall()
        early_ids = {r[0] for r in early}
        still = [r for r in rows if r[0] in early_ids]
        pairs = conn.execute("SELECT count(DISTINCT variant || '/' || case_id) FROM "
                             "eval_result WHERE run_id = ?", (interrupted_id,)).fetchone()[0]
    assert sorted(still) == sorted(early)  # what was scored before the kill was kept as is
    assert pairs == 120
    for key in ("scored", "metrics", "verdict"):
        assert resumed[key] == full[key]
    a = json.loads(run("eval", "show", str(full["run"]), "--json", "--cases"))["results"]
    b = json.loads(run("eval", "show", str(interrupted_id), "--json", "--cases"))["results"]
    assert [(r["variant"], r["case_id"], r["output"], r["scores"]) for r in a] == [
        (r["variant"], r["case_id"], r["output"], r["scores"]) for r in b]


def test_bad_specs_are_clear_errors(cli_env, tmp_path):
    from promptrev.errors import ValidationFailed
    from promptrev.evaluation.runs import load_spec

    with pytest.raises(ValidationFailed, match="at least two variants"):
        load_spec("dataset: d\nvariants: [{prompt: a}]\nscorers: [exact]\n")
    with pytest.raises(ValidationFailed, match="unknown key"):
        load_spec("dataset: d\nvariantz: []\n")
    with pytest.raises(ValidationFailed, match="baseline 'x'"):
        load_spec("dataset: d\nvariants: [{prompt: a}, {prompt: b}]\nscorers: [exact]\n"
                  "baseline: x\n")
    with pytest.raises(ValidationFailed, match="named 'a'"):
        load_spec("dataset: d\nvariants: [{prompt: p, name: a}, {prompt: q, name: a}]\n"
                  "scorers: [exact]\n")
    run, _ = cli_env
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: sentiment@9\nvariants: [{prompt: summarize}, {prompt: summarize}]"
                   "\nscorers: [exact]\n")
    result = CliRunner().invoke(main, ["eval", "run", str(bad)])
    assert result.exit_code == 3 and "no version 9" in result.output
