"""Evaluation benchmark: a 1,000-case, 3-variant A/B run on the tiny local model.

    python3 bench/bench_eval.py              # 1,000 cases x 3 variants
    python3 bench/bench_eval.py --quick      # smoke run: 100 cases
    python3 bench/bench_eval.py --profile    # also cProfile the work outside the model

Everything is built here, with no download (tests/tiny_models.py): the tests' tiny random
LlamaForCausalLM (2 layers, hidden size 64, 4 heads, 0.13 M parameters; ``--layers`` and
``--hidden`` change it) with the tiny byte-level BPE tokenizer (400 tokens). The registry
(a temp folder) holds the starter prompts ``sentiment/zero-shot`` and ``sentiment/few-shot``
(prompts/sentiment/), a dataset of ``--cases`` synthetic reviews with an expected label
(positive, negative or neutral, a third each) and a LoRA adapter (r=4) that promptrev's
``finetune`` fits on 300 other reviews through the zero-shot prompt and pushes into the
registry (on this random model it answers a label for about half the cases, so scores vary
and the statistics do their full work). Variants: zero-shot, few-shot, zero-shot + the
LoRA. Scorers: exact, contains (ignore case), regex (the answer starts with a label).
``batch_size`` 32 (evaluation chunks and the backend's batches), ``max_tokens`` 8 (a label
is 5-7 tokens of this tokenizer, plus EOS), greedy. CPU unless CUDA is present; one torch
thread by default (as bench_generation.py).

The run goes through the public path, ``Evaluator.start`` + ``Evaluator.execute``
(render, generate, score, store every chunk, then statistics and the report), after the
model is loaded and warmed up (loading is reported apart). Figures:
  a. cases/s = cases x variants / wall time of start + execute; baseline: the same count
     over the time spent inside the backend's ``generate()`` calls only (the model).
  b. the time outside the model (everything but ``generate()``: prompt rendering, adapter
     resolution, scoring, storage, statistics, the report) as a share of the total; goal
     <= 10 %. Timers wrapped around the pieces (measurement only) split it up.
With ``--profile``, a second run on the same registry replays the first run's generations
(no model) under cProfile, and the functions where the outside time goes are printed, in
microseconds per case (one case of one variant).
"""

from __future__ import annotations

import contextlib
import cProfile
import os
import pstats
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from common import BENCH_AUTHOR, Reporter, Result, base_parser, fmt, print_header, workdir  # noqa: E402,I001

US = 1e6
GOAL_SHARE = 0.10
TRAIN_CASES = 300  # the LoRA's training set (other reviews than the run's)

# ---- the dataset ------------------------------------------------------------------------
PRODUCTS = ["blender", "headphones", "suitcase", "router", "phone case", "hotel room",
            "laptop", "coffee maker", "running shoes", "desk lamp", "vacuum", "backpack",
            "smart watch", "kettle", "office chair", "tent"]
POSITIVE = ["works better than I hoped", "is worth every penny", "made my mornings easier",
            "arrived early and feels solid", "is quiet, fast and easy to clean",
            "still looks new after months", "exceeded what the reviews promised"]
NEGATIVE = ["broke within a week", "is a waste of money", "stopped working after two days",
            "arrived scratched and support never answered", "is louder than a jet engine",
            "feels cheap and the warranty claim was refused", "is worse than my old one"]
NEUTRAL = ["arrived on Tuesday in a plain box", "comes with a cable and a manual",
           "is the same model my neighbour has", "was delivered to the front desk",
           "comes in grey and black", "has a two-year warranty",
           "was ordered through the company account"]
OPENERS = ["", "Honestly, ", "So, ", "Update: ", "After a month: ", "Well, "]
CLOSERS = ["", " Would buy again.", " Returning it.", " Nothing else to add.",
           " Five stars.", " One star.", " We'll see how it holds up."]
