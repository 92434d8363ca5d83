"""Single writes on ext4 with and without a journal, same disk, same run (needs root).

    sudo python3 bench/bench_fs.py                  # 10,000 prompts, 6 rounds of 300 saves
    sudo python3 bench/bench_fs.py --quick

Why: the single-write rate of bench_writes.py swings by 2x on the development VM, whose
root file system is ext4 without a journal. There, creating a file skips, one buffer
lookup each, every inode of the folder's block group freed in the last minute (up to six
while the inode table block is dirty); a journaled ext4 skips nothing. A save creates
about seven files (a loose object per blob, tree and commit, plus the ref's lock file),
so deletions shortly before — a test run cleaning up, `git gc` pruning loose objects, a
registry copy removed — slow every save down.

How: two loop-mounted ext4 images on the same disk, made by `mkfs.ext4` with and without
`-O ^has_journal` (plus tmpfs as a no-disk reference). Each round, on each file system in
turn: remove the previous round's copy of the registry (the deletions), copy a freshly
built registry of N prompts, then time S single saves through the public API. Round 1
runs on clean file systems. Printed per file system: versions/s of the clean round and
the median of the later ones, next to the journaled ext4 measured in the same rounds.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BENCH_AUTHOR,
    Reporter,
    Result,
    base_parser,
    build_registry,
    file_create_us,
    print_header,
    prompt_name,
    prompt_text,
    scaled,
)

STRIDE = 7919


def parse_args(argv=None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=None,
                        help="saves per file system per round (default 300; --quick 100)")
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds; round 1 runs on clean file systems (default 6)")
    parser.add_argument("--image-gib", type=int, default=2,
                        help="size of each sparse ext4 image (default 2 GiB)")
    parser.add_argument("--no-tmpfs", action="store_true",
                        help="leave out the tmpfs reference (/dev/shm)")
    args = parser.parse_args(argv)
    args.prompts = scaled(args.prompts, 10_000, args.quick)
    args.single = args.single or (100 if args.quick else 300)
    return args


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def mount_image(image: str, mountpoint: str, journal: bool, gib: int) -> None:
    with open(image, "wb") as fh:
        fh.truncate(gib * 1024 ** 3)
    sh("mkfs.ext4", "-q", "-F", *(() if journal else ("-O", "^has_journal")), image)
    os.makedirs(mountpoint, exist_ok=True)
    sh("mount", "-o", "loop", image, mountpoint)


def timed_saves(path: str, n_prompts: int, count: int, start: int, rev: int) -> float:
    """Versions/s of ``count`` single saves into the registry at ``path``.

    Runs in a fresh interpreter, so each round starts alike and nothing keeps files open on
    the file system that is unmounted afterwards.
    """
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", path, str(n_prompts),
         str(count), str(start), str(rev)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"timed saves failed: {result.stderr.strip()[-2000:]}")
    return float(result.stdout.split()[-1])


def child(path: str, n_prompts: int, count: int, start: int, rev: int) -> None:
    """The timed part of :func:`timed_saves`; prints versions/s."""
    from promptrev import Registry

    with Registry.open(path) as reg:
        first = (start * STRIDE) % n_prompts  # warm-up: imports, caches
        reg.save(prompt_name(first), prompt_text(first, rev + 1000), author=BENCH_AUTHOR)
        items = [(k * STRIDE) % n_prompts for k in range(start + 1, start + 1 + count)]
        texts = [(prompt_name(i), prompt_text(i, rev)) for i in items]
        begin = time.perf_counter()
        for name, text in texts:
            reg.save(name, text, author=BENCH_AUTHOR)
        print(count / (time.perf_counter() - begin))


def unmount(point: str) -> None:
    """Unmount a loop-mounted image (``mount -o loop`` frees the loop device with it)."""
    done = subprocess.run(["umount", point], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"  [warn] umount {point}: {done.stderr.strip()}; unmounting lazily")
        subprocess.run(["umount", "-l", point], capture_output=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        path, *numbers = argv[1:]
        child(path, *(int(x) for x in numbers))
        return 0
    args = parse_args(argv)
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4"):
        print("bench_fs.py needs root and mkfs.ext4 (it loop-mounts two ext4 images)")
        return 77
    print_header("promptrev single writes: ext4 with and without a journal", args)
    rep = Reporter("bench_fs", args)
    base = tempfile.mkdtemp(prefix="promptrev-bench-fs-", dir=args.dir or "/var/tmp")
    mounts: dict[str, str] = {}
    try:
        source = os.path.join(base, "registry")
        reg, build_s = build_registry(source, args.prompts)
        reg.close()
        rep.note("build_s", round(build_s, 1), f"built {args.prompts:,} prompts")
        for label, journal in (("ext4 with a journal", True),
                               ("ext4 without a journal", False)):
            point = os.path.join(base, "journal" if journal else "nojournal")
            mount_image(point + ".img", point, journal, args.image_gib)
            mounts[label] = point
        if not args.no_tmpfs and os.path.isdir("/dev/shm"):
            mounts["tmpfs (no disk)"] = tempfile.mkdtemp(prefix="promptrev-bench-fs-",
                                                         dir="/dev/shm")
        rates: dict[str, list[float]] = {label: [] for label in mounts}
        creates: dict[str, list[float]] = {label: [] for label in mounts}
        labels = list(mounts)
        for round_no in range(args.rounds):
            order = labels if round_no % 2 == 0 else labels[::-1]
            for label in order:
                copy = os.path.join(mounts[label], "registry")
                shutil.rmtree(copy, ignore_errors=True)  # the previous round's copy
                shutil.copytree(source, copy, symlinks=True)
                creates[label].append(file_create_us(copy))
                rate = timed_saves(copy, args.prompts, args.single,
                                   start=round_no * (args.single + 1), rev=round_no + 1)
                rates[label].append(rate)
                print(f"  round {round_no + 1} {label}: {rate:.0f} versions/s "
                      f"(creating a file: {creates[label][-1]:.0f} µs)", flush=True)
        ref = "ext4 with a journal"
        for when, pick in (("clean file system (round 1)", lambda v: v[0]),
                           ("after deleting the previous copy (median of rounds 2+)",
                            lambda v: statistics.median(v[1:]) if len(v) > 1 else v[0])):
            for label in labels:
                value, baseline = pick(rates[label]), pick(rates[ref])
                rep.add(Result(
                    f"single writes, {label}, {when}", value, "versions/s",
                    baseline=baseline, baseline_unit="versions/s",
                    baseline_name="ext4 with a journal, same rounds",
                    ratio=value / baseline, ratio_note="of journaled",
                    extra={"rates": [round(r) for r in rates[label]],
                           "create_us": [round(c, 1) for c in creates[label]]}))
    finally:
        for label, point in mounts.items():
            if label.startswith("ext4"):
                unmount(point)
            else:
                shutil.rmtree(point, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    rep.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
