"""Checking artifact content before it is stored: size, encoding, and the kind's format.

One artifact is checked in process. Many at once (a bulk import) are checked on every
core: parsing YAML front matter and Jinja templates is pure-Python work that dominates a
bulk import on the 2-core machines here, and it parallelises perfectly. This process
checks a share itself, next to one helper per other core.

The helpers are plain ``python -m promptrev.model.validation_helper`` processes speaking
length-prefixed pickle frames over pipes, not a multiprocessing pool: spawn and forkserver
re-import the caller's ``__main__``, which would re-run a user's unguarded script (and its
saves) in every worker, and fork is unsafe in threaded servers. If the helpers cannot be
started or die, checking falls back to this process.
"""

from __future__ import annotations

import atexit
import os
import pickle
import struct
import subprocess
import sys
import threading
from typing import Any, BinaryIO

from promptrev.errors import PromptrevError, TooLarge, ValidationFailed

from .artifacts import KINDS
from .prompty import Problem

# Below this many items the helpers cost more than they save.
PARALLEL_MIN_ITEMS = 256
_FRAME = struct.Struct("!Q")
_helpers: list[subprocess.Popen] | None = None
_helpers_lock = threading.Lock()


def check_content(kind: str, name: str, content: str | bytes,
                  max_bytes: int) -> tuple[str, list[Problem]]:
    """Return (text, warnings) or raise: too large, not UTF-8, NUL bytes, invalid format."""
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    path = KINDS[kind].filename(name)
    if len(data) > max_bytes:
        raise TooLarge(f"{kind} '{name}' is {len(data):,} bytes; the limit is "
                       f"{max_bytes:,} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationFailed(f"{path}: not UTF-8 text (invalid byte "
                               f"0x{data[exc.start]:02x} at offset {exc.start})") from None
    if "\x00" in text:
        raise ValidationFailed(f"{path}: contains NUL characters")
    return text, KINDS[kind].validate(text, path)


def check_many(kind: str, items: list[tuple[str, str | bytes]],
               max_bytes: int) -> list[tuple[list[Problem], PromptrevError | None]]:
    """Check many (name, content) pairs; per item: (warnings, error or None)."""
    workers = os.cpu_count() or 1
    if len(items) >= PARALLEL_MIN_ITEMS and workers >= 2:
        with _helpers_lock:
            helpers = _start_helpers(workers - 1)  # this process checks a share too
            if helpers:
                try:
                    return _check_on_helpers(helpers, kind, items, max_bytes)
                except (OSError, EOFError, pickle.PickleError, struct.error):
                    _stop_helpers(broken=True)
    return _check_chunk(kind, items, max_bytes, plain=False)


def _check_on_helpers(helpers: list[subprocess.Popen], kind: str,
                      items: list[tuple[str, str | bytes]], max_bytes: int) -> list:
    """The first share is checked here while the helpers check the others (the caller
    would only wait for them; and its share crosses no pipe)."""
    size = -(-len(items) // (len(helpers) + 1))
    own, *chunks = [items[i:i + size] for i in range(0, len(items), size)]
    for helper, chunk in zip(helpers, chunks, strict=False):  # a helper reads a whole frame
        _write_frame(helper.stdin, (kind, chunk, max_bytes))
    try:
        results = _check_chunk(kind, own, max_bytes, plain=False)
    except BaseException:
        _stop_helpers()  # their answers are unread: start afresh next time
        raise
    for helper, _ in zip(helpers, chunks, strict=False):
        results += [(warnings, _rebuild_error(error))
                    for warnings, error in _read_frame(helper.stdout)]
    return results


def _check_chunk(kind: str, items: list[tuple[str, str | bytes]], max_bytes: int,
                 plain: bool = True) -> list[tuple[list[Problem], Any]]:
    out: list[tuple[list[Problem], Any]] = []
    for name, content in items:
        try:
            out.append((check_content(kind, name, content, max_bytes)[1], None))
        except PromptrevError as exc:
            # Errors cross the process boundary as plain data (custom __init__s do not
            # survive pickling with their details).
            error = (type(exc).__name__, exc.message, exc.details) if plain else exc
            out.append(([], error))
    return out


def _rebuild_error(error: Any) -> PromptrevError | None:
    if error is None:
        return None
    name, message, details = error
    if name == "ValidationFailed":
        return ValidationFailed(message, details.get("problems"))
    if name == "TooLarge":
        return TooLarge(message, details=details)
    return PromptrevError(message, details=details)


def _start_helpers(count: int) -> list[subprocess.Popen]:
    """The helper processes, started on first use and kept for the life of this process."""
    global _helpers
    if _helpers is None:
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
        try:
            _helpers = [subprocess.Popen([sys.executable, "-m",
                                          "promptrev.model.validation_helper"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         env=env) for _ in range(count)]
        except OSError:
            _helpers = []
        atexit.register(_stop_helpers)
    return _helpers


def _stop_helpers(broken: bool = False) -> None:
    global _helpers
    for helper in _helpers or []:
        try:
            helper.stdin.close()
            helper.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            helper.kill()
    _helpers = [] if broken else None  # a broken set is not restarted


def _write_frame(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_FRAME.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_frame(stream: BinaryIO) -> Any:
    header = stream.read(_FRAME.size)
    if len(header) < _FRAME.size:
        raise EOFError("validation helper exited")
    (length,) = _FRAME.unpack(header)
    data = stream.read(length)
    if len(data) < length:
        raise EOFError("validation helper exited")
    return pickle.loads(data)


def serve() -> None:
    """Helper main loop: read (kind, items, max_bytes) frames, answer with results."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            kind, items, max_bytes = _read_frame(source)
        except EOFError:
            return
        _write_frame(sink, _check_chunk(kind, items, max_bytes))

