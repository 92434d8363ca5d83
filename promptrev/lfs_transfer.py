"""Adapter weights over Git LFS: the server's batch answers, and moving objects to remotes.

The registry's object store (:mod:`promptrev.storage.objects`) already keeps weights the
way Git LFS does (``lfs/objects/aa/bb/<oid>``, named by sha256). The server side here is
what the batch API (git-lfs ``docs/api/batch.md``, ``basic-transfers.md``) answers for each
object, an upload taken only if its bytes are exactly the object announced, and the verify
action; authorization is the policy's, asked by the edge (``server/lfs_http.py``).

The client side moves the objects that commits need between this registry and a remote,
for ``promptrev pull``/``push``: an http(s) remote is asked through its batch API (a
promptrev server, or any Git LFS server such as GitHub's), a local or ``file://`` remote
is read and written where git-lfs keeps objects in it (``<git dir>/lfs/objects``, which is
also a promptrev registry's object store). Objects for other remotes (ssh) are not moved:
a pull then names the missing weights, as for any push without them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote, urlsplit, urlunsplit

from promptrev.model.adapter_cards import WEIGHTS
from promptrev.model.lfs import MEDIA_TYPE, TRANSFER, BatchRequest, Pointer

from .errors import NotFound, PromptrevError, RemoteFailed, TooLarge, ValidationFailed
from .storage import gitremote
from .storage.objects import ObjectStore

if TYPE_CHECKING:
    from .registry import Registry

POINTER_MAX = 1024  # git-lfs reads a blob as a pointer only below this size
TIMEOUT = 300.0  # seconds without progress before a transfer to a remote gives up


# ---- the server's side ----------------------------------------------------------------
def batch_answer(objects: ObjectStore, request: BatchRequest, *, href: str,
                 header: dict[str, str], max_bytes: int) -> dict[str, Any]:
    """The batch response: per object, its actions or why there are none.

    ``href`` is the LFS endpoint's URL (``…/info/lfs``), ``header`` what the client must send
    with each action (its own credentials), ``max_bytes`` the largest object accepted.
    """
    answers = [_answer(objects, request.operation, pointer, href, header, max_bytes)
               for pointer in request.objects]
    return {"transfer": TRANSFER, "objects": answers, "hash_algo": "sha256"}


def _answer(objects: ObjectStore, operation: str, pointer: Pointer, href: str,
            header: dict[str, str], max_bytes: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"oid": pointer.oid, "size": pointer.size, "authenticated": True}
    stored = objects.size(pointer.oid)
    action = {"href": f"{href}/objects/{pointer.oid}", "header": header}
    upload = {**action, "href": f"{action['href']}?size={pointer.size}"}
    if stored is not None and stored != pointer.size:
        entry["error"] = {"code": 422, "message": _size_mismatch(pointer, stored)}
    elif operation == "download":
        if stored is None:
            entry["error"] = {"code": 404, "message": f"object {pointer.oid} is not in this "
                              "registry's object store"}
        else:
            entry["actions"] = {"download": action}
    elif pointer.size > max_bytes:
        entry["error"] = {"code": 422, "message": _too_large(pointer, max_bytes).message}
    elif stored is None:  # an object already stored needs no upload: no actions
        entry["actions"] = {"upload": upload,
                            "verify": {"href": f"{href}/verify", "header": header}}
    return entry


def _size_mismatch(pointer: Pointer, stored: int) -> str:
    return (f"object {pointer.oid} is {stored:,} bytes (its content hashes to this oid), "
            f"not {pointer.size:,}: the pointer's size is wrong")


def _too_large(pointer: Pointer, max_bytes: int) -> TooLarge:
    return TooLarge(f"object {pointer.oid[:12]}… is {pointer.size:,} bytes; this server's "
                    f"limit for one upload is {max_bytes:,} bytes "
                    "(PROMPTREV_GIT_MAX_REQUEST_BYTES)")


def receive(objects: ObjectStore, pointer: Pointer, stream: BinaryIO, max_bytes: int
            ) -> bool:
    """Store an uploaded object, verified against its sha256 and size; True if new."""
    if pointer.size > max_bytes:
        raise _too_large(pointer, max_bytes)
    return objects.put_expected(stream, pointer)


def verify(objects: ObjectStore, pointer: Pointer) -> None:
    """The verify action: the object is stored, with the size the client announced."""
    stored = objects.size(pointer.oid)
    if stored is None:
        raise NotFound(f"object {pointer.oid} was not uploaded: it is not in this registry's "
                       "object store")
    if stored != pointer.size:
        raise ValidationFailed(_size_mismatch(pointer, stored))


def download(objects: ObjectStore, oid: str) -> tuple[BinaryIO, int]:
    """An object opened for a download, and its size."""
    size = objects.size(oid)
    if size is None:
        raise NotFound(f"object {oid} is not in this registry's object store")
    return objects.open(oid), size


# ---- what commits need ----------------------------------------------------------------
def pointers_in(registry: Registry, commits: Iterable[str]) -> list[Pointer]:
    """The weights pointers that ``commits`` bring in (each once, in order)."""
    found: dict[str, Pointer] = {}
    for sha in commits:
        for entry in registry.store.new_entries(sha):
            if entry.path.rsplit("/", 1)[-1] != WEIGHTS or entry.size is None \
                    or entry.size > POINTER_MAX:
                continue
            try:
                pointer = Pointer.parse(registry.store.blob(entry.oid).decode("utf-8"))
            except (PromptrevError, UnicodeDecodeError):
                continue  # not a pointer: the push or pull check names it
            found.setdefault(pointer.oid, pointer)
    return list(found.values())


def missing(objects: ObjectStore, pointers: Iterable[Pointer]) -> list[Pointer]:
    """The pointers whose objects ``objects`` lacks."""
    return [p for p in pointers if objects.size(p.oid) is None]


# ---- moving objects to and from a remote ------------------------------------------------
def fetch_objects(registry: Registry, url: str, pointers: list[Pointer]) -> int:
    """Bring the objects of ``pointers`` this registry lacks from the remote at ``url``.

    Returns how many arrived. An object the remote lacks is left missing: the pull's
    check then names the adapter whose weights are not there.
    """
    wanted = missing(registry.objects, pointers)
    if not wanted:
        return 0
    local = _local_store(url)
    if local is not None:
        return sum(_copy(local, registry.objects, p) for p in wanted)
    if not _is_http(url):
        return 0
    with _Remote(registry, url) as remote:
        return remote.download(wanted, registry.objects)


def send_objects(registry: Registry, url: str, pointers: list[Pointer]) -> int:
    """Give the remote at ``url`` the objects of ``pointers`` (it skips those it has)."""
    if not pointers:
        return 0
    for pointer in pointers:
        registry.objects.verify(pointer)  # never send a corrupt object on
    local = _local_store(url)
    if local is not None:
        return sum(_copy(registry.objects, local, p) for p in pointers)
    if not _is_http(url):
        return 0
    with _Remote(registry, url) as remote:
        return remote.upload(pointers, registry.objects)


def lfs_url(url: str) -> str:
    """The Git LFS endpoint of a Git remote URL (git-lfs's server discovery)."""
    base = url.rstrip("/")
    return f"{base}/info/lfs" if base.endswith(".git") else f"{base}.git/info/lfs"


def _is_http(url: str) -> bool:
    return urlsplit(url).scheme.lower() in ("http", "https")


def _local_store(url: str) -> ObjectStore | None:
    """The object folder of a local remote, as git-lfs lays it out; None for others."""
    parts = urlsplit(url)
    if parts.scheme.lower() == "file":
        path = unquote(parts.path)
    elif not parts.scheme and os.path.isabs(url) and os.path.isdir(url):
        path = url
    else:
        return None
    git_dir = os.path.join(path, ".git")
    root = git_dir if os.path.isdir(git_dir) else path
    return ObjectStore(os.path.join(root, "lfs", "objects"))


def _copy(source: ObjectStore, target: ObjectStore, pointer: Pointer) -> bool:
    """Copy one object between stores, verified on the way; False if it was not needed."""
    if target.size(pointer.oid) == pointer.size or source.size(pointer.oid) is None:
        return False
    with source.open(pointer.oid) as fh:
        return target.put_expected(fh, pointer)


class _Remote:
    """A remote's Git LFS endpoint, asked with the credentials its Git URL carries."""

    def __init__(self, registry: Registry, url: str):
        import httpx

        parts = urlsplit(url)
        self.display = gitremote.redact(url)
        bare = urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port
                                                           else ""), parts.path, "", ""))
        self.endpoint = lfs_url(bare)
        self.origin = _origin(bare)
        auth = None
        if parts.username or parts.password:
            auth = (unquote(parts.username or ""), unquote(parts.password or ""))
        else:
            auth = gitremote.credentials(registry.path, bare)
        self.http = httpx.Client(auth=auth, timeout=TIMEOUT, follow_redirects=False,
                                 headers={"Accept": MEDIA_TYPE})

    def __enter__(self) -> _Remote:
        return self

    def __exit__(self, *exc) -> None:
        self.http.close()

    def download(self, pointers: list[Pointer], objects: ObjectStore) -> int:
        import httpx

        count = 0
        for pointer, entry in self._batch("download", pointers):
            action = self._action(entry, "download", pointer)
            if action is None:
                continue  # the remote lacks it: the pull's check names the adapter
            what = f"downloading object {pointer.oid[:12]}…"
            with self._call(what, "GET", action) as response:
                self._ok(response, what)
                # Read up to the size our own pointer says, never the size the remote
                # claims: a remote's size lie cannot fill the disk.
                try:
                    count += objects.put_expected(_Stream(response.iter_bytes()), pointer)
                except httpx.HTTPError as exc:
                    raise RemoteFailed(f"the Git LFS server of {self.display} broke off "
                                       f"{what}: {exc}; nothing was stored") from None
        return count

    def upload(self, pointers: list[Pointer], objects: ObjectStore) -> int:
        count = 0
        for pointer, entry in self._batch("upload", pointers):
            action = self._action(entry, "upload", pointer)
            if action is None:
                continue  # the remote has it already
            what = f"uploading object {pointer.oid[:12]}…"
            with objects.open(pointer.oid) as fh, self._call(
                    what, "PUT", action, content=_chunks(fh), headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(pointer.size)}) as response:
                self._ok(response, what)
            verify_action = self._action(entry, "verify", pointer)
            if verify_action is not None:
                what = f"verifying object {pointer.oid[:12]}…"
                with self._call(what, "POST", verify_action, json={
                        "oid": pointer.oid, "size": pointer.size},
                        headers={"Content-Type": MEDIA_TYPE}) as response:
                    self._ok(response, what)
            count += 1
        return count

    def _action(self, entry: dict[str, Any], name: str, pointer: Pointer
                ) -> dict[str, Any] | None:
        """The entry's action ``name`` (None if it has none), checked to be an http(s) URL."""
        actions = entry.get("actions") or {}
        if not isinstance(actions, dict):
            raise self._malformed(f"the actions of object {pointer.oid[:12]}… are not an "
                                  "object")
        action = actions.get(name)
        if action is None:
            return None
        href = action.get("href") if isinstance(action, dict) else None
        header = action.get("header") or {} if isinstance(action, dict) else None
        if not isinstance(href, str) or not _is_http(href) or not isinstance(header, dict) \
                or not all(isinstance(v, str) for v in header.values()):
            raise self._malformed(f"its {name} action for object {pointer.oid[:12]}… is not "
                                  "an http(s) href with string headers")
        return {"href": href, "header": header}

    def _call(self, what: str, method: str, action: dict[str, Any], headers=None, **kw):
        """Send one action's request; the user's credentials go only to the remote's own
        origin (scheme, host and port), never to a host the remote's answer names."""
        import httpx

        auth = httpx.USE_CLIENT_DEFAULT if _origin(action["href"]) == self.origin else None
        try:
            request = self.http.build_request(method, action["href"], headers={
                **action["header"], **(headers or {})}, **kw)
            return _Sent(self.http, request, auth)
        except httpx.HTTPError as exc:
            raise RemoteFailed(f"the Git LFS server of {self.display} named a URL that "
                               f"cannot be reached for {what}: {exc}") from None

    def _batch(self, operation: str, pointers: list[Pointer]
               ) -> Iterator[tuple[Pointer, dict[str, Any]]]:
        """Each object the remote answered for, as the pointer we asked about: entries
        for objects not asked for are ignored, and sizes are always our pointers'."""
        import httpx

        asked = {p.oid: p for p in pointers}
        for start in range(0, len(pointers), 100):
            body = {"operation": operation, "transfers": [TRANSFER], "hash_algo": "sha256",
                    "objects": [{"oid": p.oid, "size": p.size}
                                for p in pointers[start:start + 100]]}
            try:
                response = self.http.post(self.endpoint + "/objects/batch", json=body,
                                          headers={"Content-Type": MEDIA_TYPE})
            except httpx.HTTPError as exc:
                raise RemoteFailed(f"could not reach the Git LFS server of "
                                   f"{self.display}: {exc}") from None
            if response.status_code in (404, 405, 501):
                raise RemoteFailed(f"{self.display} has no Git LFS server at "
                                   f"{gitremote.redact(self.endpoint)} (it answered "
                                   f"{response.status_code}), so the adapter weights these "
                                   f"commits name cannot be {operation}ed: nothing was "
                                   "changed")
            self._ok(response, f"asking for {operation} of {len(body['objects'])} object(s)")
            try:
                answer = response.json()
            except ValueError:
                raise self._malformed("its batch answer is not JSON") from None
            entries = answer.get("objects", []) if isinstance(answer, dict) else None
            if not isinstance(entries, list) or \
                    not all(isinstance(e, dict) for e in entries):
                raise self._malformed("its batch answer has no list of objects")
            for entry in entries:
                pointer = asked.get(entry.get("oid"))  # type: ignore[arg-type]
                if pointer is None:
                    continue  # not asked for: never stored
                error = entry.get("error")
                if error is not None and not isinstance(error, dict):
                    raise self._malformed(f"its error for object {pointer.oid[:12]}… is not "
                                          "an object")
                if error and not (operation == "download" and error.get("code") == 404):
                    raise RemoteFailed(f"the Git LFS server of {self.display} refused object "
                                       f"{pointer.oid[:12]}…: "
                                       f"{str(error.get('message'))[:500]}")
                if error:
                    continue
                yield pointer, entry

    def _malformed(self, why: str) -> RemoteFailed:
        return RemoteFailed(f"the Git LFS server of {self.display} answered outside the Git "
                            f"LFS batch protocol: {why}; nothing was changed")

    def _ok(self, response, what: str) -> None:
        if response.status_code < 300:
            return
        response.read()
        try:
            said = response.json().get("message")
        except (ValueError, AttributeError):
            said = None
        raise RemoteFailed(f"the Git LFS server of {self.display} answered {what} with "
                           f"{response.status_code}: {str(said or response.text)[:200]}",
                           details={"status": response.status_code})


class _Sent:
    """One action's request, sent streaming; a context manager closing its response."""

    def __init__(self, http, request, auth):
        self.http, self.request, self.auth, self.response = http, request, auth, None

    def __enter__(self):
        import httpx

        try:
            self.response = self.http.send(self.request, auth=self.auth, stream=True)
        except httpx.HTTPError as exc:
            raise RemoteFailed(f"a Git LFS transfer to {gitremote.redact(str(self.request.url))}"
                               f" failed: {exc}") from None
        return self.response

    def __exit__(self, *exc) -> None:
        if self.response is not None:
            self.response.close()


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


class _Stream:
    """A file-like ``read`` over an iterator of byte chunks (a download's body)."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks, self.buffer = chunks, b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer += chunk
        if size < 0:
            size = len(self.buffer)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def _chunks(fh: BinaryIO) -> Iterator[bytes]:
    while chunk := fh.read(1024 * 1024):
        yield chunk

