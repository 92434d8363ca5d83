"""Evaluation runs on the job queue, for real: ``promptrev worker`` processes on the
embedded SQLite queue and on a real Redis (Debian's ``redis-server``), one of them killed
with SIGKILL in the middle of a run, and ``promptrev serve`` alone running a run started
from the web with the worker it starts itself.

The model is a stand-in OpenAI-compatible server that answers each request after a fixed
delay (only the network is stood in for), so a run lasts long enough to be interrupted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from promptrev import Registry
from promptrev.config import Settings
from promptrev.evaluation.runs import Evaluator
from promptrev.evaluation.store import EvalStore
from promptrev.jobs import FinetuneJobs, JobQueue, finetune_spec, queue_state
from promptrev.runner.base import model_specs
from promptrev.runner.execute import Runner
from promptrev.runner.trust import Trust

from .conftest import csrf_token
from .live import ADMIN_PASSWORD, ROOT, free_port, start_server

DELAY_S = 0.25  # each answer of the stand-in model
CASES = 12
VARIANTS = ("zero-shot", "few-shot")
LEASE = "2"  # seconds: a killed worker's run moves within a few seconds


class SlowModel:
    """An OpenAI-compatible server that answers every chat request after DELAY_S."""

    def __init__(self):
        self.requests: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                model.requests.append(body.decode())
                time.sleep(DELAY_S)
                data = json.dumps({
                    "id": "c", "object": "chat.completion", "created": 0, "model": "slow",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "positive"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1,
                              "total_tokens": 4}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd.RequestHandlerClass = Handler
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def slow():
    model = SlowModel()
    yield model
    model.close()


def spec(name: str = "queued run") -> dict:
    return {"name": name, "dataset": "sentiment@1", "model": "slow", "limit": CASES,
            "batch_size": 1, "params": {"max_tokens": 3},
            "variants": [{"name": v, "prompt": f"sentiment/{v}@1"} for v in VARIANTS],
            "scorers": ["exact"], "baseline": VARIANTS[0]}


def cli(registry: Path, *args: str) -> None:
    out = subprocess.run([sys.executable, "-m", "promptrev.cli", "--registry", str(registry),
                          *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr


def new_registry(tmp: Path) -> Path:
    path = tmp / "registry"
    cli(path, "init")
    cli(path, "import", str(ROOT / "prompts"))
    return path


def models_file(tmp: Path, slow: SlowModel) -> Path:
    path = tmp / "models.yaml"
    path.write_text(yaml.safe_dump({"slow": {"backend": "openai", "name": "slow",
                                             "base_url": slow.url, "api_key": "none",
                                             "concurrency": 1}}))
    return path


def queue_env(tmp: Path, slow: SlowModel, queue: str) -> dict[str, str]:
    return {"PROMPTREV_QUEUE": queue, "PROMPTREV_QUEUE_LEASE": LEASE,
            "PROMPTREV_MODELS": str(models_file(tmp, slow))}


def start_run(registry: Path, env: dict[str, str]) -> int:
    """Start a run as the server does and put it on the queue."""
    settings = Settings.from_env(env, registry=str(registry))
    with Registry.open(registry) as reg:
        runner = Runner(reg, models=model_specs(settings.configured_models(), {}),
                        trust=Trust.server(None))
        run_id = Evaluator(reg, runner).start(spec(), author="Test <t@example.com>")
        JobQueue(settings).evaluate(reg, run_id)
    return run_id


def start_worker(registry: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "promptrev.cli", "--registry", str(registry), "worker",
         "--threads", "1"], cwd=ROOT, env={**os.environ, **env}, stdout=log.open("w"),
        stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def kill_a_worker_mid_run(tmp: Path, slow: SlowModel, queue: str) -> None:
    """Two workers; the one holding the run is killed with SIGKILL after a few results;
    the other takes the run over and finishes it with every case scored exactly once."""
    registry = new_registry(tmp)
    env = queue_env(tmp, slow, queue)
    run_id = start_run(registry, env)
    total = CASES * len(VARIANTS)
    seen_before = len(slow.requests)
    workers = {}
    for i in (1, 2):
        process = start_worker(registry, env, tmp / f"worker{i}.log")
        workers[process.pid] = process
    logs = "\n".join(f"--- worker {i}\n" + (tmp / f"worker{i}.log").read_text()
                     for i in (1, 2))
    try:
        with Registry.open(registry) as reg:
            store = EvalStore(reg)
            holder = wait_for(lambda: (len(store.results(run_id)) >= 4
                                       and store.run(run_id)["worker"]), 60,
                              "a worker holding the run with results stored")
            pid = int(holder.split(":")[-2])
            assert pid in workers, (holder, list(workers))
            assert queue_state(store.run(run_id), 2, time.time())["state"] == "running"
            workers[pid].send_signal(signal.SIGKILL)
            workers[pid].wait()
            scored_when_killed = len(store.results(run_id))
            assert scored_when_killed < total, "the run ended before the kill: slow it down"

            # the run stalls: its holder stops beating, then the other worker takes over
            run = wait_for(lambda: (r := store.run(run_id))["status"] != "running" and r,
                           120, "the run to finish on the surviving worker")
            logs = "\n".join(f"--- worker {i}\n" + (tmp / f"worker{i}.log").read_text()
                             for i in (1, 2))
            assert run["status"] == "done", (run["error"], logs)
            survivor = next(p for p in workers if p != pid)
            assert int(run["worker"].split(":")[-2]) == survivor
            results = store.results(run_id)
            keys = [(r["variant"], r["case_id"]) for r in results]
            assert len(keys) == len(set(keys)) == total  # every case scored exactly once
            assert {v for v, _ in keys} == set(VARIANTS)
            assert run["report"]["metrics"], run["report"]
            # resumed, not restarted: the model answered each case once, plus at most the
            # one request the killed worker had in flight
            asked = len(slow.requests) - seen_before
            assert total <= asked <= total + 1, asked
            assert "stopped answering; queued again" in logs, logs
    finally:
        for process in workers.values():
            stop(process)


def test_sqlite_queue_a_killed_worker_leaves_its_run_to_the_other(tmp_path, slow):
    queue = f"sqlite:///{tmp_path / 'queue.sqlite'}"
    kill_a_worker_mid_run(tmp_path, slow, queue)


@pytest.fixture
def redis_url(tmp_path):
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; "
                    ".ci/run installs it)")
    port = free_port()
    process = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1",
                                "--dir", str(tmp_path), "--save", "", "--appendonly", "no"],
                               stdout=(tmp_path / "redis.log").open("w"),
                               stderr=subprocess.STDOUT)
    import redis

    client = redis.Redis(port=port)
    wait_for(lambda: _pings(client), 20, "redis-server to answer")
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=15)


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def test_redis_queue_a_killed_worker_leaves_its_run_to_the_other(tmp_path, slow, redis_url):
    kill_a_worker_mid_run(tmp_path, slow, redis_url)


def test_postgresql_queue_a_killed_worker_leaves_its_run_to_the_other(tmp_path, slow,
                                                                        pg_url):
    kill_a_worker_mid_run(tmp_path, slow, pg_url)  # a fresh schema: its own queue tables


def test_two_executions_racing_on_one_run_score_each_case_once(tmp_path, slow):
    """What the lease makes rare (a holder taken for dead while still going) cannot make
    a second result: two executions of the same run at once keep one row per case."""
    registry = new_registry(tmp_path)
    env = queue_env(tmp_path, slow, f"sqlite:///{tmp_path / 'queue.sqlite'}")
    settings = Settings.from_env(env, registry=str(registry))
    models = model_specs(settings.configured_models(), {})
    with Registry.open(registry) as reg:
        run_id = Evaluator(reg, Runner(reg, models=models)).start(spec(), author="T <t@x>")
    errors: list[BaseException] = []

    def execute() -> None:
        try:
            with Registry.open(registry) as reg:
                Evaluator(reg, Runner(reg, models=models)).execute(run_id)
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            errors.append(exc)

    threads = [threading.Thread(target=execute) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    with Registry.open(registry) as reg:
        store = EvalStore(reg)
        assert store.run(run_id)["status"] == "done"
        keys = [(r["variant"], r["case_id"]) for r in store.results(run_id)]
    assert len(keys) == len(set(keys)) == CASES * len(VARIANTS)


def test_serve_alone_runs_a_web_started_evaluation_with_its_own_worker(tmp_path, slow):
    env = queue_env(tmp_path, slow, "")
    del env["PROMPTREV_QUEUE"]  # the default: SQLite inside the registry
    server = start_server(tmp_path, workers=1, env=env)
    try:
        # serve's own worker is managed: killed, it is started again
        first = wait_for(lambda: worker_pids(server.log), 60, "serve's worker to start")[0]
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(worker_pids(server.log)) == 2, 60, "serve to restart its worker")
        with httpx.Client(base_url=server.url, timeout=30) as web:
            token = csrf_token(web.get("/login").text)
            r = web.post("/login", data={"name": "admin", "password": ADMIN_PASSWORD,
                                         "csrf_token": token})
            assert r.status_code == 302, r.text
            token = csrf_token(web.get("/eval/new").text)
            r = web.post("/eval/new", data={"spec": yaml.safe_dump(spec("from the web")),
                                            "csrf_token": token})
            assert r.status_code == 302, r.text
            run_id = int(re.fullmatch(r"/eval/(\d+)", r.headers["location"]).group(1))
            page = web.get(f"/eval/{run_id}").text
            assert 'id="queue-state"' in page and 'http-equiv="refresh"' in page
            row = re.search(rf'<tr data-run="{run_id}">.*?</tr>', web.get("/eval/").text,
                            re.S).group(0)
            assert re.search(r'class="muted queue-state" data-state="(queued|running)"', row)
            api = httpx.Client(base_url=server.url + "/api/v1", timeout=30, headers={
                "Authorization": f"Bearer {server.token()}"})
            states = set()

            def finished():
                answer = api.get("/evaluations/run", params={"id": run_id}).json()
                states.add(answer["queue"]["state"])
                return answer["status"] != "running" and answer

            answer = wait_for(finished, 120, "the run to finish on serve's own worker")
            assert answer["status"] == "done", (answer, server.log.read_text())
            assert "running" in states and answer["queue"]["state"] == "done"
            assert answer["report"]["metrics"]
            page = web.get(f"/eval/{run_id}").text
            assert 'id="status">done<' in page and 'http-equiv="refresh"' not in page
    finally:
        server.stop()
    # the worker serve started stopped with it
    for pid in worker_pids(server.log):
        wait_for(lambda pid=pid: not _alive(pid), 20, f"serve's worker {pid} to stop")


def worker_pids(log: Path) -> list[int]:
    """The pids of the workers a ``promptrev serve`` started, in order (from its log)."""
    return [int(m) for m in re.findall(r"^worker [^:\s]+:(\d+):\w+ on ", log.read_text(),
                                       re.M)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:  # a zombie is not alive
            return stat.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_queue_that_cannot_be_reached_is_a_clear_503_not_a_500(tmp_path):
    from .conftest import make_server_env

    env = make_server_env(tmp_path, queue_url=f"redis://127.0.0.1:{free_port()}/0",
                          models={"slow": {"backend": "openai", "name": "slow",
                                           "base_url": "http://127.0.0.1:9/v1",
                                           "api_key": "none"}})
    try:
        client = env.login("editor")
        token = csrf_token(client.get("/eval/new").get_data(as_text=True))
        r = client.post("/eval/new", data={"spec": yaml.safe_dump(spec()),
                                           "csrf_token": token})
        text = r.get_data(as_text=True)
        assert r.status_code == 503, text[:2000]
        assert "job queue redis://127.0.0.1:" in text and "cannot be reached" in text, text[-1500:]
        assert "Traceback" not in text
    finally:
        env.app.extensions["promptrev"].close()


@pytest.mark.parametrize("value", ["ftp://queue", "sqlite://", "redis"])
def test_a_bad_queue_url_is_refused_naming_the_setting(tmp_path, value):
    out = subprocess.run([sys.executable, "-m", "promptrev.cli", "--registry",
                          str(tmp_path / "nowhere"), "worker"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60, env={**os.environ, "PROMPTREV_QUEUE": value})
    assert out.returncode != 0
    assert "PROMPTREV_QUEUE must be sqlite:///FILE" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


# ---- fine-tuning jobs ------------------------------------------------------------------
TRAIN_STEPS = 200  # long enough on the tiny model to be interrupted, short to run twice


def finetune_request(name: str = "queued-lora") -> dict:
    return {"dataset": "sentiment@1", "model": "tiny", "name": name,
            "prompt": "sentiment/zero-shot@1",
            "config": {"method": "lora", "max_steps": TRAIN_STEPS, "batch_size": 2,
                       "validation_split": 0.25, "learning_rate": 0.001}}


def test_serve_alone_trains_a_finetune_job_and_pushes_its_adapter(tmp_path, tiny):
    models = tmp_path / "models.yaml"
    models.write_text(f"tiny:\n  backend: hf\n  path: {tiny.model}\n")
    server = start_server(tmp_path, workers=1, env={"PROMPTREV_MODELS": str(models),
                                                    "PROMPTREV_QUEUE_LEASE": LEASE})
    try:
        api = httpx.Client(base_url=server.url + "/api/v1", timeout=60, headers={
            "Authorization": f"Bearer {server.token()}"})
        refused = api.post("/finetunes", json={**finetune_request(), "model": "nope"})
        assert refused.status_code == 400 and "configured: tiny" in refused.text
        refused = api.post("/finetunes", json={**finetune_request(), "config": {"rank": "8"}})
        assert refused.status_code == 400 and "config.rank must be a int" in refused.text
        server.cli("user", "add", "vera", "--role", "viewer")
        viewer = httpx.post(server.url + "/api/v1/finetunes", json=finetune_request(),
                            headers={"Authorization": f"Bearer {server.token('vera')}"})
        assert viewer.status_code == 403, viewer.text
        started = api.post("/finetunes", json={**finetune_request(), "config": {
            **finetune_request()["config"], "max_steps": 10}})
        assert started.status_code == 202, started.text
        job = started.json()
        assert job["status"] == "running" and job["queue"]["state"] in ("queued", "running")
        assert job["dataset"] == "sentiment@1"

        def finished():
            answer = api.get("/finetunes/job", params={"id": job["job"]}).json()
            return answer["status"] != "running" and answer

        answer = wait_for(finished, 300, "the fine-tuning job to finish")
        assert answer["status"] == "done", (answer, server.log.read_text()[-3000:])
        assert answer["adapter"] == "queued-lora@1"
        card = api.get("/artifact", params={"ref": "queued-lora@1", "kind": "adapter"})
        assert card.status_code == 200, card.text
        assert "job 1" in server.cli("log", "queued-lora")
        with httpx.Client(base_url=server.url, timeout=30) as web:
            token = csrf_token(web.get("/login").text)
            web.post("/login", data={"name": "admin", "password": ADMIN_PASSWORD,
                                     "csrf_token": token})
            listing = web.get("/eval/").text
        row = re.search(r'<tr data-job="1">.*?</tr>', listing, re.S).group(0)
        assert "queued-lora@1" in row and 'status-done' in row
    finally:
        server.stop()


def test_a_killed_worker_leaves_its_finetune_job_to_the_other_one_adapter_pushed(
        tmp_path, tiny):
    registry = new_registry(tmp_path)
    models = tmp_path / "models.yaml"
    models.write_text(f"tiny:\n  backend: hf\n  path: {tiny.model}\n")
    env = {"PROMPTREV_QUEUE": f"sqlite:///{tmp_path / 'queue.sqlite'}",
           "PROMPTREV_QUEUE_LEASE": LEASE, "PROMPTREV_MODELS": str(models)}
    settings = Settings.from_env(env, registry=str(registry))
    with Registry.open(registry) as reg:
        request = finetune_spec(finetune_request(), model_specs(settings.configured_models(),
                                                                 {}))
        job_id = JobQueue(settings).finetune(reg, request, author="Test <t@example.com>")
    workers = {}
    for i in (1, 2):
        process = start_worker(registry, env, tmp_path / f"worker{i}.log")
        workers[process.pid] = process
    try:
        with Registry.open(registry) as reg:
            jobs = FinetuneJobs(reg)
            holder = wait_for(lambda: jobs.job(job_id)["worker"], 60, "a worker to hold the job")
            time.sleep(2)  # mid-training
            pid = int(holder.split(":")[-2])
            assert jobs.job(job_id)["status"] == "running", "trained before the kill"
            workers[pid].send_signal(signal.SIGKILL)
            workers[pid].wait()
            job = wait_for(lambda: (j := jobs.job(job_id))["status"] != "running" and j, 300,
                           "the job to finish on the surviving worker")
            logs = "\n".join((tmp_path / f"worker{i}.log").read_text() for i in (1, 2))
            assert job["status"] == "done", (job["error"], logs)
            assert int(job["worker"].split(":")[-2]) != pid
            assert job["adapter"] == "queued-lora@1"
            assert [v.number for v in reg.history("queued-lora", "adapter")] == [1]
            assert "stopped answering; queued again" in logs
    finally:
        for process in workers.values():
            stop(process)
