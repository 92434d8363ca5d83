"""Read benchmarks: warm resolve+render by label, cache invalidation, history of one prompt.

    python3 bench/bench_reads.py            # full size: 10,000 prompts, 100,000+ versions
    python3 bench/bench_reads.py --quick    # ~10x smaller smoke run

Figures (each with a baseline measured in this run):
  3. reg.render("<name>@production", vars), warm, in process: p50 <= 200 us
     (baselines: plain jinja2 render of the same template = floor;
      `git show main:prompts/<path>` per read = naive tooling)
     + the first read after another Registry instance moved the label (reported)
  4. reg.history(name) for a prompt with 1,000 versions among 100,000: p50 <= 5 ms
     (baseline: `git log --format=%H -- prompts/<path>`)
"""

from __future__ import annotations

import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BENCH_AUTHOR,
    RENDER_VARS,
    Reporter,
    Result,
    base_parser,
    build_registry,
    fmt,
    percentile,
    print_header,
    prompt_name,
    prompt_path,
    prompt_text,
    run_git,
    scaled,
    summary,
    time_each,
    workdir,
)

US = 1e6
MS = 1e3


def parse_args(argv=None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=None,
                        help="timed warm renders (default 20,000; --quick 2,000)")
    parser.add_argument("--git-show", type=int, default=None,
                        help="timed `git show` subprocess reads (default 200; --quick 20)")
    parser.add_argument("--invalidations", type=int, default=None,
                        help="label moves by a second instance, each followed by a timed "
                             "first read (default 30; --quick 5)")
    parser.add_argument("--history-commits", type=int, default=None,
                        help="commits in the history build; the hot prompt gets one version "
                             "per commit (default 1,000; --quick 100)")
    parser.add_argument("--per-commit", type=int, default=100,
                        help="versions per history-build commit: the hot prompt + others "
                             "(default 100, so 1,000 commits make 100,000 versions)")
    parser.add_argument("--history-build", choices=("api", "store"), default="api",
                        help="api: one Registry transaction per commit (default; validates "
                             "every prompt, ~5 min at full size on 2 cores). store: write the "
                             "same commits with GitStore directly, as a plain `git push` would, "
                             "then time the index catching up with all of them at once")
    parser.add_argument("--history-calls", type=int, default=None,
                        help="timed reg.history() calls (default 50; --quick 20)")
    parser.add_argument("--git-log", type=int, default=None,
                        help="timed `git log -- path` subprocess calls (default 10; quick 3)")
    parser.add_argument("--batch", type=int, default=1000,
                        help="saves per transaction when building the registry")
    args = parser.parse_args(argv)
    args.prompts = scaled(args.prompts, 10_000, args.quick)
    args.renders = scaled(args.renders, 20_000, args.quick)
    args.git_show = scaled(args.git_show, 200, args.quick)
    args.invalidations = args.invalidations or (5 if args.quick else 30)
    args.history_commits = scaled(args.history_commits, 1000, args.quick)
    args.history_calls = args.history_calls or (20 if args.quick else 50)
    args.git_log = args.git_log or (3 if args.quick else 10)
    if args.per_commit < 1 or args.per_commit > args.prompts:
        parser.error("--per-commit must be between 1 and --prompts")
    return args


def us(stats: dict, key: str) -> float:
    return stats[key] * US


