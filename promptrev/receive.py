"""A ``git push`` into the registry: what the pre- and post-receive hooks decide and do.

The server runs Git's own ``git http-backend``; Git calls these through the hooks it is
given (``promptrev hook pre-receive|post-receive``). Before any ref moves, every update is
checked as the server checks its own writes: only ``main`` and ``review/<name>`` branches
are accepted; ``main`` takes the merge role, keeps its first-parent history, holds valid
artifacts only and moves protected labels only for admins; a review branch is checked as
the one commit merging it would make. After the refs moved, the index catches up before
``git push`` returns, and review branches open or update their change requests.

Pushed objects are still in Git's quarantine while pre-receive runs; the caller names
those object folders (``GIT_OBJECT_DIRECTORY`` and friends) so libgit2 can read them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from promptrev.model.artifacts import by_artifact

from .accounts import User
from .errors import Conflict, Forbidden, InvalidRequest, ReadOnlyReplica
from .incoming import check_changes, check_history
from .policy import Policy
from .registry import Registry
from .reviews import ZERO, Reviews, valid_branch
from .storage.gitstore import MAIN
from .storage.provenance import new_commits, record_pushed

REVIEW_PREFIX = "refs/heads/review/"
ACCEPTED_REFS = "refs/heads/main and refs/heads/review/<name>"


@dataclass(frozen=True)
class RefUpdate:
    """One ``<old> <new> <ref>`` line that Git gives its receive hooks."""

    old: str
    new: str
    ref: str

    @property
    def created(self) -> bool:
        """The ref did not exist before this push."""
        return self.old == ZERO

    @property
    def deleted(self) -> bool:
        """The push deletes the ref."""
        return self.new == ZERO

    @property
    def branch(self) -> str:
        """``main`` or ``review/fix-tone`` (the ref without ``refs/heads/``)."""
        return self.ref.removeprefix("refs/heads/")

    @property
    def is_review(self) -> bool:
        """Whether this is a ``review/<name>`` branch."""
        return self.ref.startswith(REVIEW_PREFIX) and len(self.ref) > len(REVIEW_PREFIX)


def parse_updates(lines: Iterable[str]) -> list[RefUpdate]:
    """The ref updates of a push, from the hook's standard input."""
    updates = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            updates.append(RefUpdate(*parts))
        elif parts:
            raise InvalidRequest(f"unexpected line from git receive-pack: {line.strip()!r}")
    return updates


def read_pushed_objects(registry: Registry, object_dirs: Iterable[str]) -> None:
    """Let libgit2 read objects that Git still keeps in its quarantine folder."""
    known = os.path.realpath(os.path.join(registry.path, "objects"))
    for folder in object_dirs:
        folder = os.path.abspath(folder)
        if folder and os.path.isdir(folder) and os.path.realpath(folder) != known:
            registry.store.repo.odb.add_disk_alternate(folder)


def check_push(registry: Registry, policy: Policy, user: User,
               updates: list[RefUpdate]) -> None:
    """Raise an error naming the reason if any update of a push must be refused."""
    primary = registry.replica_of
    if primary:  # the server redirects pushes; this catches one made on the disk
        raise ReadOnlyReplica(f"this registry is a read replica of {primary}: push to the "
                              "primary", details={"primary": primary})
    registry.sync()
    for update in updates:
        if update.ref == MAIN:
            _check_main(registry, policy, user, update)
        elif update.is_review:
            _check_review(registry, policy, user, update)
        else:
            raise Forbidden(f"{update.ref}: this registry accepts pushes to {ACCEPTED_REFS} "
                            "only (push a proposal as review/<name> to open a change "
                            "request)", details={"ref": update.ref})


def _check_main(registry: Registry, policy: Policy, user: User, update: RefUpdate) -> None:
    if update.deleted:
        raise Forbidden("main cannot be deleted")
    policy.require_write_main(user, "pushing to main")
    head = registry.store.head()
    old = None if update.created else update.old
    if old != head:
        raise Conflict("main moved while you pushed: pull ('git pull --rebase') and push "
                       "again", details={"main": head, "expected": old})
    incoming = check_history(registry, old, update.new)
    incoming.raise_for_problems(f"the push to main ({_span(old, update.new)})")
    policy.require_incoming(user, incoming, "pushing", registry=registry, base=old)


def _check_review(registry: Registry, policy: Policy, user: User, update: RefUpdate
                  ) -> None:
    policy.require(user, "write", f"pushing {update.branch}")
    valid_branch(update.branch)
    if update.deleted:  # closes its request: the same right as rejecting it
        Reviews(registry, policy).check_branch_deletion(update.branch, user)
        return
    if not update.created:  # a forced push replaces the request: the same right again
        Reviews(registry, policy).check_branch_rewrite(update.branch, update.old, update.new,
                                                       user)
    head = registry.store.head()
    base = registry.store.merge_base(head, update.new) if head else None
    if base is None:
        raise InvalidRequest(f"{update.branch} shares no history with main: start it from "
                             "main ('git switch -c review/<name> origin/main')")
    incoming = check_changes(registry, base, update.new)
    incoming.raise_for_problems(f"the proposal {update.branch}")


def note_pushers(registry: Registry, user: User, updates: list[RefUpdate]) -> None:
    """Record in Git that ``user`` pushed every commit this push brings in.

    Run by pre-receive once the push is accepted, before any ref moves, so whoever
    indexes the new ``main`` finds the pusher already there (a trailer the pusher typed
    into a message is overruled: see :mod:`.storage.provenance`). A push that then fails
    leaves notes on commits no branch holds, rewritten when they are pushed again.
    """
    shas: list[str] = []
    for update in updates:
        if not update.deleted:
            shas += new_commits(registry.store, update.new)
    record_pushed(registry.store, shas, user.name)


def _span(old: str | None, new: str) -> str:
    return f"{old[:10] if old else 'new'}..{new[:10]}"


def after_push(registry: Registry, policy: Policy, user: User, updates: list[RefUpdate],
               base_url: str = "") -> list[str]:
    """Bring the index up to the pushed refs and open change requests; lines to print."""
    registry.sync()
    lines: list[str] = []
    base_url = base_url.rstrip("/")
    for update in updates:
        if update.ref == MAIN and not update.deleted:
            lines.extend(_main_summary(registry, update, base_url))
        elif update.is_review:
            lines.extend(_open_review(registry, policy, user, update, base_url))
    return lines


def _main_summary(registry: Registry, update: RefUpdate, base_url: str) -> list[str]:
    old = None if update.created else update.old
    lines = [f"main is now at {update.new[:10]}"]
    touched = {(t.kind.name, t.name) for t in by_artifact(
        registry.store.diff(old, update.new),
        present=lambda path: registry.store.blob_at(update.new, path) is not None)[0]}
    for kind, name in sorted(touched):
        row = registry.index.artifact(kind, name)
        if row is None:
            continue
        state = "deleted" if row.deleted else f"version {row.latest}"
        link = f": {base_url}/a/{name}" if base_url and not row.deleted else ""
        lines.append(f"  {kind} {name} is now {state}{link}")
    return lines


def _open_review(registry: Registry, policy: Policy, user: User, update: RefUpdate,
                 base_url: str) -> list[str]:
    change = Reviews(registry, policy).on_push(update.branch, update.old, update.new, user)
    if change is None:
        return []
    return [f"change request #{change.number}: {base_url}/reviews/{change.number}"]
