"""Where an artifact's files sit in the Git tree: hashed subfolders, never seen in names.

Real prompt libraries are flat: thousands of names in one folder. Git stores a folder as
one tree object, and every save rewrites each tree on the path of the file it changes, so
a save in a folder of 10,000 files wrote a 257 KB tree (and read the old one) whatever
it changed. Each artifact's files therefore sit two *bucket* folders down from the folder
its name gives, each bucket named ``@`` and one hex digit of the SHA-1 of the whole name:
``act-as-a-linux-terminal`` is stored at ``prompts/@e/@e/act-as-a-linux-terminal.prompty``
and ``support/reply`` at ``prompts/support/@2/@0/reply.prompty``. A save then rewrites
two folders of at most 16 buckets and one bucket of ~1/256 of the folder's names, at any
library size: a 10,000-name folder costs what a nested library of 50-name folders costs,
in time and in bytes per save. (One level of 256 buckets left a 256-entry folder to
rewrite on every save, three times the bytes of a nested library's.)

The buckets are the first two hex digits of the name's SHA-1
(``printf %s support/reply | sha1sum | cut -c1-2`` prints ``20``). ``@`` cannot start a name
segment (:mod:`.names`), so a bucket is never mistaken for a folder a name gives, and paths
of the layout before buckets (``prompts/support/reply.prompty``, kept in old history) are
read unambiguously too. Names, references, the API and the pages never show a bucket;
``promptrev path NAME`` prints where a name is stored, for people working with plain Git.
"""

from __future__ import annotations

import hashlib

MARK = "@"  # first character of a bucket folder; never the first of a name segment
MOVE_TITLE = "Move files into buckets"  # the title of the commit that moves a branch
LEVELS = 2  # bucket folders on the way to a file, each named by one hex digit


def bucket(name: str) -> str:
    """The bucket folders of a name: ``@`` and a hex digit of its SHA-1, twice (``@e/@7``)."""
    digits = hashlib.sha1(name.encode("utf-8")).hexdigest()[:LEVELS]
    return "/".join(MARK + digit for digit in digits)


def stored(top: str, name: str, suffix: str) -> str:
    """The path of a name's file under ``top``: its folders, its bucket, its leaf."""
    parent, _, leaf = name.rpartition("/")
    return f"{top}/{parent}/{bucket(name)}/{leaf}{suffix}" if parent else \
        f"{top}/{bucket(name)}/{leaf}{suffix}"


def unbucketed(top: str, name: str, suffix: str) -> str:
    """The path the layout before buckets gave a name (in history made before them)."""
    return f"{top}/{name}{suffix}"


def _parts(top: str, path: str, suffix: str) -> list[str] | None:
    prefix = top + "/"
    if not (path.startswith(prefix) and path.endswith(suffix)) or \
            len(path) <= len(prefix) + len(suffix):
        return None
    parts = path[len(prefix): len(path) - len(suffix)].split("/")
    return parts if all(parts) else None


def name_of(top: str, path: str, suffix: str) -> str | None:
    """The name a path under ``top`` stores, in either layout; None if it stores none.

    A path with buckets must carry the name's own: any other is not an artifact's path (a
    push that puts a file there is told where it belongs).
    """
    parts = _parts(top, path, suffix)
    if parts is None:
        return None
    marked = [i for i, part in enumerate(parts) if part.startswith(MARK)]
    if not marked:
        return "/".join(parts)
    if marked != list(range(len(parts) - 1 - LEVELS, len(parts) - 1)):
        return None
    name = "/".join(parts[:-1 - LEVELS] + parts[-1:])
    return name if "/".join(parts[-1 - LEVELS:-1]) == bucket(name) else None


def meant(top: str, path: str, suffix: str) -> str | None:
    """The name a path under ``top`` was meant to store, whatever its buckets say (to tell
    someone who pushed a file into the wrong bucket where it belongs); None if none."""
    parts = _parts(top, path, suffix)
    if parts is None or len(parts) < 2 or not parts[-2].startswith(MARK):
        return None
    kept = [part for part in parts[:-1] if not part.startswith(MARK)]
    return "/".join(kept + parts[-1:])


def pattern(top: str, suffix: str) -> str:
    """How paths under ``top`` are made, in words."""
    return (f"{top}/<folders of the name>/@<bucket>/<last part of the name>{suffix}, where "
            "<bucket> is the first two hex digits of the SHA-1 of the whole name ('promptrev "
            "path NAME' prints the path)")


def shown(path: str) -> str:
    """A tree path as people read it: without its buckets (``prompts/support/reply.prompty``)."""
    if MARK not in path:
        return path
    return "/".join(part for part in path.split("/") if not _is_bucket(part))


def _is_bucket(part: str) -> bool:
    return len(part) == 2 and part[0] == MARK and part[1] in "0123456789abcdef"
