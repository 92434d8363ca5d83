"""The gunicorn worker of ``promptrev serve``: slow or hostile clients never hold a thread.

gunicorn's threaded worker (``gthread``) gives a connection to a pool thread as soon as
its first byte arrives; the thread then reads the request head from a blocking socket with
no deadline, so a client that sends one byte a second holds a thread for hours, and a few
dozen such clients stop the worker (the sync worker is worse: one client stops it). This
worker keeps gthread's poller and pool and changes who waits for the client:

- The poller (one thread, non-blocking) reads each request head, and a small body, into a
  buffer; a request goes to a pool thread only once its head is complete. A head must be
  complete within ``header_timeout`` seconds and ``MAX_BUFFERED`` bytes, else the
  connection is closed (with 408 or 431). Kept-alive connections wait here too.
- What a thread still reads from or writes to the client (a large body, a long answer)
  goes through :class:`ClientSocket`: no single wait lasts longer than ``idle_timeout``,
  and after a grace of ``header_timeout`` seconds the client must average ``min_rate``
  bytes a second over the time the thread spent waiting for it. A client too slow for
  that is disconnected; time the application spends working is never counted.
- Closing a connection lingers in the poller (gunicorn lingers up to 2 s on its main
  thread, which a client that never closes its side can stall, one connection at a time).

Requests therefore run in threads: see :mod:`promptrev.server.state` for what is shared
(a pool of registries, one borrowed per request).
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from functools import partial

from gunicorn.workers.gthread import TConn, ThreadWorker

MAX_BUFFERED = 64 * 1024  # request head (+ small body) read by the poller
LINGER = 5.0  # seconds a closing connection may take to send its last bytes
DRAIN_WAIT = 0.05  # seconds a thread waits for the unread rest of a body (then: close)
CHUNK = 64 * 1024
_HEAD_END = (b"\r\n\r\n", b"\n\n")


class ClientSocket(socket.socket):
    """A client connection whose blocking reads and writes are bounded in time.

    ``setblocking(True)`` (what gunicorn calls before a thread uses the socket) means
    "block at most ``idle_timeout``". :meth:`begin` starts a request's budget: the time
    spent waiting in :meth:`recv` or :meth:`sendall` may not exceed ``grace`` seconds
    plus one second per ``min_rate`` bytes moved, in each direction.
    """

    idle_timeout = 60.0
    grace = 10.0
    min_rate = 1024.0

    @classmethod
    def adopt(cls, sock: socket.socket) -> ClientSocket:
        """Take over an accepted socket (the same file descriptor)."""
        return cls(sock.family, sock.type, sock.proto, fileno=sock.detach())

    def begin(self) -> None:
        """Start a new request's budget."""
        self.moved = {"recv": 0, "send": 0}
        self.waited = {"recv": 0.0, "send": 0.0}

    def setblocking(self, flag: bool) -> None:
        """Blocking means blocking at most ``idle_timeout`` seconds."""
        if flag:
            super().settimeout(self.idle_timeout)
        else:
            super().setblocking(False)

    def settimeout(self, value: float | None) -> None:
        """No wait is unbounded: ``None`` means ``idle_timeout``."""
        super().settimeout(self.idle_timeout if value is None else value)

    def recv(self, size: int, flags: int = 0) -> bytes:
        """Read, within this request's budget."""
        timeout = self.gettimeout()
        if timeout == 0.0 or not hasattr(self, "moved"):
            return super().recv(size, flags)
        data = self._bounded("recv", timeout, super().recv, size, flags)
        self.moved["recv"] += len(data)
        return data

    def sendall(self, data, flags: int = 0) -> None:
        """Send everything, each wait within this request's budget."""
        timeout = self.gettimeout()
        if timeout == 0.0 or not hasattr(self, "moved"):
            return super().sendall(data, flags)
        view = memoryview(data).cast("B")
        while view:
            sent = self._bounded("send", timeout, super().send, view[:CHUNK], flags)
            self.moved["send"] += sent
            view = view[sent:]
        return None

    def _bounded(self, way: str, timeout: float, call, *args):
        allowed = self.grace + self.moved[way] / self.min_rate - self.waited[way]
        if allowed <= 0:
            self._give_up(way)
        wait = min(timeout, allowed)
        if wait < timeout:
            super().settimeout(wait)
        start = time.monotonic()
        try:
            return call(*args)
        except TimeoutError:
            if wait < timeout or timeout >= self.idle_timeout:  # our limit, not a caller's
                self._give_up(way)
            raise  # a shorter wait asked for by gunicorn (draining a body it will not use)
        finally:
            self.waited[way] += time.monotonic() - start
            if wait < timeout:
                super().settimeout(timeout)

    def _give_up(self, way: str):
        """Disconnect a client too slow to serve: nothing more is read or written."""
        try:
            self.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        what = "sent its request" if way == "recv" else "read the answer"
        # A reset, to gunicorn: it closes the connection without logging a traceback.
        raise ConnectionResetError(errno.ECONNRESET, f"the client {what} too slowly")


