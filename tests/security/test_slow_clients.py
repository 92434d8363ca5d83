"""Slow clients and decompression bombs, replayed against a real ``promptrev serve``.

Issue 14, item 7: three slow-header connections blocked every request for 40 s (sync
workers), and a 4.6 MB gzip body to ``git-upload-pack`` held a worker for 120 s (the
1 GiB limit counted compressed bytes). Here dozens of slow connections stay open, being
replaced as the server drops them, while a normal client must still be answered at once;
each slow connection must be dropped after the configured time; gzip bombs must get 413
within seconds.
"""

from __future__ import annotations

import select
import socket
import struct
import subprocess
import threading
import time
import zlib
from urllib.parse import urlsplit

import httpx
import pytest

from promptrev.config import Settings
from promptrev.errors import InvalidRequest

from ..live import LiveServer, start_server

HEADER_TIMEOUT = 3.0  # PROMPTREV_HEADER_TIMEOUT of the server under attack
PROMPT = 2.5  # seconds within which a normal request must be answered meanwhile
SLACK = 2.5  # the server looks at deadlines about once a second; the machine is shared


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_server(tmp_path_factory.mktemp("slow"), workers=2,
                        env={"PROMPTREV_HEADER_TIMEOUT": str(HEADER_TIMEOUT)})
    live.tokens = {"admin": live.token()}
    yield live
    live.stop()


