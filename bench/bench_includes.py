"""Composition: resolve + render of a prompt with two includes against one without.

    python3 bench/bench_includes.py            # 20,000 renders of each, interleaved
    python3 bench/bench_includes.py --quick    # 2,000 of each

Both prompts render the same messages: the baseline holds the two parts' text inline, the
composed one includes them (``{% include "shared/tone@production" %}`` and the floating
``{% include "shared/format" %}``). Each timed call is ``reg.render(name, vars)`` warm, in
process, as the API and ``/v1`` make it: resolve the reference, then render, resolving
each part at ``main``'s head. Goal: composed within 2x of the baseline measured in this run.
Also reported: the first render after ``main`` moved (caches dropped), both kinds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from promptrev.registry import Registry  # noqa: E402

TONE = "Be warm, brief and exact. Never promise what support cannot do."
FORMAT = "Answer in JSON: {\"answer\": string, \"confidence\": number}."
FRONT = ("---\nname: NAME\nmodel:\n  parameters:\n    temperature: 0.2\ninputs:\n"
         "  customer: {type: string}\n  question: {type: string}\n---\n")
USER = "user:\nHi, I am {{ customer }}. {{ question }}\n"
BASELINE = FRONT + "system:\n" + TONE + "\n" + FORMAT + "\n\n" + USER
COMPOSED = FRONT + ("system:\n{% include \"shared/tone@production\" %}\n"
                    "{% include \"shared/format\" %}\n\n") + USER
VARS = {"customer": "Dana", "question": "How do I reset my password?"}


def build(path: str) -> Registry:
    reg = Registry.init(path)
    reg.save("shared/tone", f"---\nname: tone\n---\n{TONE}")
    reg.set_label("shared/tone", "production", 1)
    reg.save("shared/format", f"---\nname: format\n---\n{FORMAT}")
    reg.save("baseline", BASELINE.replace("NAME", "baseline"))
    reg.save("composed", COMPOSED.replace("NAME", "composed"))
    a, b = reg.render("baseline", VARS), reg.render("composed", VARS)
    assert [m.to_dict() for m in a] == [m.to_dict() for m in b], (a, b)
    return reg


def timed_rounds(reg: Registry, n: int, rounds: int = 10) -> dict[str, list[float]]:
    """Per-call seconds of each prompt, in alternating rounds (noise hits both)."""
    out: dict[str, list[float]] = {"baseline": [], "composed": []}
    per = max(1, n // rounds)
    for _ in range(rounds):
        for name in ("baseline", "composed"):
            for _ in range(per):
                start = time.perf_counter()
                reg.render(name, VARS)
                out[name].append(time.perf_counter() - start)
    return out


def first_after_move(reg: Registry, other: Registry, n: int) -> dict[str, float]:
    """Median first render after another instance moved ``main`` (a label move)."""
    out: dict[str, list[float]] = {"baseline": [], "composed": []}
    for _ in range(n):
        for name in ("baseline", "composed"):
            other.set_label(name, "bench", 1)
            other.remove_label(name, "bench")
            start = time.perf_counter()
            reg.render(name, VARS)
            out[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in out.items()}


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} us"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x fewer renders")
    parser.add_argument("--dir", default=None, help="parent of the temporary registry")
    args = parser.parse_args(argv)
    n = 2_000 if args.quick else 20_000
    with tempfile.TemporaryDirectory(prefix="bench-includes-", dir=args.dir) as tmp:
        reg = build(os.path.join(tmp, "reg"))
        timed_rounds(reg, min(n, 1000), rounds=2)  # warm-up: caches, compiled templates
        samples = timed_rounds(reg, n)
        base = statistics.median(samples["baseline"])
        comp = statistics.median(samples["composed"])
        base90 = statistics.quantiles(samples["baseline"], n=10)[-1]
        comp90 = statistics.quantiles(samples["composed"], n=10)[-1]
        print(f"1. warm resolve + render, median of {len(samples['baseline']):,} each")
        print(f"   baseline (parts inline):      p50 {us(base)}   p90 {us(base90)}")
        print(f"   composed (two includes):      p50 {us(comp)}   p90 {us(comp90)}")
        ratio = comp / base
        print(f"   ratio composed / baseline:    {ratio:.2f}x  (goal <= 2x: "
              f"{'met' if ratio <= 2 else 'NOT met'})")
        other = Registry.open(os.path.join(tmp, "reg"))
        moves = 10 if args.quick else 50
        first = first_after_move(reg, other, moves)
        print(f"2. first render after main moved (another instance), median of {moves}")
        print(f"   baseline: {us(first['baseline'])}   composed: {us(first['composed'])}   "
              f"ratio {first['composed'] / first['baseline']:.2f}x")
        other.close()
        reg.close()


if __name__ == "__main__":
    main()
