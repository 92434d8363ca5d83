"""Git over HTTP: ``git clone``, ``fetch`` and ``push`` at ``/git/registry.git``.

Git's own ``git http-backend`` (a CGI program) speaks the smart HTTP protocol; this
blueprint authenticates the caller, hands it the request with the body streamed in, and
streams its answer back. Callers give an API token as the HTTP Basic password (any user
name) or as a bearer token; reading needs the viewer role (nothing with anonymous reads),
pushing the editor role. Every push goes through the receive hooks in ``githooks/``,
which run ``promptrev hook pre-receive|post-receive`` (:mod:`promptrev.receive`): the
pushed artifacts are checked before any ref moves, and the index, labels and change
requests follow the push before ``git push`` returns.

A gzip-compressed request body (Git compresses fetch negotiations) is decompressed here,
not by Git, into a spooled file counted against ``PROMPTREV_GIT_MAX_INFLATED_BYTES``: a
few megabytes that expand to gigabytes are refused with 413 as soon as the limit is
passed, before Git ever runs.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import zlib
from collections.abc import Iterator
from typing import IO

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wsgi import get_input_stream

import promptrev
from promptrev.accounts import User
from promptrev.errors import (
    InvalidRequest,
    PromptrevError,
    TooLarge,
    Unauthorized,
    UnsupportedEncoding,
)
from promptrev.registry import FAST_IMPORT_REFS, git_durability_options

from .auth import ANONYMOUS, state
from .errors import http_status

bp = Blueprint("git", __name__, url_prefix="/git")
HOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "githooks")
HOOK_NAMES = ("pre-receive", "post-receive")  # each runs ``promptrev hook NAME``
# A shell hook that flushes the refs a push moved before receive-pack reports them moved
# (docs/durability.md): Git runs it for every ref transaction, too often for Python.
FLUSH_HOOK = "reference-transaction"
CHALLENGE = 'Basic realm="promptrev"'
CHUNK = 64 * 1024
SPOOL = 1024 * 1024  # a decompressed body larger than this waits in a temporary file
# The folder holding the ``promptrev`` (and ``cli``) packages, for the hooks' Python.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(promptrev.__file__)))


@bp.route("/registry.git/<path:path>", methods=["GET", "POST"])
@bp.route("/registry/<path:path>", methods=["GET", "POST"])
def backend(path: str) -> Response:
    """Run ``git http-backend`` for one request of Git's smart (or dumb) HTTP protocol."""
    if any(part in ("", ".", "..") for part in path.split("/")):
        return _refusal(404, f"no such file in the registry's repository: {path}")
    push = _service(path) == "git-receive-pack"
    settings = state().settings
    try:
        user = caller(push)
        state().policy.require(user, "write" if push else "read",
                               "pushing" if push else "reading")
        body = get_input_stream(request.environ, safe_fallback=False,
                                max_content_length=settings.git_max_request_bytes) \
            if request.method == "POST" else None
        length = None  # the body as received (Content-Length or chunked)
        if body is not None and _gzipped():
            body, length = _inflated(body, settings.git_max_inflated_bytes)
    except PromptrevError as exc:
        return _refusal(http_status(exc), exc.message)
    except RequestEntityTooLarge:
        return _too_large(settings.git_max_request_bytes)
    return _run(path, user, body, length)


def _service(path: str) -> str:
    """``git-upload-pack`` (fetch), ``git-receive-pack`` (push) or ``""`` (dumb reads)."""
    if path == "info/refs":
        return request.args.get("service", "")
    return path if request.method == "POST" else ""


def caller(push: bool) -> User:
    """The user whose API token the request carries, or anonymous reads when enabled."""
    token = _token(request.headers.get("Authorization", ""))
    if token:
        return state().accounts.authenticate(token)
    if not push and state().settings.anonymous_read:
        return ANONYMOUS
    raise Unauthorized("this registry needs an API token: give it as the password (any "
                       "user name), e.g. in git's credential helper (create one with "
                       "'promptrev token create USER')")


