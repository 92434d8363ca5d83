"""The JSON API under ``/api/v1``: parse the request, call the core, answer JSON.

Artifact names contain slashes (``support/reply``), so names and references travel in
query parameters rather than in the path; every route is documented in
:mod:`server.openapi` (a test checks the two agree).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, g, request

from promptrev.accounts import check_label_move
from promptrev.errors import InvalidRequest, NotFound, PreconditionRequired
from promptrev.model.names import validate_name

from .auth import api_user, state
from .openapi import openapi_document
from .state import json_bytes

bp = Blueprint("api", __name__, url_prefix="/api/v1")
KINDS = ("prompt", "dataset", "adapter")


@bp.before_request
def _authenticate() -> None:
    if request.endpoint != "api.openapi":
        g.user = api_user()


def _reg():
    return state().registry


# ---- request parsing -------------------------------------------------------------------
def _arg(name: str, default: Any = ..., *, max_len: int = 1024) -> str:
    value = request.args.get(name)
    if value is None or value == "":
        if default is ...:
            raise InvalidRequest(f"query parameter '{name}' is required")
        return default
    if len(value) > max_len:
        raise InvalidRequest(f"query parameter '{name}' is longer than {max_len} characters")
    return value


def _int_arg(name: str, default: int | None, lo: int = 0, hi: int = 1_000_000) -> int | None:
    value = request.args.get(name)
    if value in (None, ""):
        return default
    return _int(value, name, lo, hi)


def _int(value: Any, name: str, lo: int = 0, hi: int = 1_000_000) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidRequest(f"'{name}' must be an integer")
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be an integer, not {str(value)[:40]!r}") from None
    if not lo <= number <= hi:
        raise InvalidRequest(f"'{name}' must be between {lo} and {hi}")
    return number


def _bool_arg(name: str) -> bool:
    value = _arg(name, "false")
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise InvalidRequest(f"query parameter '{name}' must be true or false, not "
                             f"{value[:40]!r}")
    return value in ("true", "1", "yes")


def _kind(default: str | None = None) -> str | None:
    return _valid_kind(request.args.get("kind") or default)


def _valid_kind(kind: str | None) -> str | None:
    if kind is not None and kind not in KINDS:
        raise InvalidRequest(f"unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
    return kind


def _body() -> dict[str, Any]:
    if not request.data:
        return {}
    try:
        data = json.loads(request.data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    return data


def _field(data: dict[str, Any], name: str, kind: type, default: Any = ...) -> Any:
    if name not in data or data[name] is None:
        if default is ...:
            raise InvalidRequest(f"field '{name}' is required")
        return default
    value = data[name]
    if kind is int:
        if isinstance(value, str):  # a JSON number, as documented; "3" only in a query
            raise InvalidRequest(f"field '{name}' must be an integer")
        return _int(value, name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise InvalidRequest(f"field '{name}' must be a {kind.__name__}")
    return value


def _if_match() -> int | None:
    """The base version an update started from: ``If-Match: "3"`` (or ``3``)."""
    header = request.headers.get("If-Match")
    if header is None:
        return None
    value = header.strip().removeprefix("W/").strip('"')
    if value.isdigit() and len(value) < 10:
        return int(value)
    raise InvalidRequest(f"If-Match must carry the version the change is based on, e.g. "
                         f'If-Match: "3"; got {header[:40]!r}')


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json_bytes(payload), status, headers, mimetype="application/json")


def _cached_read(key: tuple, build) -> Response:
    """Answer a read from bytes cached per commit of ``main``, with ETag and 304."""
    lease = state().lease()  # one lookup for the registry and its cache: this is hot
    reg, cache = lease.registry, lease.bodies
    head = reg.sync()
    entry = cache.get(head, key) or cache.put(head, key, build(reg))
    body, etag = entry
    if "If-None-Match" in request.headers and request.if_none_match.contains(etag[1:-1]):
        return Response(status=304, headers={"ETag": etag})  # the header's tags are unquoted
    return Response(body, 200, {"ETag": etag, "Cache-Control": "no-cache"},
                    mimetype="application/json")


# ---- reads -----------------------------------------------------------------------------
@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI document of this API."""
    return _json(openapi_document())


@bp.get("/me")
def me() -> Response:
    """Who the token belongs to."""
    return _json({"user": g.user.to_dict()})


@bp.get("/artifacts")
def list_artifacts() -> Response:
    """List or search artifacts."""
    prefix, query, kind = _arg("prefix", None), _arg("q", None, max_len=255), _kind()
    deleted = _bool_arg("deleted")
    limit, offset = _int_arg("limit", 200, 1, 5000), _int_arg("offset", 0)

    def build(reg):
        rows = reg.list(prefix, kind=kind, include_deleted=deleted, query=query)
        return {"total": len(rows), "offset": offset,
                "artifacts": [r.to_dict() for r in rows[offset:offset + limit]]}

    return _cached_read(("list", prefix, query, kind, deleted, limit, offset), build)


@bp.get("/artifact")
def get_artifact() -> Response:
    """One version with its text, by reference (``name@production``).

    With ``key`` (a caller id), a label with a traffic split answers the version that
    key is assigned to, the same one every time while the split stands.
    """
    ref, kind, key = _arg("ref"), _kind(), _arg("key", None, max_len=200)
    if key is None:
        return _cached_read(("get", ref, kind), lambda reg: reg.get(ref, kind).to_dict())

    def assigned(reg):
        version = reg.resolve_for(ref, key, kind)
        return {**reg.get(version.ref, version.kind).to_dict(), "assigned": version.ref}

    return _cached_read(("get-for", ref, kind, key), assigned)


@bp.get("/splits")
def splits() -> Response:
    """Traffic splits of an artifact's labels: label → {version: weight}."""
    name, kind = _arg("name"), _kind()
    return _cached_read(("splits", name, kind), lambda reg: {
        "name": name, "splits": {label: {str(v): w for v, w in sorted(arms.items())}
                                 for label, arms in reg.splits(name, kind).items()}})


@bp.put("/splits")
def set_split() -> Response:
    """Split a label's traffic over versions by weight (sticky per caller key)."""
    name, label, kind = _arg("name"), _arg("label"), _kind()
    check_label_move(g.user, label, state().protected_labels)
    data = _body()
    raw = _field(data, "arms", dict)
    try:
        arms = {int(v): w for v, w in raw.items()}
    except ValueError:
        raise InvalidRequest("'arms' maps version numbers to weights, e.g. "
                             '{"4": 90, "5": 10}') from None
    if any(isinstance(w, bool) or not isinstance(w, int) for w in arms.values()):
        raise InvalidRequest("split weights must be positive integers")
    _reg().set_split(name, label, arms, message=_field(data, "message", str, None),
                     author=g.user.author, kind=kind)
    return _json({"name": name, "label": label,
                  "arms": {str(v): w for v, w in sorted(arms.items())}})


@bp.delete("/splits")
def end_split() -> Response:
    """End a label's traffic split (everyone gets the labelled version again)."""
    name, label, kind = _arg("name"), _arg("label"), _kind()
    check_label_move(g.user, label, state().protected_labels)
    _reg().set_split(name, label, {}, author=g.user.author, kind=kind)
    return _json({"name": name, "label": label, "arms": {}})


@bp.post("/outcomes")
def post_outcome() -> Response:
    """Record an application's outcome for a caller key under a split label."""
    from promptrev.evaluation.online import Outcomes

    data = _body()
    ref, key = _field(data, "ref", str), _field(data, "key", str)
    if "value" not in data:
        raise InvalidRequest("field 'value' is required (a number, or true/false)")
    metric = _field(data, "metric", str, "success")
    reg = _reg()
    recorded = Outcomes(reg.engine).record(reg, ref, key, data["value"], metric,
                                           _valid_kind(_field(data, "kind", str, None))
                                           or "prompt")
    return _json(recorded, 201)


@bp.get("/experiments")
def experiment() -> Response:
    """Live statistics per arm of a split label, from the outcomes posted back."""
    from promptrev.evaluation.online import Outcomes

    name, label, kind = _arg("name"), _arg("label"), _kind("prompt")
    reg = _reg()
    reg.resolve(name, kind)  # a clear 404 for an unknown artifact
    return _json(Outcomes(reg.engine).report(reg, name, label, kind))


@bp.get("/versions")
def versions() -> Response:
    """Every version of an artifact, newest first."""
    name, kind = _arg("name"), _kind()
    return _cached_read(("versions", name, kind), lambda reg: {
        "name": name, "versions": [v.to_dict() for v in reg.history(name, kind)],
        "labels": reg.labels(name, kind)})


@bp.get("/diff")
def diff() -> Response:
    """Text, field and rendered diff between two references."""
    a, b, kind = _arg("a"), _arg("b"), _kind()
    raw = _arg("variables", None, max_len=65536)
    variables = None
    if raw is not None:
        try:
            variables = json.loads(raw)
        except ValueError:
            raise InvalidRequest("'variables' must be a JSON object") from None
        if not isinstance(variables, dict):
            raise InvalidRequest("'variables' must be a JSON object")
    return _cached_read(("diff", a, b, kind, raw),
                        lambda reg: reg.diff(a, b, variables, kind=kind).to_dict())


@bp.get("/labels")
def labels() -> Response:
    """Labels of an artifact and which of them are protected."""
    name, kind = _arg("name"), _kind()
    return _cached_read(("labels", name, kind), lambda reg: {
        "name": name, "labels": reg.labels(name, kind),
        "protected": sorted(state().protected_labels)})


@bp.get("/label-events")
def label_events() -> Response:
    """Label moves, newest first (all artifacts or one)."""
    name, kind, limit = _arg("name", None), _kind(), _int_arg("limit", 200, 1, 5000)
    return _cached_read(("events", name, kind, limit), lambda reg: {
        "events": [e.to_dict() for e in reg.label_history(name, kind, limit)]})


@bp.get("/audit")
def audit() -> Response:
    """Every write on ``main``, newest first; page back with ``before``."""
    limit, before = _int_arg("limit", 100, 1, 1000), _int_arg("before", None, 0, 10 ** 12)
    return _cached_read(("audit", limit, before), lambda reg: {
        "entries": [e.to_dict() for e in reg.audit(limit, before)]})


@bp.post("/render")
def render() -> Response:
    """Render a prompt version with variables into chat messages."""
    data = _body()
    ref = _field(data, "ref", str)
    variables = _field(data, "variables", dict, {})
    reg = _reg()
    version = reg.resolve(ref, "prompt")
    messages = reg.render(ref, variables)
    return _json({"ref": version.ref, "version": version.number,
                  "messages": [{"role": m.role, "content": m.content} for m in messages]})


# ---- writes ----------------------------------------------------------------------------
@bp.put("/artifact")
def put_artifact() -> Response:
    """Create (no If-Match) or update (If-Match: the base version) an artifact."""
    state().policy.require_write_main(g.user, "saving to main")
    name, kind = validate_name(_arg("name")), _kind("prompt")
    data = _body()
    text = _field(data, "text", str)
    message = _field(data, "message", str, None) or f"save {name}"
    base = _if_match()
    if base is None:
        base = _field(data, "base", int, None)
    reg = _reg()
    if base is None:
        current = _current(reg, name, kind)
        if current is not None and not current.deleted:
            raise PreconditionRequired(
                f"{kind} '{name}' exists (latest version {current.number}): send the version "
                f"your edit is based on, e.g. If-Match: \"{current.number}\"",
                details={"current": current.number})
        base = current.number if current is not None else 0
    version = reg.save(name, text, message=message, author=g.user.author, base=base, kind=kind)
    status = 201 if version.number == 1 else 200
    return _json(version.to_dict(), status, {"Location": f"/api/v1/artifact?ref={version.ref}"})


@bp.delete("/artifact")
def delete_artifact() -> Response:
    """Delete an artifact (a new version; history stays and it can be restored)."""
    state().policy.require_write_main(g.user, "deleting on main")
    name, kind = _arg("name"), _kind()
    message = _arg("message", None)
    version = _reg().delete(name, message=message, author=g.user.author, base=_if_match(),
                            kind=kind)
    return _json(version.to_dict())


@bp.post("/restore")
def restore() -> Response:
    """Restore a deleted artifact (or any old version) as a new version."""
    state().policy.require_write_main(g.user, "restoring on main")
    data = _body()
    name, kind = _field(data, "name", str), _valid_kind(_field(data, "kind", str, None))
    reg = _reg()
    to = _field(data, "version", int, None)
    if to is None:
        history = [v for v in reg.history(name, kind) if not v.deleted]
        if not history:
            raise NotFound(f"'{name}' has no version with content to restore")
        to = history[0].number
    version = reg.rollback(name, to, message=_field(data, "message", str, None),
                           author=g.user.author, kind=kind)
    return _json(version.to_dict())


@bp.put("/labels")
def set_label() -> Response:
    """Set or move a label to a version."""
    name, label, kind = _arg("name"), _arg("label"), _kind()
    check_label_move(g.user, label, state().protected_labels)
    data = _body()
    version = _field(data, "version", int)
    event = _reg().set_label(name, label, version, message=_field(data, "message", str, None),
                             author=g.user.author, kind=kind)
    return _json({"name": name, "label": label, "version": version,
                  "event": event.to_dict() if event else None})


@bp.delete("/labels")
def remove_label() -> Response:
    """Remove a label."""
    name, label, kind = _arg("name"), _arg("label"), _kind()
    check_label_move(g.user, label, state().protected_labels)
    event = _reg().remove_label(name, label, message=_arg("message", None),
                                author=g.user.author, kind=kind)
    return _json({"name": name, "label": label, "event": event.to_dict() if event else None})


@bp.post("/rollback")
def rollback() -> Response:
    """Roll back: move a label to an old version, or restore its content as a new version."""
    data = _body()
    name, to = _field(data, "name", str), _field(data, "to", int)
    label = _field(data, "label", str, None)
    kind = _valid_kind(_field(data, "kind", str, None))
    if label is None:
        state().policy.require_write_main(g.user, "rolling back on main")
    else:
        check_label_move(g.user, label, state().protected_labels)
    result = _reg().rollback(name, to, label=label, message=_field(data, "message", str, None),
                             author=g.user.author, kind=kind)
    return _json({"name": name, "to": to, "label": label,
                  "result": result.to_dict() if result else None})


def _current(reg, name: str, kind: str):
    try:
        return reg.resolve(name, kind)
    except NotFound:
        return None

