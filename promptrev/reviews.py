"""Change requests: proposed edits on their own branch, reviewed, then merged into ``main``.

A request is a Git branch ``refs/heads/review/<name>`` holding one or more commits on top
of ``main`` (made here from edits, or pushed with plain ``git push``), plus what is not
Git: its title, comments (on the request or on a line of a file) and approvals, kept in
SQL tables next to the index (defined in :mod:`.storage.tables`; ``reindex`` never
touches them). Opening, merging and rejecting a request record a ``change_request.*``
event in the event outbox (:mod:`.storage.outbox`), in the transaction that records it.

Merging makes one merge commit on ``main`` whose first parent is ``main`` and whose
second is the branch, so the request's edits become one new version per artifact (the
index numbers versions along ``main``'s first parents) authored by the request's author.
When ``main`` moved on meanwhile the merge is three-way, in memory: edits that do not
overlap combine; overlapping ones are a :class:`Conflict` that shows each side and
changes nothing. Merges run under the registry's writer lock, so two requests merged at
the same moment are merged one after the other against the real ``main``.

Approvals count for the commit they were given on: pushing new commits to a request asks
for review again. An approval counts only from an account that made no commit of the
request and did not open it: who made a commit is the authenticated account recorded in
Git (the pusher, or the user whose edit the server committed; see
:mod:`.storage.provenance`), not its Git author, which anyone can type.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from promptrev.model.artifacts import KINDS, by_artifact, only_moves
from promptrev.model.diffing import Diff, dataset_diff, prompt_diff, text_diff
from promptrev.model.fanout import MOVE_TITLE, shown
from promptrev.model.names import validate_name
from promptrev.model.validation import check_content

from .accounts import User
from .errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    ValidationFailed,
)
from .incoming import check_changes, check_history
from .policy import Policy
from .storage import outbox
from .storage.gitstore import RefMoved, Signature, valid_ref_name
from .storage.provenance import accounts_of, with_account
from .storage.sql import writing
from .storage.tables import T_REVIEW as T_REQ
from .storage.tables import T_REVIEW_APPROVAL as T_APPROVAL
from .storage.tables import T_REVIEW_COMMENT as T_COMMENT

if TYPE_CHECKING:
    from .registry import Registry

ZERO = "0" * 40
PREFIX = "review/"
STATUSES = ("open", "merged", "rejected", "closed")
MAX_TITLE = T_REQ.c.title.type.length
MAX_TEXT = 20_000
MAX_EDITS = 200


class NotApproved(Conflict):
    """A request lacks the approvals the registry requires."""

    code = "not_approved"


@dataclass(frozen=True)
class Edit:
    """One proposed change: new content for an artifact, or (``text`` None) its deletion."""

    name: str
    text: str | None
    kind: str = "prompt"


@dataclass
class ChangeRequest:
    """A request as readers see it."""

    number: int
    title: str
    description: str
    author: str
    author_line: str
    branch: str
    head: str
    status: str
    created: int
    updated: int
    closed_by: str | None = None
    reason: str | None = None
    merge_commit: str | None = None
    approvals: list[dict[str, Any]] = field(default_factory=list)
    required_approvals: int = 0
    comments: list[dict[str, Any]] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)  # made by its merge (set by merge())
    # Accounts that opened it or made one of its commits: their approvals do not count.
    contributors: list[str] = field(default_factory=list)

    @property
    def approved(self) -> bool:
        """Whether it has the approvals it needs."""
        return len(self.approvals) >= self.required_approvals

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        out = {k: getattr(self, k) for k in (
            "number", "title", "description", "author", "branch", "head", "status",
            "created", "updated", "closed_by", "reason", "merge_commit", "approvals",
            "required_approvals", "comments", "contributors")}
        out["approved"] = self.approved
        if self.versions:
            out["versions"] = self.versions
        return out


@dataclass
class ArtifactChange:
    """One artifact a request changes, with its diff against ``main``."""

    kind: str
    name: str
    path: str
    change: str  # added, modified, deleted
    diff: Diff
    main_moved: bool  # main has changed this artifact since the request's base
    # Both texts ("" where the artifact does not exist), for what is computed from them
    # beyond the diff (token counts and cost).
    texts: tuple[str, str] = ("", "")
    # How their ``{% include %}`` parts resolve: as the request's head has them, as its
    # rendered diff resolves them (None: no parts, or not a prompt).
    includes: Callable[[str], Any] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"kind": self.kind, "name": self.name, "path": self.path,
                "change": self.change, "main_moved": self.main_moved,
                "diff": self.diff.to_dict()}


@dataclass
class Overview:
    """A request with what it changes and, while open, what merging it would meet."""

    request: ChangeRequest
    changes: list[ArtifactChange]
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    label_moves: list[str] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The request's dict plus ``changes`` and the merge outlook (empty once closed)."""
        return {**self.request.to_dict(), "changes": [c.to_dict() for c in self.changes],
                "conflicts": self.conflicts, "label_moves": self.label_moves,
                "problems": self.problems}


