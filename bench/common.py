"""Shared helpers for the promptrev benchmarks (see bench/README.md).

Every figure is printed next to a baseline measured in the same run, as a ratio, so that
a noisy or slow machine moves both sides together. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

BENCH_AUTHOR = "bench <bench@example.com>"

# Folder layout: team<NN>/area<NN>/prompt-<NNNNN>, 50 prompts per area folder,
# 20 areas per team, so no tree holds more than ~50 entries (10,000 prompts -> 10 teams).
PER_AREA = 50
AREAS_PER_TEAM = 20

# A realistic small Prompty file. Every prompt differs (index, area, revision), so every
# save is a new blob, as it would be with real edits.
PROMPT_TEMPLATE = """\
---
name: {leaf}
description: Support reply for team {team}, area {area} (prompt {i}, revision {rev}).
authors: [bench]
model:
  api: chat
  configuration:
    type: openai
    name: gpt-4o-mini
  parameters:
    temperature: {temperature}
    max_tokens: 400
inputs:
  customer:
    type: string
    description: The customer's first name.
    sample: Dana
  question:
    type: string
    description: What the customer asked.
    sample: How do I reset my password?
---
system:
You are support agent #{i} for product area {area} of team {team} (revision {rev}).
Answer in at most three short paragraphs, be polite, and never invent account details.
If the question is not about area {area}, say so and suggest the right channel.

user:
Hi, I am {{{{ customer }}}}. {{{{ question }}}}
"""

RENDER_VARS = {"customer": "Dana", "question": "How do I reset my password?"}


def prompt_name(i: int) -> str:
    """Nested name of prompt ``i``: ``team07/area13/prompt-07654``."""
    team = i // (PER_AREA * AREAS_PER_TEAM)
    area = (i // PER_AREA) % AREAS_PER_TEAM
    return f"team{team:02d}/area{area:02d}/prompt-{i:05d}"


def prompt_text(i: int, rev: int = 0) -> str:
    """The Prompty text of prompt ``i`` at revision ``rev`` (different for every pair)."""
    team = i // (PER_AREA * AREAS_PER_TEAM)
    area = (i // PER_AREA) % AREAS_PER_TEAM
    return PROMPT_TEMPLATE.format(leaf=f"prompt-{i:05d}", team=f"{team:02d}",
                                  area=f"{area:02d}", i=i, rev=rev,
                                  temperature=round(0.1 + (i % 7) / 10, 1))


def prompt_path(i: int) -> str:
    """Path of prompt ``i`` inside the registry's Git tree."""
    return f"prompts/{prompt_name(i)}.prompty"


def build_registry(path: str, n: int, *, batch: int = 1000, rev: int = 0):
    """Create a registry at ``path`` holding prompts 0..n-1; return (registry, seconds).

    Uses the public API (one transaction per batch, ``save_many``), so the build itself is a
    bulk import.
    """
    from promptrev.registry import Registry

    reg = Registry.init(path, author=BENCH_AUTHOR)
    seconds = bulk_save(reg, range(n), rev=rev, batch=batch, message="import")
    return reg, seconds


def bulk_save(reg, indices, *, rev: int, batch: int, message: str) -> float:
    """Save prompt ``i`` at revision ``rev`` for each index, ``batch`` per transaction."""
    indices = list(indices)
    start = time.perf_counter()
    for first in range(0, len(indices), batch):
        chunk = indices[first:first + batch]
        with reg.transaction(message=f"{message} {first}..{first + len(chunk) - 1}",
                             author=BENCH_AUTHOR) as tx:
            tx.save_many([(prompt_name(i), prompt_text(i, rev)) for i in chunk])
    return time.perf_counter() - start


