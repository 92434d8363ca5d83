"""Read replicas (issue 20): label-read throughput over HTTP, and replication lag.

    python3 bench/bench_replicas.py             # ~2 minutes
    python3 bench/bench_replicas.py --quick     # smoke run: 3 s per load, 10 saves
    python3 bench/bench_replicas.py --workers 2 --duration 8 --saves 40

Figures, in one run, every server a real ``promptrev serve --workers W`` on loopback:

* **throughput**: ``GET /api/v1/artifact?ref=summarize@production`` with a bearer token,
  the same total connections spread evenly over 1, 2 and 4 replicas (one ``wrk`` per
  server, run together; a Python load generator without ``wrk``), against the baseline:
  the same load on one server (the primary alone). Printed as a ratio to the baseline.
  Every server has the same worker count. On a machine with few cores the replicas share
  the same CPUs, so throughput cannot grow with them; the figure shows what replicas cost.
* **replication lag**: after each acknowledged save on the primary (``PUT
  /api/v1/artifact``), the time until *every* replica serves the new version (each polled
  every 5 ms); p50, p99 and max over ``--saves`` saves. Goal: p99 <= 1 s.

Any non-2xx answer aborts the run: a benchmark of errors measures nothing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.live import LiveServer, start_server  # noqa: E402

LAG_GOAL_S = 1.0
REPLICA_COUNTS = (1, 2, 4)
REF = "summarize@production"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s loads, 10 saves")
    parser.add_argument("--workers", type=int, default=2, help="workers of every server")
    parser.add_argument("--duration", type=float, default=None, help="seconds per load")
    parser.add_argument("--connections", type=int, default=16, help="total connections")
    parser.add_argument("--saves", type=int, default=None, help="saves timed for the lag")
    parser.add_argument("--wrk", default=shutil.which("wrk"), help="wrk binary")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--postgres", default=os.environ.get("PROMPTREV_TEST_POSTGRES_URL"),
                        help="a PostgreSQL URL: the accounts every server shares and the "
                        "primary's index go there, each in a fresh schema (default: "
                        "PROMPTREV_TEST_POSTGRES_URL; without one, SQLite files)")
    args = parser.parse_args()
    args.duration = args.duration or (3.0 if args.quick else 8.0)
    args.saves = args.saves or (10 if args.quick else 40)
    return args


# ---- load -------------------------------------------------------------------------------
def load(servers: list[LiveServer], token: str, args: argparse.Namespace) -> float:
    """Requests per second served by ``servers`` together, the load split evenly."""
    if args.wrk:
        return _load_wrk(servers, token, args)
    return _load_python(servers, token, args)


def _load_wrk(servers, token, args) -> float:
    per = max(1, args.connections // len(servers))
    runs = [subprocess.Popen(
        [args.wrk, "-t1", f"-c{per}", f"-d{max(1, round(args.duration))}s", "-H",
         f"Authorization: Bearer {token}", f"{s.url}/api/v1/artifact?ref={REF}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for s in servers]
    total = 0.0
    for run in runs:
        out, _ = run.communicate()
        if "Non-2xx" in out or "Socket errors" in out or "Requests/sec" not in out:
            raise SystemExit(f"wrk saw errors:\n{out}")
        total += float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return total


def _load_python(servers, token, args) -> float:
    stop = time.monotonic() + args.duration
    counts = [0] * args.connections
    errors: list[str] = []

    def client(i: int) -> None:
        where = urlsplit(servers[i % len(servers)].url)
        conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
        headers = {"Authorization": f"Bearer {token}"}
        while time.monotonic() < stop:
            conn.request("GET", f"/api/v1/artifact?ref={REF}", headers=headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                errors.append(str(answer.status))
                return
            counts[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.connections)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"non-200 answers: {errors[:5]}")
    return sum(counts) / (time.monotonic() - started)


# ---- lag --------------------------------------------------------------------------------
def _get(url: str, path: str, token: str, method: str = "GET", body: dict | None = None
         ) -> tuple[int, dict]:
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers=headers)
    answer = conn.getresponse()
    data = json.loads(answer.read() or b"{}")
    conn.close()
    return answer.status, data


def lag(primary: LiveServer, replicas: list[LiveServer], token: str, saves: int
        ) -> list[float]:
    """Seconds from each acknowledged save to every replica serving it."""
    status, current = _get(primary.url, "/api/v1/artifact?ref=lagged", token)
    base = current["version"] if status == 200 else 0
    lags = []
    for i in range(saves):
        text = f"---\nname: lagged\n---\nsystem:\nSave {i} for {{{{ who }}}}.\n"
        status, saved = _get(primary.url, "/api/v1/artifact?name=lagged", token, "PUT",
                             {"text": text, "base": base})
        acked = time.monotonic()
        if status not in (200, 201):
            raise SystemExit(f"save failed: {status} {saved}")
        base = saved["version"]
        seen: list[float] = []
        watchers = [threading.Thread(target=_watch, args=(r, token, base, acked, seen))
                    for r in replicas]
        for t in watchers:
            t.start()
        for t in watchers:
            t.join()
        if len(seen) != len(replicas):
            raise SystemExit(f"save {i}: a replica did not serve it within 30 s")
        lags.append(max(seen))
    return lags


def _watch(replica: LiveServer, token: str, number: int, acked: float,
           seen: list[float]) -> None:
    """Poll ``replica`` every 5 ms until it serves version ``number`` of ``lagged``."""
    where = urlsplit(replica.url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    while time.monotonic() - acked < 30:
        conn.request("GET", "/api/v1/artifact?ref=lagged",
                     headers={"Authorization": f"Bearer {token}"})
        answer = conn.getresponse()
        data = answer.read()
        if answer.status == 200 and json.loads(data)["version"] >= number:
            seen.append(time.monotonic() - acked)  # list.append is atomic
            break
        time.sleep(0.005)
    conn.close()


# ---- PostgreSQL ---------------------------------------------------------------------------
def pg_schemas(url: str, names: list[str]) -> tuple[dict[str, str], object]:
    """A fresh schema per name on ``url``: name -> a URL whose search_path is that schema,
    and a function that drops them."""
    from urllib.parse import quote

    import sqlalchemy as sa

    tag = f"bench_{os.getpid()}_"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for name in names:
            conn.execute(sa.text(f"CREATE SCHEMA {tag}{name}"))
    sep = "&" if "?" in url else "?"
    urls = {n: f"{url}{sep}options={quote(f'-csearch_path={tag}{n}')}" for n in names}

    def drop() -> None:
        with engine.begin() as conn:
            for name in names:
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {tag}{name} CASCADE"))
        engine.dispose()
    return urls, drop


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# ---- the run ----------------------------------------------------------------------------
def main() -> None:
    args = parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    servers: list[LiveServer] = []
    drop = None
    try:
        print(f"== read replicas  nproc={os.cpu_count()} workers={args.workers} "
              f"connections={args.connections} load={'wrk' if args.wrk else 'python'} "
              f"duration={args.duration}s saves={args.saves} "
              f"databases={'postgresql' if args.postgres else 'sqlite'}")
        common = {"PROMPTREV_SECRET_KEY": "bench", "PROMPTREV_DURABILITY": "off"}
        primary_env = dict(common)
        if args.postgres:  # as the README deploys it: shared accounts, the primary's index
            urls, drop = pg_schemas(args.postgres, ["accounts", "index"])
            os.environ["PROMPTREV_ACCOUNTS_URL"] = urls["accounts"]  # for token create
            os.environ["PROMPTREV_INDEX_URL"] = urls["index"]
            primary_env.update(PROMPTREV_ACCOUNTS_URL=urls["accounts"],
                               PROMPTREV_INDEX_URL=urls["index"])
        (root / "primary").mkdir()
        primary = start_server(root / "primary", workers=args.workers, env=primary_env)
        servers.append(primary)
        token = primary.token()
        status, _ = _get(primary.url, "/api/v1/labels?name=summarize&label=production",
                         token, "PUT", {"version": 1})
        if status != 200:
            raise SystemExit(f"could not set the label: {status}")
        accounts = primary_env.get("PROMPTREV_ACCOUNTS_URL") \
            or f"sqlite:///{primary.registry / 'promptrev-accounts.sqlite'}"
        # each replica: its own registry and its own SQLite index, the accounts shared
        env = {**common, "PROMPTREV_PRIMARY": primary.url, "PROMPTREV_PRIMARY_TOKEN": token,
               "PROMPTREV_ACCOUNTS_URL": accounts, "PROMPTREV_INDEX_URL": ""}
        replicas = []
        for i in range(max(REPLICA_COUNTS)):
            (root / f"replica{i}").mkdir()
            replicas.append(start_server(root / f"replica{i}", workers=args.workers,
                                         env=env))
            servers.append(replicas[-1])
        for r in replicas:  # the label reached every replica
            deadline = time.monotonic() + 30
            while _get(r.url, f"/api/v1/artifact?ref={REF}", token)[0] != 200:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{r.url} never served {REF}")
                time.sleep(0.05)
        for s in servers:  # warm every cache
            _load_python([s], token, argparse.Namespace(duration=0.5, connections=2))
        figures: dict = {"workers": args.workers, "connections": args.connections,
                         "load": "wrk" if args.wrk else "python", "throughput": {}}
        baseline = load([primary], token, args)
        figures["throughput"]["one server"] = baseline
        print(f"   one server (baseline): {baseline:8.0f} req/s")
        for count in REPLICA_COUNTS:
            rps = load(replicas[:count], token, args)
            figures["throughput"][f"{count} replicas"] = rps
            print(f"   {count} replica(s):          {rps:8.0f} req/s   "
                  f"ratio {rps / baseline:.2f} x one server")
        lags = lag(primary, replicas, token, args.saves)
        p50, p99 = statistics.median(lags), percentile(lags, 99)
        figures["lag_s"] = {"p50": p50, "p99": p99, "max": max(lags), "saves": len(lags),
                            "replicas": len(replicas)}
        verdict = "meets" if p99 <= LAG_GOAL_S else "MISSES"
        print(f"   replication lag to all {len(replicas)} replicas over {len(lags)} saves: "
              f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(lags) * 1000:.0f}"
              f" ms ({verdict} the goal p99 <= {LAG_GOAL_S:.0f} s)")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
    finally:
        for s in servers:
            s.stop()
        if drop is not None:
            drop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
