"""Server benchmark: GET of a prompt by label through `promptrev serve`, next to hello-world.

    python3 bench/bench_server.py            # workers 1, 2 and N; 3 rounds of 10 s each
    python3 bench/bench_server.py --quick    # smoke run: 1 round of 3 s, 100 extra prompts
    python3 bench/bench_server.py --workers 1,5 --rounds 5 --duration 15

Figure (issue 3), for 1 worker and for N = 2 x cores + 1 (at most 8, the default of
`promptrev serve`):
  GET /api/v1/artifact?ref=<name>@production with a bearer token, served by
  `promptrev serve --workers W` (gunicorn, sync workers) on loopback, load from `wrk`
  (-t2 -c32, --latency): throughput >= 70% of a hello-world Flask endpoint served by the
  same gunicorn (same worker count and class) in the same run, and p99 <= 20 ms.

The registry is created by `promptrev serve` itself (seeded from prompts/), then ~1,000
more prompts in nested folders are imported with `promptrev import`, one of them gets a
second version and `production` on version 1, and `promptrev token create` makes the
token. Baseline and target runs alternate, round after round, so a load spike on the
shared machine hits both; the verdict uses the median over rounds. Any non-2xx response
aborts the run: a benchmark of 401s measures nothing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BENCH_AUTHOR,
    Reporter,
    Result,
    base_parser,
    print_header,
    prompt_name,
    prompt_text,
    scaled,
    workdir,
)

ROOT = Path(__file__).resolve().parent.parent  # the checkout: prompts/ seeds the registry


def source_root() -> Path:
    """Where ``cli``/``server``/``promptrev`` are imported from: the checkout, or an exported
    commit put first on PYTHONPATH (bench/README.md); ``python -m cli`` runs from there."""
    import promptrev.cli as cli

    return Path(cli.__file__).resolve().parent.parent


SKIPPED = 77  # exit status when wrk is missing (bench/run_all.py reports "skipped")
RATIO_GOAL = 0.70
P99_GOAL_MS = 20.0

# The baseline: the smallest Flask app that answers JSON, served like promptrev's app.
HELLO_APP = '''\
"""Hello-world baseline for bench/bench_server.py (written by the benchmark)."""
from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/hello")
def hello():
    return jsonify(message="hello", authorized=bool(request.headers.get("Authorization")))
'''


def default_workers() -> int:
    """What `promptrev serve` uses without --workers (promptrev/server/serve.py)."""
    try:
        from promptrev.server.serve import default_workers as serve_default
    except ImportError:  # pragma: no cover - same rule, spelled out
        return min(8, 2 * (os.cpu_count() or 1) + 1)
    return serve_default()


def parse_args(argv=None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--extra-prompts", type=int, default=None,
                        help="prompts imported in nested folders next to the seed "
                             "(default 1,000; --quick 100)")
    parser.add_argument("--workers", default=None,
                        help="comma-separated worker counts (default: 1,2,N with N = "
                             f"2 x cores + 1 capped at 8, here {default_workers()})")
    parser.add_argument("--rounds", type=int, default=None,
                        help="alternating baseline/target rounds per worker count "
                             "(default 3; --quick 1)")
    parser.add_argument("--duration", type=int, default=None,
                        help="seconds per wrk run (default 10; --quick 3)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of untimed wrk load on each server first (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk", help="wrk binary")
    args = parser.parse_args(argv)
    # --prompts (from base_parser) is accepted as another name for --extra-prompts
    args.extra_prompts = scaled(args.extra_prompts if args.extra_prompts is not None
                                else args.prompts, 1000, args.quick)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (3 if args.quick else 10)
    if args.workers:
        args.workers = [int(x) for x in args.workers.split(",") if x.strip()]
    else:
        args.workers = sorted({1, 2, default_workers()})
    return args


# ---- processes --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A gunicorn master (promptrev serve, or the hello app) and its log."""

    name: str
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def wait_until_up(server: Server, probe: str, timeout: float = 90) -> None:
    """Poll ``probe`` until it answers (any HTTP status counts as up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited:\n{server.log.read_text()}")
        try:
            with urllib.request.urlopen(server.url + probe, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} did not answer in {timeout:.0f} s:\n"
                       f"{server.log.read_text()}")


def serve_env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "PROMPTREV_ADMIN_PASSWORD": "bench-" + secrets.token_hex(8),
            "PROMPTREV_SEED": str(ROOT / "prompts"), "PYTHONUNBUFFERED": "1"}


def start_promptrev(tmp: Path, registry: Path, workers: int) -> Server:
    """``promptrev serve --workers W`` on a free port (as an operator would start it)."""
    port = free_port()
    log = tmp / f"serve-w{workers}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "promptrev.cli", "--registry", str(registry), "serve",
         "--port", str(port), "--workers", str(workers)],
        stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=source_root(), env=serve_env(tmp),
        start_new_session=True)
    server = Server(f"promptrev serve --workers {workers}", f"http://127.0.0.1:{port}",
                    process, log)
    wait_until_up(server, "/api/v1/openapi.json")
    return server


def start_hello(tmp: Path, workers: int) -> Server:
    """The hello app under ``python3 -m gunicorn`` with promptrev's gunicorn settings."""
    port = free_port()
    log = tmp / f"hello-w{workers}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--chdir", str(tmp), "--workers", str(workers),
         "--worker-class", "sync", "--bind", f"127.0.0.1:{port}", "--timeout", "120",
         "--graceful-timeout", "10", "--limit-request-line", "8190",
         "--log-level", "warning", "--no-control-socket", "hello_app:app"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
    server = Server(f"hello-world gunicorn --workers {workers}", f"http://127.0.0.1:{port}",
                    process, log)
    wait_until_up(server, "/hello")
    return server


