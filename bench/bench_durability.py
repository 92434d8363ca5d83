"""What durability costs (issue 16): saves with PROMPTREV_DURABILITY=full against off.

    python3 bench/bench_durability.py            # root file system (the system temp)
    python3 bench/bench_durability.py --quick    # ~10x smaller smoke run

Run it on a real disk (the default temporary folder here is on the root file system);
on tmpfs (/dev/shm) a flush costs nothing and the figures say nothing. Every figure is
measured next to ``off`` in the same run, interleaved in rounds:

  1. single saves, one writer: full (group commit: one syncfs per flush), full with
     libgit2 fsyncing every file (the fallback where there is no syncfs), and off;
     GitPython's index.add+commit as the baseline of the ">= 20x GitPython" goal
  2. concurrent writers on one registry: threads of one process (one server worker) and
     separate processes (gunicorn workers), full against off
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BENCH_AUTHOR,
    Reporter,
    Result,
    base_parser,
    build_registry,
    describe_filesystem,
    filesystem_info,
    percentile,
    print_header,
    prompt_name,
    prompt_text,
    scaled,
    workdir,
)

MODES = {  # label -> (PROMPTREV_DURABILITY, method)
    "off": ("off", None),
    "full": ("full", "syncfs"),
    "full-fsync": ("full", "fsync"),
}


def parse_args(argv=None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=None,
                        help="single saves per mode in total (default 300; --quick 60)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleave the modes in this many rounds")
    parser.add_argument("--gitpython", type=int, default=None,
                        help="GitPython commits timed (default 15; --quick 4; 0 skips)")
    parser.add_argument("--writers", default="4",
                        help="concurrent writers, comma-separated counts (default 4)")
    parser.add_argument("--per-writer", type=int, default=None,
                        help="saves by each concurrent writer (default 60; --quick 15)")
    args = parser.parse_args(argv)
    args.prompts = scaled(args.prompts, 2_000, args.quick)
    args.single = scaled(args.single, 300, args.quick)
    if args.quick and args.single < 60:
        args.single = 60
    args.gitpython = args.gitpython if args.gitpython is not None else (4 if args.quick else 15)
    args.per_writer = scaled(args.per_writer, 60, args.quick)
    args.writers = [int(x) for x in str(args.writers).split(",") if x.strip()]
    return args


def configure(label: str) -> None:
    from promptrev.storage import durability

    mode, method = MODES[label]
    durability.configure(mode, method)


def single_saves(reg, label: str, indices: list[int], rev: int) -> list[float]:
    configure(label)
    lat = []
    for i in indices:
        text = prompt_text(i, rev)
        start = time.perf_counter()
        reg.save(prompt_name(i), text, author=BENCH_AUTHOR)
        lat.append(time.perf_counter() - start)
    return lat


def _thread_writer(path: str, indices: list[int], rev: int, barrier, out: list) -> None:
    from promptrev.registry import Registry

    with Registry.open(path) as reg:
        reg.sync()
        barrier.wait()
        for i in indices:
            reg.save(prompt_name(i), prompt_text(i, rev), author=BENCH_AUTHOR)
    out.append(len(indices))


def threads_rate(path: str, label: str, writers: int, per: int, base: int, rev: int) -> float:
    """Saves/s of ``writers`` threads, each with its own Registry, on one registry."""
    configure(label)
    barrier = threading.Barrier(writers + 1)
    out: list = []
    threads = [threading.Thread(target=_thread_writer, args=(
        path, list(range(base + w * per, base + (w + 1) * per)), rev, barrier, out))
        for w in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if sum(out) != writers * per:
        raise RuntimeError("a writer thread failed")
    return writers * per / seconds


def _process_writer(path: str, label: str, indices: list[int], rev: int, barrier,
                    times) -> None:
    from promptrev.registry import Registry

    configure(label)
    with Registry.open(path) as reg:
        reg.sync()
        barrier.wait()
        start = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process
        for i in indices:
            reg.save(prompt_name(i), prompt_text(i, rev), author=BENCH_AUTHOR)
        times.put((start, time.monotonic()))


def processes_rate(path: str, label: str, writers: int, per: int, base: int,
                   rev: int) -> float:
    """Saves/s of ``writers`` processes (as gunicorn workers are) on one registry."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(writers + 1)
    times = ctx.Queue()
    procs = [ctx.Process(target=_process_writer, args=(
        path, label, list(range(base + w * per, base + (w + 1) * per)), rev, barrier, times))
        for w in range(writers)]
    for p in procs:
        p.start()
    barrier.wait(timeout=120)
    spans = [times.get(timeout=600) for _ in procs]  # from the first start to the last save
    for p in procs:
        p.join()
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError("a writer process failed")
    return writers * per / (max(end for _, end in spans) - min(start for start, _ in spans))