# ---- measuring --------------------------------------------------------------------------
def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0..100) with linear interpolation (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    data = sorted(values)
    k = (len(data) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def time_each(fn: Callable[[], Any], n: int, *, warmup: int = 0) -> list[float]:
    """Call ``fn`` ``warmup`` then ``n`` times; return each timed call's seconds."""
    for _ in range(warmup):
        fn()
    gc.collect()
    out = []
    clock = time.perf_counter
    for _ in range(n):
        start = clock()
        fn()
        out.append(clock() - start)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    """p50/p90/p99/mean/min/max of a list of seconds."""
    return {"n": len(samples), "p50": percentile(samples, 50), "p90": percentile(samples, 90),
            "p99": percentile(samples, 99), "mean": sum(samples) / len(samples),
            "min": min(samples), "max": max(samples)}


def run_git(*args: str, input: bytes | None = None, cwd: str | None = None,
            env: dict[str, str] | None = None) -> bytes:
    """Run the git CLI; return stdout (raises on failure). ``env`` adds variables."""
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="bench",
               GIT_AUTHOR_EMAIL="bench@example.com", GIT_COMMITTER_NAME="bench",
               GIT_COMMITTER_EMAIL="bench@example.com", **(env or {}))
    return subprocess.run(["git", *args], input=input, cwd=cwd, env=env, check=True,
                          capture_output=True).stdout


# ---- results ----------------------------------------------------------------------------
@dataclass
class Result:
    """One reported figure with its same-run baseline."""

    metric: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_unit: str | None = None
    baseline_name: str | None = None
    ratio: float | None = None
    ratio_note: str | None = None
    goal: str | None = None
    passed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """``metric: value unit  (baseline: ..., ratio: X.Xx, goal: ...)  PASS/FAIL``."""
        parts = []
        if self.baseline is not None:
            who = f" {self.baseline_name}" if self.baseline_name else ""
            parts.append(f"baseline{who}: {fmt(self.baseline)} {self.baseline_unit or self.unit}")
        if self.ratio is not None:
            note = f" {self.ratio_note}" if self.ratio_note else ""
            parts.append(f"ratio: {self.ratio:.1f}x{note}")
        if self.goal:
            parts.append(f"goal: {self.goal}")
        tail = f"  ({', '.join(parts)})" if parts else ""
        verdict = "" if self.passed is None else ("  PASS" if self.passed else "  FAIL")
        return f"{self.metric}: {fmt(self.value)} {self.unit}{tail}{verdict}"


def fmt(value: float) -> str:
    """Three significant figures, no exponent for the sizes we print."""
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


class Reporter:
    """Collects results and info lines, prints them as they come, writes JSON at the end."""

    def __init__(self, script: str, args: argparse.Namespace):
        self.script = script
        self.args = args
        self.results: list[Result] = []
        self.info: dict[str, Any] = {}

    def add(self, result: Result) -> Result:
        self.results.append(result)
        print(result.line(), flush=True)
        return result

    def note(self, key: str, value: Any, text: str | None = None) -> None:
        """Record a figure that has no goal (build times, component costs)."""
        self.info[key] = value
        print(f"  [info] {text or key}: {value}", flush=True)

    def write(self) -> None:
        if not getattr(self.args, "json", None):
            return
        self.info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        data = {"script": self.script, "args": vars(self.args), "machine": machine_info(),
                "results": [asdict(r) for r in self.results], "info": self.info}
        with open(self.args.json, "w") as fh:
            json.dump(data, fh, indent=2, default=str)


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import jinja2
    import pygit2
    import sqlalchemy

    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "pygit2": pygit2.__version__,
        "libgit2": pygit2.LIBGIT2_VERSION,
        "sqlalchemy": sqlalchemy.__version__,
        "jinja2": jinja2.__version__,
    }
    with contextlib.suppress(Exception):
        import sqlmodel
        info["sqlmodel"] = sqlmodel.__version__
    with contextlib.suppress(Exception):
        import git
        info["gitpython"] = git.__version__
    with contextlib.suppress(Exception):
        info["git"] = run_git("--version").decode().strip()
    with contextlib.suppress(Exception):
        info["nproc_cmd"] = subprocess.run(["nproc"], capture_output=True, text=True
                                           ).stdout.strip()
    with contextlib.suppress(Exception):
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    with contextlib.suppress(Exception):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        info["promptrev_commit"] = run_git("-C", root, "rev-parse", "--short", "HEAD"
                                           ).decode().strip()
        dirty = run_git("-C", root, "status", "--porcelain", "--", "promptrev").decode()
        info["promptrev_dirty"] = bool(dirty.strip())
        import promptrev
        where = os.path.dirname(os.path.dirname(os.path.abspath(promptrev.__file__)))
        if os.path.realpath(where) != os.path.realpath(root):
            # imported from elsewhere (e.g. PYTHONPATH=<exported commit>): say so
            info["promptrev_commit"] = f"imported from {where}"
            info["promptrev_dirty"] = False
    return info


