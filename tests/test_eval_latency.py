"""Latency is evidence only as often as it was measured.

A local model answers a batch of cases in one call, so every case of the batch carries the
batch's wall time. Twenty cases in two batches are two measurements per variant, and a
report that tests them as twenty pairs finds "significant" latency differences between
identical variants (issue 18, part 1). Results now say which cases share a measurement,
and reports compare latency batch by batch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from promptrev.evaluation.reporting import build_report, shared_latency_units

from .test_eval_runs import cli_env  # noqa: F401 - a fixture

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ALPHA = 0.05
LATENCY = {"latency": {"binary": False, "higher_is_better": False, "batch_shared": True}}


def _identical_variants(rng: np.random.Generator, cases: int, batch: int) -> list[dict]:
    """Results of two identical variants run in batches: one wall time per batch.

    Batches differ (a machine is busier, a batch's longest answer sets its length); the
    variants do not, so any difference is chance.
    """
    rows = []
    for variant in ("a", "b"):
        for start in range(0, cases, batch):
            wall = float(rng.lognormal(0.0, 0.3))
            for case in range(start, min(cases, start + batch)):
                rows.append({"variant": variant, "case_index": case, "latency_s": wall,
                             "scores": {"latency": wall}, "latency_batch": f"{variant}{start}",
                             "prompt_tokens": 5, "completion_tokens": 3, "cost": None,
                             "error": None})
    return rows


def _report(rows: list[dict], cases: int, meta=LATENCY) -> dict:
    run = {"id": 1, "name": "a/a", "cases": cases,
           "spec": {"dataset": "d@1", "baseline": "a", "alpha": ALPHA,
                    "variants": [{"name": "a"}, {"name": "b"}]}}
    return build_report(None, run, rows, meta)


def test_identical_variants_in_batches_are_significant_no_more_often_than_alpha():
    rng = np.random.default_rng(18)
    shapes = [(20, 10), (64, 4), (48, 8), (40, 2)]  # cases, batch size
    runs = 200
    batched = per_case = 0
    for i in range(runs):
        cases, batch = shapes[i % len(shapes)]
        rows = _identical_variants(rng, cases, batch)
        [latency] = _report(rows, cases)["metrics"]
        assert latency["measured"]["units"] == -(-cases // batch)
        batched += latency["comparisons"][0]["significant"]
        # What reports did before: each case taken as its own measurement.
        unaware = {"latency": {**LATENCY["latency"], "batch_shared": False}}
        [naive] = _report(rows, cases, unaware)["metrics"]
        per_case += naive["comparisons"][0]["significant"]
    rate = batched / runs
    bound = ALPHA + 3 * (ALPHA * (1 - ALPHA) / runs) ** 0.5
    print(f"\nA/A in batches, {runs} runs: significant {rate:.1%} batch by batch, "
          f"{per_case / runs:.1%} case by case (alpha {ALPHA:.0%})")
    assert rate <= bound, (rate, bound)
    assert per_case / runs > 0.25  # the defect this guards against, in the same data


def test_two_batches_per_variant_can_never_be_called_significant():
    rng = np.random.default_rng(7)
    rows = _identical_variants(rng, 20, 10)
    for row in rows:  # variant b's batches took three times as long
        if row["variant"] == "b":
            row["latency_s"] = row["scores"]["latency"] = row["latency_s"] * 3
    [latency] = _report(rows, 20)["metrics"]
    assert latency["measured"] == {"unit": "batch", "units": 2, "cases": 20,
                                   "note": latency["measured"]["note"]}
    assert "2 measurements per variant, not 20" in latency["verdict"][0]
    assert latency["variants"]["a"]["n"] == 2
    assert not latency["comparisons"][0]["significant"]  # two pairs prove nothing


def test_batches_that_overlap_across_variants_join_into_one_measurement():
    def row(case, batch):
        return {"variant": None, "case_index": case, "latency_batch": batch}
    rows = {"a": [row(0, "x"), row(1, "x"), row(2, "y"), row(3, "y"), row(4, None)],
            "b": [row(0, "p"), row(1, "q"), row(2, "q"), row(3, "r"), row(4, None)]}
    # a's batches {0,1} and {2,3} are bridged by b's batch {1,2}: one measurement
    assert shared_latency_units(rows, ["a", "b"], 5) == [[0, 1, 2, 3], [4]]
    alone = {v: [{**r, "latency_batch": None} for r in rs] for v, rs in rows.items()}
    assert shared_latency_units(alone, ["a", "b"], 5) is None


def _spec(tmp_path, batch_size: int) -> str:
    spec = {"name": "identical", "dataset": "sentiment@1", "model": "tiny", "limit": 16,
            "params": {"max_tokens": 3}, "batch_size": batch_size, "baseline": "one",
            "variants": [{"name": "one", "prompt": "sentiment/zero-shot@1"},
                         {"name": "two", "prompt": "sentiment/zero-shot@1"}],
            "scorers": ["exact", "latency"]}
    path = tmp_path / f"latency-{batch_size}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_a_batched_run_on_the_local_model_reports_latency_per_batch(cli_env, tmp_path):  # noqa: F811
    run, _ = cli_env
    report = json.loads(run("eval", "run", _spec(tmp_path, 8), "--json"))
    metrics = {m["metric"]: m for m in report["metrics"]}
    assert "measured" not in metrics["exact"]  # each answer is scored on its own
    assert metrics["latency"]["measured"]["units"] == 2  # 16 cases in batches of 8
    assert metrics["latency"]["variants"]["one"]["n"] == 2
    assert any("2 measurements per variant, not 16" in line for line in report["verdict"])
    assert report["operations"]["latency_s"]["variants"]["one"]["n"] == 2
    rows = json.loads(run("eval", "show", str(report["run"]), "--json", "--cases"))["results"]
    for variant in ("one", "two"):
        keys = [r["latency_batch"] for r in rows if r["variant"] == variant]
        assert len(keys) == 16 and len(set(keys)) == 2 and None not in keys
        for key in set(keys):  # a batch's cases carry its one wall time
            assert len({r["latency_s"] for r in rows if r["latency_batch"] == key}) == 1
    text = run("eval", "show", str(report["run"]))
    assert "2 measurements per variant" in text

    alone = json.loads(run("eval", "run", _spec(tmp_path, 1), "--json"))
    latency = {m["metric"]: m for m in alone["metrics"]}["latency"]
    assert "measured" not in latency and latency["variants"]["one"]["n"] == 16
    rows = json.loads(run("eval", "show", str(alone["run"]), "--json", "--cases"))["results"]
    assert {r["latency_batch"] for r in rows} == {None}
