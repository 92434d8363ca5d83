"""Flat libraries against nested ones: single saves, label moves and growth per write.

    python3 bench/bench_layout.py               # full size: 10,000 prompts in each registry
    python3 bench/bench_layout.py --quick       # ~10x smaller smoke run

Two registries of the same size are built in the same run: one *flat* (10,000 names with
no folder, ``act-as-prompt-04711``, as real prompt libraries are) and one *nested*
(``team07/area13/prompt-04711``, no folder over ~50 entries). Every prompt has a label.
Then, interleaved in rounds so that a load spike hits both sides:

  1. single saves, saves/s: goal flat within 1.5x of nested
  2. label moves, moves/s: goal flat within 1.5x of nested
  3. repository growth per save and per label move (bytes on disk of the Git objects the
     writes added, packed or loose): goal flat within 2x of nested

Run it on the file system the registry will live on (``--dir``): durable writes fsync
(see docs/durability.md), which tmpfs makes free. It uses only the registry's public API,
so the same script measures an older checkout (``PYTHONPATH=<checkout>``).
"""

from __future__ import annotations

import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BENCH_AUTHOR,
    Reporter,
    Result,
    base_parser,
    percentile,
    print_header,
    prompt_name,
    prompt_text,
    run_git,
    scaled,
    workdir,
)

STRIDE = 7919  # prime: walks all prompts in a scattered order


def flat_name(i: int) -> str:
    """Flat name of prompt ``i``: ``act-as-prompt-04711``."""
    return f"act-as-prompt-{i:05d}"


LAYOUTS = {"flat": flat_name, "nested": prompt_name}


def parse_args(argv=None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=None,
                        help="single saves timed per layout (default 300; --quick 60)")
    parser.add_argument("--moves", type=int, default=None,
                        help="label moves timed per layout (default 300; --quick 60)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleave the layouts in this many rounds")
    parser.add_argument("--durability", default="full,off",
                        help="durability modes to measure, interleaved (default full,off; "
                             "full is the default of the registry: docs/durability.md)")
    args = parser.parse_args(argv)
    args.prompts = scaled(args.prompts, 10_000, args.quick)
    args.saves = args.saves if args.saves is not None else (60 if args.quick else 300)
    args.moves = args.moves if args.moves is not None else (60 if args.quick else 300)
    return args


def new_bytes(path: str, before: str, after: str) -> int:
    """Bytes on disk (compressed, loose or packed) of the objects ``after`` added to
    ``before``: what the writes in between grew the repository by, whatever ``git gc``
    packed meanwhile."""
    objects = run_git("--git-dir", path, "rev-list", "--objects", after, f"^{before}")
    ids = b"".join(line.split(b" ", 1)[0] + b"\n" for line in objects.splitlines())
    sizes = run_git("--git-dir", path, "cat-file", "--batch-check=%(objectsize:disk)",
                    input=ids)
    return sum(int(size) for size in sizes.split())


def build(path: str, name_of, n: int, batch: int = 1000):
    """A registry holding prompts 0..n-1, each labelled ``production: 1``."""
    from promptrev.registry import Registry

    reg = Registry.init(path, author=BENCH_AUTHOR)
    start = time.perf_counter()
    for first in range(0, n, batch):
        chunk = range(first, min(n, first + batch))
        with reg.transaction(message=f"import {first}", author=BENCH_AUTHOR) as tx:
            tx.save_many([(name_of(i), prompt_text(i, 0)) for i in chunk])
        with reg.transaction(message=f"label {first}", author=BENCH_AUTHOR) as tx:
            for i in chunk:
                tx.set_label(name_of(i), "production", 1)
    return reg, time.perf_counter() - start


def set_durability(mode: str) -> None:
    """Flush acknowledged writes (full) or not (off), for this process (a checkout from
    before durability has no switch: its writes are never flushed)."""
    try:
        from promptrev.storage import durability
    except ImportError:
        if mode != "off":
            raise SystemExit("this checkout has no durability setting: use --durability "
                             "off") from None
        return
    durability.configure(mode)


