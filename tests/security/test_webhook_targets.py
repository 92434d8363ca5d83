"""Attacks on webhook targets and secrets, replayed against a real ``promptrev serve``.

An admin points a webhook at loopback, the private network or the link-local metadata
address, in every spelling the resolver accepts, or at a name that resolves there; the
server must refuse when the hook is added, and again when a delivery is sent (after
resolving the name, connecting to the address it checked), with nothing reaching a
receiver we run on loopback. The operator's opt-in (``PROMPTREV_WEBHOOK_ALLOW_PRIVATE``,
``PROMPTREV_WEBHOOK_ALLOW_NETWORKS``) widens it. Signing secrets never show again after
creation: not in answers, the CLI, deliveries or the server's log.

Where DNS matters, the resolver is stood in for (a function passed to the policy): it is
the network, not our code.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from promptrev import Registry
from promptrev.webhooks import Deliverer, RetryPolicy, Webhooks, emit, verify_signature

from ..conftest import PROMPT
from ..live import ROOT, LiveServer, start_server
from ..test_webhooks import wait_for

FAST = {"PROMPTREV_WEBHOOK_RETRY_BASE": "0.1", "PROMPTREV_WEBHOOK_RETRY_CAP": "0.2",
        "PROMPTREV_WEBHOOK_MAX_ATTEMPTS": "2", "PROMPTREV_WEBHOOK_POLL": "0.1"}
PRIVATE_OK = {"PROMPTREV_WEBHOOK_ALLOW_PRIVATE": "1"}
NOISY = ("\x1b[31mALERT\x1b[0m\r\n" + "internal-service-says " * 100).encode()


class Receiver:
    """An HTTP(S) server on a loopback address that records every request it gets."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None):
        self.requests: list[dict] = []
        self.server_names: list[str | None] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": body})
                status, extra, answer = {
                    "/redirect": (302, {"Location": "http://127.0.0.2:9/meta-data"}, b""),
                    "/noisy": (500, {}, NOISY)}.get(self.path, (200, {}, b"ok"))
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that refused our certificate

        self.server = Server((host, 0), Handler)
        self.port = self.server.server_port
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.server_names.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def admin(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url + "/api/v1", timeout=30,
                        headers={"Authorization": f"Bearer {server.token()}"})


def save(http: httpx.Client, name: str) -> None:
    http.put("/artifact", params={"name": name}, json={"text": PROMPT}).raise_for_status()


def settled(http: httpx.Client, hook_id: int) -> list[dict]:
    """The hook's deliveries once none is pending (waits for them)."""
    def done():
        found = http.get("/webhook-deliveries", params={"webhook": hook_id}).json()
        found = found["deliveries"]
        return found if found and all(d["status"] != "pending" for d in found) else None

    return wait_for(done, what=f"the deliveries of webhook {hook_id} to settle")


def cli(registry: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTREV_WEBHOOK")}
    return subprocess.run([sys.executable, "-m", "promptrev.cli", "--registry", str(registry),
                           *args], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**clean, **(env or {})})


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    """A server with the default policy (public targets only)."""
    server = start_server(tmp_path_factory.mktemp("strict"), workers=1, env=FAST)
    yield server
    server.stop()
    assert "Traceback" not in server.log.read_text()


