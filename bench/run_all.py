"""Run every promptrev benchmark and print one Markdown table of the results.

    python3 bench/run_all.py                  # full size (several minutes on 2 cores)
    python3 bench/run_all.py --quick          # smoke run, ~10x smaller
    python3 bench/run_all.py --out results/   # also keep each script's JSON and log

Each script runs in its own interpreter, one after the other (never in parallel: the
machine is small and the figures are wall-clock). Options after ``--`` go to every
script, e.g. ``python3 bench/run_all.py -- --dir /var/tmp``. A script that exits with
77 could not run here (bench_server.py without ``wrk``) and is reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = {"writes": "bench_writes.py", "reads": "bench_reads.py",
           "server": "bench_server.py", "eval": "bench_eval.py"}
SKIPPED = 77  # exit status of a script that cannot run on this machine
sys.path.insert(0, HERE)

from common import fmt, machine_info  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~10x smaller smoke run")
    parser.add_argument("--only", choices=sorted(SCRIPTS), action="append",
                        help="run only this script (repeatable)")
    parser.add_argument("--out", default=None,
                        help="folder for each script's JSON results and log")
    parser.add_argument("--markdown", default=None, help="write the table to this file too")
    parser.add_argument("rest", nargs=argparse.REMAINDER,
                        help="after --: options passed to every script")
    args = parser.parse_args(argv)
    rest = [a for a in args.rest if a != "--"]
    out = args.out or tempfile.mkdtemp(prefix="promptrev-bench-results-")
    os.makedirs(out, exist_ok=True)

    reports = []
    failed = []
    skipped = []
    for key in args.only or list(SCRIPTS):
        json_path = os.path.join(out, f"{key}.json")
        cmd = [sys.executable, os.path.join(HERE, SCRIPTS[key]), "--json", json_path, *rest]
        if args.quick:
            cmd.append("--quick")
        print(f"$ {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        with open(os.path.join(out, f"{key}.log"), "w") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
            proc.wait()
        print(f"   ({key}: {time.perf_counter() - start:.0f} s, exit {proc.returncode})\n")
        if proc.returncode == SKIPPED:
            skipped.append(key)
            continue
        if proc.returncode != 0 or not os.path.exists(json_path):
            failed.append(key)
            continue
        with open(json_path) as fh:
            reports.append(json.load(fh))

    table = markdown(reports)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(table)
    if skipped:
        print(f"skipped (could not run here): {', '.join(skipped)}")
    print(f"results kept in {out}")
    return 1 if failed else 0


def markdown(reports: list[dict]) -> str:
    info = machine_info()
    lines = [
        f"Run {info['date']}: nproc={info.get('nproc_cmd', info['nproc'])}, "
        f"Python {info['python']}, pygit2 {info['pygit2']} (libgit2 {info['libgit2']}), "
        f"SQLAlchemy {info['sqlalchemy']}, {info.get('git', 'git ?')}, promptrev "
        f"{info.get('promptrev_commit')}"
        f"{' (+ uncommitted changes)' if info.get('promptrev_dirty') else ''}",
        "",
        "| metric | goal | measured | baseline (same run) | ratio | result |",
        "|---|---|---|---|---|---|",
    ]
    for report in reports:
        for r in report["results"]:
            base = "" if r["baseline"] is None else (
                f"{fmt(r['baseline'])} {r['baseline_unit'] or r['unit']}"
                + (f" ({r['baseline_name']})" if r["baseline_name"] else ""))
            ratio = "" if r["ratio"] is None else (
                f"{r['ratio']:.1f}x" + (f" {r['ratio_note']}" if r["ratio_note"] else ""))
            verdict = "" if r["passed"] is None else ("PASS" if r["passed"] else "**FAIL**")
            lines.append(f"| {r['metric']} | {r['goal'] or '(reported)'} | "
                         f"{fmt(r['value'])} {r['unit']} | {base} | {ratio} | {verdict} |")
    lines.append("")
    for report in reports:
        for key, value in report["info"].items():
            lines.append(f"- {report['script']} · {key}: `{json.dumps(value)}`")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
