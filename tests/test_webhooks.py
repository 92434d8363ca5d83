"""Webhooks with real parts: a receiver on loopback, a real server, real SQLite.

The receiver answers 500 to the first attempt of every delivery and 200 to the next
(``/flaky``), always 500 (``/down``) or always 200 (``/ok``); it records every request.
It lives on loopback, so these tests opt in to private targets (``LOOPBACK_OK``,
``PROMPTREV_WEBHOOK_ALLOW_PRIVATE=1``); tests/security/test_webhook_targets.py checks the
default refusal.
"""

from __future__ import annotations

import hmac
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import sqlalchemy as sa

from promptrev import Registry
from promptrev.errors import InvalidRequest, NotFound
from promptrev.webhook_targets import TargetPolicy
from promptrev.webhooks import (
    T_DELIVERY,
    Deliverer,
    RetryPolicy,
    Webhooks,
    emit,
    signature,
    verify_signature,
)

from .conftest import PROMPT, at, make_server_env, variant
from .live import ROOT, free_port, start_server
from .test_postgres import URL as PG_URL

FAST = RetryPolicy(base=0.05, factor=2, cap=0.2, max_attempts=3)
LOOPBACK_OK = TargetPolicy(allow_private=True)  # the receivers live on loopback
PRIVATE_OK = {"PROMPTREV_WEBHOOK_ALLOW_PRIVATE": "1"}