def gitpython_rate(tmp: str, bare: str, n: int, count: int) -> float | None:
    if count <= 0:
        return None
    from bench_writes import gitpython_clone, gitpython_commit

    work = os.path.join(tmp, "work")
    repo = gitpython_clone(bare, work)
    gitpython_commit(repo, work, 0, 98)  # warm-up
    lat = []
    for k in range(count):
        start = time.perf_counter()
        gitpython_commit(repo, work, (k * 7919) % n, 99)
        lat.append(time.perf_counter() - start)
    return len(lat) / sum(lat)


def main(argv=None) -> int:
    args = parse_args(argv)
    print_header("promptrev durability benchmark", args)
    rep = Reporter("bench_durability", args)
    n = args.prompts
    with workdir(args, "promptrev-bench-durability-") as tmp:
        fs = filesystem_info(tmp)
        rep.note("filesystem", fs, describe_filesystem(fs))
        if fs.get("fs") == "tmpfs":
            print("  [note] tmpfs: a flush costs nothing here; run on a real disk", flush=True)
        bare = os.path.join(tmp, "registry")
        configure("off")
        reg, build_s = build_registry(bare, n)
        rep.note("build_s", round(build_s, 1), f"build: {n:,} prompts (durability off)")

        # -- 1. single saves, modes interleaved in rounds --------------------------------
        labels = list(MODES)
        lat: dict[str, list[float]] = {label: [] for label in labels}
        per_round = max(1, args.single // args.rounds)
        order = [(k * 7919) % n for k in range(n)]
        k = 0
        for label in labels:  # untimed warm-up of each
            single_saves(reg, label, [order[-1 - labels.index(label)]], 90)
        for rnd in range(args.rounds):
            for label in (labels if rnd % 2 == 0 else labels[::-1]):
                gc.collect()
                chunk = [order[(k + j) % n] for j in range(per_round)]
                k += per_round
                lat[label] += single_saves(reg, label, chunk, 1 + rnd)
        rates = {label: len(v) / sum(v) for label, v in lat.items()}
        reg.close()
        configure("off")
        gp = gitpython_rate(tmp, bare, n, args.gitpython)
        for label in labels:
            rate = rates[label]
            rep.add(Result(
                f"single saves, durability {label}", rate, "saves/s",
                baseline=rates["off"], baseline_name="durability off", ratio=rate / rates["off"],
                ratio_note="of off", goal=">= 300 saves/s and >= 20x GitPython",
                passed=rate >= 300 and (gp is None or rate / gp >= 20),
                extra={"n": len(lat[label]), "p50_ms": percentile(lat[label], 50) * 1e3,
                       "p99_ms": percentile(lat[label], 99) * 1e3,
                       "x_gitpython": rate / gp if gp else None}))
            rep.note(f"single_{label}_ms", {
                "p50": round(percentile(lat[label], 50) * 1e3, 2),
                "p99": round(percentile(lat[label], 99) * 1e3, 2),
                "x_gitpython": round(rate / gp, 1) if gp else None},
                f"single saves, durability {label}: latency ms, and times GitPython")
        if gp is not None:
            rep.note("gitpython_commits_per_s", round(gp, 2),
                     "GitPython index.add+index.commit in a clone, commits/s")

        # -- 2. concurrent writers: threads, then processes ------------------------------
        base = n  # new prompts: every writer saves its own
        rev = 1
        for writers in args.writers:
            for kind, measure in (("threads", threads_rate), ("processes", processes_rate)):
                got: dict[str, list[float]] = {"off": [], "full": []}
                for rnd in range(2):
                    for label in (("off", "full") if rnd == 0 else ("full", "off")):
                        gc.collect()
                        got[label].append(measure(bare, label, writers, args.per_writer,
                                                  base, rev))
                        base += writers * args.per_writer
                full, off = (max(got["full"]), max(got["off"]))
                rep.add(Result(
                    f"{writers} concurrent writers ({kind}), durability full", full,
                    "saves/s", baseline=off, baseline_name="durability off",
                    ratio=full / off, ratio_note="of off",
                    extra={"full_rounds": got["full"], "off_rounds": got["off"],
                           "single_full": rates["full"]}))
                rep.note(f"{kind}_{writers}", {
                    "full": [round(x) for x in got["full"]],
                    "off": [round(x) for x in got["off"]],
                    "full_vs_single_full": round(full / rates["full"], 2)},
                    f"{writers} {kind}: saves/s per round (best is reported), and the best "
                    "against one durable writer")
    rep.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