def report(rep: Reporter, n: int, what: str, op: str, mode: str,
           lat: dict[str, list[float]], grown: dict[str, int]) -> None:
    """Flat against nested for one kind of write in one durability mode."""
    rates = {layout: len(lat[layout]) / sum(lat[layout]) for layout in LAYOUTS}
    ratio = rates["nested"] / rates["flat"]
    rep.add(Result(
        f"{what}, {n:,} flat names, durability {mode}", rates["flat"], f"{op}s/s",
        baseline=rates["nested"], baseline_unit=f"{op}s/s",
        baseline_name=f"{what}, {n:,} nested names", ratio=ratio,
        ratio_note="nested/flat (time per write, flat over nested)",
        goal="flat within 1.5x of nested", passed=ratio <= 1.5,
        extra={"p50_ms": percentile(lat["flat"], 50) * 1e3,
               "p99_ms": percentile(lat["flat"], 99) * 1e3,
               "baseline_p50_ms": percentile(lat["nested"], 50) * 1e3, "n": len(lat["flat"])}))
    per = {layout: grown[layout] / len(lat[layout]) for layout in LAYOUTS}
    growth = per["flat"] / per["nested"] if per["nested"] else float("inf")
    rep.add(Result(
        f"repository growth per {op}, flat, durability {mode}", per["flat"] / 1024, "KiB",
        baseline=per["nested"] / 1024, baseline_unit="KiB", baseline_name="nested",
        ratio=growth, ratio_note="flat/nested", goal="flat within 2x of nested",
        passed=growth <= 2.0))


def main(argv=None) -> int:
    args = parse_args(argv)
    print_header("promptrev layout benchmark: flat against nested names", args)
    rep = Reporter("bench_layout", args)
    n = args.prompts
    order = [(k * STRIDE) % n for k in range(n)]
    with workdir(args, "promptrev-bench-layout-") as tmp:
        # warm-up (imports, the validation helper processes), so neither build pays it
        build(os.path.join(tmp, "warm-up"), flat_name, 300)[0].close()
        regs = {}
        for layout, name_of in LAYOUTS.items():
            reg, secs = build(os.path.join(tmp, layout), name_of, n)
            regs[layout] = reg
            rep.note(f"build_{layout}_s", round(secs, 1),
                     f"build: {n:,} {layout} prompts, each labelled, s")
        # one untimed warm-up write of each kind per registry
        for layout, reg in regs.items():
            name = LAYOUTS[layout](order[-1])
            reg.save(name, prompt_text(order[-1], 99), author=BENCH_AUTHOR)
            reg.set_label(name, "production", 2, author=BENCH_AUTHOR)

        modes = [m.strip() for m in args.durability.split(",") if m.strip()]
        keys = [(layout, op, mode) for layout in LAYOUTS for op in ("save", "move")
                for mode in modes]
        lat: dict[tuple, list[float]] = {key: [] for key in keys}
        grown = dict.fromkeys(keys, 0)
        k = dict.fromkeys(LAYOUTS, 0)
        for _round in range(args.rounds):
            for mode in modes:
                set_durability(mode)
                for op, count in (("save", args.saves), ("move", args.moves)):
                    for layout, reg in regs.items():
                        name_of = LAYOUTS[layout]
                        gc.collect()
                        before = reg.store.head()
                        for _ in range(max(1, count // args.rounds)):
                            i = order[k[layout] % (n - 1)]
                            k[layout] += 1
                            name = name_of(i)
                            start = time.perf_counter()
                            if op == "save":
                                reg.save(name, prompt_text(i, 1 + _round), author=BENCH_AUTHOR)
                            else:  # a label of its own for each name: its label file changes
                                reg.set_label(name, f"canary-{mode}-{_round}", 1,
                                              author=BENCH_AUTHOR)
                            lat[(layout, op, mode)].append(time.perf_counter() - start)
                        grown[(layout, op, mode)] += new_bytes(reg.path, before,
                                                               reg.store.head())
        for mode in modes:
            for op, what in (("save", "single saves"), ("move", "label moves")):
                report(rep, n, what, op, mode, {layout: lat[(layout, op, mode)]
                                                for layout in LAYOUTS},
                       {layout: grown[(layout, op, mode)] for layout in LAYOUTS})
        if "full" in modes and "off" in modes:
            for layout in LAYOUTS:
                full = len(lat[(layout, "save", "full")]) / sum(lat[(layout, "save", "full")])
                off = len(lat[(layout, "save", "off")]) / sum(lat[(layout, "save", "off")])
                rep.note(f"durable_cost_{layout}", round(full / off, 2),
                         f"{layout} single saves, durable (full) over off")
        for reg in regs.values():
            reg.close()
    rep.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
