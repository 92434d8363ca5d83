"""Always-valid A/B statistics: the mSPRT's properties, its error rate under peeking, the
sample-size planner, and the live page and API of a real server on loopback."""

from __future__ import annotations

import math
import re

import httpx
import numpy as np
import pytest
from scipy import integrate, stats

from promptrev.errors import InvalidRequest
from promptrev.evaluation import sequential
from promptrev.evaluation.planning import plan_from, sample_size
from promptrev.evaluation.sequential import (
    MIN_PER_ARM,
    always_valid_test,
    fixed_horizon_p,
    log_likelihood_ratio,
    mixture_rho2,
    radius,
    sequence,
)

from .conftest import PROMPT
from .live import ADMIN_PASSWORD, start_server


# ---- the statistic ---------------------------------------------------------------------
def test_likelihood_ratio_is_the_normal_mixture_integral():
    # Λ = ∫ N(θ̂; θ, V) / N(θ̂; 0, V) · N(θ; 0, τ²) dθ, integrated numerically
    for diff, v, tau2 in [(0.0, 1.0, 1.0), (0.3, 0.01, 0.02), (-1.2, 0.5, 0.1)]:
        numeric, _ = integrate.quad(
            lambda t, d=diff, v=v, s=tau2: stats.norm.pdf(d, t, math.sqrt(v))
            / stats.norm.pdf(d, 0, math.sqrt(v)) * stats.norm.pdf(t, 0, math.sqrt(s)),
            -50, 50, points=[0, diff])
        closed = log_likelihood_ratio(np.array(diff / math.sqrt(v)), np.array(tau2 / v))
        assert math.log(numeric) == pytest.approx(float(closed), rel=1e-6, abs=1e-9)
    assert float(log_likelihood_ratio(np.array(0.0), np.array(1.0))) == \
        pytest.approx(-0.5 * math.log(2))


def test_the_interval_is_where_the_test_rejects():
    # at the edge of the confidence sequence, Λ(θ̂ − edge) is exactly 1/α
    v, r, alpha = 0.04, 3.0, 0.05
    edge = float(radius(np.array(v), np.array(r), alpha))
    llr = log_likelihood_ratio(np.array(edge / math.sqrt(v)), np.array(r))
    assert float(llr) == pytest.approx(math.log(1 / alpha))
    # Howard et al.'s tuning rule, by hand: (−2 ln .05 + ln(1 − 2 ln .05)) / n
    assert mixture_rho2(0.05, 1000) == pytest.approx(
        (5.991464547107979 + math.log(6.991464547107979)) / 1000)


def test_always_valid_p_value_never_goes_up_and_the_interval_only_narrows():
    rng = np.random.default_rng(7)
    for binary in (True, False):
        in_b = rng.random((50, 800)) < 0.5
        values = (rng.random((50, 800)) < 0.3 + 0.1 * in_b).astype(float) if binary \
            else rng.normal(1.0 + 0.2 * in_b, 1.0)
        run = sequence(in_b, values, binary=binary)
        assert np.all(np.diff(run["p_value"], axis=1) <= 0)
        low, high = run["low"], run["high"]  # ±inf before the start: compared, not subtracted
        assert np.all(low[:, 1:] >= low[:, :-1]) and np.all(high[:, 1:] <= high[:, :-1])
        assert np.all(run["low"] <= run["high"])
        # before each arm has MIN_PER_ARM outcomes: no evidence, no interval
        early = (run["n_a"] < MIN_PER_ARM) | (run["n_b"] < MIN_PER_ARM)
        assert np.all(run["p_value"][early] == 1) and np.all(np.isinf(run["low"][early]))
        assert (run["p_value"][:, -1] < 0.05).mean() > 0.5  # and there is an effect


def test_always_valid_test_agrees_with_the_formula_by_hand():
    rng = np.random.default_rng(3)
    order = list(rng.random(400) < 0.5)
    values = [float(rng.normal(0.5 if b else 0.0, 1.0)) for b in order]
    test = always_valid_test(order, values, binary=False, alpha=0.05, tuned_per_arm=200)
    a = np.array([x for x, b in zip(values, order, strict=True) if not b])
    b = np.array([x for x, b_ in zip(values, order, strict=True) if b_])
    # the larger of the unpooled variance and the pooled one (both arms together)
    v = max(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b),
            np.concatenate([a, b]).var(ddof=1) * (1 / len(a) + 1 / len(b)))
    r = mixture_rho2(0.05, 200) * 2 / (1 / len(a) + 1 / len(b))
    diff = b.mean() - a.mean()
    now = math.exp(-float(log_likelihood_ratio(np.array(diff / math.sqrt(v)), np.array(r))))
    assert test["n"] == [len(a), len(b)] and test["diff"] == pytest.approx(diff)
    assert test["p_value"] <= min(now, 1.0) + 1e-12  # the running minimum includes now
    assert test["low"] <= diff <= test["high"]
    assert test["high"] - test["low"] <= 2 * float(radius(np.array(v), np.array(r), 0.05))
    empty = always_valid_test([], [], binary=True)
    assert empty["p_value"] == 1.0 and empty["low"] is None and not empty["started"]