def filesystem_info(path: str) -> dict[str, Any]:
    """The file system under ``path``: type, device, and for ext4 whether it has a journal.

    On ext4 *without* a journal, creating a file skips every inode freed in the last 60 s
    (up to 6 min while its inode table block is dirty) in the folder's block group, one
    buffer lookup each, so creation slows down after a burst of deletions; a journaled
    ext4 does not do this. A save creates about seven files (see docs/performance.md).
    """
    path = os.path.realpath(path)
    best: tuple[str, str, str] | None = None
    with contextlib.suppress(OSError), open("/proc/mounts") as fh:
        for line in fh:
            device, mount, fstype = line.split()[:3]
            mount = mount.replace("\\040", " ")
            inside = path == mount or path.startswith(mount.rstrip("/") + "/")
            if inside and (best is None or len(mount) > len(best[1])):
                best = (device, mount, fstype)
    if best is None:
        return {"fs": "unknown"}
    device, mount, fstype = best
    info: dict[str, Any] = {"fs": fstype, "device": device, "mount": mount}
    if fstype in ("ext3", "ext4") and os.path.isdir("/proc/fs/jbd2"):
        name = os.path.basename(os.path.realpath(device))
        info["journal"] = any(entry.rsplit("-", 1)[0] == name
                              for entry in os.listdir("/proc/fs/jbd2"))
    return info


def file_create_us(folder: str, n: int = 200) -> float:
    """Median µs to create a small new file in ``folder`` (ext4 picks the folder's group).

    Give the folder whose block group matters (the registry's own). The files are left in
    place and go with the benchmark's temporary folder: deleting them here would itself
    slow down the next creations on ext4 without a journal.
    """
    tag = f".fs-probe-{os.getpid()}-{time.monotonic_ns()}"
    times = []
    for i in range(n):
        start = time.perf_counter()
        fd = os.open(os.path.join(folder, f"{tag}-{i}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                     0o644)
        os.write(fd, b"0" * 41)
        os.close(fd)
        times.append(time.perf_counter() - start)
    return percentile(times, 50) * 1e6


def describe_filesystem(info: dict[str, Any]) -> str:
    """``ext4 without a journal on /dev/vda (/)``."""
    text = info.get("fs", "unknown")
    if "journal" in info:
        text += " with a journal" if info["journal"] else " without a journal"
    if "device" in info:
        text += f" on {info['device']} ({info['mount']})"
    return text


def print_header(title: str, args: argparse.Namespace) -> None:
    info = machine_info()
    print(f"== {title}  ({info['date']})")
    print(f"   nproc={info.get('nproc_cmd', info['nproc'])} python={info['python']} "
          f"pygit2={info['pygit2']} libgit2={info['libgit2']} "
          f"sqlalchemy={info['sqlalchemy']} loadavg={info.get('loadavg')}")
    print(f"   promptrev commit {info.get('promptrev_commit')}"
          f"{' + uncommitted changes in promptrev/' if info.get('promptrev_dirty') else ''}")
    print(f"   args: {vars(args)}", flush=True)


@contextlib.contextmanager
def workdir(args: argparse.Namespace, prefix: str) -> Iterator[str]:
    """A temporary directory (under ``--dir`` if given), removed afterwards unless --keep."""
    path = tempfile.mkdtemp(prefix=prefix, dir=getattr(args, "dir", None))
    try:
        yield path
    finally:
        if getattr(args, "keep", False):
            print(f"   kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="scale every size down ~10x (smoke run, figures not comparable)")
    parser.add_argument("--prompts", type=int, default=None,
                        help="prompts in the registry (default 10,000; --quick 1,000)")
    parser.add_argument("--dir", default=None,
                        help="parent of the temporary directory (default: system temp); "
                             "the file system matters: Git writes loose objects")
    parser.add_argument("--json", default=None, help="also write results to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser


def scaled(value: int | None, full: int, quick: bool) -> int:
    """``value`` if given, else ``full`` (or ~full/10 with --quick)."""
    if value is not None:
        return value
    return max(1, full // 10) if quick else full