def cli(registry: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``promptrev --registry REG ARGS``; return stdout (raise with stderr on failure)."""
    out = subprocess.run([sys.executable, "-m", "promptrev.cli", "--registry", str(registry),
                          "--author", BENCH_AUTHOR, *args], capture_output=True, text=True,
                         cwd=source_root(), env=env, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"promptrev {' '.join(args)} failed:\n{out.stderr}{out.stdout}")
    return out.stdout


# ---- the registry -----------------------------------------------------------------------
def build(args, rep: Reporter, tmp: Path) -> tuple[Path, str, str]:
    """Registry seeded by ``promptrev serve``, extra prompts, a label; (registry, ref, token)."""
    registry = tmp / "registry"
    start = time.perf_counter()
    first = start_promptrev(tmp, registry, 1)  # creates, seeds, makes the admin account
    first.stop()
    seeded = re.search(r"(\d+) artifacts", first.log.read_text())
    rep.note("seeded", int(seeded.group(1)) if seeded else None,
             "artifacts seeded from prompts/ by promptrev serve "
             f"({time.perf_counter() - start:.1f} s)")

    n = args.extra_prompts
    if n:
        extra = tmp / "extra"
        for i in range(n):
            path = extra / (prompt_name(i) + ".prompty")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(prompt_text(i))
        start = time.perf_counter()
        cli(registry, "import", str(extra), "-m", f"bench: {n} prompts")
        rep.note("import_s", round(time.perf_counter() - start, 2),
                 f"promptrev import of {n:,} prompts in nested folders, seconds")
        hot = prompt_name(int(n * 0.4567))
        second = tmp / "hot-rev1.prompty"
        second.write_text(prompt_text(int(n * 0.4567), rev=1))
        cli(registry, "save", str(second), "--name", hot, "--base", "1",
            "-m", "bench: second version")
    else:
        hot = "summarize"
    cli(registry, "label", "set", hot, "production", "1", "-m", "bench: production")
    token = cli(registry, "token", "create", "admin", "--label", "bench").strip()
    rep.note("artifacts", len(json.loads(cli(registry, "list", "--json"))),
             "artifacts in the registry")
    return registry, f"{hot}@production", token


def check_target(server: Server, path: str, token: str, ref: str) -> int:
    """One GET with and one without the token: 200 with the right version, then 401."""
    request = urllib.request.Request(server.url + path,
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        body = resp.read()
        status = resp.status
    data = json.loads(body)
    name = ref.split("@")[0]
    if status != 200 or data.get("name") != name or data.get("version") != 1:
        raise RuntimeError(f"unexpected answer from {server.name}: {status} {body[:300]!r}")
    try:
        urllib.request.urlopen(server.url + path, timeout=10)
    except urllib.error.HTTPError as exc:
        if exc.code != 401:
            raise RuntimeError(f"without a token: {exc.code}, expected 401") from None
    else:
        raise RuntimeError("the target answered without a token: auth is not measured")
    return len(body)


# ---- wrk --------------------------------------------------------------------------------
@dataclass
class WrkRun:
    """One wrk run, parsed."""

    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"cannot read a wrk latency from {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> WrkRun:
    """Read req/s, the latency distribution and errors from ``wrk --latency`` output."""
    dist = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))
    lat = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", out, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    total = re.search(r"^\s+(\d+) requests in", out, re.M)
    if not (rps and total and len(dist) == 4 and lat):
        raise RuntimeError(f"could not parse wrk output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     out)
    errors = dict(zip(("connect", "read", "write", "timeout"),
                      map(int, sock.groups()), strict=True)) if sock else {}
    return WrkRun(rps=float(rps.group(1)), p50_ms=_ms(dist["50"]), p75_ms=_ms(dist["75"]),
                  p90_ms=_ms(dist["90"]), p99_ms=_ms(dist["99"]), max_ms=_ms(lat.group(1)),
                  requests=int(total.group(1)), non_2xx=int(non2xx.group(1)) if non2xx else 0,
                  socket_errors={k: v for k, v in errors.items() if v})


def wrk(args, url: str, token: str, seconds: int) -> tuple[WrkRun, str]:
    cmd = [args.wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s",
           "--latency", "-H", f"Authorization: Bearer {token}", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stderr}{out.stdout}")
    run = parse_wrk(out.stdout)
    if run.non_2xx:
        raise SystemExit(f"FAILED: {run.non_2xx} of {run.requests} responses from {url} were "
                         f"not 2xx/3xx; the figures would measure errors, not reads.\n"
                         f"{out.stdout}")
    return run, out.stdout


def shown_cmd(args, url: str, seconds: int) -> str:
    return (f"wrk -t{args.threads} -c{args.connections} -d{seconds}s --latency "
            f"-H 'Authorization: Bearer <token>' '{url}'")


# ---- the benchmark ----------------------------------------------------------------------
@dataclass
class Round:
    workers: int
    round: int
    order: str
    hello: WrkRun
    target: WrkRun
    # /proc/pressure/cpu "some avg10" after the round, in %: wrk and the workers themselves
    # contend for the 2 cores, so it is never 0 here; far above the usual means other load
    cpu_stall: float | None = None

    @property
    def ratio(self) -> float:
        return self.target.rps / self.hello.rps


def verdict(ratio: float, p99: float) -> str:
    ok_ratio, ok_p99 = ratio >= RATIO_GOAL, p99 <= P99_GOAL_MS
    if ok_ratio and ok_p99:
        return "PASS"
    return "FAIL (" + ", ".join(x for x, ok in (("ratio", ok_ratio), ("p99", ok_p99))
                                if not ok) + ")"


HEADER = (f"{'workers':>7} {'round':>6} {'hello req/s':>12} {'promptrev req/s':>16} "
          f"{'ratio':>6} {'hello p50':>10} {'promptrev p50':>14} {'hello p99':>10} "
          f"{'promptrev p99':>14}  verdict")


def row(workers: int, label: str, hello_rps: float, target_rps: float, ratio: float,
        hello_p50: float, target_p50: float, hello_p99: float, target_p99: float) -> str:
    return (f"{workers:>7} {label:>6} {hello_rps:>12,.0f} {target_rps:>16,.0f} {ratio:>6.2f} "
            f"{hello_p50:>8.1f}ms {target_p50:>12.1f}ms {hello_p99:>8.1f}ms "
            f"{target_p99:>12.1f}ms  {verdict(ratio, target_p99)}")


def bench_workers(args, rep: Reporter, tmp: Path, registry: Path, ref: str, token: str,
                  workers: int) -> list[Round]:
    path = "/api/v1/artifact?ref=" + urllib.parse.quote(ref, safe="")
    target = start_promptrev(tmp, registry, workers)
    hello = start_hello(tmp, workers)
    try:
        body = check_target(target, path, token, ref)
        with urllib.request.urlopen(hello.url + "/hello", timeout=10) as resp:
            hello_body = len(resp.read())
        urls = {"hello": hello.url + "/hello", "promptrev": target.url + path}
        if workers == args.workers[0]:
            for who, url in urls.items():
                print(f"   {who}: {shown_cmd(args, url, args.duration)}")
            print(f"   response bodies: hello {hello_body} B, promptrev {body} B")
        for url in urls.values():  # warm-up: imports, caches, SQLite pages, every worker
            wrk(args, url, token, args.warmup)
        rounds = []
        for r in range(args.rounds):
            order = ["hello", "promptrev"] if r % 2 == 0 else ["promptrev", "hello"]
            runs = {who: wrk(args, urls[who], token, args.duration)[0] for who in order}
            done = Round(workers, r + 1, "/".join(order), runs["hello"], runs["promptrev"],
                         cpu_stall())
            rounds.append(done)
            print(row(workers, str(r + 1), done.hello.rps, done.target.rps, done.ratio,
                      done.hello.p50_ms, done.target.p50_ms, done.hello.p99_ms,
                      done.target.p99_ms) + f"  (cpu stall {done.cpu_stall}%)", flush=True)
            for who, run in runs.items():
                if run.socket_errors:
                    print(f"      [warn] {who}: socket errors {run.socket_errors} "
                          f"({run.requests:,} requests)")
    finally:
        target.stop()
        hello.stop()
    return rounds


def median_of(rounds: list[Round], side: str, attr: str) -> float:
    return statistics.median(getattr(getattr(r, side), attr) for r in rounds)


def report(rep: Reporter, workers: int, rounds: list[Round]) -> None:
    h_rps, t_rps = median_of(rounds, "hello", "rps"), median_of(rounds, "target", "rps")
    h_p50, t_p50 = median_of(rounds, "hello", "p50_ms"), median_of(rounds, "target", "p50_ms")
    h_p99, t_p99 = median_of(rounds, "hello", "p99_ms"), median_of(rounds, "target", "p99_ms")
    ratio = statistics.median(r.ratio for r in rounds)
    print(row(workers, "median", h_rps, t_rps, ratio, h_p50, t_p50, h_p99, t_p99), flush=True)
    rep.results.append(Result(
        metric=f"GET by label over HTTP, {workers} worker{'s' * (workers > 1)}, throughput",
        value=t_rps, unit="req/s", baseline=h_rps,
        baseline_name="hello-world Flask, same gunicorn", ratio=ratio,
        ratio_note=f"= {ratio:.0%} of hello-world", goal=f">= {RATIO_GOAL:.0%} of hello-world",
        passed=ratio >= RATIO_GOAL,
        extra={"rounds": len(rounds), "median_of": "rounds; ratio = median of round ratios"}))
    rep.results.append(Result(
        metric=f"GET by label over HTTP, {workers} worker{'s' * (workers > 1)}, p99 at "
               f"{rep.args.connections} connections",
        value=t_p99, unit="ms", baseline=h_p99, baseline_name="hello-world",
        ratio=t_p99 / h_p99, ratio_note="the hello-world p99",
        goal=f"<= {P99_GOAL_MS:.0f} ms", passed=t_p99 <= P99_GOAL_MS,
        extra={"p50_ms": t_p50, "hello_p50_ms": h_p50}))
    rep.note(f"rounds_w{workers}", [
        {"round": r.round, "order": r.order, "ratio": round(r.ratio, 3),
         "cpu_stall_avg10_pct": r.cpu_stall,
         "hello": asdict(r.hello), "promptrev": asdict(r.target)} for r in rounds],
        f"{workers} worker(s), every round")


def cpu_pressure() -> str | None:
    """The "some" line of /proc/pressure/cpu: how often runnable tasks waited for a CPU."""
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None


def cpu_stall() -> float | None:
    """``some avg10`` of /proc/pressure/cpu in %, or None where there is no PSI."""
    match = re.search(r"avg10=([\d.]+)", cpu_pressure() or "")
    return float(match.group(1)) if match else None


def main(argv=None) -> int:
    args = parse_args(argv)
    if not shutil.which(args.wrk):
        print(f"bench_server.py needs wrk (HTTP load from a separate process), and "
              f"{args.wrk!r} was not found: nothing measured.\nInstall it (Debian/Ubuntu: "
              f"apt-get install wrk; macOS: brew install wrk) or pass --wrk /path/to/wrk.",
              file=sys.stderr)
        return SKIPPED
    print_header("promptrev server benchmark (issue 3)", args)
    version = subprocess.run([args.wrk, "--version"], capture_output=True, text=True)
    print(f"   {(version.stdout or version.stderr).splitlines()[0].strip()}; "
          f"gunicorn {_version('gunicorn')}, Flask {_version('flask')}; "
          f"cpu pressure: {cpu_pressure()}")
    rep = Reporter("bench_server", args)
    rep.note("wrk", {"threads": args.threads, "connections": args.connections,
                     "duration_s": args.duration, "warmup_s": args.warmup,
                     "rounds": args.rounds})
    with workdir(args, "promptrev-bench-server-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "hello_app.py").write_text(HELLO_APP)
        registry, ref, token = build(args, rep, tmp)
        rep.note("ref", ref, "GET /api/v1/artifact?ref=")
        print(HEADER, flush=True)
        for workers in args.workers:
            rounds = bench_workers(args, rep, tmp, registry, ref, token, workers)
            report(rep, workers, rounds)
    print()
    for result in rep.results:
        print(result.line())
    rep.note("cpu_pressure_at_end", cpu_pressure())
    rep.write()
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
