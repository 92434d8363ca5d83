"""Generation benchmark: the hf backend's batching, mixed-adapter batches, adapter switching.

    python3 bench/bench_generation.py            # 64 inputs, 32 new tokens, 3 rounds
    python3 bench/bench_generation.py --quick    # smoke run: 16 inputs, 1 round

The model is built here, with no download (tests/tiny_models.py): a random LlamaForCausalLM
with 4 layers, hidden size 256, 4 heads (about 2.8 M parameters) and the tiny byte-level
BPE tokenizer (400 tokens); four LoRA adapters (q_proj, v_proj, r=4) fitted for a few
steps so their weights differ. Greedy decoding of exactly ``--new-tokens`` tokens per
input (EOS is disabled, so both sides of each ratio do the same number of steps). CPU
unless CUDA is present. One torch thread by default (``--threads``): the model is too small
to gain from more, and on the shared 2-core machine a second thread waiting for a core
busy with other work made the same run 3-10x slower from one run to the next.

Figures, each next to a baseline measured in this run (medians over ``--rounds`` rounds
that alternate the two sides):
  a. ``generate()`` of the N evaluation inputs as one call (batched) vs one call per
     input on the same model: speed-up, goal >= 3x.
  b. the same N inputs in one call with 4 LoRA adapters mixed row by row (PEFT
     ``adapter_names``) vs all N on one adapter: time ratio, goal <= 1.5x.
  c. switching to an already-loaded adapter (cache hit + ``set_adapter``), p50, goal
     <= 50 ms; baseline: a 1-token generation. Reported: loading an adapter from its
     folder (first use of a new cache key).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import Reporter, Result, base_parser, fmt, print_header, workdir  # noqa: E402

QUESTIONS = [
    "How do I reset my password?", "Summarize the article in fifty words.",
    "Which label points at production?", "Answer the customer politely.",
    "What is a soft prompt?", "Roll back the bad prompt to version 3.",
    "Is this question about billing?", "Review the prompt diff line by line.",
]
MS = 1e3


def parse_args(argv=None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=None,
                        help="evaluation inputs (default 64; --quick 16)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per input")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick 1)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="the backend's batch_size option")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1; 0: torch's default, one per core)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args(argv)
    args.inputs = args.inputs or (16 if args.quick else 64)
    args.rounds = args.rounds or (1 if args.quick else 3)
    return args


def build(root: Path, args):
    """The model folder and four LoRA adapter folders; returns (model, loras, seconds)."""
    from tests import tiny_models

    start = time.perf_counter()
    model = tiny_models.build_model(root / "model", layers=args.layers, hidden=args.hidden,
                                    heads=4)
    loras = [tiny_models.build_lora(model, root / f"lora{i}", seed=i) for i in range(4)]
    return model, loras, time.perf_counter() - start


def requests_for(args, adapters):
    """N chat requests, cycling over ``adapters`` row by row."""
    from promptrev.runner import GenerationRequest

    return [GenerationRequest([{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": f"{QUESTIONS[i % 8]} (#{i})"}],
                              max_tokens=args.new_tokens, adapter=adapters[i % len(adapters)])
            for i in range(args.inputs)]


def timed(fn) -> float:
    return timed_result(fn)[0]


def timed_result(fn):
    """(seconds, what ``fn`` returned)."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bench_batching(args, rep, hf) -> None:
    """(a) one batched call vs one call per input."""
    requests = requests_for(args, [None])
    hf.generate(requests[:2])  # warm-up
    batched, single, same = [], [], None
    for _ in range(args.rounds):
        seconds, answers = timed_result(lambda: hf.generate(requests))
        batched.append(seconds)
        seconds, alone = timed_result(lambda: [hf.generate([r])[0] for r in requests])
        single.append(seconds)
        same = [a.text for a in answers] == [a.text for a in alone]
    b, s = statistics.median(batched), statistics.median(single)
    rep.add(Result(f"(a) batched generate, {args.inputs} inputs x {args.new_tokens} tokens",
                   args.inputs / b, "inputs/s", baseline=args.inputs / s,
                   baseline_unit="inputs/s", baseline_name="one call per input",
                   ratio=s / b, ratio_note="faster", goal=">= 3x", passed=s / b >= 3))
    rep.note("batching_seconds", {"batched": round(b, 3), "one_at_a_time": round(s, 3),
                                  "same_texts": same},
             "median seconds (batched, one at a time); identical texts")


