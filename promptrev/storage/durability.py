"""Acknowledged means durable: the flushes that make a write survive a power loss.

One process-wide mode (``PROMPTREV_DURABILITY``, :mod:`promptrev.config`), set by the
edges with :func:`configure`; a library user gets ``full`` without asking.

``full`` keeps this order for every move of a ref (a save, a label move, a merge, a pull):
the new objects reach the disk, then the ref moves, then the ref reaches the disk, then the
caller is answered. On Linux each "reaches the disk" is one ``syncfs(2)`` of the registry's
file system, shared by every writer waiting for one (group commit): a writer returns only
after a flush that *started* after its own writes, and one flush serves all the writers
that queued while the previous one ran. Elsewhere libgit2 fsyncs each object and ref file
and its folder itself. Git subprocesses get ``core.fsync=all``; SQLite commits with
``synchronous=FULL`` (``NORMAL`` for the index's own writes, which Git can replay).

``off`` flushes nothing (Git's and SQLite's defaults, what promptrev did before): a crash
of the machine (not of promptrev) may lose the last seconds of acknowledged writes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pygit2

from ..config import DURABILITY_FULL, DURABILITY_OFF, durability_mode
from ..errors import StorageError

SYNCFS = "syncfs"  # one flush of the file system per group of writers (Linux)
FSYNC = "fsync"  # libgit2 fsyncs every object and ref file and its folder
# How long a writer whose ref moved waits for the next writer of this process (holding or
# waiting for the writer lock) to start the flush that makes both durable, before it
# starts one itself. The next writer flushes its objects within a save's time (~2 ms).
LINGER_SECONDS = 0.005


class _State:
    mode = DURABILITY_FULL
    method = FSYNC


_state = _State()


def _load_syncfs():
    """libc's ``syncfs``, or None where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        call = libc.syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int]
    call.restype = ctypes.c_int
    return call


_syncfs = _load_syncfs()


def configure(mode: str = DURABILITY_FULL, method: str | None = None) -> None:
    """Set the process's durability: ``full`` or ``off`` (see the module's docstring).

    ``method`` (benchmarks and tests) picks how ``full`` flushes Git: ``syncfs`` (group
    commit, the default where available) or ``fsync`` (libgit2, per file).
    """
    mode = durability_mode(mode)
    if method is None:
        method = SYNCFS if _syncfs is not None else FSYNC
    if method not in (SYNCFS, FSYNC) or (method == SYNCFS and _syncfs is None):
        raise ValueError(f"no durability method {method!r} here")
    _state.mode, _state.method = mode, method
    pygit2.settings.enable_fsync_gitdir(mode == DURABILITY_FULL and method == FSYNC)


def mode() -> str:
    """The process's durability: ``full`` or ``off``."""
    return _state.mode


def method() -> str | None:
    """How ``full`` flushes Git (``syncfs`` or ``fsync``); None when durability is off."""
    return _state.method if _state.mode == DURABILITY_FULL else None


def git_options() -> list[str]:
    """Options for our ``git`` subprocesses: ``-c core.fsync=all`` when durable.

    Passed on the command line (Git hands them to the processes it starts, receive-pack
    under http-backend among them), never written to the registry's config, so a process
    with durability off leaves nothing behind.
    """
    if _state.mode == DURABILITY_OFF:
        return []
    return ["-c", "core.fsync=all", "-c", "core.fsyncMethod=fsync"]


def sqlite_synchronous(derived: bool = False) -> str:
    """SQLite's ``synchronous`` for a connection: FULL when durable, else NORMAL.

    ``derived``: the connection writes only what Git can replay (the index catching up),
    for which NORMAL loses nothing that matters (see docs/durability.md).
    """
    return "FULL" if _state.mode == DURABILITY_FULL and not derived else "NORMAL"


def flush_git(path: str, *, linger: bool = False) -> None:
    """Make everything written so far under the repository ``path`` durable.

    A no-op when durability is off or libgit2 fsyncs per file. Otherwise returns once a
    ``syncfs`` that started after this call began has finished (shared with concurrent
    callers on the same file system). ``linger``: a writer that just released the writer
    lock lets the next writer of this process start that flush (see LINGER_SECONDS).
    """
    if _state.mode == DURABILITY_OFF or _state.method != SYNCFS:
        return
    _flusher(path).flush(path, linger)


@contextmanager
def writing(path: str) -> Iterator[None]:
    """Count a writer of this process that holds or waits for ``path``'s writer lock."""
    if _state.mode == DURABILITY_OFF or _state.method != SYNCFS:
        yield
        return
    flusher = _flusher(path)
    with flusher.cond:
        flusher.writers += 1
    try:
        yield
    finally:
        with flusher.cond:
            flusher.writers -= 1
            flusher.cond.notify_all()  # a lingering writer need not wait for us


def _flusher(path: str) -> _GroupFlush:
    try:
        device = os.stat(path).st_dev
    except OSError as exc:
        raise StorageError(f"cannot flush {path} to disk: {exc}") from None
    with _flushers_lock:
        flusher = _flushers.get(device)
        if flusher is None:
            flusher = _flushers[device] = _GroupFlush()
    return flusher


class _GroupFlush:
    """Group commit for one file system: one ``syncfs`` serves every writer queued.

    ``started`` counts flushes begun, ``done`` the newest finished. A caller needs flush
    ``started + 1`` as it was when it arrived (the first to begin after its writes); if one
    is running it waits, then runs the next one itself unless another waiter did.
    ``writers`` counts this process's writers holding or waiting for a writer lock.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.started = 0
        self.done = 0
        self.running = False
        self.writers = 0

    def flush(self, path: str, linger: bool = False) -> None:
        with self.cond:
            needed = self.started + 1
            until = time.monotonic() + LINGER_SECONDS if linger else 0.0
            while self.done < needed:
                if self.running:
                    self.cond.wait()
                    continue
                left = until - time.monotonic()
                if self.writers and left > 0:  # the next writer's flush will do
                    self.cond.wait(left)
                    continue
                self.running = True
                self.started += 1
                generation = self.started
                self.cond.release()
                try:
                    error = _sync_file_system(path)
                finally:
                    self.cond.acquire()
                    self.running = False
                    self.cond.notify_all()
                if error is not None:
                    raise StorageError(f"flushing {path} to disk failed ({error}): the last "
                                       "change may not survive a power loss",
                                       details={"path": path})
                self.done = generation


_flushers: dict[int, _GroupFlush] = {}
_flushers_lock = threading.Lock()


def _sync_file_system(path: str) -> str | None:
    """``syncfs`` on the file system holding ``path``; the error's text, or None."""
    try:
        fd = os.open(path, os.O_RDONLY)  # opened per flush: a held one would block umount
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        if _syncfs(fd) != 0:
            return os.strerror(ctypes.get_errno())
        return None
    finally:
        os.close(fd)


configure()