# ---- error rates under peeking ---------------------------------------------------------
def test_peeking_after_every_outcome_keeps_the_sequential_false_positive_rate():
    """A/A experiments watched after every outcome (fixed seed, so never flaky): the
    sequential test stays within alpha + 3 standard errors, while the fixed-horizon test
    looked at just as often is far above alpha (so this test can fail)."""
    rng = np.random.default_rng(20261203)
    experiments, outcomes, alpha = 400, 1000, 0.05
    for binary in (True, False):
        in_b = rng.random((experiments, outcomes)) < 0.5
        values = (rng.random((experiments, outcomes)) < 0.2).astype(float) if binary \
            else rng.exponential(1.0, (experiments, outcomes))
        run = sequence(in_b, values, binary=binary, alpha=alpha, tuned_per_arm=500)
        sequential_rate = float((run["p_value"][:, -1] < alpha).mean())
        peeked_rate = float((fixed_horizon_p(in_b, values, binary=binary).min(axis=1)
                             < alpha).mean())
        se = math.sqrt(alpha * (1 - alpha) / experiments)
        assert sequential_rate <= alpha + 3 * se, (binary, sequential_rate)
        assert peeked_rate >= 3 * alpha, (binary, peeked_rate)
        # the interval covers the true difference (0) all along, as often as promised
        missed = float(((run["low"] > 0) | (run["high"] < 0)).any(axis=1).mean())
        assert missed <= alpha + 3 * se


def test_a_real_effect_is_found_and_early():
    rng = np.random.default_rng(11)
    in_b = rng.random((200, 2000)) < 0.5
    values = (rng.random((200, 2000)) < np.where(in_b, 0.30, 0.20)).astype(float)
    run = sequence(in_b, values, binary=True, tuned_per_arm=600)
    rejected = run["p_value"] < 0.05
    assert rejected[:, -1].mean() > 0.8
    first = rejected.argmax(axis=1)[rejected[:, -1]] + 1
    assert np.median(first) < 2000


# ---- the planner -----------------------------------------------------------------------
def test_sample_size_known_values():
    # 10% → 12%, alpha 0.05, power 0.8: the classic 3,841 per arm (pooled normal approx.)
    assert sample_size(mde=0.02, baseline=0.10)["per_arm"] == 3841
    # d = 0.5 standard deviations: 63 per arm with the normal approximation
    assert sample_size(mde=0.5, sd=1.0)["per_arm"] == 63
    assert sample_size(mde=5, sd=10)["per_arm"] == 63  # scale free
    # three arms: alpha/3 for three pairs, so more per arm
    assert sample_size(mde=0.5, sd=1.0, arms=3)["per_arm"] > 63
    assert sample_size(mde=0.5, sd=1.0, power=0.9)["per_arm"] == 85
    assert plan_from({"per_arm": 500})["per_arm"] == 500
    assert plan_from({"mde": 0.02, "baseline": 0.1})["per_arm"] == 3841


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mde": 0.02, "baseline": 0.1, "alpha": 0}, "'alpha' must be"),
    ({"mde": 0.02, "baseline": 0.1, "alpha": 1.5}, "'alpha' must be"),
    ({"mde": 0.02, "baseline": 0.1, "power": 1}, "'power' must be"),
    ({"mde": 0.02, "baseline": 1.2}, "between 0 and 1"),
    ({"mde": 0.5, "baseline": 0.6}, "between 0 and 1"),
    ({"mde": 0.0, "sd": 1}, "must not be 0"),
    ({"mde": 1, "sd": -2}, "'sd' must be"),
    ({"mde": 1}, "either a baseline"),
    ({"mde": 1, "sd": 1, "baseline": 0.5}, "either a baseline"),
    ({"mde": 1e-9, "sd": 1}, "more than"),
    ({"mde": float("nan"), "sd": 1}, "finite"),
    ({"mde": 1e-300, "sd": 1e300}, "more than"), ({"mde": 1e-200, "baseline": 0.5}, "more than"),
    ({"mde": 1, "sd": 1, "arms": 1}, "'arms' must be"),
])
def test_sample_size_refuses_bad_input_clearly(kwargs, message):
    with pytest.raises(InvalidRequest, match=message):
        sample_size(**kwargs)


@pytest.mark.parametrize(("spec", "message"), [
    ({"per_arm": -5}, "whole number of outcomes"), ({"per_arm": 0}, "whole number"),
    ({"per_arm": True}, "whole number"), ({"per_arm": 10, "mde": 1}, "not both"),
    ({"per_arm": 10, "alpha": 2}, "'alpha'"), ({"sd": 1}, "needs 'per_arm'"),
    ({"size": 1}, "unknown plan field"), ({}, "a plan is"), ([], "a plan is"),
])
def test_plans_refuse_bad_input_clearly(spec, message):
    with pytest.raises(InvalidRequest, match=message):
        plan_from(spec)


