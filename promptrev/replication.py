"""Read replicas (issue 20): one primary takes every write, replicas follow it through Git.

A replica is a server started with ``PROMPTREV_PRIMARY=<primary URL>``. It has its own
registry (its own bare repository and, by default, its own SQLite index) marked as a
replica (:meth:`Registry.set_replica_of`): every write path refuses with
:class:`ReadOnlyReplica`, except the one follower, which moves ``main`` with the one
protocol (``Registry.writing(follower=True)`` + ``Registry.advance_main``).

The follower (:class:`Follower`, one process per replica, started by ``promptrev serve``)
loops: fetch the primary's ``main`` over its Git smart HTTP endpoint
(:func:`promptrev.storage.gitremote.fetch`, remote ``primary``), fast-forward ``main`` to
it, then long-poll ``GET /api/v1/replication/wait?after=<commit>`` on the primary, which
answers as soon as the primary's ``main`` moves. It is woken by a notification, never a
timer; a long-poll that times out (``PROMPTREV_REPLICATION_WAIT``) only leads to another
cheap fetch. What the follower last saw is the status file ``promptrev-replica.json`` in
the registry folder (:class:`ReplicaStatus`), which every server worker reads: when the
primary cannot be reached, reads say so and writes are refused with 503.

On the primary, :class:`HeadWatch` wakes the waiting long-polls of one worker process:
at once for a write this process indexed (it subscribes to :mod:`promptrev.storage.outbox`)
and within ``POLL_SECONDS`` for one made elsewhere (another worker, ``git push``, the
CLI), by reading the ref while anyone waits. At most ``max_waiters`` requests wait per
worker, so waiting long-polls can never hold all of a worker's threads.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from . import lfs_transfer
from .errors import Busy, Diverged, PromptrevError, RemoteFailed
from .incoming import check_files
from .registry import Registry
from .remotes import fresh_registry
from .storage import gitremote, outbox
from .storage.gitremote import RemoteConfig, redact
from .storage.gitstore import GitStore, RefMoved

log = logging.getLogger("promptrev.replication")
STATUS_FILE = "promptrev-replica.json"
REMOTE = "primary"  # the replica repository's Git remote for its primary
WAIT_PATH = "/api/v1/replication/wait"
POLL_SECONDS = 0.02  # how often a waiting primary worker reads main (moves made elsewhere)
BACKOFF_FIRST = 0.2  # seconds before retrying an unreachable primary; doubles...
BACKOFF_CAP = 2.0  # ...up to this
ATTEMPTS = 5


# ---- the status a replica's follower leaves for its server workers -----------------------
@dataclass(frozen=True)
class ReplicaStatus:
    """What the follower last knew: the primary, the commit here, whether it answered."""

    primary: str
    head: str | None
    reachable: bool
    since: float | None = None  # unreachable since (epoch seconds)
    error: str | None = None

    @property
    def stale(self) -> str | None:
        """The ``X-Promptrev-Stale`` text while this replica cannot follow, else None."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since or 0))
        if not self.reachable:
            return f"primary unreachable since {when}"
        if self.error:  # reachable, but its main cannot be copied (history rewritten...)
            said = " ".join(self.error.split())[:300].encode("ascii", "replace").decode()
            return f"replication stopped since {when}: {said}"
        return None


def status_path(registry: str) -> str:
    """Where the follower writes its status: beside the registry's Git files."""
    return os.path.join(registry, STATUS_FILE)


def write_status(registry: str, status: ReplicaStatus) -> None:
    """Replace the status file atomically (readers never see half of one)."""
    path = status_path(registry)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(asdict(status), fh)
    os.replace(tmp, path)


def read_status(registry: str) -> ReplicaStatus | None:
    """The follower's last status, or None when it has written none (or a damaged one)."""
    try:
        with open(status_path(registry), encoding="utf-8") as fh:
            data = json.load(fh)
        return ReplicaStatus(**data)
    except (OSError, ValueError, TypeError):
        return None


class StatusReader:
    """:func:`read_status` for a server worker: read again only when the file changed."""

    def __init__(self, registry: str):
        self.path = status_path(registry)
        self.registry = registry
        self._stamp: tuple | None = None
        self._status: ReplicaStatus | None = None
        self._lock = threading.Lock()

    def get(self) -> ReplicaStatus | None:
        """The current status (one ``stat`` when nothing changed)."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                self._status = read_status(self.registry) if stamp else None
            return self._status


# ---- following the primary --------------------------------------------------------------
def git_url(primary: str, token: str | None) -> str:
    """The primary's Git endpoint, with the token as the HTTP Basic password."""
    parts = urlsplit(primary)
    netloc = f"replica:{quote(token, safe='')}@{parts.netloc}" if token else parts.netloc
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/git/registry.git",
                       "", ""))