class Receiver:
    """An HTTP server on loopback that records what it is sent."""

    def __init__(self, delay: float = 0.0):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.delay = delay
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    seen = [r for r in receiver.requests
                            if r["delivery"] == self.headers["X-Promptrev-Delivery"]]
                    status = {"/ok": 200, "/down": 500}.get(self.path, 500 if not seen else 200)
                    receiver.requests.append({
                        "path": self.path, "headers": dict(self.headers), "body": body,
                        "delivery": self.headers["X-Promptrev-Delivery"],
                        "event": self.headers["X-Promptrev-Event"], "status": status})
                time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that gave up (a timeout test) is expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def got(self, event: str | None = None, status: int | None = None) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if (event is None or r["event"] == event)
                    and (status is None or r["status"] == status)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def wait_for(condition, timeout: float = 30.0, what: str = "condition"):
    """Poll ``condition`` until it returns something truthy (no timed assertions)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def deliver_all(deliverer: Deliverer, hooks: Webhooks, timeout: float = 30.0) -> None:
    """Run a deliverer until nothing is pending."""
    def settled():
        deliverer.run_once()
        return not hooks.deliveries(status="pending", attempts=False)

    wait_for(settled, timeout, "pending deliveries to settle")


def pending_count(reg: Registry) -> int:
    with reg.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(T_DELIVERY)).scalar()


# ---- the core: emit, subscriptions, the indexer ----------------------------------------
def test_emit_enqueues_for_every_subscribed_active_hook(registry):
    hooks = Webhooks(registry.engine)
    every = hooks.add("http://127.0.0.1:9/all")
    reviews = hooks.add("https://example.org/cr", events=["change_request.*"], secret="s3")
    labels = hooks.add("http://127.0.0.1:9/labels", events=["label.moved"])
    off = hooks.add("http://127.0.0.1:9/off", active=False)
    assert len(every["secret"]) == 64 and reviews["secret"] == "s3"
    assert all("secret" not in h for h in hooks.list())
    assert [h["active"] for h in hooks.list()] == [True, True, True, False]

    assert emit(registry.engine, "change_request.opened", {"id": 7, "title": "t"}) == 2
    assert emit(registry.engine, "label.moved", {"name": "x"}) == 2
    assert emit(registry.engine, "rollback", {}) == 1
    with registry.engine.connect() as conn:  # a rolled-back transaction sends nothing
        with conn.begin() as tx:
            assert emit(conn, "change_request.merged", {"id": 7}) == 2
            tx.rollback()
    found = hooks.deliveries(attempts=False)
    assert [(d["webhook_id"], d["event"]) for d in reversed(found)] == [
        (every["id"], "change_request.opened"), (reviews["id"], "change_request.opened"),
        (every["id"], "label.moved"), (labels["id"], "label.moved"),
        (every["id"], "rollback")]
    assert found[-1]["body"]["payload"] == {"id": 7, "title": "t"}
    assert found[-1]["status"] == "pending" and found[-1]["attempts"] == 0
    assert off["id"] not in {d["webhook_id"] for d in found}
    assert len(hooks.deliveries(webhook_id=every["id"])) == 3
    assert len(hooks.deliveries(event="label.moved")) == 2


def test_hook_validation_names_the_problem(registry):
    hooks = Webhooks(registry.engine)
    for url in ("ftp://example.org/x", "example.org/hook", "http:///nohost", "http://a b/",
                "http://example.org:99999/"):
        with pytest.raises(InvalidRequest, match="webhook URL"):
            hooks.add(url)
    with pytest.raises(InvalidRequest, match="unknown webhook event 'version.made'"):
        hooks.add("http://example.org/", events=["version.made"])
    with pytest.raises(InvalidRequest, match="secret"):
        hooks.add("http://example.org/", secret="")
    with pytest.raises(NotFound, match="no webhook 42"):
        hooks.remove(42)
    with pytest.raises(NotFound, match="no webhook delivery 42"):
        hooks.redeliver(42)


def test_commits_enqueue_saves_label_moves_and_rollbacks(tmp_path, index_url):
    registry = Registry.init(tmp_path / "reg.git", index_url=index_url)
    hooks = Webhooks(registry.engine)
    v1 = registry.save("greet", PROMPT, author="Ada <ada@example.org>")
    assert pending_count(registry) == 0  # no hooks: nothing enqueued
    hook = hooks.add("http://127.0.0.1:9/all")
    v2 = registry.save("greet", variant(PROMPT, 2), message="warmer", base=1,
                       author="Ada <ada@example.org>")
    registry.set_label("greet", "production", 2)
    registry.rollback("greet", 1, label="production")
    registry.rollback("greet", 1)  # content restore: version 3
    registry.delete("greet")
    events = [(d["event"], d["body"]["payload"]) for d in reversed(hooks.deliveries())]
    assert [e for e, _ in events] == ["version.saved", "label.moved", "label.moved",
                                      "rollback", "version.saved", "rollback",
                                      "version.saved"]
    saved = events[0][1]
    assert saved == {"kind": "prompt", "name": "greet", "version": 2, "ref": "greet@2",
                     "deleted": False, "commit": v2.commit, "author": "Ada",
                     "email": "ada@example.org", "message": "warmer",
                     "time": v2.time.isoformat()}
    assert v1.commit != saved["commit"]
    moved = events[2][1]
    assert (moved["label"], moved["from"], moved["to"]) == ("production", 2, 1)
    assert moved["message"].startswith("rollback greet@production")
    assert events[3][1]["label_moves"] == [{"kind": "prompt", "name": "greet",
                                            "label": "production", "from": 2, "to": 1}]
    assert events[5][1]["versions"] == [{"kind": "prompt", "name": "greet", "version": 3,
                                         "deleted": False}]
    assert events[6][1]["deleted"] is True
    assert all(d["webhook_id"] == hook["id"] for d in hooks.deliveries())
    registry.close()


def test_plain_git_push_is_announced_and_reindex_is_not(registry, tmp_path):
    hooks = Webhooks(registry.engine)
    hooks.add("http://127.0.0.1:9/all", events=["version.saved"])
    registry.save("greet", PROMPT)
    work = tmp_path / "clone"

    def git(*args):
        subprocess.run(["git", *args], cwd=work if work.exists() else None, check=True,
                       capture_output=True)

    git("clone", "-q", "-b", "main", registry.path, str(work))
    git("config", "user.name", "Grace")
    git("config", "user.email", "grace@x.org")
    (work / at("greet")).write_text(variant(PROMPT, 9))
    git("commit", "-qam", "edit in my editor")
    git("push", "-q", "origin", "main")
    registry.sync()
    payloads = [d["body"]["payload"] for d in hooks.deliveries()]
    assert [(p["version"], p["author"], p["message"]) for p in payloads] == [
        (2, "Grace", "edit in my editor"), (1, "promptrev", "save greet")]

    registry.reindex()  # a full rebuild re-records history: nothing new to announce
    assert len(hooks.deliveries()) == 2
    subprocess.run(["git", "update-ref", "refs/heads/main", payloads[1]["commit"]],
                   cwd=registry.path, check=True)
    registry.sync()  # history rewritten: the fallback rebuild announces nothing either
    assert registry.resolve("greet").number == 1 and len(hooks.deliveries()) == 2


def test_disabled_and_removed_hooks_get_nothing(registry):
    hooks = Webhooks(registry.engine)
    hook = hooks.add("http://127.0.0.1:9/x")
    hooks.set_active(hook["id"], False)
    registry.save("greet", PROMPT)
    assert pending_count(registry) == 0
    hooks.set_active(hook["id"], True)
    registry.save("greet", variant(PROMPT, 1), base=1)
    assert pending_count(registry) == 1
    hooks.remove(hook["id"])
    assert pending_count(registry) == 0 and hooks.list() == []


# ---- delivery --------------------------------------------------------------------------
def test_signature_is_githubs_hmac_sha256():
    body = b'{"event":"version.saved"}'
    header = signature("secret", body)
    assert header == "sha256=" + hmac.new(b"secret", body, "sha256").hexdigest()
    assert verify_signature("secret", body, header)
    assert not verify_signature("wrong", body, header)
    assert not verify_signature("secret", body + b" ", header)
    assert not verify_signature("secret", body, None)


def test_retry_after_500_then_delivered_with_a_log_of_both_attempts(registry, receiver):
    hooks = Webhooks(registry.engine)
    hook = hooks.add(receiver.url + "/flaky", secret="topsecret")
    registry.save("greet", PROMPT)
    deliverer = Deliverer(registry.engine, retry=FAST, targets=LOOPBACK_OK)
    deliver_all(deliverer, hooks)
    first, second = receiver.got("version.saved")
    assert (first["status"], second["status"]) == (500, 200)
    assert first["body"] == second["body"] and first["delivery"] == second["delivery"]
    headers = second["headers"]
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "promptrev-webhooks"
    assert headers["X-Promptrev-Hook"] == str(hook["id"])
    assert verify_signature("topsecret", second["body"],
                            headers["X-Promptrev-Signature-256"])
    (delivery,) = hooks.deliveries()
    assert delivery["status"] == "delivered" and delivery["attempts"] == 2
    assert [(a["number"], a["status_code"]) for a in delivery["attempt_log"]] == [
        (1, 500), (2, 200)]
    assert delivery["attempt_log"][0]["error"] == "HTTP 500"
    assert delivery["attempt_log"][1]["response"] == "ok"  # the start of the answer
    assert json.loads(second["body"]) == delivery["body"]

    again = hooks.redeliver(delivery["id"])
    assert again["redelivery_of"] == delivery["id"] and again["status"] == "pending"
    deliver_all(deliverer, hooks)
    assert receiver.got()[-1]["delivery"] == str(again["id"])
    deliverer.close()


def test_gives_up_after_max_attempts(registry, receiver):
    hooks = Webhooks(registry.engine)
    hooks.add(receiver.url + "/down")
    refused = hooks.add(f"http://127.0.0.1:{free_port()}/nobody-listens")
    registry.save("greet", PROMPT)
    deliverer = Deliverer(registry.engine, retry=FAST, timeout=5, targets=LOOPBACK_OK)
    deliver_all(deliverer, hooks)
    down, nobody = sorted(hooks.deliveries(), key=lambda d: d["webhook_id"])
    assert down["status"] == nobody["status"] == "failed"
    assert down["attempts"] == nobody["attempts"] == 3
    assert [a["status_code"] for a in down["attempt_log"]] == [500, 500, 500]
    assert len(receiver.got()) == 3
    assert nobody["webhook_id"] == refused["id"] and nobody["last_status"] is None
    assert all("Connect" in a["error"] for a in nobody["attempt_log"])
    deliverer.close()


def test_a_receiver_slower_than_the_timeout_is_retried(registry):
    slow = Receiver(delay=1.0)
    try:
        hooks = Webhooks(registry.engine)
        hooks.add(slow.url + "/ok")
        emit(registry.engine, "rollback", {})
        deliverer = Deliverer(registry.engine, retry=FAST, timeout=0.2,
                              targets=LOOPBACK_OK)
        deliver_all(deliverer, hooks)
        (delivery,) = hooks.deliveries()
        assert delivery["status"] == "failed" and delivery["attempts"] == 3
        assert {a["error"] for a in delivery["attempt_log"]} == {"timed out after 0.2 s"}
        deliverer.close()
    finally:
        slow.close()


def test_backoff_doubles_up_to_the_cap():
    policy = RetryPolicy(base=10, factor=2, cap=3600, max_attempts=8)
    assert [policy.delay(n) for n in (1, 2, 3, 9, 20)] == [10, 20, 40, 2560, 3600]


@pytest.fixture(params=["sqlite", "postgresql"])
def index_url(request):
    """The registry's default SQLite index, and PostgreSQL when a server is configured."""
    if request.param == "sqlite":
        return None
    if not PG_URL:
        pytest.skip("PROMPTREV_TEST_POSTGRES_URL not set")
    return request.getfixturevalue("pg_url")


