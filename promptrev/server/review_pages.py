"""Change-request pages: the list, and a request with its diff, comments and actions.

Reading works without JavaScript; commenting (on the request or on a line of a file),
approving, merging and rejecting are POST forms with a CSRF token. A refused action (not
approved yet, a conflict, a role that may not merge) comes back as a message on the
request's page, which shows the conflicting text side by side.
"""

from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from promptrev.accounts import User
from promptrev.errors import InvalidRequest, NotFound, PromptrevError
from promptrev.reviews import STATUSES, Reviews

from .auth import state
from .web import reader, writer

bp = Blueprint("reviews", __name__, url_prefix="/reviews")


def _reviews() -> Reviews:
    return Reviews(state().registry, state().policy)


@bp.get("/")
@reader
def requests(user: User) -> str:
    """Change requests, open ones first by default."""
    status = request.args.get("status", "open")
    if status not in (*STATUSES, "all"):
        status = "open"
    rows = _reviews().list(None if status == "all" else status)
    return render_template("review_list.html", user=user, rows=rows, status=status,
                           statuses=STATUSES)


@bp.get("/<int(max=999999999):number>")
@reader
def review(user: User, number: int) -> str:
    """One request: what it changes against main, conflicts, comments, actions."""
    seen = _reviews().overview(number)
    req = seen.request
    may_merge = state().policy.may_write_main(user)
    return render_template(
        "review.html", user=user, req=req, changes=seen.changes, conflicts=seen.conflicts,
        tokens=[state().change_tokens(state().registry, ch) for ch in seen.changes],
        label_moves=seen.label_moves, problems=seen.problems,
        general=[c for c in req.comments if c["path"] is None],
        file_comments=[_file_comments(ch, req.comments) for ch in seen.changes],
        policy=state().policy, may_merge=may_merge,
        merge_blockers=_merge_blockers(seen, may_merge))


def _file_comments(change, comments: list[dict]) -> tuple[dict[int, list], list[dict]]:
    """One file's comments: by the line they sit under in its diff, and the rest (on the
    whole file, or on a line the diff no longer shows) to show after it."""
    shown = {r.right_no for r in change.diff.text.rows if r.right_no}
    inline: dict[int, list] = {}
    rest = []
    for c in comments:
        if c["path"] != change.path:
            continue
        if c["line"] in shown:
            inline.setdefault(c["line"], []).append(c)
        else:
            rest.append(c)
    return inline, rest


def _merge_blockers(seen, may_merge: bool) -> list[str]:
    """Why "Merge into main" cannot be pressed yet, said next to it (empty: it can)."""
    req, out = seen.request, []
    if not may_merge:
        out.append(f"merging needs the {state().policy.merge_role} role")
    missing = req.required_approvals - len(req.approvals)
    if missing > 0:
        out.append(f"needs {missing} more approval{'' if missing == 1 else 's'}")
    if seen.conflicts:
        out.append("conflicts with main")
    if seen.problems:
        out.append(f"{len(seen.problems)} problem{'' if len(seen.problems) == 1 else 's'} "
                   "to fix")
    return out


@bp.post("/<int(max=999999999):number>/<action>")
@writer
def act(user: User, number: int, action: str) -> Response:
    """Comment, approve, merge or reject; a refusal is shown on the request's page."""
    rv = _reviews()
    try:
        if action == "comment":
            line = request.form.get("line", "").strip()
            if line and (not (line.isascii() and line.isdigit()) or len(line) > 7):
                raise InvalidRequest(f"line must be a line number, not {line[:20]!r}")
            rv.comment(number, user, request.form.get("body", ""),
                       path=request.form.get("path") or None, line=int(line) if line else None)
            flash("comment added")
        elif action == "approve":
            rv.approve(number, user)
            flash(f"approved #{number}")
        elif action == "merge":
            merged = rv.merge(number, user)
            flash(f"merged #{number} into main"
                  + (f": {', '.join(merged.versions)}" if merged.versions else ""))
        elif action == "reject":
            rv.reject(number, user, request.form.get("reason", ""))
            flash(f"rejected #{number}")
        else:
            raise InvalidRequest(f"unknown action {action!r}")
    except PromptrevError as exc:
        if isinstance(exc, NotFound):
            raise
        flash(f"{action} refused: {exc.message}")
    return redirect(url_for("reviews.review", number=number))