def _remote(registry: Registry, primary: str, token: str | None) -> RemoteConfig:
    """The ``primary`` Git remote of the replica's repository, (re)configured if needed."""
    wanted = RemoteConfig(REMOTE, git_url(primary, token), "main")
    for existing in gitremote.remotes(registry.path):
        if existing.name == REMOTE:
            if existing == wanted:
                return wanted
            gitremote.remove_remote(registry.path, REMOTE)
    gitremote.add_remote(registry.path, wanted)
    return wanted


def follow_once(registry: Registry, primary: str, token: str | None, *,
                remote: RemoteConfig | None = None) -> str | None:
    """Fetch the primary's ``main`` and move this replica's ``main`` to it; return it.

    ``remote``: the Git remote already configured by an earlier call (saves reading the
    config). :class:`RemoteFailed` when the primary cannot be reached, :class:`Diverged`
    when its history does not continue this replica's (it was restored from an older
    backup).
    """
    theirs = gitremote.fetch(registry.path, remote or _remote(registry, primary, token))
    if theirs is not None:  # the adapter weights the new commits name, from its LFS API
        commits = registry.store.commits_only_in(theirs, registry.store.head())
        lfs_transfer.fetch_objects(registry, git_url(primary, token),
                                   lfs_transfer.pointers_in(registry, commits))
    return advance(registry, theirs, primary)


def advance(registry: Registry, theirs: str | None, primary: str = REMOTE) -> str | None:
    """Move ``main`` forward to ``theirs`` (or adopt it on a freshly made registry)."""
    for _ in range(ATTEMPTS):
        ours = registry.sync()
        store = registry.store
        if theirs is None or theirs == ours:
            return ours
        if not (ours is None or store.is_ancestor(ours, theirs)
                or fresh_registry(registry, ours)):
            raise Diverged(f"the primary's main ({theirs[:12]}) does not continue this "
                           f"replica's ({ours[:12]}): the primary's history was rewritten. "
                           "Nothing was changed; make a fresh replica (empty its registry "
                           "folder) to follow the primary again",
                           details={"primary": primary, "local_head": ours,
                                    "remote_head": theirs})
        # The primary is trusted no further than a pull's remote: what it sends is
        # checked file by file, as a push would be, before main moves.
        check_files(registry, ours, theirs, foreign=True).raise_for_problems(
            f"the history of the primary {redact(primary)}")
        try:
            with registry.writing(follower=True):
                registry.advance_main(ours, theirs, f"replicate {primary}")
        except RefMoved:
            continue
        return registry.sync()
    raise Busy("main kept moving while replicating; try again")