def test_racing_deliverers_never_send_a_delivery_twice(tmp_path, index_url):
    slow = Receiver(delay=0.01)
    try:
        Registry.init(tmp_path / "reg.git", index_url=index_url).close()
        regs = [Registry.open(tmp_path / "reg.git", index_url=index_url)
                for _ in range(3)]  # an engine each, as in separate processes
        hooks = Webhooks(regs[0].engine)
        hooks.add(slow.url + "/ok")
        hooks.add(slow.url + "/ok")
        for n in range(30):
            emit(regs[0].engine, "change_request.opened", {"id": n})
        deliverers = [Deliverer(reg.engine, retry=FAST, batch=5, targets=LOOPBACK_OK)
                      for reg in regs[1:]]
        start = threading.Barrier(len(deliverers))

        def work(deliverer):
            start.wait()
            while deliverer.run_once():
                pass

        threads = [threading.Thread(target=work, args=(d,)) for d in deliverers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        ids = [r["delivery"] for r in slow.got()]
        assert len(ids) == 60 and len(set(ids)) == 60
        assert {d["attempts"] for d in hooks.deliveries(limit=100)} == {1}
        for deliverer in deliverers:
            deliverer.close()
        for reg in regs:
            reg.close()
    finally:
        slow.close()


# ---- the server ------------------------------------------------------------------------
def test_api_is_for_admins_and_never_shows_a_secret_twice(server_env):
    assert "promptrev_webhooks" not in server_env.app.extensions  # no thread in tests
    r = server_env.api("POST", "/webhooks", role="editor", json={"url": "http://a.example/"})
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "forbidden"
    assert server_env.api("GET", "/webhooks", role="editor").status_code == 403
    r = server_env.api("POST", "/webhooks", json={"url": "file:///etc/passwd"})
    assert r.status_code == 400 and "http:// or https://" in r.get_json()["error"]["message"]
    r = server_env.api("POST", "/webhooks", json={"url": "http://a.example/hook",
                                                  "events": ["label.moved"]})
    assert r.status_code == 201
    hook = r.get_json()
    assert len(hook["secret"]) == 64 and hook["events"] == ["label.moved"]
    listed = server_env.api("GET", "/webhooks").get_json()["webhooks"]
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
    server_env.api("PUT", "/labels?name=summarize&label=staging", json={"version": 1})
    (delivery,) = server_env.api("GET", "/webhook-deliveries").get_json()["deliveries"]
    assert delivery["event"] == "label.moved" and delivery["attempt_log"] == []
    r = server_env.api("POST", "/webhook-deliveries/redeliver", json={"id": delivery["id"]})
    assert r.status_code == 201 and r.get_json()["redelivery_of"] == delivery["id"]
    r = server_env.api("PATCH", f"/webhooks?id={hook['id']}", json={"active": False})
    assert r.status_code == 200 and r.get_json()["active"] is False
    assert server_env.api("DELETE", f"/webhooks?id={hook['id']}").status_code == 200
    assert server_env.api("DELETE", f"/webhooks?id={hook['id']}").status_code == 404
    assert server_env.api("GET", "/webhook-deliveries").get_json()["deliveries"] == []


def test_delivery_thread_starts_when_asked_and_stops_cleanly(tmp_path, receiver):
    from promptrev.server.webhook_delivery import start_delivery, stop_delivery

    server_env = make_server_env(tmp_path, webhook_allow_private=True)
    server_env.api("POST", "/webhooks", json={"url": receiver.url + "/ok"})
    delivery = start_delivery(server_env.app)
    assert start_delivery(server_env.app) is delivery  # once per app
    try:
        server_env.api("PUT", "/labels?name=summarize&label=staging", json={"version": 1})
        wait_for(lambda: receiver.got("label.moved"), what="the label.moved delivery")
    finally:
        stop_delivery(server_env.app)
        server_env.app.extensions["promptrev"].close()
    assert not delivery.thread.is_alive()


def test_live_server_delivers_signed_events_with_a_retry(tmp_path, receiver):
    server = start_server(tmp_path, env={"PROMPTREV_WEBHOOK_RETRY_BASE": "0.2",
                                         "PROMPTREV_WEBHOOK_POLL": "0.1", **PRIVATE_OK})
    try:
        http = httpx.Client(base_url=server.url + "/api/v1", timeout=30,
                            headers={"Authorization": f"Bearer {server.token()}"})
        r = http.post("/webhooks", json={"url": receiver.url + "/flaky"})
        assert r.status_code == 201, r.text
        secret = r.json()["secret"]
        r = http.put("/artifact", params={"name": "hooked"}, json={"text": PROMPT})
        assert r.status_code == 201, r.text

        def saved():
            return [q for q in receiver.got("version.saved", 200)
                    if json.loads(q["body"])["payload"]["name"] == "hooked"]

        (ok,) = wait_for(saved, what="a successful version.saved delivery")
        tries = [q for q in receiver.got("version.saved") if q["delivery"] == ok["delivery"]]
        assert [q["status"] for q in tries] == [500, 200]
        signed = ok["headers"]["X-Promptrev-Signature-256"]
        assert verify_signature(secret, ok["body"], signed)
        assert not verify_signature(secret + "x", ok["body"], signed)
        payload = json.loads(ok["body"])["payload"]
        assert (payload["version"], payload["author"]) == (1, "admin")

        def logged():
            found = http.get("/webhook-deliveries", params={"event": "version.saved"}).json()
            return [d for d in found["deliveries"] if str(d["id"]) == ok["delivery"]
                    and d["status"] == "delivered"]

        (entry,) = wait_for(logged, what="the delivery log to show it delivered")
        assert [a["status_code"] for a in entry["attempt_log"]] == [500, 200]

        http.put("/labels", params={"name": "hooked", "label": "staging"},
                 json={"version": 1}).raise_for_status()
        http.put("/artifact", params={"name": "hooked"}, headers={"If-Match": "1"},
                 json={"text": variant(PROMPT, 2)}).raise_for_status()
        http.post("/rollback", json={"name": "hooked", "to": 1}).raise_for_status()
        wait_for(lambda: receiver.got("label.moved", 200) and receiver.got("rollback", 200),
                 what="label.moved and rollback deliveries")
        rollback = json.loads(receiver.got("rollback", 200)[0]["body"])["payload"]
        assert rollback["versions"] == [{"kind": "prompt", "name": "hooked", "version": 3,
                                         "deleted": False}]
        # The CLI reads the same log.
        listed = json.loads(server.cli("webhook", "deliveries", "--json", "--limit", "50"))
        assert {d["event"] for d in listed} >= {"version.saved", "label.moved", "rollback"}
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()


def test_cli_adds_lists_and_delivers_once(tmp_path, receiver):
    reg_path = tmp_path / "reg.git"
    Registry.init(reg_path).close()

    def cli(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "promptrev.cli", "--registry",
                              str(reg_path), *args],
                             capture_output=True, text=True, cwd=ROOT, timeout=60,
                             env={**os.environ, **PRIVATE_OK,
                                  "PROMPTREV_WEBHOOK_RETRY_BASE": "0"})
        assert out.returncode == 0, out.stderr
        return out.stdout

    out = cli("webhook", "add", receiver.url + "/flaky", "--event", "version.saved")
    assert "added webhook 1" in out and "secret (shown once" in out
    assert "version.saved" in cli("webhook", "list")
    with Registry.open(reg_path) as reg:
        reg.save("greet", PROMPT)
    assert "1 attempt(s)" in cli("webhook", "deliver", "--once")  # the 500
    assert "1 attempt(s)" in cli("webhook", "deliver", "--once")  # the retry: 200
    (delivery,) = json.loads(cli("webhook", "deliveries", "--json"))
    assert delivery["status"] == "delivered" and delivery["attempts"] == 2
    assert "#2" in cli("webhook", "deliveries")
    assert "removed webhook 1" in cli("webhook", "rm", "1")


def test_cli_refuses_a_bad_url(tmp_path):
    reg_path = tmp_path / "reg.git"
    Registry.init(reg_path).close()
    out = subprocess.run([sys.executable, "-m", "promptrev.cli", "--registry",
                          str(reg_path), "webhook",
                          "add", "localhost:8080"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 6 and "must be http:// or https://" in out.stderr