class Reviews:
    """Change requests of one registry."""

    def __init__(self, registry: Registry, policy: Policy | None = None):
        self.registry = registry
        self.store = registry.store
        self.engine = registry.engine
        self.policy = policy or Policy()

    # ---- reading -------------------------------------------------------------------
    def get(self, number: int) -> ChangeRequest:
        """One request with its approvals (at its current head) and comments."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(T_REQ).where(T_REQ.c.id == number)).first()
            if row is None:
                raise NotFound(f"no change request #{number}")
        row = self._follow_bucket_move(row)
        with self.engine.connect() as conn:
            approvals = conn.execute(sa.select(T_APPROVAL).where(
                T_APPROVAL.c.request_id == number, T_APPROVAL.c.head == row.head
            ).order_by(T_APPROVAL.c.id)).all()
            comments = conn.execute(sa.select(T_COMMENT).where(
                T_COMMENT.c.request_id == number).order_by(T_COMMENT.c.id)).all()
        request = self._request(row)
        made = self.contributors(request)
        request.contributors = sorted(made)
        request.approvals = [{"user": a.user, "created": a.created} for a in approvals
                             if self.policy.counts_as_approval(a.user, made)]
        request.comments = [_comment(c, row.head) for c in comments]
        return request

    def _follow_bucket_move(self, row):
        """An open request whose branch was moved into buckets (:mod:`.model.fanout`) by a
        commit that changes no content keeps its approvals and comments on the new head."""
        if row.status != "open":
            return row
        tip = self.store.ref("refs/heads/" + row.branch)
        if tip is None or tip == row.head or not self._bucket_move(tip, row.head):
            return row
        with writing(self.engine) as conn:
            for table in (T_APPROVAL, T_COMMENT):
                conn.execute(table.update().where(table.c.request_id == row.id,
                                                  table.c.head == row.head).values(head=tip))
            conn.execute(T_REQ.update().where(T_REQ.c.id == row.id, T_REQ.c.head == row.head)
                         .values(head=tip))
            return conn.execute(sa.select(T_REQ).where(T_REQ.c.id == row.id)).first()

    def _bucket_move(self, sha: str, parent: str | None = None) -> bool:
        """Whether ``sha`` is the commit that moved a branch into buckets: promptrev's, on
        one parent, moving files unchanged and nothing else (so it adds no one's work)."""
        info = self.store.commit_info(sha)
        if len(info.parents) != 1 or (parent is not None and info.parents[0] != parent) or \
                info.message.partition("\n")[0] != MOVE_TITLE:
            return False
        return only_moves(self.store.diff(info.parents[0], sha))

    def contributors(self, request: ChangeRequest) -> dict[str, str]:
        """Account → what it did, for whoever opened the request or made one of its commits.

        A commit's maker is the account recorded in Git (its pusher, or the user whose
        edit the server committed); for a commit older than those records, its Git author.
        """
        out = {request.author: "opened"}
        commits = [sha for sha in self._commits(request) if not self._bucket_move(sha)]
        for sha, account in accounts_of(self.store, commits).items():
            who = account or self.store.commit_info(sha).author
            out.setdefault(who, f"made commit {sha[:10]} of")
        return out

    def _commits(self, request: ChangeRequest) -> list[str]:
        """The request's own commits: on its branch and not on ``main`` (before its merge,
        for a merged one)."""
        other = self.store.head()
        if request.merge_commit and self.store.has_commit(request.merge_commit):
            parents = self.store.commit_info(request.merge_commit).parents
            other = parents[0] if parents else other
        if not self.store.has_commit(request.head):
            return []
        return self.store.commits_only_in(request.head, other)

    def list(self, status: str | None = None, limit: int = 200) -> list[ChangeRequest]:
        """Requests, newest first (``status`` filters: open, merged, rejected, closed)."""
        if status is not None and status not in STATUSES:
            raise InvalidRequest(f"unknown status {status!r} (statuses: {', '.join(STATUSES)})")
        query = sa.select(T_REQ).order_by(T_REQ.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(T_REQ.c.status == status)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            approvers: dict[int, list[str]] = {}
            for number, approver in conn.execute(
                    sa.select(T_APPROVAL.c.request_id, T_APPROVAL.c.user).select_from(
                        T_APPROVAL.join(T_REQ, T_REQ.c.id == T_APPROVAL.c.request_id)).where(
                        T_APPROVAL.c.head == T_REQ.c.head, T_APPROVAL.c.user != T_REQ.c.author,
                        T_REQ.c.id.in_([r.id for r in rows]))):
                approvers.setdefault(number, []).append(approver)
        out = []
        for row in rows:
            request = self._request(row)
            given = approvers.get(row.id, [])
            made = self.contributors(request) if given else {}
            request.approvals = [{}] * sum(
                self.policy.counts_as_approval(a, made) for a in given)
            out.append(request)
        return out

    def base(self, request: ChangeRequest) -> str:
        """The commit of ``main`` the request's edits start from (merge base)."""
        main = self.store.head()
        return self.store.merge_base(main, request.head) or main

    def changes(self, number: int, variables: dict[str, Any] | None = None
                ) -> list[ArtifactChange]:
        """Each artifact the request changes, diffed against the version it started from."""
        request = self.get(number)
        base = self.base(request)
        main = self.store.head()
        out = []
        changed = by_artifact(self.store.diff(base, request.head), present=lambda path: (
            self.store.blob_at(request.head, path) is not None))[0]
        for change in changed:
            kind, name = change.kind, change.name
            old = self._text(change.old)
            new = self._text(change.new)
            left, right = f"{name}@main", f"{name}@#{number}"
            includes = None
            if kind.name == "prompt":
                includes = self.registry.parts_at(request.head)
                diff = prompt_diff(old, new, left, right, variables, includes)
                diff.impact = self.registry.content_impact(name, change.old, change.new)
            elif kind.name == "dataset":
                diff = dataset_diff(old, new, left, right)
            else:
                diff = Diff(left, right, text_diff(old, new, left, right))
            what = "added" if change.old is None else "deleted" if change.new is None \
                else "modified"
            moved = self.store.blob_at(main, kind.path(name)) != change.old
            out.append(ArtifactChange(kind.name, name, kind.filename(name), what, diff, moved,
                                      (old, new), includes))
        return out

    def label_moves(self, number: int) -> list[str]:
        """The label moves (and traffic splits) the request makes, described."""
        request = self.get(number)
        incoming = check_changes(self.registry, self.base(request), request.head)
        return [m.describe() for m in incoming.label_moves]

    def conflicts(self, number: int) -> list[dict[str, Any]]:
        """What a merge into ``main`` now would conflict on (empty: it merges cleanly)."""
        request = self.get(number)
        _tree, conflicts = self.store.merge(self.store.head(), request.head)
        return [self._conflict_dict(c) for c in conflicts]

    def problems(self, number: int) -> list[dict[str, str]]:
        """What is invalid in the request's edits (as a push would be checked)."""
        request = self.get(number)
        self.registry.sync()
        return check_changes(self.registry, self.base(request), request.head).problems

    def overview(self, number: int) -> Overview:
        """Everything a reviewer reads about a request, each part computed once.

        Conflicts, label moves and problems concern what merging would do, so they are
        left empty once the request is closed.
        """
        request = self.get(number)
        out = Overview(request, self.changes(number))
        if request.status == "open":
            self.registry.sync()
            checked = check_changes(self.registry, self.base(request), request.head)
            out.conflicts = self.conflicts(number)
            out.label_moves = [m.describe() for m in checked.label_moves]
            out.problems = checked.problems
        return out

    # ---- proposing -----------------------------------------------------------------
    def open(self, user: User, title: str, edits: list[Edit], *, description: str = ""
             ) -> ChangeRequest:
        """Propose ``edits`` on a new branch off ``main``; nothing on ``main`` changes."""
        self.policy.require(user, "write", "opening a change request")
        title, description = _title(title), _text_field(description, "description")
        self.registry.sync()
        main = self.store.head()
        commit = self._commit_edits(main, edits, title, description, user)
        now = int(time.time())
        with writing(self.engine) as conn:
            number = conn.execute(T_REQ.insert().values(
                title=title, description=description, author=user.name,
                author_line=user.author, branch="", head=commit, status="open",
                created=now, updated=now)).inserted_primary_key[0]
        branch = f"{PREFIX}{number}"
        try:
            self.store.move_ref("refs/heads/" + branch, None, commit, "promptrev: review")
        except RefMoved:  # someone pushed a branch of that name with git
            branch = f"{PREFIX}{number}-{secrets.token_hex(3)}"
            self.store.move_ref("refs/heads/" + branch, None, commit, "promptrev: review")
        with writing(self.engine) as conn:
            conn.execute(T_REQ.update().where(T_REQ.c.id == number).values(branch=branch))
            queued = _event(conn, "change_request.opened", number)
        if queued:
            outbox.notify()
        return self.get(number)

    def update(self, number: int, user: User, edits: list[Edit], message: str
               ) -> ChangeRequest:
        """Add a commit of ``edits`` to an open request (answering review).

        When ``main`` has moved on, the commit also merges ``main`` into the request, and
        the edits must resolve every file where the two conflict (their full new text).
        Approvals given before count no more.
        """
        self.policy.require(user, "write", "changing a change request")
        request = self._open_request(number)
        if user.name != request.author and not self.policy.may_write_main(user):
            raise Forbidden(f"only {request.author} (who opened #{number}) or a user who may "
                            "merge can change it")
        message = _title(message)
        main = self.registry.sync()
        if self.store.is_ancestor(main, request.head):
            commit = self._commit_edits(request.head, edits, message, "", user)
        else:
            _tree, conflicts = self.store.merge(request.head, main)
            resolved = {path for e in edits if e.kind in KINDS for path in KINDS[e.kind].paths(
                e.name)}  # where the branch, if older than buckets, may still have it
            unresolved = list(dict.fromkeys(shown(c.path) for c in conflicts
                                            if c.path not in resolved))
            if unresolved:
                raise Conflict(f"main changed {', '.join(unresolved)} since change request "
                               f"#{number} started: include the resolved text of "
                               f"{'it' if len(unresolved) == 1 else 'them'} in this update",
                               details={"conflicts": [self._conflict_dict(c) for c in conflicts
                                                      if shown(c.path) in unresolved]})
            tree, _ = self.store.merge(request.head, main, favor_ours=True)
            commit = self._commit_edits(request.head, edits, message, "", user, tree=tree,
                                        parents=[request.head, main])
        try:
            self.store.move_ref("refs/heads/" + request.branch, request.head, commit,
                                "promptrev: review update")
        except RefMoved:
            raise Conflict(f"change request #{number} moved while you were editing it: "
                           "reload it and try again") from None
        self._set(number, head=commit)
        return self.get(number)

    def check_branch_rewrite(self, branch: str, old: str, new: str, user: User) -> None:
        """Refuse rewriting someone else's request (a push that is not a fast-forward)
        unless ``user`` may close it: replacing its commits is as final as rejecting it.
        Adding commits on top stays open to every editor (their approvals then don't count).
        """
        if self.store.is_ancestor(old, new):
            return
        row = self._open_on(branch)
        if row is not None:
            self.policy.require_close_request(
                user, row.id, row.author, f"rewriting {branch} (a forced push), which replaces")

    def check_branch_deletion(self, branch: str, user: User) -> None:
        """Refuse deleting ``branch`` (``git push --delete``) when that would close a
        request ``user`` may not close: deleting it closes it, as rejecting would."""
        row = self._open_on(branch)
        if row is not None:
            self.policy.require_close_request(
                user, row.id, row.author, f"deleting {branch}, which closes")

    def _open_on(self, branch: str):
        """The open request of ``branch`` (its id and author), or None."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(T_REQ.c.id, T_REQ.c.author).where(
                T_REQ.c.branch == branch, T_REQ.c.status == "open")).first()

    def on_push(self, branch: str, old: str, new: str, user: User) -> ChangeRequest | None:
        """Keep requests in step with a ``git push`` to ``review/...``.

        A new branch opens a request (titled by its last commit's message); new commits
        update the open request of the branch; deleting the branch closes it.
        """
        if not branch.startswith(PREFIX):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(T_REQ).where(
                T_REQ.c.branch == branch, T_REQ.c.status == "open")).first()
        if new == ZERO:
            if row is not None:
                self._close(row.id, "closed", user.name, "its branch was deleted")
            return None if row is None else self.get(row.id)
        if row is not None:
            self._set(row.id, head=new)
            return self.get(row.id)
        info = self.store.commit_info(new)
        title, _, rest = info.message.partition("\n")
        now = int(time.time())
        with writing(self.engine) as conn:
            number = conn.execute(T_REQ.insert().values(
                title=title.strip()[:MAX_TITLE] or branch, description=rest.strip()[:MAX_TEXT],
                author=user.name, author_line=f"{info.author} <{info.email}>", branch=branch,
                head=new, status="open", created=now, updated=now)).inserted_primary_key[0]
            queued = _event(conn, "change_request.opened", number)
        if queued:
            outbox.notify()
        return self.get(number)

    # ---- reviewing -----------------------------------------------------------------
    def comment(self, number: int, user: User, body: str, *, path: str | None = None,
                line: int | None = None) -> dict[str, Any]:
        """Comment on a request, or on ``line`` of ``path`` in its changed files."""
        if user.id == 0:
            raise Forbidden("anonymous users cannot comment: log in")
        self.policy.require_comment(user, number)
        body = _text_field(body, "comment")
        if not body:
            raise ValidationFailed("a comment needs text")
        request = self.get(number)
        if path is not None:
            changed = {shown(c.path)
                       for c in self.store.diff(self.base(request), request.head)}
            if path not in changed:
                raise ValidationFailed(f"{path} is not changed by change request #{number} "
                                       f"(changed: {', '.join(sorted(changed)) or 'nothing'})")
            if line is not None and (not isinstance(line, int) or line < 1):
                raise ValidationFailed("line must be a positive line number")
        elif line is not None:
            raise ValidationFailed("a line comment needs the file's path")
        now = int(time.time())
        with writing(self.engine) as conn:
            cid = conn.execute(T_COMMENT.insert().values(
                request_id=number, author=user.name, body=body, path=path, line=line,
                head=request.head, created=now)).inserted_primary_key[0]
            conn.execute(T_REQ.update().where(T_REQ.c.id == number).values(updated=now))
        return {"id": cid, "author": user.name, "body": body, "path": path, "line": line,
                "head": request.head, "created": now, "outdated": False}

    def approve(self, number: int, user: User) -> ChangeRequest:
        """Approve the request as its branch stands now."""
        self.policy.require(user, "write", "approving a change request")
        request = self._open_request(number)
        self.policy.require_approve(user, number, self.contributors(request))
        with writing(self.engine) as conn:
            exists = conn.execute(sa.select(T_APPROVAL.c.id).where(
                T_APPROVAL.c.request_id == number, T_APPROVAL.c.user == user.name,
                T_APPROVAL.c.head == request.head)).first()
            if exists is None:
                conn.execute(T_APPROVAL.insert().values(
                    request_id=number, user=user.name, head=request.head,
                    created=int(time.time())))
        return self.get(number)

    def reject(self, number: int, user: User, reason: str = "") -> ChangeRequest:
        """Close the request without merging it (its branch stays, for the record)."""
        self.policy.require(user, "write", "rejecting a change request")
        request = self._open_request(number)
        self.policy.require_close_request(user, number, request.author)
        self._close(number, "rejected", user.name, _text_field(reason, "reason") or None)
        return self.get(number)

    def merge(self, number: int, user: User, *, retries: int = 5) -> ChangeRequest:
        """Merge the request into ``main`` (three-way when ``main`` moved on)."""
        self.policy.require_write_main(user, f"merging change request #{number}")
        for _ in range(retries):
            with self.registry.writing():
                request = self._open_request(number)
                head = self.store.ref("refs/heads/" + request.branch)
                if head is None:
                    raise NotFound(f"the branch {request.branch} of change request #{number} "
                                   "is gone")
                if head != request.head:  # pushed to since it was read: review again
                    self._set(number, head=head)
                    request = self.get(number)
                if not request.approved:
                    raise NotApproved(
                        f"change request #{number} has {len(request.approvals)} of the "
                        f"{request.required_approvals} approval(s) it needs (approvals count "
                        "for its latest commit, and only from reviewers who neither opened it nor "
                        "made any of its commits)",
                        details={"approvals": len(request.approvals),
                                 "required": request.required_approvals})
                main = self.registry.sync()
                if self.store.is_ancestor(head, main):
                    self._close(number, "merged", user.name, "already in main")
                    return self.get(number)
                tree, conflicts = self.store.merge(main, head)
                if conflicts:
                    found = [self._conflict_dict(c) for c in conflicts]
                    paths = ", ".join(dict.fromkeys(c["path"] for c in found))
                    raise Conflict(
                        f"change request #{number} conflicts with main in {paths}: main "
                        "changed the same lines "
                        "since the request started. Update the request on top of main and "
                        "merge again", details={"conflicts": found})
                message = _merge_message(request, sorted(self.contributors(request)))
                commit = self.store.commit_tree(
                    tree, [main, head], with_account(message, user.name),
                    Signature.parse(request.author_line), Signature.parse(user.author))
                incoming = check_history(self.registry, main, commit)
                incoming.raise_for_problems(f"merging change request #{number}")
                cleared = self.policy.require_incoming(user, incoming, "merging",
                                                       registry=self.registry, base=main)
                notes = "\n".join(c.note for c in cleared if c.note)
                if notes:  # the evidence goes into the merge commit (same tree and parents)
                    commit = self.store.commit_tree(
                        tree, [main, head], with_account(f"{message}\n\n{notes}", user.name),
                        Signature.parse(request.author_line), Signature.parse(user.author))
                try:
                    created = self.registry.advance_main(main, commit, f"merge #{number}")
                except RefMoved:  # a plain git push got there first (it takes no lock)
                    continue
                self._close(number, "merged", user.name, None, merge_commit=commit,
                            only_open=False)  # main has it: that is the truth now
            merged = self.get(number)
            merged.versions = [f"{r['name']}@{r['number']}" for r in created.get(commit, [])]
            return merged
        raise Conflict(f"main kept moving while merging change request #{number}; try again")

    # ---- internals -----------------------------------------------------------------
    def _commit_edits(self, parent: str, edits: list[Edit], title: str, description: str,
                      user: User, *, tree: str | None = None,
                      parents: list[str] | None = None) -> str:
        if not edits:
            raise ValidationFailed("a change request needs at least one edit")
        if len(edits) > MAX_EDITS:
            raise ValidationFailed(f"{len(edits)} edits in one request; the limit is "
                                   f"{MAX_EDITS}")
        changes: dict[str, str | None] = {}
        for edit in edits:
            if edit.kind not in KINDS or KINDS[edit.kind].sidecars:
                raise ValidationFailed(f"change requests edit prompts and datasets, not "
                                       f"{edit.kind!r} (push adapters with 'promptrev adapter "
                                       "push')")
            validate_name(edit.name)
            path = KINDS[edit.kind].path(edit.name)
            if path in changes:
                raise ValidationFailed(f"{edit.kind} '{edit.name}' is edited twice")
            if edit.text is None:
                if tree is None and self.store.blob_at(parent, path) is None:
                    raise NotFound(f"{edit.kind} '{edit.name}' does not exist, so it cannot "
                                   "be deleted")
                changes[path] = None
                continue
            text, _warnings = check_content(edit.kind, edit.name, edit.text,
                                            self.registry.max_bytes)
            changes[path] = self.store.write_blob(text.encode("utf-8"))
        message = with_account(title + (f"\n\n{description}" if description else ""),
                               user.name)
        commit = self.store.commit(parent, changes, message, Signature.parse(user.author),
                                   tree=tree, parents=parents)
        if commit is None:
            raise ValidationFailed("the edits change nothing: every file is as it is already")
        return commit

    def _open_request(self, number: int) -> ChangeRequest:
        request = self.get(number)
        if request.status != "open":
            raise Conflict(f"change request #{number} is {request.status}"
                           + (f" (by {request.closed_by})" if request.closed_by else ""),
                           details={"status": request.status})
        return request

    def _set(self, number: int, **values: Any) -> None:
        with writing(self.engine) as conn:
            conn.execute(T_REQ.update().where(T_REQ.c.id == number).values(
                updated=int(time.time()), **values))

    def _close(self, number: int, status: str, by: str, reason: str | None, *,
               merge_commit: str | None = None, only_open: bool = True) -> None:
        where = [T_REQ.c.id == number] + ([T_REQ.c.status == "open"] if only_open else [])
        queued = 0
        with writing(self.engine) as conn:
            done = conn.execute(T_REQ.update().where(*where).values(
                status=status, closed_by=by, reason=reason, merge_commit=merge_commit,
                updated=int(time.time()))).rowcount
            if done == 1 and status in ("merged", "rejected"):
                queued = _event(conn, f"change_request.{status}", number)
        if queued:
            outbox.notify()
        if done != 1:
            raise Conflict(f"change request #{number} is no longer open")

    def _request(self, row) -> ChangeRequest:
        return ChangeRequest(row.id, row.title, row.description, row.author, row.author_line,
                             row.branch, row.head, row.status, row.created, row.updated,
                             row.closed_by, row.reason, row.merge_commit,
                             required_approvals=self.policy.required_approvals)

    def _text(self, blob: str | None) -> str:
        return "" if blob is None else self.store.blob(blob).decode("utf-8", "replace")

    def _conflict_dict(self, conflict) -> dict[str, Any]:
        return {"path": shown(conflict.path), "base": self._text(conflict.base),
                "main": self._text(conflict.ours), "request": self._text(conflict.theirs)}


def _event(conn, event: str, number: int) -> int:
    """Record an event of a request in the outbox, in the transaction that records the
    change; return what its subscribers queued (:func:`outbox.record`)."""
    row = conn.execute(sa.select(T_REQ).where(T_REQ.c.id == number)).first()
    return outbox.record(conn, [(event, {
        "number": row.id, "title": row.title, "author": row.author, "branch": row.branch,
        "head": row.head, "status": row.status, "closed_by": row.closed_by,
        "reason": row.reason, "merge_commit": row.merge_commit})])


def _comment(row, head: str) -> dict[str, Any]:
    return {"id": row.id, "author": row.author, "body": row.body, "path": row.path,
            "line": row.line, "head": row.head, "created": row.created,
            "outdated": row.path is not None and row.head != head}


def _merge_message(request: ChangeRequest, contributors: list[str]) -> str:
    """The merge's message: who approved and, by account, everyone who made its commits.

    The merge's Git author is the request's opener; ``Contributed-by`` keeps the accounts
    that pushed or saved its commits visible in the history, whatever author they typed.
    """
    approvers = ", ".join(a["user"] for a in request.approvals)
    text = f"Merge change request #{request.number}: {request.title}"
    trailers = []
    if contributors:
        trailers.append(f"Contributed-by: {', '.join(contributors)}")
    if approvers:
        trailers.append(f"Approved-by: {approvers}")
    return text + ("\n\n" + "\n".join(trailers) if trailers else "")


def _title(title: Any) -> str:
    if not isinstance(title, str) or not title.strip():
        raise ValidationFailed("a change request needs a title")
    title = title.strip()
    if len(title) > MAX_TITLE or "\n" in title:
        raise ValidationFailed(f"a title is one line of at most {MAX_TITLE} characters")
    return title


def _text_field(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationFailed(f"{what} must be text")
    if len(value) > MAX_TEXT:
        raise ValidationFailed(f"{what} is {len(value):,} characters; the limit is "
                               f"{MAX_TEXT:,}")
    return value.strip()


def valid_branch(name: str) -> str:
    """Return ``name`` if it is a usable review branch (``review/<something>``)."""
    if not name.startswith(PREFIX) or not valid_ref_name("refs/heads/" + name) or len(
            name) > 250:
        raise ValidationFailed(f"{name!r} is not a review branch name (review/<name>)")
    return name
