"""Many processes writing at once, and a writer killed with SIGKILL mid-run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from promptrev import Registry

from .workers import text_for

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def spawn(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.workers", *map(str, args)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_eight_processes_writing_overlapping_prompts(tmp_path):
    path = tmp_path / "reg"
    names = ["alpha", "beta", "gamma", "team/delta"]
    with Registry.init(path) as reg:
        for seed in ("seed", "seed2"):  # two versions each, so base=1 is always stale
            with reg.transaction(message=seed) as tx:
                for name in names:
                    tx.save(name, text_for(f"{seed}-{name}"))
    writers = [spawn("contend", path, w, 40, ",".join(names)) for w in range(8)]
    results = []
    for proc in writers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results += [json.loads(line) for line in out.splitlines()]
    accepted = [r for r in results if "token" in r]
    conflicts = [r for r in results if "conflict" in r]
    assert len(accepted) + len(conflicts) == 8 * 40
    assert sum(c["stale"] for c in conflicts) == 8 * 4  # every stale base was refused
    with Registry.open(path) as reg:
        seen: dict[str, list[int]] = {}
        for name in names:
            history = reg.history(name)
            assert [v.number for v in history] == list(range(len(history), 0, -1))
            for version in history[:-2]:  # every version after the seeds is one accepted write
                token = version.message
                seen.setdefault(token, []).append(version.number)
                assert f"[{token}]" in reg.get(f"{name}@{version.number}").text
                assert version.author == f"writer{token[1:].split('-')[0]}"
        assert sorted(seen) == sorted(r["token"] for r in accepted)
        assert all(len(numbers) == 1 for numbers in seen.values())  # exactly once
        for r in accepted:
            assert seen[r["token"]] == [r["version"]]
            assert r["version"] == r["base"] + 1  # written on top of what it read
        report = reg.fsck()
        assert report["ok"], report["problems"]


def test_writer_killed_mid_run_loses_nothing_acknowledged(tmp_path):
    path = tmp_path / "reg"
    names = ["alpha", "beta", "gamma"]
    with Registry.init(path) as reg, reg.transaction(message="seed") as tx:
        for name in names:
            tx.save(name, text_for(f"seed-{name}"))
            tx.save(f"{name}-twin", text_for(f"seed-{name}"))
    acked, labels = [], []
    for round_ in range(3):
        proc = spawn("forever", path, ",".join(names))
        start = time.monotonic()
        wanted = 15 + 7 * round_
        lines = 0
        while lines < wanted and time.monotonic() - start < 120:
            line = proc.stdout.readline()
            if not line:
                break
            record = json.loads(line)
            (labels if "label" in record else acked).append(record)
            lines += 1
        time.sleep(0.003 * round_)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert lines == wanted, proc.stderr.read()
    with Registry.open(path) as reg:
        report = reg.fsck()
        assert report["ok"], report["problems"]
        for record in acked:
            snap = reg.get(f"{record['name']}@{record['version']}")
            assert f"[{record['token']}]" in snap.text
            assert snap.version.message == record["token"]
            twin = reg.history(f"{record['name']}-twin")
            assert record["token"] in [v.message for v in twin]  # the transaction was whole
        events = reg.label_history()
        for record in labels:
            assert any(e.name == record["label"] and e.new == record["version"] for e in events)
        reg.save("alpha", text_for("after-crash"))  # and it still takes writes
        assert reg.get("alpha").text == text_for("after-crash")
