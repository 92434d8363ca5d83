"""The registry's tree: which file entries a commit on ``main`` (or a proposal) may hold.

Whatever a push brings in, every clone checks out and ``promptrev import`` may read. So
the tree holds regular files only (no symbolic links, which point anywhere on the machine
that checks them out, and no submodules), no file that steers Git itself
(``.gitattributes``, ``.gitmodules``…), nothing outside the layout's folders, and no file
beyond the size limit. Which files inside a folder are valid is the kinds' business
(:mod:`promptrev.model.artifacts`); this module only draws the outline.
"""

from __future__ import annotations

from .artifacts import KINDS

REGULAR_MODES = (0o100644, 0o100755)
SYMLINK = 0o120000
GITLINK = 0o160000
# Label maps, traffic splits and release policies, each with one file per artifact (see
# model.labels and model.release).
LABEL_FOLDERS = ("labels", "splits", "policies")
# Files the registry itself writes at the top of its tree ('promptrev init').
TOP_FILES = ("README.md",)
# Names Git reads from a work tree: any of them would change how every clone behaves.
GIT_CONTROL_FILES = (".git", ".gitattributes", ".gitmodules", ".gitignore", ".mailmap")


def folders() -> list[str]:
    """The top-level folders of the layout: each kind's, then the label folders."""
    return [kind.folder for kind in KINDS.values()] + list(LABEL_FOLDERS)


def describe() -> str:
    """``prompts/, datasets/, adapters/, labels/ and splits/ (plus README.md)``."""
    names = [f"{folder}/" for folder in folders()]
    return f"{', '.join(names[:-1])} and {names[-1]} (plus {', '.join(TOP_FILES)})"


def in_layout(path: str) -> bool:
    """Whether ``path`` lies inside the layout: in one of its folders, or a top file."""
    top, sep, _ = path.partition("/")
    return top in folders() if sep else path in TOP_FILES


def entry_problems(path: str, mode: int, size: int | None, max_bytes: int, *,
                   foreign: bool = False) -> list[str]:
    """What is wrong with a file entry a commit brings in (nothing: it may stay).

    ``foreign``: the entry comes from a team's repository the registry follows (a pull),
    where files outside the layout are the team's own (code, CI files) and are left alone;
    inside the layout the same rules hold.
    """
    if foreign and not in_layout(path):
        return []
    control = _git_control(path)
    if control:
        return [f"{path}: a Git control file ({control}) is not accepted: it would change "
                "how every clone of the registry checks out or behaves"]
    if mode == SYMLINK:
        return [f"{path}: a symbolic link is not accepted: the registry holds regular files "
                "only (a link points at whatever file the machine that checks it out has)"]
    if mode == GITLINK:
        return [f"{path}: a submodule (gitlink) is not accepted: the registry holds regular "
                "files only"]
    if mode not in REGULAR_MODES:
        return [f"{path}: file mode {mode:o} is not accepted: the registry holds regular "
                "files only"]
    problems = []
    if not in_layout(path):
        problems.append(f"{path}: outside the registry's layout: files live in {describe()}")
    if size is not None and size > max_bytes:
        problems.append(f"{path}: is {size:,} bytes; the limit is {max_bytes:,} bytes for any "
                        "file in the registry (PROMPTREV_MAX_BYTES). Large binaries go to the "
                        "object store: push adapter weights with 'promptrev adapter push'")
    return problems


def _git_control(path: str) -> str | None:
    for part in path.split("/"):
        # Windows and macOS clients drop trailing dots and spaces and ignore case.
        name = part.lower().rstrip(". ")
        if name in GIT_CONTROL_FILES:
            return name
    return None