def bench_render(args, rep: Reporter, reg, bare: str, n: int) -> None:
    import jinja2

    from promptrev.model.prompty import split_front_matter
    from promptrev.registry import Registry

    idx = min(n - 1, int(n * 0.4567))
    name = prompt_name(idx)
    # v1 = rev 0 (from the build), v2 = rev 1; production -> v1, so the label really
    # has to be resolved (it is not simply "latest").
    reg.save(name, prompt_text(idx, 1), author=BENCH_AUTHOR)
    reg.set_label(name, "production", 1, author=BENCH_AUTHOR)
    ref = f"{name}@production"
    expect = f"#{idx} for"
    messages = reg.render(ref, RENDER_VARS)
    assert "(revision 0)" in messages[0].content and expect in messages[0].content, messages

    # -- warm render through the registry ----------------------------------------------
    warm = summary(time_each(lambda: reg.render(ref, RENDER_VARS), args.renders,
                             warmup=min(1000, args.renders)))

    # -- floor: a plain jinja2 render of the same template string ----------------------
    text = prompt_text(idx, 0)
    body = split_front_matter(text)[1]
    template = jinja2.Environment(keep_trailing_newline=True).from_string(body)
    assert "Hi, I am Dana." in template.render(RENDER_VARS)
    floor = summary(time_each(lambda: template.render(**RENDER_VARS), args.renders,
                              warmup=min(1000, args.renders)))

    # -- naive tooling: one `git show` process per read --------------------------------
    path = prompt_path(idx)

    def git_show():
        return run_git("--git-dir", bare, "show", f"main:{path}")

    assert b"(revision 1)" in git_show()
    cold = summary(time_each(git_show, args.git_show, warmup=2))

    rep.add(Result(
        f"resolve @label + render, warm, p50 (n={args.renders:,})", us(warm, "p50"), "us",
        baseline=us(floor, "p50"), baseline_unit="us", baseline_name="plain jinja2 render",
        ratio=warm["p50"] / floor["p50"], ratio_note="of the floor", goal="p50 <= 200 us",
        passed=us(warm, "p50") <= 200,
        extra={"p90_us": us(warm, "p90"), "p99_us": us(warm, "p99"),
               "max_us": us(warm, "max"), "floor_p90_us": us(floor, "p90"),
               "floor_p99_us": us(floor, "p99")}))
    rep.add(Result("resolve @label + render, warm, p90", us(warm, "p90"), "us",
                   baseline=us(floor, "p90"), baseline_name="plain jinja2 render",
                   ratio=warm["p90"] / floor["p90"], ratio_note="of the floor"))
    rep.add(Result("resolve @label + render, warm, p99", us(warm, "p99"), "us",
                   baseline=us(floor, "p99"), baseline_name="plain jinja2 render",
                   ratio=warm["p99"] / floor["p99"], ratio_note="of the floor"))
    rep.add(Result(
        f"git show main:<path> per read (subprocess, n={args.git_show}), p50",
        us(cold, "p50"), "us", baseline=us(warm, "p50"), baseline_name="promptrev warm render",
        ratio=cold["p50"] / warm["p50"], ratio_note="slower than promptrev",
        extra={"p90_us": us(cold, "p90"), "p99_us": us(cold, "p99"),
               "note": "reads the file at main only: no label resolution, no render"}))

    # -- decomposition (info): resolve alone, render of the cached Prompt alone --------
    prompt = reg.prompt(ref)
    resolve = summary(time_each(lambda: reg.resolve(ref, "prompt"), min(args.renders, 5000),
                                warmup=100))
    head = summary(time_each(reg.store.head, min(args.renders, 5000), warmup=100))
    render_only = summary(time_each(lambda: prompt.render(RENDER_VARS),
                                    min(args.renders, 5000), warmup=100))
    rep.note("render_decomposition_p50_us", {
        "reg.resolve (cached, incl. sync/ref read)": round(us(resolve, "p50"), 1),
        "GitStore.head (ref read)": round(us(head, "p50"), 1),
        "Prompt.render (sandbox + role split)": round(us(render_only, "p50"), 1)},
        "warm render decomposition, p50 us")

    # -- first read after ANOTHER Registry instance moved the label --------------------
    other = Registry.open(bare)
    first, second = [], []
    version_text = {1: "(revision 0)", 2: "(revision 1)"}
    for k in range(args.invalidations):
        target = 2 if k % 2 == 0 else 1
        other.set_label(name, "production", target, author=BENCH_AUTHOR)
        gc.collect()
        start = time.perf_counter()
        messages = reg.render(ref, RENDER_VARS)
        first.append(time.perf_counter() - start)
        assert version_text[target] in messages[0].content, (target, messages[0].content)
        start = time.perf_counter()
        reg.render(ref, RENDER_VARS)
        second.append(time.perf_counter() - start)
    # ... and after another instance saved an unrelated prompt (same invalidation path)
    unrelated = []
    for k in range(args.invalidations):
        j = (idx + 1 + k) % n
        other.save(prompt_name(j), prompt_text(j, 7), author=BENCH_AUTHOR)
        start = time.perf_counter()
        reg.render(ref, RENDER_VARS)
        unrelated.append(time.perf_counter() - start)
    other.close()
    inv = summary(first)
    rep.add(Result(
        f"first read after another instance moved the label, p50 (n={len(first)})",
        inv["p50"] * MS, "ms", baseline=us(warm, "p50") / 1e3, baseline_unit="ms",
        baseline_name="warm render", ratio=inv["p50"] / warm["p50"],
        ratio_note="of warm",
        extra={"p90_ms": inv["p90"] * MS, "max_ms": inv["max"] * MS,
               "second_read_p50_us": percentile(second, 50) * US,
               "after_unrelated_save_p50_ms": percentile(unrelated, 50) * MS}))
    rep.note("invalidation_detail", {
        "first read after label move p50/p90/max ms": [round(inv[k] * MS, 2)
                                                       for k in ("p50", "p90", "max")],
        "second read p50 us": round(percentile(second, 50) * US, 1),
        "first read after unrelated save p50 ms": round(percentile(unrelated, 50) * MS, 2)},
        "cache invalidation path")