# ---- through a real server -------------------------------------------------------------
def test_live_page_and_api_show_sequential_figures_and_hide_fixed_horizon_until_planned(
        tmp_path):
    server = start_server(tmp_path, workers=2)
    try:
        headers = {"Authorization": f"Bearer {server.token()}"}
        with httpx.Client(base_url=server.url + "/api/v1", headers=headers,
                          timeout=60) as api:
            base = api.get("/artifact", params={"ref": "summarize"}).json()["version"]
            api.put("/artifact", params={"name": "summarize"}, headers={"If-Match": str(base)},
                    json={"text": PROMPT, "message": "v2"}).raise_for_status()
            api.put("/labels", params={"name": "summarize", "label": "staging"},
                    json={"version": base}).raise_for_status()
            arms = {str(base): 50, str(base + 1): 50}
            # bad plans are refused with a clear 400, and the split is not written
            for bad, says in [({"per_arm": -3}, "whole number"),
                              ({"mde": 0.05, "baseline": 0.2, "alpha": 1.5}, "'alpha'")]:
                r = api.put("/splits", params={"name": "summarize", "label": "staging"},
                            json={"arms": arms, "plan": bad})
                assert r.status_code == 400 and says in r.json()["error"]["message"]
            assert api.get("/splits", params={"name": "summarize"}).json()["splits"] == {}
            planner = api.get("/experiments/plan", params={"mde": "0.02", "baseline": "0.1"})
            assert planner.status_code == 200 and planner.json()["per_arm"] == 3841
            assert api.get("/experiments/plan", params={"mde": "0.02", "baseline": "0.1",
                                                        "power": "2"}).status_code == 400
            assert api.get("/experiments/plan", params={"mde": "x"}).status_code == 400
            r = api.put("/splits", params={"name": "summarize", "label": "staging"},
                        json={"arms": arms, "plan": {"per_arm": 60}})
            assert r.status_code == 200 and r.json()["plan"]["per_arm"] == 60
            keys = {}
            for i in range(200):
                got = api.get("/artifact", params={"ref": "summarize@staging",
                                                   "key": f"u{i}"}).json()
                keys[f"u{i}"] = got["version"]

            def post(items):
                for key, version in items:
                    rate = 0.9 if version == base + 1 else 0.2
                    value = (hash(key) % 1000) / 1000 < rate  # fixed per key
                    assert api.post("/outcomes", json={"ref": "summarize@staging", "key": key,
                                                       "value": value}).status_code == 201

            by_arm = {v: [k for k, got in keys.items() if got == v] for v in set(keys.values())}
            post([(k, v) for v, ks in by_arm.items() for k in ks[:40]])  # 40 < 60 per arm
            stats_ = api.get("/experiments", params={"name": "summarize",
                                                     "label": "staging"}).json()
            c = stats_["metrics"][0]["comparisons"][0]
            assert stats_["plan"]["per_arm"] == 60 and stats_["method"].startswith("mSPRT")
            assert c["sequential"]["p_value"] < 0.05 and c["significant"]
            assert c["sequential"]["low"] > 0  # the always-valid interval excludes 0
            assert c["p_value"] is None and c["p_adjusted"] is None  # hidden, and why
            assert "planned 60" in c["fixed_horizon"]["reason"]
            page = _page(server)
            assert "Always-valid p" in page and "hidden until every arm has the planned 60" \
                in page and "Planned size: 60 outcomes per arm" in page
            section = page[page.index('id="experiments"'):page.index("<h2>History")]
            cells = re.findall(r'<td class="fixed-p">(.*?)</td>', section)
            assert cells and all("hidden" in cell for cell in cells)
            assert re.search(r'<td class="sequential-p">0\.\d+|<td class="sequential-p">\d'
                             r'\.\d+e-\d+', section)

            post([(k, v) for v, ks in by_arm.items() for k in ks[40:70]])  # now ≥ 60 per arm
            c = api.get("/experiments", params={"name": "summarize", "label": "staging"}
                        ).json()["metrics"][0]["comparisons"][0]
            assert c["fixed_horizon"]["shown"] and c["p_value"] < 0.05
            assert c["test"] == "fisher-exact" and c["sequential"]["p_value"] < 0.05
            page = _page(server)
            assert "hidden until" not in page and "fisher-exact" in page
            assert api.delete("/splits", params={"name": "summarize", "label": "staging"}
                              ).status_code == 200
            assert api.get("/experiments", params={"name": "summarize", "label": "staging"}
                           ).json()["plan"] is None
    finally:
        server.stop()


def _page(server) -> str:
    with httpx.Client(base_url=server.url, timeout=60) as browser:
        form = browser.get("/login").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        browser.post("/login", data={"name": "admin", "password": ADMIN_PASSWORD,
                                     "csrf_token": csrf})
        page = browser.get("/a/summarize")
        assert page.status_code == 200
        return page.text


def test_sequential_module_names_its_sources():
    doc = sequential.__doc__
    assert "Johari" in doc and "Howard" in doc and "Waudby-Smith" in doc
