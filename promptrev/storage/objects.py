"""The content-addressed object store for large binaries (adapter weights).

Git holds a standard Git LFS pointer (the format: :mod:`promptrev.model.lfs`); the bytes
live once, named by their sha256, at ``<registry>/lfs/objects/aa/bb/<oid>`` (Git LFS's own
layout, so ``git lfs`` tooling can read it). Writes are atomic (temporary file, fsync,
rename); every read checks the sha256, so a corrupted object is an error, never a silently
wrong model.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from typing import BinaryIO

from promptrev.model.lfs import Pointer

from ..errors import NotFound, StorageError, ValidationFailed

_CHUNK = 1024 * 1024


class CorruptObject(StorageError):
    """Stored bytes whose sha256 no longer matches their name."""

    code = "corrupt_object"


class ObjectStore:
    """sha256-addressed files under ``root`` (``<registry>/lfs/objects``)."""

    def __init__(self, root: str):
        self.root = root

    def path(self, oid: str) -> str:
        """Where an object lives."""
        if not re.fullmatch(r"[0-9a-f]{64}", oid):
            raise ValidationFailed(f"invalid object id {oid!r}")
        return os.path.join(self.root, oid[:2], oid[2:4], oid)

    def exists(self, oid: str) -> bool:
        """Whether the object is stored (not verified)."""
        return os.path.exists(self.path(oid))

    def size(self, oid: str) -> int | None:
        """The stored object's size in bytes (not verified), or None if it is not stored."""
        try:
            return os.stat(self.path(oid)).st_size
        except FileNotFoundError:
            return None

    def put_file(self, source: str) -> Pointer:
        """Store a file's bytes (streamed); identical content is stored once."""
        with open(source, "rb") as fh:
            return self.put_stream(fh)

    def put_bytes(self, data: bytes) -> Pointer:
        """Store bytes; identical content is stored once."""
        oid = hashlib.sha256(data).hexdigest()
        if not self.exists(oid):
            self._write(oid, lambda out: out.write(data))
        return Pointer(oid, len(data))

    def put_stream(self, stream: BinaryIO) -> Pointer:
        """Store a stream: hashed while copied to a temporary file, then renamed."""
        os.makedirs(self.root, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(prefix=".incoming-", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            oid = digest.hexdigest()
            if self.exists(oid):
                os.unlink(tmp)
            else:
                os.makedirs(os.path.dirname(self.path(oid)), exist_ok=True)
                os.replace(tmp, self.path(oid))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return Pointer(oid, size)

    def put_expected(self, stream: BinaryIO, pointer: Pointer) -> bool:
        """Store a stream that must be exactly ``pointer``'s object (an upload).

        At most ``pointer.size + 1`` bytes are read; content of another size or sha256 is
        refused with :class:`ValidationFailed` naming what arrived, and nothing is stored.
        Returns whether the object was new.
        """
        os.makedirs(self.root, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(prefix=".incoming-", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as out:
                while size <= pointer.size and (
                        chunk := stream.read(min(_CHUNK, pointer.size + 1 - size))):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                _check_upload(pointer, digest.hexdigest(), size)
                out.flush()
                os.fsync(out.fileno())
            if self.exists(pointer.oid):
                os.unlink(tmp)
                return False
            os.makedirs(os.path.dirname(self.path(pointer.oid)), exist_ok=True)
            os.replace(tmp, self.path(pointer.oid))
            return True
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def open(self, oid: str) -> BinaryIO:
        """The stored object opened for reading (not verified: the reader checks it)."""
        try:
            return open(self.path(oid), "rb")
        except FileNotFoundError:
            raise NotFound(f"object {oid[:12]}… is not in this registry's object store"
                           ) from None

    def read(self, pointer: Pointer) -> bytes:
        """The object's bytes, verified against its sha256 and size."""
        try:
            with open(self.path(pointer.oid), "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise NotFound(f"object {pointer.oid[:12]}… is missing from the object store "
                           f"{self.root}") from None
        self._verify(pointer, hashlib.sha256(data).hexdigest(), len(data))
        return data

    def copy_to(self, pointer: Pointer, dest: str) -> None:
        """Write the object to ``dest`` (atomically), verifying it on the way."""
        source = self.path(pointer.oid)
        if not os.path.exists(source):
            raise NotFound(f"object {pointer.oid[:12]}… is missing from the object store "
                           f"{self.root}")
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=os.path.dirname(dest) or ".")
        try:
            with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            self._verify(pointer, digest.hexdigest(), size)
            os.replace(tmp, dest)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def verify(self, pointer: Pointer) -> None:
        """Raise unless the stored object matches its pointer."""
        if not self.exists(pointer.oid):
            raise NotFound(f"object {pointer.oid[:12]}… is missing from the object store "
                           f"{self.root}")
        self.verify_file(self.path(pointer.oid), pointer)

    @staticmethod
    def verify_file(path: str, pointer: Pointer) -> None:
        """Raise unless the file at ``path`` is exactly the pointer's object."""
        digest, size = hashlib.sha256(), 0
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            raise NotFound(f"{path} is missing") from None
        if digest.hexdigest() == pointer.oid and size != pointer.size:
            raise _wrong_size(pointer, size)
        if digest.hexdigest() != pointer.oid:
            raise CorruptObject(f"{path} is corrupt: its sha256 is {digest.hexdigest()[:12]}…,"
                                f" expected {pointer.oid[:12]}… (delete it to fetch again)")

    def _write(self, oid: str, write) -> None:
        target = self.path(oid)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".incoming-", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _verify(self, pointer: Pointer, oid: str, size: int) -> None:
        if oid == pointer.oid and size != pointer.size:
            raise _wrong_size(pointer, size)
        if oid != pointer.oid:
            raise CorruptObject(f"object {pointer.oid[:12]}… is corrupt: its content hashes "
                                f"to {oid[:12]}… ({size} bytes, expected {pointer.size}); "
                                "restore it from a backup or push the adapter again")



def _wrong_size(pointer: Pointer, size: int) -> ValidationFailed:
    """The object is exactly the one the pointer names; only the pointer's size is wrong.

    Deleting or re-fetching the object would not help (and would break every other
    pointer that shares it): the pointer is what must be fixed.
    """
    return ValidationFailed(
        f"the pointer says {pointer.size:,} bytes, but object {pointer.oid[:12]}… is "
        f"{size:,} bytes and intact (its sha256 matches): the pointer is wrong, not the "
        "object, so keep the object and fix the pointer and its card (push the adapter again "
        "with 'promptrev adapter push')")


def _check_upload(pointer: Pointer, oid: str, size: int) -> None:
    """Refuse uploaded bytes that are not exactly the object they were sent as."""
    if size > pointer.size:
        raise ValidationFailed(f"the upload of object {pointer.oid[:12]}… is longer than the "
                               f"{pointer.size:,} bytes it was announced as: nothing was "
                               "stored")
    if size < pointer.size:
        raise ValidationFailed(f"the upload of object {pointer.oid[:12]}… is {size:,} bytes, "
                               f"not the {pointer.size:,} bytes it was announced as: nothing "
                               "was stored")
    if oid != pointer.oid:
        raise ValidationFailed(f"the upload sent as object {pointer.oid[:12]}… hashes to "
                               f"{oid[:12]}… (sha256): its bytes are not that object; "
                               "nothing was stored")