LABELS = {"positive": POSITIVE, "negative": NEGATIVE, "neutral": NEUTRAL}
CLOSER_FOR = {"positive": (0, 1, 4), "negative": (0, 2, 5), "neutral": (0, 3, 6)}


def dataset_text(n: int, seed: int = 0) -> str:
    """JSONL of ``n`` synthetic reviews with their expected label (seeded, ~1/3 each)."""
    import json

    rng = random.Random(seed)
    lines = []
    for i in range(n):
        label = ("positive", "negative", "neutral")[i % 3]
        review = (f"{rng.choice(OPENERS)}The {rng.choice(PRODUCTS)} "
                  f"{rng.choice(LABELS[label])}."
                  f"{CLOSERS[rng.choice(CLOSER_FOR[label])]} (order {10_000 + i})")
        lines.append(json.dumps({"id": f"r{i:05d}", "vars": {"review": review},
                                 "expected": label, "tags": [label]}))
    return "\n".join(lines) + "\n"


# ---- measuring --------------------------------------------------------------------------
class Timers:
    """Wraps callables with timers (measurement only); ``undo()`` puts them back."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[tuple[object, str, object, bool]] = []

    def wrap(self, owner: object, attr: str, label: str) -> None:
        original = getattr(owner, attr)
        seconds, calls = self.seconds, self.calls
        clock = time.perf_counter

        def timed(*args, **kwargs):
            start = clock()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[label] += clock() - start
                calls[label] += 1

        had_own = isinstance(owner, type) or attr in getattr(owner, "__dict__", {})
        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original, had_own))

    def undo(self) -> None:
        for owner, attr, original, had_own in reversed(self._undo):
            if had_own:
                setattr(owner, attr, original)
            else:  # a bound method wrapped on an instance: drop the instance attribute
                delattr(owner, attr)
        self._undo.clear()


# What the outside time is split into: (label, owner, attribute). None of these nest in
# another one of the list except "report", which contains "results read" and "statistics".
def breakdown_timers(timers: Timers, evaluator, runner, registry) -> None:
    from promptrev.evaluation import stats
    from promptrev.evaluation.scorers import ItemScorer

    store = evaluator.store
    timers.wrap(runner, "prepare", "render prompt + build request (Runner.prepare)")
    timers.wrap(registry, "adapter_source", "adapter resolve + sha256 (adapter_source)")
    timers.wrap(ItemScorer, "score", "scoring (exact, contains, regex)")
    timers.wrap(store, "add_results", "storage: add_results (SQL insert per chunk)")
    timers.wrap(store, "create", "storage: create run")
    timers.wrap(store, "set_status", "storage: set_status (+ report JSON)")
    timers.wrap(store, "done_cases", "storage: done_cases")
    timers.wrap(store, "results", "storage: results read (for the report)")
    timers.wrap(stats, "compare", "statistics: stats.compare (bootstrap, tests)")
    timers.wrap(stats, "mean_ci", "statistics: stats.mean_ci (operations)")
    timers.wrap(evaluator, "report", "report total (Evaluator.report)")


# ---- building ---------------------------------------------------------------------------
def build(root: Path, args):
    """Model folder and a registry with the prompts, the dataset and a fine-tuned LoRA."""
    from promptrev.registry import Registry
    from promptrev.runner.finetune import FinetuneConfig, finetune
    from tests import tiny_models

    start = time.perf_counter()
    model = tiny_models.build_model(root / "model", layers=args.layers, hidden=args.hidden,
                                    heads=4)
    reg = Registry.init(str(root / "reg"), author=BENCH_AUTHOR)
    with reg.transaction(message="bench prompts and datasets", author=BENCH_AUTHOR) as tx:
        for leaf in ("zero-shot", "few-shot"):
            text = (ROOT / "prompts" / "sentiment" / f"{leaf}.prompty").read_text("utf-8")
            tx.save(f"sentiment/{leaf}", text)
        tx.save("bench-sentiment", dataset_text(args.cases), kind="dataset")
        tx.save("bench-sentiment-train", dataset_text(TRAIN_CASES, seed=1), kind="dataset")
    # A LoRA fitted on other reviews through the zero-shot prompt (promptrev's finetune,
    # which pushes it into the registry): on this random model it answers a label about
    # half the time, so scores vary and the statistics do their full work.
    config = FinetuneConfig(rank=4, alpha=8, epochs=3, learning_rate=2e-2, batch_size=8,
                            validation_split=0.1)
    finetune(reg, dataset="bench-sentiment-train@1", model_path=str(model),
             name="sentiment-lora", prompt="sentiment/zero-shot@1", config=config,
             author=BENCH_AUTHOR, progress=False)
    return model, reg, time.perf_counter() - start


def eval_spec(args) -> dict:
    return {"name": f"bench: {args.cases} cases x 3 variants", "dataset": "bench-sentiment@1",
            "model": "tiny", "params": {"max_tokens": args.max_tokens, "temperature": 0},
            "variants": [{"name": "zero-shot", "prompt": "sentiment/zero-shot@1"},
                         {"name": "few-shot", "prompt": "sentiment/few-shot@1"},
                         {"name": "lora", "prompt": "sentiment/zero-shot@1",
                          "adapter": "sentiment-lora@1"}],
            "scorers": ["exact", {"contains": {"ignore_case": True}},
                        {"regex": {"pattern": "^(positive|negative|neutral)\\b",
                                   "ignore_case": True, "name": "label"}}],
            "baseline": "zero-shot", "batch_size": args.batch_size,
            "prices": {"tiny": {"input_per_1k": 0.5, "output_per_1k": 1.5}}}


def warm_up(runner, spec) -> float:
    """Load the model and run one small batch; import what a run imports."""
    from promptrev.evaluation import costs, reporting, scorers, stats  # noqa: F401
    from promptrev.runner import GenerationRequest

    start = time.perf_counter()
    backend = runner.backend(spec)
    backend.generate([GenerationRequest([{"role": "user", "content": "Review: fine."}],
                                        max_tokens=2)] * 2)
    return time.perf_counter() - start


def timed_run(evaluator, spec, author):
    """(seconds, run id, report) of start + execute."""
    start = time.perf_counter()
    run_id = evaluator.start(spec, author=author)
    report = evaluator.execute(run_id)
    return time.perf_counter() - start, run_id, report


# ---- the phases -------------------------------------------------------------------------
def measure(args, rep, evaluator, runner, reg, backend):
    """The headline run: total, inside generate(), the split of the rest."""
    timers = Timers()
    timers.wrap(backend, "generate", "model")
    timers.wrap(backend, "prompt_ids", "in generate(): chat template + tokenize")
    breakdown_timers(timers, evaluator, runner, reg)
    recorded: dict[tuple, object] = {}  # for the --profile replay; outside the timer
    timed_generate = backend.generate

    def recording(requests):
        out = timed_generate(requests)
        for request, generation in zip(requests, out, strict=True):
            recorded[_request_key(request)] = generation
        return out

    backend.generate = recording
    try:
        total, run_id, report = timed_run(evaluator, eval_spec(args), BENCH_AUTHOR)
    finally:
        backend.generate = timed_generate
        timers.undo()
    check(evaluator, run_id, report, args)
    n = args.cases * 3
    inside = timers.seconds.pop("model")
    calls = timers.calls.pop("model")
    templating = timers.seconds.pop("in generate(): chat template + tokenize", 0.0)
    outside = total - inside
    share = outside / total
    rep.add(Result(f"(a) eval run, {args.cases} cases x 3 variants (start + execute)",
                   n / total, "cases/s", baseline=n / inside, baseline_unit="cases/s",
                   baseline_name="model only (time in generate())", ratio=total / inside,
                   ratio_note="the model-only time"))
    rep.add(Result("(b) time outside the model (render, score, store, statistics, report)",
                   share * 100, "% of total", baseline=inside, baseline_unit="s",
                   baseline_name="in generate()", goal="<= 10%",
                   passed=share <= GOAL_SHARE,
                   extra={"total_s": total, "inside_s": inside, "outside_s": outside}))
    rep.note("seconds", {"total": round(total, 3), "inside_generate": round(inside, 3),
                         "outside": round(outside, 3), "generate_calls": calls,
                         "of_generate_chat_template_and_tokenize": round(templating, 3)},
             "seconds: total, inside generate(), outside; generate() calls; of generate(): "
             "the chat template + tokenizer (counted as model time)")
    leaves = {k: v for k, v in timers.seconds.items() if not k.startswith("report total")}
    report_s = timers.seconds.get("report total (Evaluator.report)", 0.0)
    in_report = sum(v for k, v in leaves.items() if k.startswith(("storage: results",
                                                                  "statistics")))
    leaves["report: rest (build_report, costs, adapter card)"] = max(report_s - in_report, 0)
    leaves["other (row building, registry.prompt, dataset parse, start)"] = max(
        outside - sum(leaves.values()), 0.0)
    split = {k: {"s": round(v, 4), "us_per_case": round(v / n * US, 1),
                 "pct_of_total": round(v / total * 100, 2)}
             for k, v in sorted(leaves.items(), key=lambda kv: -kv[1])}
    rep.note("outside_split", split, "outside the model, by piece (s, us per case, % of total)")
    for k, v in split.items():
        print(f"      {v['pct_of_total']:6.2f} %  {v['us_per_case']:9.1f} us/case  {k}")
    rep.note("report_s", round(report_s, 3),
             "report (statistics: bootstrap + tests over 3 metrics, 4 operations), seconds")
    accuracy = {m["metric"]: {v: round(iv["mean"], 3) for v, iv in m["variants"].items()}
                for m in report["metrics"]}
    rep.note("scores", accuracy, "mean score per metric and variant (random model)")
    return recorded, total, inside


def _request_key(request) -> tuple:
    return (tuple((m["role"], m["content"]) for m in request.messages),
            request.adapter.key if request.adapter else None, request.max_tokens)


def profile_outside(args, rep, evaluator, backend, recorded) -> None:
    """A second run that replays the recorded generations (no model) under cProfile."""
    def replay(requests):
        return [recorded[_request_key(r)] for r in requests]

    backend.generate = replay
    profiler = cProfile.Profile()
    try:
        start = time.perf_counter()
        profiler.enable()
        run_id = evaluator.start(eval_spec(args), author=BENCH_AUTHOR)
        evaluator.execute(run_id)
        profiler.disable()
        wall = time.perf_counter() - start
    finally:
        del backend.generate
    n = args.cases * 3
    rep.note("profile_replay_s", round(wall, 3),
             "the same run with generate() replayed from the first run, under cProfile (s)")
    data = pstats.Stats(profiler)
    rows = []
    for (path, line, func), (_cc, ncalls, tottime, cumtime, _callers) in data.stats.items():
        rows.append((path, line, func, ncalls, tottime, cumtime))
    root = str(ROOT)

    def where(path, line, func):
        short = path.replace(root + os.sep, "")
        for marker in ("site-packages" + os.sep, "dist-packages" + os.sep):
            if marker in short:
                short = short.split(marker, 1)[1]
        return f"{short}:{line}:{func}"

    print("   cProfile, cumulative time of promptrev functions (us per case; calls):")
    ours = [r for r in rows if os.sep + "promptrev" + os.sep in r[0]]
    top_cum = sorted(ours, key=lambda r: -r[5])[:args.profile_top]
    for path, line, func, ncalls, _tot, cum in top_cum:
        print(f"      {cum / n * US:9.1f} us  {ncalls:>8}  {where(path, line, func)}")
    print("   cProfile, own time of any function (us per case; calls):")
    top_own = sorted(rows, key=lambda r: -r[4])[:args.profile_top]
    for path, line, func, ncalls, tot, _cum in top_own:
        print(f"      {tot / n * US:9.1f} us  {ncalls:>8}  {where(path, line, func)}")
    rep.note("profile_cumulative_us_per_case",
             {where(p, ln, f): round(c / n * US, 1) for p, ln, f, _k, _t, c in top_cum},
             "cumulative us per case (top promptrev functions)")
    if args.profile_out:
        data.dump_stats(args.profile_out)
        print(f"   profile written to {args.profile_out}")


def check(evaluator, run_id, report, args) -> None:
    """The run scored every case of every variant once (else the figures mean nothing)."""
    scored = report["scored"]
    if scored != {"zero-shot": args.cases, "few-shot": args.cases, "lora": args.cases}:
        raise SystemExit(f"run {run_id}: not every case was scored: {scored}")
    rows = evaluator.store.results(run_id)
    if len(rows) != 3 * args.cases:
        raise SystemExit(f"run {run_id}: {len(rows)} result rows, expected {3 * args.cases}")


# ---- main -------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=None,
                        help="cases in the dataset (default 1,000; --quick 100)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="the spec's batch_size and the backend's batch_size")
    parser.add_argument("--max-tokens", type=int, default=8,
                        help="max_tokens per answer (default 8: a label is 5-7 tokens + EOS)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1; 0: torch's default, one per core)")
    parser.add_argument("--layers", type=int, default=2, help="model layers (tests' tiny: 2)")
    parser.add_argument("--hidden", type=int, default=64, help="hidden size (tests' tiny: 64)")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile a replayed run (no model) and print where the "
                             "outside time goes")
    parser.add_argument("--profile-top", type=int, default=25, help="rows of each profile list")
    parser.add_argument("--profile-out", default=None, help="write the pstats file here")
    args = parser.parse_args(argv)
    args.cases = args.cases or (100 if args.quick else 1000)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    print_header("promptrev evaluation benchmark (Evaluator on the tiny hf model)", args)
    import torch

    from promptrev.evaluation.runs import Evaluator
    from promptrev.runner import ModelSpec
    from promptrev.runner.execute import Runner

    if args.threads:
        torch.set_num_threads(args.threads)
    rep = Reporter("bench_eval", args)
    with workdir(args, "promptrev-bench-eval-") as tmp:
        model_dir, reg, build_s = build(Path(tmp), args)
        spec = ModelSpec("hf", str(model_dir), options={"batch_size": args.batch_size})
        runner = Runner(reg, models={"tiny": spec})
        evaluator = Evaluator(reg, runner)
        load_s = warm_up(runner, spec)
        backend = runner.backend(spec)
        params = sum(p.numel() for p in backend.model.parameters())
        rep.note("setup", {"layers": args.layers, "hidden": args.hidden,
                           "params_M": round(params / 1e6, 3), "device": backend.loaded.device,
                           "dtype": str(backend.loaded.dtype),
                           "torch_threads": torch.get_num_threads(),
                           "build_s (model, registry, LoRA fine-tuning)": round(build_s, 1),
                           "load_and_warm_up_s": round(load_s, 2)},
                 "model, device, threads, build and load seconds (not in the figures)")
        recorded, _total, _inside = measure(args, rep, evaluator, runner, reg, backend)
        if args.profile:
            profile_outside(args, rep, evaluator, backend, recorded)
        reg.close()
    failed = [r.metric for r in rep.results if r.passed is False]
    checked = [r for r in rep.results if r.passed is not None]
    print(f"   {len(checked) - len(failed)}/{len(checked)} PASS"
          f"{'' if not failed else '; FAIL: ' + ', '.join(failed)}  "
          f"({fmt(build_s)} s build)")
    rep.write()
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