# ---- at creation: every spelling of loopback, link-local, private --------------------
SPELLINGS = {
    "http://127.0.0.1:{p}/ok": "loopback",
    "http://0x7f000001:{p}/ok": "loopback",
    "http://2130706433:{p}/ok": "loopback",
    "http://0177.0.0.1:{p}/ok": "loopback",
    "http://0x7f.1:{p}/ok": "loopback",
    "http://127.1:{p}/ok": "loopback",
    "http://127.0.0.1.:{p}/ok": "loopback",
    "http://[::1]:{p}/ok": "loopback",
    "http://[::ffff:127.0.0.1]:{p}/ok": "loopback",
    "http://[::ffff:7f00:1]:{p}/ok": "loopback",
    "http://[2002:7f00:1::]:{p}/ok": "loopback",
    "http://localhost:{p}/ok": "loopback",
    "http://localhost.:{p}/ok": "loopback",
    "http://LocalHost:{p}/ok": "loopback",
    "http://hooks.localhost:{p}/ok": "loopback",
    "https://127.0.0.1:{p}/ok": "loopback",
    "http://0.0.0.0:{p}/ok": "unspecified",
    "http://0:{p}/ok": "unspecified",
    "http://[::]:{p}/ok": "unspecified",
    "http://169.254.169.254/latest/meta-data/": "link-local",
    "http://0xa9fea9fe/latest/meta-data/": "link-local",
    "http://[fe80::1]/": "link-local",
    "http://10.0.0.1/": "private",
    "http://192.168.1.1/": "private",
    "http://172.16.0.1/": "private",
    "http://[fd12:3456::1]/": "private",
    "http://100.64.0.1/": "non-public",
    "http://224.0.0.1/": "multicast",
}


def test_admin_cannot_add_a_webhook_on_loopback_link_local_or_private_in_any_spelling(
        strict_server, receiver):
    http = admin(strict_server)
    accepted = {}
    for spelling, kind in SPELLINGS.items():
        url = spelling.format(p=receiver.port)
        r = http.post("/webhooks", json={"url": url, "secret": "never-shown-again"})
        error = r.json().get("error", {}) if r.status_code < 500 else {}
        if r.status_code != 400 or error.get("code") != "target_refused" or \
                f"{kind} address" not in error.get("message", ""):
            accepted[url] = (r.status_code, r.text[:200])
        elif "never-shown-again" in r.text:
            accepted[url] = "the refusal shows the secret"
    assert accepted == {}
    assert http.get("/webhooks").json()["webhooks"] == []
    # A public name is accepted: names are judged when delivered, after resolution.
    r = http.post("/webhooks", json={"url": "https://hooks.example.com/promptrev"})
    assert r.status_code == 201, r.text
    http.delete("/webhooks", params={"id": r.json()["id"]}).raise_for_status()
    # The CLI asks the same policy.
    out = cli(strict_server.registry, "webhook", "add", f"http://0x7f000001:{receiver.port}/")
    assert out.returncode == 5 and "127.0.0.1, a loopback address" in out.stderr
    assert "Traceback" not in out.stderr
    assert receiver.requests == []