def slow_head() -> list[bytes]:
    """A request head sent one byte at a time that never ends (within the test)."""
    return list(b"GET /api/v1/artifacts HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200)


def slow_body(length: int) -> list[bytes]:
    """A whole head at once, then a form body of ``length`` bytes, one byte at a time."""
    head = (f"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-"
            f"urlencoded\r\nContent-Length: {length}\r\n\r\n").encode()
    return [head] + [b"a"] * min(length, 300)


def one_byte_each(pieces: list[bytes | int]) -> list[bytes]:
    return [bytes([p]) if isinstance(p, int) else p for p in pieces]


class SlowClients:
    """Connections that each send their pieces one per ``interval``; when the server drops
    one, it records how long it lived and what it answered, and opens a new one (as an
    attacker would, to keep up the pressure)."""

    def __init__(self, server: LiveServer, payloads: list[list[bytes]],
                 interval: float = 1.0, replace: bool = True):
        parts = urlsplit(server.url)
        self.address = (parts.hostname, parts.port)
        self.payloads = [one_byte_each(p) for p in payloads]
        self.interval, self.replace = interval, replace
        self.dropped: list[tuple[int, float, bytes]] = []  # (payload index, lifetime, answer)
        self.live: dict[int, tuple[socket.socket, float, int]] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SlowClients:
        for index in range(len(self.payloads)):
            self._open(index)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(10)
        for sock, _, _ in self.live.values():
            sock.close()

    def _open(self, index: int) -> None:
        sock = socket.create_connection(self.address, timeout=5)
        sock.setblocking(False)
        self.live[index] = (sock, time.monotonic(), 0)

    def _run(self) -> None:
        while not self.stopping.wait(self.interval):
            for index, (sock, opened, sent) in list(self.live.items()):
                answer = self._answer(sock)
                if answer is None and sent < len(self.payloads[index]):
                    try:
                        sock.sendall(self.payloads[index][sent])
                        self.live[index] = (sock, opened, sent + 1)
                    except OSError:
                        answer = b""
                if answer is not None:
                    self.dropped.append((index, time.monotonic() - opened, answer))
                    sock.close()
                    del self.live[index]
                    if self.replace and not self.stopping.is_set():
                        self._open(index)

    @staticmethod
    def _answer(sock: socket.socket) -> bytes | None:
        """What the server sent before closing, or None while the connection is open."""
        if not select.select([sock], [], [], 0)[0]:
            return None
        answer = b""
        sock.setblocking(True)
        sock.settimeout(2)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
        return answer


def timed_get(server: LiveServer, path: str = "/api/v1/artifacts") -> tuple[int, float]:
    start = time.monotonic()
    r = httpx.get(server.url + path, timeout=30,
                  headers={"Authorization": f"Bearer {server.tokens['admin']}"})
    return r.status_code, time.monotonic() - start


# ---- slow clients --------------------------------------------------------------------------
def test_slow_heads_and_bodies_do_not_stop_other_clients(server):
    # 40 slow heads, 15 slow small bodies (buffered by the poller), 15 slow large bodies
    # (read by a thread, as the login form's CSRF check reads the form before any login).
    payloads = ([slow_head() for _ in range(40)] + [slow_body(40) for _ in range(15)]
                + [slow_body(300_000) for _ in range(15)])
    with SlowClients(server, payloads) as attack:
        time.sleep(1.5)
        answers = []
        for _ in range(12):  # ~7 s: slow connections are dropped and replaced meanwhile
            answers.append(timed_get(server))
            time.sleep(0.5)
        assert attack.thread.is_alive()  # the pressure never let up
    assert all(status == 200 for status, _ in answers), answers
    assert max(took for _, took in answers) < PROMPT, answers
    assert attack.dropped, "no slow connection was dropped"


def test_a_slow_head_is_answered_408_and_closed_after_the_timeout(server):
    with SlowClients(server, [slow_head(), slow_head()], interval=0.5, replace=False) as attack:
        deadline = time.monotonic() + HEADER_TIMEOUT + SLACK + 3
        while attack.live and time.monotonic() < deadline:
            time.sleep(0.1)
    assert len(attack.dropped) == 2, "a slow head was never dropped"
    for _, lifetime, answer in attack.dropped:
        assert HEADER_TIMEOUT - 0.5 <= lifetime <= HEADER_TIMEOUT + SLACK, lifetime
        assert answer.startswith(b"HTTP/1.1 408 ") and b"did not arrive in time" in answer


@pytest.mark.parametrize("length", [40, 300_000], ids=["poller", "thread"])
def test_a_slow_body_is_dropped_after_the_grace(server, length):
    with SlowClients(server, [slow_body(length)], interval=0.5, replace=False) as attack:
        deadline = time.monotonic() + HEADER_TIMEOUT + SLACK + 3
        while attack.live and time.monotonic() < deadline:
            time.sleep(0.1)
    assert attack.dropped, "a body sent at 2 bytes a second was never cut off"
    _, lifetime, _ = attack.dropped[0]
    assert lifetime <= HEADER_TIMEOUT + SLACK, lifetime


def test_an_idle_connection_is_closed(server):
    """A connection that never sends a byte is closed too (after the head timeout)."""
    with SlowClients(server, [[]], interval=0.2, replace=False) as attack:
        deadline = time.monotonic() + HEADER_TIMEOUT + SLACK + 3
        while attack.live and time.monotonic() < deadline:
            time.sleep(0.1)
    assert attack.dropped and attack.dropped[0][1] <= HEADER_TIMEOUT + SLACK


# ---- decompression bombs -------------------------------------------------------------------
def gzip_bomb(unit: bytes, chunks: int) -> bytes:
    """One gzip stream of ``chunks`` MiB of ``unit`` repeated: ~3 KB per MiB on the wire."""
    block = unit * ((1 << 20) // len(unit))
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)  # the same every time
    end = deflate.flush()[:-8]  # the last (empty) block; the trailer is for the whole stream
    crc = 0
    for _ in range(chunks):
        crc = zlib.crc32(block, crc)
    return (first + again * (chunks - 1) + end
            + struct.pack("<II", crc, (len(block) * chunks) & 0xFFFFFFFF))


def git_post(server: LiveServer, service: str, body: bytes, encoding: str = "gzip",
             timeout: float = 200) -> httpx.Response:
    return httpx.post(f"{server.url}/git/registry.git/{service}", content=body, timeout=timeout,
                      headers={"Authorization": f"Bearer {server.tokens['admin']}",
                               "Content-Encoding": encoding,
                               "Content-Type": f"application/x-{service}-request"})


@pytest.mark.parametrize("service", ["git-upload-pack", "git-receive-pack"])
def test_a_gzip_bomb_to_git_is_refused_quickly_while_others_are_served(server, service):
    main = subprocess.run(["git", "--git-dir", str(server.registry), "rev-parse", "main"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # 4.7 MB of gzip that expands to 1.5 GB of valid "want" lines: Git would parse them
    # all (this held a sync worker for 110 s before it answered).
    bomb = gzip_bomb(f"0032want {main}\n".encode(), 1500)
    assert 4_000_000 < len(bomb) < 5_000_000
    answers: list = []
    started = time.monotonic()
    poster = threading.Thread(target=lambda: answers.append(git_post(server, service, bomb)))
    poster.start()
    others = []
    while poster.is_alive() and time.monotonic() - started < 8:
        others.append(timed_get(server))
        time.sleep(0.2)
    poster.join(200)
    took = time.monotonic() - started
    assert answers and answers[0].status_code == 413, answers and answers[0].text[:300]
    assert took < 8, took
    assert "PROMPTREV_GIT_MAX_INFLATED_BYTES" in answers[0].text
    assert all(status == 200 and t < PROMPT for status, t in others), others


def test_bad_gzip_and_unknown_encodings_get_clear_errors(server):
    bad = git_post(server, "git-upload-pack", b"this is not gzip at all", timeout=30)
    assert bad.status_code == 400 and "not valid gzip" in bad.text
    cut = git_post(server, "git-upload-pack", zlib.compress(b"0000" * 1000, wbits=31)[:-20],
                   timeout=30)
    assert cut.status_code == 400 and "ends in the middle of its gzip data" in cut.text
    brotli = git_post(server, "git-upload-pack", b"0000", encoding="br", timeout=30)
    assert brotli.status_code == 415 and "unsupported Content-Encoding 'br'" in brotli.text


def test_the_limits_are_settings_that_name_a_bad_value():
    settings = Settings.from_env({"PROMPTREV_HEADER_TIMEOUT": "2.5", "PROMPTREV_THREADS": "8",
                                  "PROMPTREV_GIT_MAX_INFLATED_BYTES": "1000"})
    assert (settings.header_timeout, settings.server_threads,
            settings.git_max_inflated_bytes) == (2.5, 8, 1000)
    for name, value in (("PROMPTREV_HEADER_TIMEOUT", "soon"), ("PROMPTREV_THREADS", "0"),
                        ("PROMPTREV_CLIENT_MIN_RATE", "-5"),
                        ("PROMPTREV_CLIENT_IDLE_TIMEOUT", "nan")):
        with pytest.raises(InvalidRequest, match=name):
            Settings.from_env({name: value})


# ---- what the poller reads must still be plain HTTP ------------------------------------------
def raw_exchange(server: LiveServer, data: bytes, until: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` at once and read until ``until`` has been seen twice or EOF."""
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while answer.count(until) < 2 and (chunk := sock.recv(65536)):
            answer += chunk
    return answer


def test_pipelined_requests_and_a_small_body_on_one_connection_are_all_answered(server):
    token = server.tokens["admin"]
    get = (f"GET /api/v1/artifacts HTTP/1.1\r\nHost: x\r\n"
           f"Authorization: Bearer {token}\r\n\r\n").encode()
    form = b"name=x&password=wrong"
    post = (b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-"
            b"urlencoded\r\nContent-Length: " + str(len(form)).encode() + b"\r\n\r\n" + form)
    answer = raw_exchange(server, get + post, b"HTTP/1.1 ")
    first, _, second = answer.partition(b"HTTP/1.1 ")[2].partition(b"HTTP/1.1 ")
    assert first.startswith(b"200 ") and b'"name"' in first
    assert second[:3] in (b"200", b"400")  # the login form answered (CSRF: no token sent)


def test_a_head_larger_than_the_buffer_is_refused_431(server):
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(70))
    answer = raw_exchange(server, head, b"HTTP/1.1 ")
    assert answer.startswith(b"HTTP/1.1 431 ") and b"larger than 65536 bytes" in answer
