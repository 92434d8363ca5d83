"""The one authorization point: who may do what to a registry.

One object, built at the edge from settings, asked with the acting account by every path
that writes: the API, the pages, the CLI, change-request merges, ``git push`` and pulls
from a remote. Editors may always propose, comment on and approve changes (an approval
counts only from an account that made no commit of the request); writing to ``main``
directly (saving, merging, pushing to ``main``) takes ``merge_role``; closing someone
else's request (rejecting it, or deleting its branch) takes ``merge_role`` too; moving a
protected label (or splitting its traffic) takes the admin role. Each rule is written
here once.

A label may also carry a release policy (:mod:`promptrev.model.release`): then every move
of it, whatever its route, needs evidence (:mod:`promptrev.evaluation.gate`), a rollback
to a version that held it before, or an admin's override with a written reason. The rule
that judges a move is the one ``main`` held before it, and changing a release policy takes
the admin role, so one commit can never both weaken a gate and pass it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .accounts import ROLES, User
from .config import Settings
from .errors import Forbidden, InvalidName, InvalidRequest
from .incoming import Incoming

if TYPE_CHECKING:
    from .evaluation.gate import Clearance
    from .registry import Registry


@dataclass(frozen=True)
class Policy:
    """Review rules of one registry."""

    protected_labels: frozenset[str] = frozenset({"production"})
    merge_role: str = "editor"
    required_approvals: int = 1

    def __post_init__(self) -> None:
        if self.merge_role not in ROLES or self.merge_role == "viewer":
            raise InvalidName(f"merge role must be editor or admin, not {self.merge_role!r}")
        if not isinstance(self.required_approvals, int) or self.required_approvals < 0:
            raise InvalidName("required approvals must be a whole number ≥ 0")
        object.__setattr__(self, "protected_labels", frozenset(self.protected_labels))

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        """The review rules the operator's settings describe."""
        return cls(frozenset(settings.protected_labels), settings.merge_role,
                   settings.required_approvals)

    def require(self, user: User, action: str, what: str | None = None) -> None:
        """Raise :class:`Forbidden` unless ``user``'s role allows ``action`` (see ROLES)."""
        user.require(action, what)

    def require_label(self, user: User, label: str, what: str = "moving") -> None:
        """Raise :class:`Forbidden` unless ``user`` may move (or split) ``label``."""
        self.require_labels(user, [label], what)

    def may_write_main(self, user: User) -> bool:
        """Whether ``user`` may change ``main`` directly (save, merge, push)."""
        return ROLES.index(user.role) >= ROLES.index(self.merge_role)

    def require_write_main(self, user: User, what: str = "changing main") -> None:
        """Raise :class:`Forbidden` unless ``user`` may change ``main`` directly."""
        user.require("write", what)
        if not self.may_write_main(user):
            raise Forbidden(f"user '{user.name}' is a {user.role}; {what} needs the "
                            f"{self.merge_role} role on this server: open a change request "
                            "instead", details={"role": user.role, "needs": self.merge_role})

    def require_labels(self, user: User, labels: Iterable[str], what: str = "moving") -> None:
        """Raise :class:`Forbidden` if any of ``labels`` is protected and ``user`` no admin."""
        user.require("write", f"{what} labels")
        for label in sorted(set(labels)):
            if label in self.protected_labels:
                user.require("move_protected_label", f"{what} protected label '{label}'")

    # ---- change requests ----------------------------------------------------------
    def require_comment(self, user: User, number: int) -> None:
        """Commenting on a change request is for editors (viewers read)."""
        user.require("write", f"commenting on change request #{number}")

    def may_close_request(self, user: User, author: str) -> bool:
        """Whether ``user`` may close (reject) a request opened by ``author``."""
        return user.name == author or self.may_write_main(user)

    def require_close_request(self, user: User, number: int, author: str,
                              what: str = "rejecting") -> None:
        """Raise :class:`Forbidden` unless ``user`` may close request ``number``.

        One rule for every way of closing it: rejecting it (API, pages, CLI) or deleting
        its branch with ``git push --delete``.
        """
        user.require("write", f"{what} change request #{number}")
        if not self.may_close_request(user, author):
            raise Forbidden(f"{what} change request #{number} needs the {self.merge_role} "
                            f"role (or being its author, {author})",
                            details={"role": user.role, "needs": self.merge_role})

    def counts_as_approval(self, approver: str, contributors: Iterable[str]) -> bool:
        """An approval counts only from an account that made no commit of the request
        (and did not open it)."""
        return approver not in set(contributors)

    def require_approve(self, user: User, number: int, contributors: dict[str, str]) -> None:
        """Raise :class:`Forbidden` if ``user`` may not approve request ``number``.

        ``contributors`` maps each account that opened the request or made one of its
        commits (pushed it, or saved it through the server) to what it did.
        """
        user.require("write", f"approving change request #{number}")
        if not self.counts_as_approval(user.name, contributors):
            raise Forbidden(f"{user.name} {contributors[user.name]} change request #{number} "
                            "and cannot approve it: approvals count only from reviewers who "
                            "made no commit in it", details={"contributed": True})
    def require_outcomes(self, user: User) -> None:
        """Raise :class:`Forbidden` unless ``user`` may post A/B outcomes.

        Applications post outcomes with a token granted the ``outcomes`` scope by the
        operator; editors and admins may too. A plain viewer (a person) may not: outcomes
        steer which version wins.
        """
        if "outcomes" in user.scopes or user.may("write"):
            return
        raise Forbidden(f"user '{user.name}' is a {user.role} without the 'outcomes' scope; "
                        "posting outcomes needs a token with the 'outcomes' scope ('promptrev "
                        "token create USER --scope outcomes') or the editor role",
                        details={"role": user.role, "needs": "scope outcomes or editor"})

    def require_move(self, user: User, registry: Registry, name: str, label: str,
                     target: Any, *, kind: str | None = None, what: str = "moving",
                     split: bool = False, override: str | None = None) -> Clearance:
        """Raise unless ``user`` may move ``label`` of ``name`` to ``target`` now.

        ``target``: a version number, a split's ``{version: weight}`` (``split``), or None
        (removing the label). Checks the role (:meth:`require_label`), then the label's
        release policy as ``main`` holds it now; returns how the move is cleared, whose
        ``note`` belongs in the commit message. ``override``: an admin's written reason to
        move without the evidence.
        """
        from .evaluation import gate

        self.require_label(user, label, what)
        head = registry.sync()
        kind = registry.kind_of(name, kind)
        holder = registry.labels(name, kind).get(label)
        self._require_override(user, label, override)
        return gate.clear(registry, kind, name, label, holder, target, at=head, split=split,
                          override=override)

    def require_incoming(self, user: User, incoming: Incoming, what: str, *,
                         registry: Registry | None = None, base: str | None = None
                         ) -> list[Clearance]:
        """Check the label moves and release-policy changes that arriving history makes.

        With ``registry``, every move is also judged by the release policies of ``base``
        (``main`` before the history arrives), never by a policy the history brings.
        """
        self.require_labels(user, (m.label for m in incoming.label_moves), what)
        for change in incoming.policy_changes:
            for label in change.labels:
                user.require("move_protected_label", f"{what} a change to the release "
                             f"policy of label '{label}' ({change.path})")
        if registry is None:
            return []
        from .evaluation import gate

        return [gate.clear_arriving(registry, m, base) for m in incoming.label_moves]

    def may_override(self, user: User) -> bool:
        """Whether ``user`` may move a gated label without evidence (with a reason)."""
        return user.may("move_protected_label")

    def _require_override(self, user: User, label: str, override: str | None) -> None:
        if override is None:
            return
        if not override.strip():
            raise InvalidRequest("an override needs a written reason")
        user.require("move_protected_label", f"overriding the release policy of label "
                     f"'{label}'")
