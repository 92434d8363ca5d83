"""The Git LFS pointer format: the three-line file Git holds in place of a large binary.

Pure data: reading and writing the pointer text. Where the bytes live (the object store)
is :mod:`promptrev.storage.objects`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from promptrev.errors import Conflict, TooLarge, ValidationFailed

LFS_VERSION = "https://git-lfs.github.com/spec/v1"
_POINTER = re.compile(r"\Aversion (\S+)\noid sha256:([0-9a-f]{64})\nsize (\d+)\n\Z")


@dataclass(frozen=True)
class Pointer:
    """A Git LFS pointer: which object, and how big."""

    oid: str
    size: int

    def text(self) -> str:
        """The pointer file, exactly as Git LFS writes it."""
        return f"version {LFS_VERSION}\noid sha256:{self.oid}\nsize {self.size}\n"

    @classmethod
    def parse(cls, text: str, where: str = "pointer") -> Pointer:
        """Read a pointer file; anything else is a clear error."""
        match = _POINTER.match(text)
        if not match or match.group(1) != LFS_VERSION:
            raise ValidationFailed(f"{where}: not a Git LFS pointer (expected 'version "
                                   f"{LFS_VERSION}', 'oid sha256:<64 hex>', 'size <bytes>')")
        return cls(match.group(2), int(match.group(3)))


# ---- the Git LFS batch API (docs/api/batch.md of git-lfs) -------------------------------
MEDIA_TYPE = "application/vnd.git-lfs+json"
OPERATIONS = ("download", "upload")
TRANSFER = "basic"  # the one transfer adapter every Git LFS client speaks
HASH_ALGO = "sha256"
MAX_BATCH = 1000  # objects in one batch request (git-lfs sends 100 at a time)
_OID = re.compile(r"\A[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class BatchRequest:
    """A client's batch request: which objects it wants to download or upload."""

    operation: str
    objects: tuple[Pointer, ...]

    @classmethod
    def parse(cls, body: object) -> BatchRequest:
        """Read a batch request's JSON; anything malformed is an error naming the field."""
        if not isinstance(body, dict):
            raise ValidationFailed("a Git LFS batch request must be a JSON object")
        operation = body.get("operation")
        if operation not in OPERATIONS:
            raise ValidationFailed(f"operation must be 'download' or 'upload', not "
                                   f"{str(operation)[:40]!r}")
        transfers = body.get("transfers", [TRANSFER])
        if not isinstance(transfers, list) or TRANSFER not in transfers:
            raise ValidationFailed("this server speaks the 'basic' transfer only: list it in "
                                   "'transfers'")
        algo = body.get("hash_algo", HASH_ALGO)
        if algo != HASH_ALGO:
            raise UnsupportedHash(f"hash_algo {str(algo)[:40]!r} is not supported: Git LFS "
                                  "objects here are named by their sha256")
        objects = body.get("objects")
        if not isinstance(objects, list) or not objects:
            raise ValidationFailed("objects must be a non-empty list of {oid, size}")
        if len(objects) > MAX_BATCH:
            raise BatchTooLarge(f"a batch request may name at most {MAX_BATCH} objects, not "
                                f"{len(objects)}")
        return cls(operation, tuple(_object(entry, n) for n, entry in enumerate(objects)))


def _object(entry: object, n: int) -> Pointer:
    if not isinstance(entry, dict):
        raise ValidationFailed(f"objects[{n}] must be an object with oid and size")
    oid, size = entry.get("oid"), entry.get("size")
    if not isinstance(oid, str) or not _OID.match(oid):
        raise ValidationFailed(f"objects[{n}].oid must be a sha256: 64 lowercase hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValidationFailed(f"objects[{n}].size must be a byte count (an integer ≥ 0)")
    return Pointer(oid, size)


def valid_oid(oid: str) -> bool:
    """Whether ``oid`` names an object: a sha256 in lowercase hex."""
    return bool(_OID.match(oid))


class UnsupportedHash(Conflict):
    """A batch request for objects named by another hash than sha256 (LFS answers 409)."""

    code = "unsupported_hash"


class BatchTooLarge(TooLarge):
    """A batch request naming more objects than one request may (LFS answers 413)."""

    code = "batch_too_large"
