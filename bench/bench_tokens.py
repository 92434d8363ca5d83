"""Token counts of a diff: exact tiktoken on the shipped tables, next to its baselines.

    python3 bench/bench_tokens.py            # 200 diffs of two typical prompts
    python3 bench/bench_tokens.py --quick    # 20

Figures (each with a baseline measured in this run, printed as a ratio):
  1. first load of a table in a fresh interpreter (import, gunzip, sha256 check, parse,
     tiktoken.Encoding): paid once per process
  2. token_delta of a diff, warm (tables cached): what a diff page pays
     baselines: the same with the tables loaded again on every call (no cache), and a
     chars/4 estimate of the same messages (the floor: no tokenizer at all)
  3. the same diff on an hf tokenizer (the tests' tiny one), warm, when transformers is
     installed
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from promptrev.evaluation.prices import load_price_table  # noqa: E402
from promptrev.evaluation.tokens import PricedModel, token_delta  # noqa: E402
from promptrev.runner import tokenizers  # noqa: E402
from promptrev.runner.base import ModelSpec  # noqa: E402

SYSTEM = ("You are the support assistant of a software company. Answer in at most three "
          "short paragraphs, be polite, and never invent account details. If the question "
          "is about billing, say so and suggest the right channel. ") * 6
EXAMPLES = [("user", "How do I reset my password?"),
            ("assistant", "Open Settings, choose Security, then Reset password. You will "
                          "get an e-mail with a link that is valid for one hour."),
            ("user", "Can I change the e-mail address of my account?"),
            ("assistant", "Yes: Settings, Profile, E-mail. We send a confirmation to both "
                          "the old and the new address.")]
OLD = [{"role": "system", "content": SYSTEM},
       {"role": "user", "content": "Customer Dana asks: my invoice shows two charges for "
                                   "November, what happened and how do I get a refund?"}]
NEW = [{"role": "system", "content": SYSTEM + "Cite the help-centre article you used."},
       *({"role": r, "content": c} for r, c in EXAMPLES), OLD[1]]

FIRST_LOAD = """
import sys, time
t0 = time.perf_counter()
from promptrev.runner import tokenizers
t1 = time.perf_counter()
tokenizers.encoding(sys.argv[1])
t2 = time.perf_counter()
print(f"{t1 - t0:.6f} {t2 - t1:.6f}")
"""


def timed(fn, n: int) -> list[float]:
    """Wall time of each of ``n`` calls of ``fn``."""
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def first_load(name: str, runs: int) -> tuple[float, float]:
    """Median (import, load) seconds of the table ``name`` in fresh interpreters."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    rows = [subprocess.run([sys.executable, "-c", FIRST_LOAD, name], env=env, check=True,
                           capture_output=True, text=True).stdout.split()
            for _ in range(runs)]
    return (statistics.median(float(r[0]) for r in rows),
            statistics.median(float(r[1]) for r in rows))


def chars_estimate() -> dict:
    """The floor: chars/4 per message, no tokenizer."""
    old = [len(m["content"]) // 4 for m in OLD]
    new = [len(m["content"]) // 4 for m in NEW]
    return {"old": sum(old), "new": sum(new)}


def hf_counter():
    """A counter on the tests' tiny tokenizer, saved to a temporary folder (or None)."""
    try:
        from tests.tiny_models import build_tokenizer
    except ImportError:
        return None
    folder = tempfile.mkdtemp(prefix="promptrev-bench-tok-")
    build_tokenizer().save_pretrained(folder)
    return PricedModel("tiny", tokenizers.counter_for(ModelSpec("hf", folder)))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x fewer diffs")
    args = parser.parse_args(argv)
    n = 20 if args.quick else 200
    prices = load_price_table()

    print("1. first load in a fresh interpreter (median of 3)")
    for name in tokenizers.SHIPPED:
        imported, loaded = first_load(name, 3)
        print(f"   {name}: import {ms(imported)}, table load {ms(loaded)}")

    print(f"2. token_delta of one diff ({len(OLD)} -> {len(NEW)} messages, "
          f"{sum(len(m['content']) for m in NEW):,} chars), median of {n}")
    token_delta(OLD, NEW, "gpt-4o", prices)  # load once
    result = token_delta(OLD, NEW, "gpt-4o", prices)
    warm = statistics.median(timed(lambda: token_delta(OLD, NEW, "gpt-4o", prices), n))

    def uncached():
        tokenizers._encoding.cache_clear()
        token_delta(OLD, NEW, "gpt-4o", prices)

    cold = statistics.median(timed(uncached, max(3, n // 20)))
    floor = statistics.median(timed(chars_estimate, n))
    print(f"   exact, tables cached:        {ms(warm)}   ({result['summary']})")
    print(f"   baseline, tables every call: {ms(cold)}   cached is {cold / warm:,.0f}x faster")
    print(f"   floor, chars/4 estimate:     {ms(floor)}   exact costs {warm / floor:,.0f}x "
          f"the floor; chars/4 says {chars_estimate()}, tiktoken "
          f"{ {k: result['total'][k] for k in ('old', 'new')} }")

    counter = hf_counter()
    if counter is None:
        print("3. hf tokenizer: skipped (transformers or tests/ not importable)")
        return
    token_delta(OLD, NEW, counter)
    hf = statistics.median(timed(lambda: token_delta(OLD, NEW, counter, prices), n))
    print(f"3. hf tokenizer (tiny, chat template, per-message prefixes): {ms(hf)}, "
          f"{hf / warm:,.1f}x the tiktoken diff")


if __name__ == "__main__":
    main()