def test_a_name_that_resolves_to_loopback_is_refused_when_delivered(strict_server, receiver):
    """The machine's own host name resolves to loopback here (``/etc/hosts``): it passes
    the check at creation (a name) and must be refused once resolved, nothing sent."""
    name = socket.gethostname()
    try:
        found = {info[4][0] for info in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
    except OSError:
        found = set()
    if not found or not all(a.startswith("127.") or a == "::1" for a in found):
        pytest.skip(f"this machine's name {name!r} does not resolve to loopback only")
    http = admin(strict_server)
    r = http.post("/webhooks", json={"url": f"http://{name}:{receiver.port}/ok"})
    assert r.status_code == 201, r.text
    hook = r.json()
    try:
        save(http, "resolved-to-loopback")
        (delivery,) = settled(http, hook["id"])
        assert delivery["status"] == "failed" and delivery["attempts"] == 1
        (attempt,) = delivery["attempt_log"]
        assert attempt["status_code"] is None and attempt["response"] is None
        assert attempt["error"].startswith(f"refused: {name} resolves to 127.")
        assert "a loopback address; nothing was sent" in attempt["error"]
        assert receiver.requests == []
    finally:
        http.delete("/webhooks", params={"id": hook["id"]})


def test_a_hook_kept_from_an_opt_in_is_refused_at_delivery_once_the_opt_in_is_off(
        tmp_path, receiver):
    """With the opt-in, ``localhost`` reaches our receiver; the same hook, on the same
    registry served without it, is refused at delivery and cannot be enabled again."""
    server = start_server(tmp_path, workers=1, env={**FAST, **PRIVATE_OK})
    try:
        http = admin(server)
        r = http.post("/webhooks", json={"url": f"http://localhost:{receiver.port}/ok",
                                         "events": ["version.saved"]})
        assert r.status_code == 201, r.text
        hook = r.json()
        save(http, "while-allowed")
        (delivery,) = settled(http, hook["id"])
        assert delivery["status"] == "delivered"
        (got,) = receiver.requests
        assert got["headers"]["Host"] == f"localhost:{receiver.port}"
        assert verify_signature(hook["secret"], got["body"],
                                got["headers"]["X-Promptrev-Signature-256"])
    finally:
        server.stop()
    server = start_server(tmp_path, workers=1, env=FAST)  # same registry, default policy
    try:
        http = admin(server)
        save(http, "after-the-opt-in")
        refused = wait_for(lambda: [d for d in settled(http, hook["id"])
                                    if d["body"]["payload"]["name"] == "after-the-opt-in"],
                           what="the delivery after the opt-in")[0]
        assert refused["status"] == "failed" and refused["attempts"] == 1
        assert refused["last_error"].startswith(
            "refused: localhost resolves to 127.0.0.1, a loopback address")
        assert len(receiver.requests) == 1  # only the one sent while it was allowed
        http.patch("/webhooks", params={"id": hook["id"]},
                   json={"active": False}).raise_for_status()
        r = http.patch("/webhooks", params={"id": hook["id"]}, json={"active": True})
        assert r.status_code == 400 and r.json()["error"]["code"] == "target_refused"
        assert "loopback" in r.json()["error"]["message"]
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()


def test_allowed_networks_redirects_and_the_answer_kept(tmp_path, receiver):
    """Only the listed network is widened; a redirect to another address is not
    followed; the log keeps a short, printable start of an answer."""
    elsewhere = Receiver("127.0.0.2")
    server = start_server(tmp_path, workers=1, env={
        **FAST, "PROMPTREV_WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32"})
    try:
        http = admin(server)
        base = f"http://127.0.0.1:{receiver.port}"
        for url in (f"http://127.0.0.2:{elsewhere.port}/ok", f"http://[::1]:{receiver.port}/",
                    "http://169.254.169.254/latest/meta-data/"):
            r = http.post("/webhooks", json={"url": url})
            assert r.status_code == 400 and r.json()["error"]["code"] == "target_refused", url
        hooks = {path: http.post("/webhooks", json={"url": base + path,
                                                    "events": ["version.saved"]}).json()
                 for path in ("/ok", "/redirect", "/noisy")}
        save(http, "networks")
        (ok,) = settled(http, hooks["/ok"]["id"])
        assert ok["status"] == "delivered"
        (moved,) = settled(http, hooks["/redirect"]["id"])
        assert moved["status"] == "failed"
        assert {a["error"] for a in moved["attempt_log"]} == {
            "HTTP 302 (redirects are not followed)"}
        (noisy,) = settled(http, hooks["/noisy"]["id"])
        kept = noisy["attempt_log"][0]["response"]
        assert kept.startswith("[31mALERT [0m internal-service-says")
        assert len(kept) <= 200 and kept.isprintable()
        assert elsewhere.requests == []
    finally:
        server.stop()
        elsewhere.close()
    assert "Traceback" not in server.log.read_text()


def test_the_operator_settings_widen_only_what_they_name(tmp_path):
    reg = tmp_path / "reg.git"
    Registry.init(reg).close()

    def add(url: str, env: dict) -> subprocess.CompletedProcess:
        return cli(reg, "webhook", "add", url, env=env)

    widened = add("http://10.1.2.3/hook", PRIVATE_OK)
    assert widened.returncode == 0, widened.stderr
    metadata = add("http://169.254.169.254/latest/meta-data/", PRIVATE_OK)
    assert metadata.returncode == 5 and "link-local" in metadata.stderr  # never widened
    listed = {"PROMPTREV_WEBHOOK_ALLOW_NETWORKS": "169.254.169.254/32, fd00::/8"}
    assert add("http://169.254.169.254/latest/meta-data/", listed).returncode == 0
    assert add("http://127.0.0.1:8/hook", listed).returncode == 5
    bad = add("https://hooks.example.com/", {"PROMPTREV_WEBHOOK_ALLOW_NETWORKS": "10.0.0.0/33"})
    assert bad.returncode == 6 and "PROMPTREV_WEBHOOK_ALLOW_NETWORKS" in bad.stderr
    assert "Traceback" not in bad.stderr


# ---- at delivery: the checked address is the one connected to (DNS stood in for) ------
class Resolver:
    """A DNS that answers what the test says and counts the questions."""

    def __init__(self, answers: dict[str, list[list[str]]]):
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        queue = self.answers[host]
        return queue.pop(0) if len(queue) > 1 else queue[0]


def test_a_rebinding_name_is_checked_once_and_reached_only_at_the_checked_address(registry):
    from promptrev.webhook_targets import TargetPolicy, networks

    allowed = Receiver("127.0.0.2")  # the address the operator allowed
    private = Receiver("127.0.0.1")  # what a rebinding answer would reach
    try:
        dns = Resolver({
            "hooks.invalid": [["127.0.0.2"], ["127.0.0.1"]],  # allowed, then rebound
            "mixed.invalid": [["127.0.0.2", "127.0.0.1"]]})
        policy = TargetPolicy(allow_networks=networks(["127.0.0.2/32"]), resolve=dns)
        hooks = Webhooks(registry.engine, targets=policy)
        good = hooks.add(f"http://hooks.invalid:{allowed.port}/ok")
        emit(registry.engine, "rollback", {"n": 1})
        deliverer = Deliverer(registry.engine, retry=RetryPolicy(max_attempts=1),
                              targets=policy)
        assert deliverer.run_once() == 1
        (got,) = allowed.requests
        assert got["headers"]["Host"] == f"hooks.invalid:{allowed.port}"
        assert dns.asked == ["hooks.invalid"]  # one answer, checked, then connected to
        hooks.remove(good["id"])

        # A name with one allowed and one refused address is refused as a whole.
        hooks.add(f"http://mixed.invalid:{allowed.port}/ok")
        emit(registry.engine, "rollback", {"n": 2})
        assert deliverer.run_once() == 1
        (refused,) = hooks.deliveries()
        assert refused["status"] == "failed"
        assert refused["last_error"].startswith(
            "refused: mixed.invalid resolves to 127.0.0.1, a loopback address")
        assert len(allowed.requests) == 1 and private.requests == []

        # Every address checked, the next one is tried when one does not connect.
        hooks.add(f"http://dual.invalid:{allowed.port}/ok")
        dns.answers["dual.invalid"] = [["127.0.0.3", "127.0.0.2"]]  # nobody on .3
        wide = TargetPolicy(allow_networks=networks(["127.0.0.2/32", "127.0.0.3/32"]),
                            resolve=dns)
        emit(registry.engine, "rollback", {"n": 3})
        deliverer.close()
        deliverer = Deliverer(registry.engine, retry=RetryPolicy(max_attempts=1),
                              targets=wide)
        assert deliverer.run_once() == 2  # mixed.invalid's and dual.invalid's
        assert len(allowed.requests) == 2 and private.requests == []
        assert allowed.requests[1]["headers"]["Host"] == f"dual.invalid:{allowed.port}"
        deliverer.close()
    finally:
        allowed.close()
        private.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_keeps_the_name_for_sni_and_the_certificate_check(registry, tmp_path):
    from promptrev.webhook_targets import TargetPolicy, networks

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=hooks.example", "-addext", "subjectAltName=DNS:hooks.example",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = Receiver("127.0.0.1", tls=tls)
    try:
        dns = Resolver({"hooks.example": [["127.0.0.1"]], "other.example": [["127.0.0.1"]]})
        policy = TargetPolicy(allow_networks=networks(["127.0.0.1/32"]), resolve=dns)
        trust = ssl.create_default_context(cafile=str(cert))
        hooks = Webhooks(registry.engine, targets=policy)
        right = hooks.add(f"https://hooks.example:{server.port}/ok")
        wrong = hooks.add(f"https://other.example:{server.port}/ok")
        emit(registry.engine, "rollback", {})
        deliverer = Deliverer(registry.engine, retry=RetryPolicy(max_attempts=1),
                              targets=policy, transport=httpx.HTTPTransport(verify=trust))
        assert deliverer.run_once() == 2
        deliverer.close()
        by_hook = {d["webhook_id"]: d for d in hooks.deliveries()}
        assert by_hook[right["id"]]["status"] == "delivered"
        assert by_hook[wrong["id"]]["status"] == "failed"
        assert "certificate" in by_hook[wrong["id"]]["last_error"].lower()
        assert "hooks.example" in server.server_names  # SNI carried the name, not the IP
        (got,) = server.requests
        assert got["headers"]["Host"] == f"hooks.example:{server.port}"
    finally:
        server.close()


# ---- secrets ---------------------------------------------------------------------------
def test_secrets_never_show_again_in_answers_the_cli_deliveries_or_the_log(
        tmp_path, receiver):
    chosen, url_password = "chosen-s3cret-4f1e9a", "url-pa55-77c2"
    server = start_server(tmp_path, workers=1, env={**FAST, **PRIVATE_OK})
    try:
        http = admin(server)
        url = f"http://hook-user:{url_password}@localhost:{receiver.port}/ok"
        r = http.post("/webhooks", json={"url": url, "secret": chosen})
        assert r.status_code == 201 and r.json()["secret"] == chosen  # shown this once
        assert url_password not in r.text and "hook-user:***@localhost" in r.text
        first = r.json()
        r = http.post("/webhooks", json={"url": f"http://localhost:{receiver.port}/ok"})
        generated = r.json()["secret"]
        assert len(generated) == 64
        r = http.post("/webhooks", json={"url": "http://169.254.169.254/", "secret": chosen})
        assert r.status_code == 400 and chosen not in r.text  # refused: link-local
        save(http, "secretive")
        (delivery,) = settled(http, first["id"])
        assert delivery["status"] == "delivered"
        got = [q for q in receiver.requests
               if q["headers"]["X-Promptrev-Hook"] == str(first["id"])]
        assert verify_signature(chosen, got[0]["body"],
                                got[0]["headers"]["X-Promptrev-Signature-256"])
        answers = [
            http.get("/webhooks").text,
            http.patch("/webhooks", params={"id": first["id"]}, json={"active": False}).text,
            http.patch("/webhooks", params={"id": first["id"]}, json={"active": True}).text,
            http.get("/webhook-deliveries").text,
            http.post("/webhook-deliveries/redeliver", json={"id": 1}).text,
            http.get("/openapi.json").text,
            cli_out(server, "webhook", "list"),
            cli_out(server, "webhook", "list", "--json"),
            cli_out(server, "webhook", "deliveries", "--json"),
        ]
        assert json.loads(answers[0])["webhooks"][0]["url"] == \
            f"http://hook-user:***@localhost:{receiver.port}/ok"
    finally:
        server.stop()
    answers.append(server.log.read_text())
    for text in answers:
        for secret in (chosen, generated, url_password):
            assert secret not in text


def cli_out(server: LiveServer, *args: str) -> str:
    out = cli(server.registry, *args, env=PRIVATE_OK)
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr
