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

from .api import _arg, _body, _field, _int_arg, _json, _reg, _valid_kind
from .auth import api_user, state

bp = Blueprint("review_api", __name__, url_prefix="/api/v1/reviews")


@bp.before_request
def _authenticate() -> None:
    g.user = api_user()


def reviews() -> Reviews:
    """The change requests of this request's registry, under the server's policy."""
    return Reviews(_reg(), state().policy)


def parse_edits(data: dict[str, Any]) -> list[Edit]:
    """``edits: [{name, text, kind?}]``; ``text: null`` proposes deleting the artifact."""
    items = data.get("edits")
    if not isinstance(items, list) or not items:
        raise InvalidRequest("field 'edits' must be a non-empty list of {name, text, kind}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidRequest(f"edits[{i}] must be an object with 'name' and 'text'")
        name = _field(item, "name", str)
        if "text" not in item:
            raise InvalidRequest(f"edits[{i}]: field 'text' is required (null deletes)")
        text = item["text"]
        if text is not None and not isinstance(text, str):
            raise InvalidRequest(f"edits[{i}]: 'text' must be a string or null")
        kind = _valid_kind(_field(item, "kind", str, None)) or "prompt"
        out.append(Edit(name, text, kind))
    return out


@bp.get("")
def list_reviews() -> Response:
    """Change requests, newest first."""
    status = _arg("status", None)
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"unknown status {status!r} (statuses: {', '.join(STATUSES)})")
    limit = _int_arg("limit", 200, 1, 1000)
    return _json({"reviews": [r.to_dict() for r in reviews().list(status, limit)]})


@bp.post("")
def open_review() -> Response:
    """Open a change request from edits."""
    data = _body()
    request = reviews().open(g.user, _field(data, "title", str), parse_edits(data),
                             description=_field(data, "description", str, ""))
    return _json(request.to_dict(), 201, {"Location": f"/api/v1/reviews/{request.number}"})


@bp.get("/<int(max=999999999):number>")
def get_review(number: int) -> Response:
    """One request with its changes diffed against main, conflicts and problems."""
    return _json(reviews().overview(number).to_dict())


@bp.post("/<int(max=999999999):number>/edits")
def update_review(number: int) -> Response:
    """Add a commit of edits to an open request (approvals reset)."""
    data = _body()
    request = reviews().update(number, g.user, parse_edits(data),
                               _field(data, "message", str, None) or "update")
    return _json(request.to_dict())


@bp.post("/<int(max=999999999):number>/comments")
def comment(number: int) -> Response:
    """Comment on the request, or on a line of one of its files."""
    data = _body()
    line = _field(data, "line", int, None)
    made = reviews().comment(number, g.user, _field(data, "body", str),
                             path=_field(data, "path", str, None), line=line)
    return _json(made, 201)


@bp.post("/<int(max=999999999):number>/approve")
def approve(number: int) -> Response:
    """Approve the request at its current commit."""
    return _json(reviews().approve(number, g.user).to_dict())


@bp.post("/<int(max=999999999):number>/merge")
def merge(number: int) -> Response:
    """Merge the request into main (three-way when main moved on)."""
    return _json(reviews().merge(number, g.user).to_dict())


@bp.post("/<int(max=999999999):number>/reject")
def reject(number: int) -> Response:
    """Close the request without merging."""
    data = _body()
    return _json(reviews().reject(number, g.user, _field(data, "reason", str, "")).to_dict())
