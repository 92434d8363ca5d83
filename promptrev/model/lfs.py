"""The Git LFS pointer format: the three-line file Git holds in place of a large binary.

Pure data: reading and writing the pointer text. Where the bytes live (the object store)
is :mod:`promptrev.storage.objects`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from promptrev.errors import ValidationFailed

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