class _Reading:
    """A connection whose next request head the poller is reading."""

    __slots__ = ("conn", "buffer", "deadline", "started", "want", "scanned")

    def __init__(self, conn: TConn, buffer: bytes, deadline: float, started: bool):
        self.conn, self.buffer, self.deadline = conn, bytearray(buffer), deadline
        self.started = started  # a byte of this request arrived (else: kept alive, idle)
        self.want = 0  # bytes the buffer must hold (head + small body) once the head is in
        self.scanned = 0  # where the search for the head's end resumes


class GuardedWorker(ThreadWorker):
    """gthread whose poller reads request heads and whose threads never wait unbounded.

    ``header_timeout`` and ``socket_class`` (its limits) come from the settings
    (:func:`promptrev.server.serve.worker_class`); gunicorn's ``keepalive`` is how long
    an idle kept-alive connection waits for its next request.
    """

    header_timeout = 10.0
    socket_class = ClientSocket

    def init_process(self) -> None:
        """Set up the tables of connections that wait in the poller."""
        self.reading: dict[TConn, _Reading] = {}  # a request's first bytes arrived
        self.idle: dict[TConn, _Reading] = {}  # kept alive, waiting for the next request
        self.closing: dict[TConn, float] = {}  # half-closed, until the client closes too
        super().init_process()

    # ---- the poller's side -------------------------------------------------------------
    def accept(self, listener) -> None:
        """Accept a connection and wait, in the poller, for its request head."""
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, self.socket_class.adopt(client), address,
                     listener.getsockname())
        self._read_head(conn, b"", started=True)

    def _read_head(self, conn: TConn, buffer: bytes, *, started: bool) -> None:
        conn.sock.setblocking(False)  # the poller never waits on one client
        now = time.monotonic()
        started = started or bool(buffer)
        waiting = _Reading(conn, buffer, now + (self.header_timeout if started
                                                else self.cfg.keepalive), started)
        if buffer and self._complete(waiting):
            self._dispatch(waiting)
            return
        (self.reading if waiting.started else self.idle)[conn] = waiting
        try:
            self.poller.register(conn.sock, selectors.EVENT_READ,
                                 partial(self._on_readable, waiting))
        except (OSError, ValueError):
            self._forget(conn)
            self._close(conn)

    def _on_readable(self, waiting: _Reading, sock) -> None:
        try:
            data = sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn = waiting.conn
        if not data:  # the client went away before sending a whole request
            self.poller.unregister(sock)
            self._forget(conn)
            self._drop(conn)
            return
        if not waiting.started:  # a kept-alive connection's next request begins
            del self.idle[conn]
            waiting.started = True
            waiting.deadline = time.monotonic() + self.header_timeout
            self.reading[conn] = waiting
        waiting.buffer += data
        if self._complete(waiting):
            self.poller.unregister(sock)
            del self.reading[conn]
            self._dispatch(waiting)
        elif len(waiting.buffer) > MAX_BUFFERED and not waiting.want:
            self.poller.unregister(sock)
            del self.reading[conn]
            self._refuse(conn, "431 Request Header Fields Too Large",
                         f"the request head is larger than {MAX_BUFFERED} bytes")

    def _complete(self, waiting: _Reading) -> bool:
        """Whether the buffer holds a whole head (and the small body it announces)."""
        if not waiting.want:
            buffer, start = waiting.buffer, max(0, waiting.scanned - 3)
            waiting.scanned = len(buffer)  # a byte at a time must not cost a rescan each
            ends = [buffer.find(mark, start) for mark in _HEAD_END]
            ends = [end + len(mark) for end, mark in zip(ends, _HEAD_END, strict=True)
                    if end >= 0]
            if not ends:
                return False
            head_end = min(ends)
            body = _small_body(bytes(buffer[:head_end]))
            waiting.want = head_end + body
            waiting.deadline += body / self.socket_class.min_rate  # a small body, slowly
        return len(waiting.buffer) >= waiting.want

    def _dispatch(self, waiting: _Reading) -> None:
        conn = waiting.conn
        conn.head = bytes(waiting.buffer)
        conn.data_ready = True  # gthread's wait for a first byte is done
        self.enqueue_req(conn)

    def _forget(self, conn: TConn) -> None:
        self.reading.pop(conn, None)
        self.idle.pop(conn, None)

    def murder_keepalived(self, force: bool = False) -> None:
        """Close connections past their deadline (all of them when ``force``)."""
        now = time.monotonic()
        stopping = force or not self.alive
        for conn, waiting in list(self.idle.items()):
            if stopping or waiting.deadline <= now:  # no request begun: nothing to answer
                del self.idle[conn]
                self._unregister(conn)
                self._close(conn)
        for conn, waiting in list(self.reading.items()):
            if force or waiting.deadline <= now:
                del self.reading[conn]
                self._unregister(conn)
                self._refuse(conn, "408 Request Timeout",
                             "the request did not arrive in time (a head must arrive "
                             f"within {self.header_timeout:g} s)")
        for conn, deadline in list(self.closing.items()):
            if force or deadline <= now:
                del self.closing[conn]
                self._unregister(conn)
                self._drop(conn)
        super().murder_keepalived(force)

    def _unregister(self, conn: TConn) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _refuse(self, conn: TConn, status: str, message: str) -> None:
        """A last answer for a request that never got to a thread, then close."""
        body = (message + "\n").encode()
        answer = (f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                  "X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n"
                  "Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        try:
            conn.sock.send(answer)  # non-blocking: what does not fit is not sent
        except OSError:
            pass
        self._close(conn)

    def _close(self, conn: TConn) -> None:
        """Half-close, then let the poller read what the client still sends (bounded)."""
        sock = conn.sock
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
            self.poller.register(sock, selectors.EVENT_READ, partial(self._on_closing, conn))
        except (OSError, ValueError, KeyError):
            self._drop(conn)
            return
        self.closing[conn] = time.monotonic() + LINGER

    def _on_closing(self, conn: TConn, sock) -> None:
        try:
            data = sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            del self.closing[conn]
            self.poller.unregister(sock)
            self._drop(conn)

    def _drop(self, conn: TConn) -> None:
        self.nr_conns -= 1
        conn.close()

    def finish_request(self, conn: TConn, fs) -> None:
        """After a thread served a request: keep the connection alive, or close it."""
        try:
            keep = fs.result() if not fs.cancelled() else False
        except Exception:  # noqa: BLE001 - the thread's own handler logged it
            keep = False
        if keep and self.alive:
            self._read_head(conn, conn.parser.unreader.take_buffered(), started=False)
        else:
            self._close(conn)

    # ---- the thread's side -------------------------------------------------------------
    def handle(self, conn: TConn):
        """Serve the request whose head the poller read."""
        conn.sock.setblocking(True)
        conn.init()
        head, conn.head = getattr(conn, "head", b""), b""
        if head:
            conn.parser.unreader.unread(head)
        conn.sock.begin()
        return super().handle(conn)

    def _keepalive_after(self, conn: TConn, keepalive: bool) -> bool:
        """Keep the connection only if the body's unread rest has already arrived.

        gunicorn waits up to 5 s for it in the thread; here a body still on its way (a
        refused push, a slow client) closes the connection, and the poller reads the
        rest while closing, without a thread.
        """
        if not keepalive:
            return False
        return bool(conn.parser.finish_body(deadline=time.monotonic() + DRAIN_WAIT))


def _small_body(head: bytes) -> int:
    """How many body bytes the poller buffers after ``head``: a small Content-Length.

    Anything else (no body, a large or chunked one, ``Expect: 100-continue``) is read by
    the thread under :class:`ClientSocket`'s limits. gunicorn parses the head again
    either way: this only decides what is read ahead.
    """
    if head.startswith((b"GET ", b"HEAD ")):
        return 0
    lengths = []
    for line in head.split(b"\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name in (b"transfer-encoding", b"expect"):
            return 0
        if name == b"content-length":
            lengths.append(value.strip())
    if len(lengths) != 1 or not lengths[0].isdigit():
        return 0
    length = int(lengths[0])
    return length if len(head) + length <= MAX_BUFFERED else 0