def _token(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            name, _, password = base64.b64decode(value.strip(), validate=True).decode(
                "utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed HTTP Basic credentials") from None
        return password or name or None  # a token given as the user name works too
    if header:
        raise Unauthorized("unsupported Authorization header: use HTTP Basic with an API "
                           "token as the password, or 'Bearer <token>'")
    return None


def _gzipped() -> bool:
    """Whether the body is gzip-compressed: the one Content-Encoding Git uses."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return False
    if encoding in ("gzip", "x-gzip"):
        return True
    raise UnsupportedEncoding(f"unsupported Content-Encoding {encoding[:40]!r}: Git over "
                              "HTTP takes a gzip-compressed body or an uncompressed one")


def _inflated(body: IO[bytes], limit: int) -> tuple[IO[bytes], int]:
    """Decompress a gzip body into a spooled file; refuse it once it exceeds ``limit``.

    Every decompressed byte is counted, whatever the compressed size, so a small body
    that expands to gigabytes costs at most ``limit`` bytes of work before its 413.
    """
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL)
    total = 0
    try:
        while not inflater.eof and (data := body.read(CHUNK)):
            while data and not inflater.eof:
                piece = inflater.decompress(data, CHUNK)
                total += len(piece)
                if total > limit:
                    raise TooLarge(f"the request's gzip-compressed body expands to more than "
                                   f"this server's limit for Git of {limit} bytes "
                                   f"(PROMPTREV_GIT_MAX_INFLATED_BYTES)")
                out.write(piece)
                data = inflater.unconsumed_tail
    except zlib.error as exc:
        out.close()
        raise InvalidRequest(f"the request body is not valid gzip data, as its "
                             f"Content-Encoding says ({exc})") from None
    except BaseException:
        out.close()
        raise
    if not inflater.eof:
        out.close()
        raise InvalidRequest("the request body ends in the middle of its gzip data")
    out.seek(0)
    return out, total


def _refusal(status: int, message: str) -> Response:
    """A plain-text answer: Git prints it to the user as ``remote: <message>``."""
    headers = {"WWW-Authenticate": CHALLENGE} if status == 401 else {}
    return Response(message.rstrip() + "\n", status, headers, mimetype="text/plain")


def _too_large(limit: int) -> Response:
    return _refusal(413, f"the request is larger than this server's limit for Git of "
                         f"{limit} bytes (PROMPTREV_GIT_MAX_REQUEST_BYTES)")


# ---- the CGI program ----------------------------------------------------------------------
def _run(path: str, user: User, body: IO[bytes] | None, length: int | None) -> Response:
    """Run the backend; ``length`` is the size of a body this server decompressed."""
    settings = state().settings
    process = subprocess.Popen(
        ["git", *git_durability_options(), "-c",
         f"core.hooksPath={hooks_dir(settings.registry)}",
         # refs of promptrev's own (a bulk write's commit before main names it) are no
         # one's to fetch or push
         "-c", f"transfer.hideRefs={FAST_IMPORT_REFS}", "http-backend"],
        stdin=subprocess.PIPE if body is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, env=_environ(path, user, length), cwd=settings.registry,
        start_new_session=True)  # its own process group: stopping it stops receive-pack too
    feed = _Feed(body, process) if body is not None else None
    try:
        status, headers = _read_headers(process.stdout)
        # Hold the answer until the backend writes its body: it reads the whole request
        # first, so a request cut off for its size still gets a clean 413.
        first = process.stdout.read1(CHUNK) if status is not None else b""
    except BaseException:
        _stop(process, feed)
        raise
    if feed is not None and not first and feed.too_large:  # set before it stops the backend
        _stop(process, feed)
        return _too_large(settings.git_max_request_bytes)
    if status is None:
        _stop(process, feed)
        return _refusal(502, "git http-backend ended without an answer (see the server log)")
    return Response(_stream(process, feed, first, push=path == "git-receive-pack"), status,
                    headers, direct_passthrough=True)


def _environ(path: str, user: User, length: int | None = None) -> dict[str, str]:
    """The CGI variables of ``git http-backend``, and what the receive hooks need.

    A body decompressed here (``length`` bytes) reaches Git uncompressed.
    """
    settings = state().settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PROMPTREV_"))}
    policy = state().policy
    env.update({
        "GIT_PROJECT_ROOT": os.path.abspath(settings.registry),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": "/" + path,
        "REQUEST_METHOD": request.method,
        "QUERY_STRING": request.query_string.decode("latin-1"),
        "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        "REMOTE_ADDR": request.remote_addr or "",
        "PROMPTREV_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join(filter(None, [PACKAGE_ROOT, env.get("PYTHONPATH")])),
        "PROMPTREV_REGISTRY": os.path.abspath(settings.registry),
        "PROMPTREV_MAX_BYTES": str(settings.max_bytes),
        "PROMPTREV_PROTECTED_LABELS": ",".join(sorted(policy.protected_labels)),
        "PROMPTREV_MERGE_ROLE": policy.merge_role,
        "PROMPTREV_REQUIRED_APPROVALS": str(policy.required_approvals),
        "PROMPTREV_DURABILITY": settings.durability,  # the hooks' writes, and their flush
        "PROMPTREV_BASE_URL": request.url_root.rstrip("/"),
    })
    if settings.index_url:
        env["PROMPTREV_INDEX_URL"] = settings.index_url
    if user is not ANONYMOUS:  # REMOTE_USER is what lets http-backend accept a push
        env.update({"REMOTE_USER": user.name, "PROMPTREV_PUSHER": user.name,
                    "PROMPTREV_PUSHER_ID": str(user.id), "PROMPTREV_PUSHER_EMAIL": user.email,
                    "PROMPTREV_PUSHER_ROLE": user.role})
    for header, variable in (("Content-Length", "CONTENT_LENGTH"),
                             ("Git-Protocol", "HTTP_GIT_PROTOCOL")):
        if request.headers.get(header):
            env[variable] = request.headers[header]
    if length is not None:
        env["CONTENT_LENGTH"] = str(length)
    return env


def hooks_dir(registry: str) -> str:
    """The receive hooks' folder: the package's, or executable copies in the registry.

    An installation that lost the scripts' executable bit (some packaging tools drop it)
    still works: Git runs only executable hooks, so copies are made where we may chmod.
    """
    names = [name for name in (*HOOK_NAMES, FLUSH_HOOK)
             if name in HOOK_NAMES or os.path.exists(os.path.join(HOOKS, name))]
    if all(os.access(os.path.join(HOOKS, name), os.X_OK) for name in names):
        return HOOKS
    target = os.path.join(os.path.abspath(registry), "promptrev-hooks")
    os.makedirs(target, exist_ok=True)
    for name in names:
        copy = os.path.join(target, name)
        shutil.copyfile(os.path.join(HOOKS, name), copy + ".tmp")
        os.chmod(copy + ".tmp", 0o755)
        os.replace(copy + ".tmp", copy)
    return target


def _read_headers(stdout: IO[bytes]) -> tuple[int | None, list[tuple[str, str]]]:
    """Parse the CGI header block; a missing ``Status:`` means 200, EOF means None."""
    status, headers = 200, []
    while True:
        line = stdout.readline()
        if not line:
            return None, headers
        line = line.rstrip(b"\r\n")
        if not line:
            return status, headers
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "status":
            status = int(value.strip().split()[0])
        else:
            headers.append((name.strip(), value.strip()))


class _Feed(threading.Thread):
    """Copy the request body into the backend, stopping it when the size limit is hit."""

    def __init__(self, body: IO[bytes], process: subprocess.Popen):
        super().__init__(daemon=True)
        self.body, self.process = body, process
        self.too_large = False
        self.start()

    def run(self) -> None:
        sink = self.process.stdin
        try:
            while chunk := self.body.read(CHUNK):
                sink.write(chunk)
        except RequestEntityTooLarge:
            self.too_large = True
            _kill(self.process)
        except HTTPException:  # the client went away mid-request
            _kill(self.process)
        except OSError:
            pass  # the backend stopped reading; its answer says why
        finally:
            try:
                sink.close()
            except OSError:
                pass
            if isinstance(self.body, tempfile.SpooledTemporaryFile):
                self.body.close()  # a body decompressed here


def _stream(process: subprocess.Popen, feed: _Feed | None, first: bytes, *, push: bool
            ) -> Iterator[bytes]:
    finished = False
    try:
        chunk = first
        while chunk:
            yield chunk
            chunk = process.stdout.read1(CHUNK)
        finished = True
    finally:
        if not finished and push and feed is not None and not feed.is_alive() \
                and not feed.too_large:
            # The pusher went away after sending everything: let the push and its hooks
            # finish (the index and change requests must follow the refs), unread.
            while process.stdout.read1(CHUNK):
                pass
            finished = True
        _stop(process, feed, kill=not finished)


def _stop(process: subprocess.Popen, feed: _Feed | None, kill: bool = True) -> None:
    """End the backend (killed unless it finished its answer) and reap it."""
    if kill:
        _kill(process)
    process.stdout.close()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        _kill(process)
        process.wait()
    if feed is not None:
        feed.join(timeout=5)


def _kill(process: subprocess.Popen) -> None:
    """Kill the backend and what it started (receive-pack, upload-pack, hooks)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