def build_history(args, rep: Reporter, reg, n: int) -> tuple[int, int]:
    """C commits, each a new version of the hot prompt plus per_commit-1 other prompts."""
    hot = min(n - 1, n // 2 + 1)
    others = [i for i in range(n) if i != hot]
    pos = 0
    start = time.perf_counter()
    for c in range(args.history_commits):
        rev = 1000 + c
        batch = [hot]
        for _ in range(args.per_commit - 1):
            batch.append(others[pos % len(others)])
            pos += 1
        if args.history_build == "api":
            with reg.transaction(message=f"history batch {c}", author=BENCH_AUTHOR) as tx:
                for i in batch:
                    tx.save(prompt_name(i), prompt_text(i, rev))
        else:
            _store_commit(reg.store, batch, rev, f"history batch {c}")
    secs = time.perf_counter() - start
    versions = args.history_commits * args.per_commit
    rep.note("history_build", {"mode": args.history_build, "commits": args.history_commits,
                               "versions": versions, "seconds": round(secs, 1),
                               "versions_per_s": round(versions / secs)},
             f"history build ({args.history_build}), {args.per_commit} versions per commit")
    if args.history_build == "store":
        start = time.perf_counter()
        reg.sync()
        secs = time.perf_counter() - start
        rep.note("index_catch_up", {"commits": args.history_commits, "versions": versions,
                                    "seconds": round(secs, 2),
                                    "versions_per_s": round(versions / secs)},
                 "index catch-up with commits made outside the registry (reg.sync())")
    return hot, versions


def _store_commit(store, indices, rev: int, message: str) -> None:
    """Commit new versions straight through GitStore (no validation, no index update)."""
    from promptrev.storage.gitstore import Signature

    head = store.head()
    changes = {prompt_path(i): store.write_blob(prompt_text(i, rev).encode())
               for i in indices}
    sha = store.commit(head, changes, message, Signature.parse(BENCH_AUTHOR))
    store.move_main(head, sha, f"bench: {message}")


def bench_history(args, rep: Reporter, reg, bare: str, hot: int, total_versions: int) -> None:
    from promptrev.registry import Registry

    name = prompt_name(hot)
    expected = args.history_commits + 1  # + the version from the initial build
    versions = reg.history(name)
    assert len(versions) == expected, (len(versions), expected)
    assert versions[0].number == expected and versions[-1].number == 1
    ours = summary(time_each(lambda: reg.history(name), args.history_calls, warmup=3))

    def git_log():
        return run_git("--git-dir", bare, "log", "--format=%H", "main", "--",
                       prompt_path(hot))

    assert len(git_log().split()) == expected
    theirs = summary(time_each(git_log, args.git_log, warmup=1))
    rep.add(Result(
        f"history of 1 prompt ({expected:,} versions among {total_versions:,}), p50 "
        f"(n={args.history_calls})", ours["p50"] * MS, "ms",
        baseline=theirs["p50"] * MS, baseline_unit="ms",
        baseline_name="git log --format=%H -- <path>", ratio=theirs["p50"] / ours["p50"],
        ratio_note="faster", goal="p50 <= 5 ms", passed=ours["p50"] * MS <= 5,
        extra={"p90_ms": ours["p90"] * MS, "max_ms": ours["max"] * MS,
               "git_log_n": args.git_log, "git_log_p90_ms": theirs["p90"] * MS}))

    # info: the same call on a freshly opened Registry (new engine, empty caches)
    start = time.perf_counter()
    fresh = Registry.open(bare)
    opened = time.perf_counter() - start
    start = time.perf_counter()
    fresh.history(name)
    first = time.perf_counter() - start
    fresh.close()
    rep.note("history_fresh_instance_ms", {"Registry.open": round(opened * MS, 2),
                                           "first history()": round(first * MS, 2)},
             "history on a freshly opened Registry, ms")


def main(argv=None) -> int:
    args = parse_args(argv)
    print_header("promptrev read benchmarks", args)
    rep = Reporter("bench_reads", args)
    n = args.prompts
    with workdir(args, "promptrev-bench-reads-") as tmp:
        bare = os.path.join(tmp, "registry")
        reg, build_s = build_registry(bare, n, batch=args.batch)
        rep.note("build_versions_per_s", round(n / build_s),
                 f"build: {n:,} prompts, {args.batch}/transaction, versions/s "
                 f"({build_s:.1f} s)")
        bench_render(args, rep, reg, bare, n)
        hot, versions = build_history(args, rep, reg, n)
        total = n + versions + 2 * args.invalidations + 1
        bench_history(args, rep, reg, bare, hot, total)
        # info: does the warm render stay fast on the big registry?
        idx = min(n - 1, int(n * 0.4567))
        ref = f"{prompt_name(idx)}@production"
        late = summary(time_each(lambda: reg.render(ref, RENDER_VARS),
                                 min(args.renders, 5000), warmup=500))
        rep.note("render_after_history_build_us",
                 {k: round(us(late, k), 1) for k in ("p50", "p90", "p99")},
                 f"warm render p50/p90/p99 us with {total:,} versions in the registry")
        reg.close()
        rep.note("registry_disk", _disk(bare), "registry on disk")
    rep.write()
    return 0


def _disk(path: str) -> dict:
    files = size = 0
    for folder, _dirs, names in os.walk(path):
        for fname in names:
            files += 1
            size += os.path.getsize(os.path.join(folder, fname))
    return {"files": files, "MB": round(size / 1e6, 1), "human": fmt(size / 1e6) + " MB"}


if __name__ == "__main__":
    sys.exit(main())
