"""Change requests in the JSON API: ``/api/v1/reviews``.

Open a request from edits, read it with its diff against ``main``, comment (on the
request or on a line), approve, update, merge or reject. The rules (who may merge, how
many approvals, protected labels) are the server's :class:`promptrev.policy.Policy`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g

from promptrev.errors import InvalidRequest
from promptrev.reviews import STATUSES, Edit, Reviews

from .auth import api_user, state
from .params import arg, field, int_arg, json_body, json_response, registry, valid_kind

bp = Blueprint("review_api", __name__, url_prefix="/api/v1/reviews")


@bp.before_request
def _authenticate() -> None:
    g.user = api_user()


def reviews() -> Reviews:
    """The change requests of this request's registry, under the server's policy."""
    return Reviews(registry(), state().policy)


def parse_edits(data: dict[str, Any]) -> list[Edit]:
    """``edits: [{name, text, kind?}]``; ``text: null`` proposes deleting the artifact."""
    items = data.get("edits")
    if not isinstance(items, list) or not items:
        raise InvalidRequest("field 'edits' must be a non-empty list of {name, text, kind}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidRequest(f"edits[{i}] must be an object with 'name' and 'text'")
        name = field(item, "name", str)
        if "text" not in item:
            raise InvalidRequest(f"edits[{i}]: field 'text' is required (null deletes)")
        text = item["text"]
        if text is not None and not isinstance(text, str):
            raise InvalidRequest(f"edits[{i}]: 'text' must be a string or null")
        kind = valid_kind(field(item, "kind", str, None)) or "prompt"
        out.append(Edit(name, text, kind))
    return out


@bp.get("")
def list_reviews() -> Response:
    """Change requests, newest first."""
    status = arg("status", None)
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"unknown status {status!r} (statuses: {', '.join(STATUSES)})")
    limit = int_arg("limit", 200, 1, 1000)
    return json_response({"reviews": [r.to_dict() for r in reviews().list(status, limit)]})


@bp.post("")
def open_review() -> Response:
    """Open a change request from edits."""
    data = json_body()
    request = reviews().open(g.user, field(data, "title", str), parse_edits(data),
                             description=field(data, "description", str, ""))
    return json_response(request.to_dict(), 201, {"Location": f"/api/v1/reviews/{request.number}"})


@bp.get("/<int(max=999999999):number>")
def get_review(number: int) -> Response:
    """One request with its changes diffed against main (prompts: with tokens and input
    cost per 1,000 calls), conflicts and problems."""
    seen = reviews().overview(number)
    out = seen.to_dict()
    for change, shown in zip(seen.changes, out["changes"], strict=True):
        tokens = state().change_tokens(state().registry, change)
        if tokens is not None:
            shown["tokens"] = tokens
    return json_response(out)


@bp.post("/<int(max=999999999):number>/edits")
def update_review(number: int) -> Response:
    """Add a commit of edits to an open request (approvals reset)."""
    data = json_body()
    request = reviews().update(number, g.user, parse_edits(data),
                               field(data, "message", str, None) or "update")
    return json_response(request.to_dict())


@bp.post("/<int(max=999999999):number>/comments")
def comment(number: int) -> Response:
    """Comment on the request, or on a line of one of its files."""
    data = json_body()
    line = field(data, "line", int, None)
    made = reviews().comment(number, g.user, field(data, "body", str),
                             path=field(data, "path", str, None), line=line)
    return json_response(made, 201)


@bp.post("/<int(max=999999999):number>/approve")
def approve(number: int) -> Response:
    """Approve the request at its current commit."""
    return json_response(reviews().approve(number, g.user).to_dict())


@bp.post("/<int(max=999999999):number>/merge")
def merge(number: int) -> Response:
    """Merge the request into main (three-way when main moved on)."""
    return json_response(reviews().merge(number, g.user).to_dict())


@bp.post("/<int(max=999999999):number>/reject")
def reject(number: int) -> Response:
    """Close the request without merging."""
    data = json_body()
    return json_response(reviews().reject(number, g.user, field(data, "reason", str, "")).to_dict())
