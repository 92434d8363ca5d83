"""Peeking benchmark: live A/B statistics watched after every outcome.

    python3 bench/bench_sequential.py              # 2,000 experiments x 2,000 outcomes
    python3 bench/bench_sequential.py --quick      # smoke run: 200 experiments
    python3 bench/bench_sequential.py --json out.json

A/A experiments (no difference between the arms) are simulated outcome by outcome, and
after *every* outcome two tests are looked at, through the same code the live page uses
(``promptrev.evaluation.sequential``, vectorised over the experiments):

- the always-valid mSPRT (the default on the live page): a false positive is an
  experiment whose always-valid p-value ever went below alpha;
- the baseline, in the same run on the same outcomes: the fixed-horizon test (its normal
  approximation) looked at after every outcome, stopping at the first p < alpha. That is
  what people do when they open the page every day; its rate shows the inflation.

Each rate comes with its 95% Wilson interval; the sequential one must stay at or below
alpha. The fixed-horizon test looked at once, at the end, is printed as a control (it
should be near alpha). Scenarios: pass/fail 50/50, normal and exponential outcomes 50/50,
pass/fail 90/10, and log-normal outcomes in a 90/10 split (skewed outcomes in a small arm:
the hard case for a plug-in variance).

A/B experiments with a known effect then report the power of the sequential test (share
that stopped with the right sign by the horizon, and by the planned size), the median
sample size at stopping (per arm), and the fixed-horizon test at the planned size
(looked at once) for reference.
The planned size is the planner's (``promptrev.evaluation.planning.sample_size``) for
that effect with power 0.8; the horizon is twice it. Seeded: the same seed gives the same
figures. Nothing is asserted (tests/test_sequential.py asserts a smaller run).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from promptrev.evaluation.planning import sample_size  # noqa: E402
from promptrev.evaluation.sequential import fixed_horizon_p, sequence  # noqa: E402

Draw = Callable[[np.random.Generator, np.ndarray], np.ndarray]  # (rng, in_b) -> values


def wilson(hits: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return (math.nan, math.nan)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate(hits: int, n: int) -> dict:
    low, high = wilson(hits, n)
    return {"rate": hits / n, "low": low, "high": high, "hits": hits, "n": n}


def chunks(total: int, size: int):
    done = 0
    while done < total:
        yield min(size, total - done)
        done += size


def a_a(draw: Draw, share_b: float, binary: bool, args, rng) -> dict:
    """False positives of the sequential test and of the peeked fixed-horizon test."""
    seq = peeked = final = 0
    for n in chunks(args.experiments, args.chunk):
        in_b = rng.random((n, args.outcomes)) < share_b
        values = draw(rng, in_b)
        run = sequence(in_b, values, binary=binary, alpha=args.alpha,
                       tuned_per_arm=max(1, int(args.outcomes * min(share_b, 1 - share_b))))
        fixed = fixed_horizon_p(in_b, values, binary=binary)
        seq += int((run["p_value"][:, -1] < args.alpha).sum())
        peeked += int((fixed.min(axis=1) < args.alpha).sum())
        final += int((fixed[:, -1] < args.alpha).sum())
    total = args.experiments
    return {"sequential": rate(seq, total), "peeked_fixed": rate(peeked, total),
            "fixed_once_at_end": rate(final, total)}


def a_b(draw: Draw, binary: bool, effect: float, planned: int, args, rng) -> dict:
    """Power and sample size at stopping of the sequential test, with a known effect."""
    horizon = 2 * 2 * planned  # outcomes over both arms: twice the planned size per arm
    found = found_by_plan = 0
    stop_per_arm: list[np.ndarray] = []
    fixed_found = 0
    for n in chunks(args.ab_experiments, max(1, args.chunk * args.outcomes // horizon)):
        in_b = rng.random((n, horizon)) < 0.5
        values = draw(rng, in_b)
        run = sequence(in_b, values, binary=binary, alpha=args.alpha, tuned_per_arm=planned)
        right = (run["p_value"] < args.alpha) & (np.sign(run["diff"]) == np.sign(effect))
        stopped = right.any(axis=1)
        first = right.argmax(axis=1)
        smaller = np.minimum(run["n_a"], run["n_b"])
        stop_per_arm.append(np.where(stopped, smaller[np.arange(n), first], np.inf))
        found += int(stopped.sum())
        found_by_plan += int((stop_per_arm[-1] <= planned).sum())
        # the fixed-horizon test looked at once, when the smaller arm reaches the plan
        at_plan = (smaller >= planned).argmax(axis=1)
        fixed = fixed_horizon_p(in_b, values, binary=binary)[np.arange(n), at_plan]
        diff = run["diff"][np.arange(n), at_plan]
        fixed_found += int(((fixed < args.alpha) & (np.sign(diff) == np.sign(effect))).sum())
    stops = np.concatenate(stop_per_arm)
    total = args.ab_experiments
    return {"planned_per_arm": planned, "horizon_per_arm": 2 * planned,
            "sequential_power": rate(found, total),
            "sequential_power_by_plan": rate(found_by_plan, total),
            "median_stop_per_arm": float(np.median(stops[np.isfinite(stops)]))
            if found else math.nan,
            "median_stop_per_arm_all": float(np.median(np.minimum(stops, 2 * planned))),
            "fixed_power_at_plan": rate(fixed_found, total)}


def bernoulli(rate_a: float, rate_b: float | None = None) -> Draw:
    rate_b = rate_a if rate_b is None else rate_b
    return lambda rng, in_b: (rng.random(in_b.shape) < np.where(in_b, rate_b, rate_a)
                              ).astype(float)


def normal(shift: float = 0.0) -> Draw:
    return lambda rng, in_b: rng.normal(0.0, 1.0, in_b.shape) + shift * in_b


def exponential(rng, in_b):
    return rng.exponential(1.0, in_b.shape)


def lognormal(rng, in_b):
    return rng.lognormal(0.0, 1.0, in_b.shape)


def pct(r: dict) -> str:
    return f"{r['rate']:6.2%} [{r['low']:.2%}, {r['high']:.2%}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", type=int, default=None,
                        help="A/A experiments per scenario (default 2,000; --quick 200)")
    parser.add_argument("--outcomes", type=int, default=2000,
                        help="outcomes per A/A experiment, each one looked at (default 2,000)")
    parser.add_argument("--ab-experiments", type=int, default=None,
                        help="A/B experiments per scenario (default 1,000; --quick 100)")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--chunk", type=int, default=250,
                        help="experiments simulated at once (memory)")
    parser.add_argument("--quick", action="store_true", help="10x fewer experiments")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    args.experiments = args.experiments or (200 if args.quick else 2000)
    args.ab_experiments = args.ab_experiments or (100 if args.quick else 1000)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    print(f"# Peeking: {args.experiments} A/A experiments x {args.outcomes} outcomes, "
          f"looked at after every outcome; alpha {args.alpha}; seed {args.seed}")
    print(f"{'scenario':<34} {'sequential (always valid)':>27} {'fixed-horizon, peeked':>27} "
          f"{'ratio':>6} {'peeked/alpha':>12} {'fixed, once at end':>27}")
    results: dict = {"settings": {k: v for k, v in vars(args).items() if k != "json"},
                     "a_a": {}, "a_b": {}}
    scenarios = [("pass/fail 10%, 50/50", bernoulli(0.10), 0.5, True),
                 ("normal, 50/50", normal(), 0.5, False),
                 ("exponential, 50/50", exponential, 0.5, False),
                 ("pass/fail 30%, 90/10", bernoulli(0.30), 0.1, True),
                 ("log-normal, 90/10", lognormal, 0.1, False)]
    for name, draw, share_b, binary in scenarios:
        r = a_a(draw, share_b, binary, args, rng)
        results["a_a"][name] = r
        ratio = r["peeked_fixed"]["rate"] / max(r["sequential"]["rate"], 1 / args.experiments)
        got = r["sequential"]
        within = ("<= alpha" if got["rate"] <= args.alpha else
                  "within noise of alpha" if got["low"] <= args.alpha else "OVER alpha")
        print(f"{name:<34} {pct(r['sequential']):>27} {pct(r['peeked_fixed']):>27} "
              f"{ratio:5.1f}x {r['peeked_fixed']['rate'] / args.alpha:11.1f}x "
              f"{pct(r['fixed_once_at_end']):>27}  {within}")
    print(f"\n# Power: {args.ab_experiments} A/B experiments per effect, planned size for "
          "power 0.8 (planner), horizon twice it, looked at after every outcome")
    print(f"{'effect':<34} {'planned/arm':>11} {'sequential power':>27} "
          f"{'median stop/arm':>16} {'fixed power at plan':>27}")
    effects = [("pass/fail 10% -> 13%", bernoulli(0.10, 0.13), True, 0.03,
                sample_size(mde=0.03, baseline=0.10, alpha=args.alpha)["per_arm"]),
               ("normal, +0.2 sd", normal(0.2), False, 0.2,
                sample_size(mde=0.2, sd=1.0, alpha=args.alpha)["per_arm"])]
    for name, draw, binary, effect, planned in effects:
        r = a_b(draw, binary, effect, planned, args, rng)
        results["a_b"][name] = r
        print(f"{name:<34} {planned:>11} {pct(r['sequential_power']):>27} "
              f"{r['median_stop_per_arm']:>16.0f} {pct(r['fixed_power_at_plan']):>27}")
        print(f"{'':<34} {'':>11} sequential power by the planned size: "
              f"{pct(r['sequential_power_by_plan'])}")
        print(f"{'':<34} {'':>11} median stop counting non-stoppers at the horizon: "
              f"{r['median_stop_per_arm_all']:.0f} per arm "
              f"({r['median_stop_per_arm_all'] / planned:.2f}x the planned size)")
    results["seconds"] = time.perf_counter() - started
    print(f"\n{results['seconds']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