class Follower:
    """The one process of a replica that copies the primary's ``main`` (see module docs)."""

    def __init__(self, registry: str, *, primary: str, token: str | None,
                 index_url: str | None = None, max_bytes: int | None = None,
                 wait: float = 25.0):
        self.path = registry
        self.primary = primary
        self.token = token
        self.index_url = index_url
        self.max_bytes = max_bytes
        self.wait = wait
        self.stop = threading.Event()
        self._status: ReplicaStatus | None = read_status(registry)
        self._remote: RemoteConfig | None = None  # configured on the first step
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=primary, headers=headers,
                                  timeout=httpx.Timeout(5.0, read=wait + 10.0))

    def _open(self) -> Registry:
        kwargs = {"index_url": self.index_url}
        if self.max_bytes:
            kwargs["max_bytes"] = self.max_bytes
        registry = Registry.open(self.path, **kwargs)
        registry.set_replica_of(self.primary)
        return registry

    def run(self, *, parent: int | None = None) -> None:
        """Follow until :attr:`stop` is set (or ``parent``, the server, is gone)."""
        registry = self._open()
        backoff = BACKOFF_FIRST
        try:
            while not self.stop.is_set() and (parent is None or os.getppid() == parent):
                try:
                    head = self.step(registry)
                    backoff = BACKOFF_FIRST
                    self._wait_for_change(head)
                except (RemoteFailed, httpx.HTTPError, _Refused) as exc:
                    self._record(registry.synced_head, False, _message(exc))
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_CAP)
                except PromptrevError as exc:  # diverged, damaged, busy: say so, retry later
                    log.error("replication from %s: %s", self.primary, exc.message)
                    self._record(registry.synced_head, True, exc.message)
                    self.stop.wait(BACKOFF_CAP * 2)
        finally:
            registry.close()
            self.close()

    def close(self) -> None:
        """Close the HTTP connection to the primary."""
        self._http.close()

    def step(self, registry: Registry) -> str | None:
        """Fetch and advance once; record the primary as reachable; return ``main``."""
        if self._remote is None:
            self._remote = _remote(registry, self.primary, self.token)
        head = follow_once(registry, self.primary, self.token, remote=self._remote)
        self._record(head, True, None)
        return head

    def record_failure(self, head: str | None, error: str) -> None:
        """Record that the primary could not be reached (reads say so; writes get 503)."""
        self._record(head, False, error)

    def _wait_for_change(self, head: str | None) -> None:
        """Long-poll the primary until its ``main`` is no longer ``head`` (or it times out)."""
        response = self._http.get(WAIT_PATH, params={"after": head or "",
                                                     "timeout": str(self.wait)})
        if response.status_code == 503:  # its waiters are full: fetch again after a pause
            self.stop.wait(1.0)
            return
        if response.status_code != 200:
            raise _Refused(f"{self.primary}{WAIT_PATH} answered {response.status_code}: "
                           f"{response.text[:200]}")

    def _record(self, head: str | None, reachable: bool, error: str | None) -> None:
        old = self._status
        since = None
        if not reachable or error:  # since when it fails, kept while it keeps failing
            failing = old is not None and (not old.reachable or old.error) and old.since
            since = old.since if failing else time.time()
        status = ReplicaStatus(self.primary, head, reachable, since, error)
        if status != old:
            if not reachable and (old is None or old.reachable):
                log.warning("primary %s unreachable: %s", self.primary, error)
            write_status(self.path, status)
            self._status = status


class _Refused(Exception):
    """The primary answered the long-poll with an error (a refused token...)."""


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return redact(text)


# ---- the primary's side: waking long-polls when main moves ----------------------------
class HeadWatch:
    """Wait, in one server process, until ``main`` moves (see the module docs)."""

    def __init__(self, registry: str, *, max_waiters: int, poll: float = POLL_SECONDS):
        self.path = registry
        self.max_waiters = max_waiters
        self.poll = poll
        self._cond = threading.Condition()
        self._waiters = 0
        self._head: str | None = None
        self._known = False  # _head read since the watcher started
        self._thread: threading.Thread | None = None
        outbox.subscribe(self._on_events)

    @property
    def waiters(self) -> int:
        """Requests waiting now."""
        return self._waiters

    def close(self) -> None:
        """Stop listening to the outbox."""
        outbox.unsubscribe(self._on_events)

    def wait(self, after: str | None, timeout: float) -> str | None:
        """``main`` once it is not ``after``, or None after ``timeout`` seconds.

        :class:`Busy` when ``max_waiters`` requests of this process already wait.
        """
        with self._cond:
            if self._waiters >= self.max_waiters:
                raise Busy(f"{self._waiters} replication long-polls already wait on this "
                           f"server process (PROMPTREV_REPLICATION_MAX_WAITERS="
                           f"{self.max_waiters}); retry in a second")
            self._waiters += 1
            if self._thread is None:
                self._known = False
                self._thread = threading.Thread(target=self._watch, daemon=True,
                                                name="promptrev-head-watch")
                self._thread.start()
            try:
                deadline = time.monotonic() + timeout
                while not self._known or self._head == after:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._cond.wait(left)
                return self._head
            finally:
                self._waiters -= 1

    def _on_events(self, _conn, _events) -> int:
        """An outbox subscriber: this process moved main; look at it now."""
        if self._waiters:
            with self._cond:
                self._cond.notify_all()
        return 0

    def _watch(self) -> None:
        store = GitStore(self.path)
        while True:
            try:
                head = store.head()
            except PromptrevError as exc:
                log.warning("cannot read main for replication waiters: %s", exc.message)
                head = self._head
            with self._cond:
                if head != self._head or not self._known:
                    self._head, self._known = head, True
                    self._cond.notify_all()
                if self._waiters == 0:
                    self._thread = None
                    return
                self._cond.wait(self.poll)