def bench_mixed(args, rep, hf, loras) -> None:
    """(b) four LoRA adapters mixed row by row vs every row on one adapter."""
    mixed_requests = requests_for(args, loras)
    one_requests = requests_for(args, loras[:1])
    hf.generate(mixed_requests[:4])  # loads the four adapters; warm-up
    mixed, one = [], []
    for _ in range(args.rounds):
        mixed.append(timed(lambda: hf.generate(mixed_requests)))
        one.append(timed(lambda: hf.generate(one_requests)))
    m, o = statistics.median(mixed), statistics.median(one)
    rep.add(Result(f"(b) batch mixing 4 LoRA adapters, {args.inputs} inputs", m, "s",
                   baseline=o, baseline_name="same batch on one adapter", ratio=m / o,
                   ratio_note="the time", goal="<= 1.5x", passed=m / o <= 1.5))


def bench_switch(args, rep, hf, loras, model_dir) -> None:
    """(c) switching to a loaded adapter; loading one from its folder."""
    from promptrev.runner import AdapterSource, GenerationRequest

    loaded = hf.loaded
    a, b = loras[0], loras[1]

    def switch(source):
        with loaded.lock:
            adapter = loaded.adapter(source)
            loaded.peft.set_adapter(adapter.name, inference_mode=True)

    switches = []
    for i in range(100):
        switches.append(timed(lambda s=(a, b)[i % 2]: switch(s)))
    one_token = GenerationRequest([{"role": "user", "content": QUESTIONS[0]}], max_tokens=1,
                                  adapter=a)
    gen = [timed(lambda: hf.generate([one_token])) for _ in range(20)]
    p50 = statistics.median(switches) * MS
    rep.add(Result("(c) switch to a loaded adapter (cache hit + set_adapter), p50", p50, "ms",
                   baseline=statistics.median(gen) * MS, baseline_name="1-token generation",
                   goal="<= 50 ms", passed=p50 <= 50))
    loads = []
    for _ in range(5):
        fresh = AdapterSource(key=uuid.uuid4().hex, path=a.path)
        loads.append(timed(lambda f=fresh: switch(f)))
    rep.note("adapter_load_ms", round(statistics.median(loads) * MS, 1),
             "load a LoRA adapter from its folder (new key), median ms")


def main(argv=None) -> int:
    args = parse_args(argv)
    print_header("promptrev generation benchmark (hf backend)", args)
    import torch

    from promptrev.runner import AdapterSource, ModelSpec, get_backend

    if args.threads:
        torch.set_num_threads(args.threads)
    rep = Reporter("bench_generation", args)
    with workdir(args, "promptrev-bench-generation-") as tmp:
        model_dir, lora_dirs, build_s = build(Path(tmp), args)
        hf = get_backend(ModelSpec("hf", str(model_dir),
                                   options={"batch_size": args.batch_size}))
        hf.loaded.eos_ids.clear()  # no EOS: every input runs its full length
        params = sum(p.numel() for p in hf.model.parameters())
        rep.note("model", {"layers": args.layers, "hidden": args.hidden,
                           "params_M": round(params / 1e6, 2), "device": hf.loaded.device,
                           "dtype": str(hf.loaded.dtype), "torch_threads":
                           torch.get_num_threads(), "build_s": round(build_s, 1)},
                 "model (random Llama), device, threads, build seconds")
        loras = [AdapterSource(key=f"lora{i}", path=str(p), ref=f"lora{i}@1")
                 for i, p in enumerate(lora_dirs)]
        bench_batching(args, rep, hf)
        bench_mixed(args, rep, hf, loras)
        bench_switch(args, rep, hf, loras, model_dir)
    failed = [r.metric for r in rep.results if r.passed is False]
    print(f"   {len(rep.results) - len(failed)}/{len(rep.results)} PASS"
          f"{'' if not failed else '; FAIL: ' + ', '.join(failed)}  ({fmt(build_s)} s build)")
    rep.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
