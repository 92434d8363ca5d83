"""The JSON API under ``/api/v1``: parse the request, call the core, answer JSON.

Artifact names contain slashes (``support/reply``), so names and references travel in
query parameters rather than in the path; every route is documented in
:mod:`server.openapi` (a test checks the two agree).
"""

from __future__ import annotations

import math

from flask import Blueprint, Response, g, request

from promptrev.composition import plain
from promptrev.errors import EvidenceRequired, InvalidRequest, NotFound, PreconditionRequired
from promptrev.model.names import validate_name

from .auth import api_user, state
from .fastpath import COMMIT_HEADER
from .openapi import openapi_document
from .params import (
    MAX_INT_FIELD,
    arg,
    bool_arg,
    field,
    if_match,
    int_arg,
    json_body,
    json_object,
    json_response,
    kind_arg,
    registry,
    to_int,
    valid_kind,
)
from .state import not_modified

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.before_request
def _authenticate() -> None:
    if request.endpoint != "api.openapi":
        g.user = api_user()


def _cached_read(key: tuple, build) -> Response:
    """Answer a read from bytes cached per commit of ``main``, with ETag and 304."""
    lease = state().lease()  # one lookup for the registry and its cache: this is hot
    reg, cache = lease.registry, lease.bodies
    head = reg.sync()
    entry = cache.get(head, key) or cache.put(head, key, build(reg))
    body, etag = entry
    commit = head or ""
    if not_modified(request.headers.get("If-None-Match"), etag):
        return Response(status=304, headers={"ETag": etag, COMMIT_HEADER: commit})
    return Response(body, 200, {"ETag": etag, "Cache-Control": "no-cache",
                                COMMIT_HEADER: commit}, mimetype="application/json")


# ---- reads -----------------------------------------------------------------------------
@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI document of this API."""
    return json_response(openapi_document())


@bp.get("/me")
def me() -> Response:
    """Who the token belongs to."""
    return json_response({"user": g.user.to_dict()})


@bp.get("/artifacts")
def list_artifacts() -> Response:
    """List or search artifacts."""
    prefix, query, kind = arg("prefix", None), arg("q", None, max_len=255), kind_arg()
    deleted = bool_arg("deleted")
    limit, offset = int_arg("limit", 200, 1, 5000), int_arg("offset", 0)

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
    ref, kind, key = arg("ref"), kind_arg(), arg("key", None, max_len=200)
    if key is None:
        return _cached_read(("get", ref, kind), lambda reg: reg.get(ref, kind).to_dict())

    def assigned(reg):
        version = reg.resolve_for(ref, key, kind)
        return {**reg.get(version.ref, version.kind).to_dict(), "assigned": version.ref}

    return _cached_read(("get-for", ref, kind, key), assigned)


@bp.get("/splits")
def splits() -> Response:
    """Traffic splits of an artifact's labels: label → {version: weight}."""
    name, kind = arg("name"), kind_arg()
    return _cached_read(("splits", name, kind), lambda reg: {
        "name": name, "splits": {label: {str(v): w for v, w in sorted(arms.items())}
                                 for label, arms in reg.splits(name, kind).items()}})


@bp.put("/splits")
def set_split() -> Response:
    """Split a label's traffic over versions by weight (sticky per caller key)."""
    name, label, kind = arg("name"), arg("label"), kind_arg()
    state().policy.require_label(g.user, label)
    data = json_body()
    raw = field(data, "arms", dict)
    if any(not v.isascii() or not v.isdigit() for v in raw):
        raise InvalidRequest("'arms' maps version numbers to weights, e.g. "
                             '{"4": 90, "5": 10}')
    arms = {to_int(v, "arms (a version)", 1, MAX_INT_FIELD):
            to_int(w, f"arms.{v} (a weight)", 1, MAX_INT_FIELD) for v, w in raw.items()}
    spec = field(data, "plan", dict, None)
    if spec is not None:  # checked before the split is written
        from promptrev.evaluation.planning import plan_from

        plan = plan_from(spec, max(len(arms), 2))
    reg = registry()
    cleared = state().policy.require_move(g.user, reg, name, label, arms, kind=kind,
                                          split=True, override=_override(data))
    reg.set_split(name, label, arms, kind=kind, author=g.user.author, account=g.user.name,
                  guard=cleared.guard, message=cleared.message(
                      field(data, "message", str, None), f"split {name}@{label}"))
    outcomes, kind = _outcomes(reg), kind or reg.resolve(name).kind
    if spec is not None:
        outcomes.set_plan(name, label, plan, kind)
    return json_response({"name": name, "label": label, "clearance": cleared.to_dict(),
                          "arms": {str(v): w for v, w in sorted(arms.items())},
                          "plan": outcomes.plan(name, label, kind)})


@bp.delete("/splits")
def end_split() -> Response:
    """End a label's traffic split (everyone gets the labelled version again)."""
    name, label, kind = arg("name"), arg("label"), kind_arg()
    state().policy.require_label(g.user, label)
    reg = registry()
    reg.set_split(name, label, {}, author=g.user.author, account=g.user.name, kind=kind)
    _outcomes(reg).end_plan(name, label, kind or reg.resolve(name).kind)
    return json_response({"name": name, "label": label, "arms": {}})


@bp.post("/outcomes")
def post_outcome() -> Response:
    """Record an application's outcome for a caller key under a split label."""
    state().policy.require_outcomes(g.user)
    data = json_body()
    ref, key = field(data, "ref", str), field(data, "key", str)
    if "value" not in data:
        raise InvalidRequest("field 'value' is required (a number, or true/false)")
    metric = field(data, "metric", str, "success")
    reg = registry()
    outcomes = _outcomes(reg)
    recorded = outcomes.record(reg, ref, key, data["value"], metric,
                               valid_kind(field(data, "kind", str, None)) or "prompt")
    stopped = outcomes.auto_stop(reg, state().policy, recorded["name"], recorded["label"],
                                 valid_kind(field(data, "kind", str, None)) or "prompt")
    return json_response({**recorded, **({"auto_stop": stopped} if stopped else {})}, 201)


@bp.get("/experiments")
def experiment() -> Response:
    """Live statistics per arm of a split label, from the outcomes posted back.

    Always-valid comparisons; the fixed-horizon ones once the planned size is reached.
    """
    name, label, kind = arg("name"), arg("label"), kind_arg("prompt")
    reg = registry()
    reg.resolve(name, kind)  # a clear 404 for an unknown artifact
    return json_response(_outcomes(reg).report(reg, name, label, kind))


@bp.get("/experiments/plan")
def plan_experiment() -> Response:
    """Outcomes per arm a split needs: minimum detectable effect, baseline rate or SD."""
    from promptrev.evaluation.planning import MAX_ARMS, sample_size

    numbers = {key: _float_arg(key) for key in ("mde", "baseline", "sd", "alpha", "power")}
    given = {key: value for key, value in numbers.items() if value is not None}
    if "mde" not in given:
        raise InvalidRequest("query parameter 'mde' (the minimum detectable effect) is "
                             "required, with 'baseline' (a rate) or 'sd'")
    return json_response(sample_size(**given, arms=int_arg("arms", 2, 2, MAX_ARMS)))


def _outcomes(reg):
    """The online A/B service (imported when used: it brings numpy)."""
    from promptrev.evaluation.online import Outcomes

    return Outcomes(reg)


def _float_arg(name: str) -> float | None:
    """Query parameter ``name`` as a finite number, or ``None``."""
    value = arg(name, None, max_len=40)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise InvalidRequest(f"'{name}' must be a finite number, not {value!r}")
    return number


@bp.get("/versions")
def versions() -> Response:
    """Every version of an artifact, newest first."""
    name, kind = arg("name"), kind_arg()
    return _cached_read(("versions", name, kind), lambda reg: {
        "name": name, "versions": [v.to_dict() for v in reg.history(name, kind)],
        "labels": reg.labels(name, kind)})


@bp.get("/diff")
def diff() -> Response:
    """Text, field and rendered diff between two references."""
    a, b, kind = arg("a"), arg("b"), kind_arg()
    raw = arg("variables", None, max_len=65536)
    variables = None if raw is None else json_object(raw, "query parameter 'variables'")
    return _cached_read(("diff", a, b, kind, raw), lambda reg: _diff(reg, a, b, variables, kind))


def _diff(reg, a: str, b: str, variables, kind) -> dict:
    """A diff; between prompt versions with tokens and input cost per 1,000 calls."""
    result = reg.diff(a, b, variables, kind=kind)
    out = result.to_dict()
    if result.rendered is not None:
        out["tokens"] = state().tokens(reg, result.left, result.right, variables)
    return out


@bp.get("/dependents")
def dependents() -> Response:
    """The prompts that include a part, with the version each uses; with ``label`` and
    ``to``, what moving that label would change in them (a rendered diff each)."""
    name, label = arg("name"), arg("label", None)
    to = int_arg("to", None, 1, MAX_INT_FIELD)
    if (label is None) != (to is None):
        raise InvalidRequest("query parameters 'label' and 'to' go together")

    def build(reg) -> dict:
        out = {"name": name, "dependents": reg.dependents(name)}
        if label is not None:
            out["impact"] = plain(reg.label_impact(name, label, to))
        return out
    return _cached_read(("dependents", name, label, to), build)


@bp.get("/labels")
def labels() -> Response:
    """Labels of an artifact and which of them are protected."""
    name, kind = arg("name"), kind_arg()
    return _cached_read(("labels", name, kind), lambda reg: {
        "name": name, "labels": reg.labels(name, kind),
        "protected": sorted(state().policy.protected_labels)})


@bp.get("/label-events")
def label_events() -> Response:
    """Label moves, newest first (all artifacts or one)."""
    name, kind, limit = arg("name", None), kind_arg(), int_arg("limit", 200, 1, 5000)
    return _cached_read(("events", name, kind, limit), lambda reg: {
        "events": [e.to_dict() for e in reg.label_history(name, kind, limit)]})


@bp.get("/audit")
def audit() -> Response:
    """Every write on ``main``, newest first; page back with ``before``."""
    limit, before = int_arg("limit", 100, 1, 1000), int_arg("before", None, 0, 10 ** 12)
    return _cached_read(("audit", limit, before), lambda reg: {
        "entries": [e.to_dict() for e in reg.audit(limit, before)]})


@bp.post("/render")
def render() -> Response:
    """Render a prompt version with variables into chat messages; ``at`` (a commit) resolves
    its included parts as ``main`` had them then."""
    data = json_body()
    ref = field(data, "ref", str)
    variables = field(data, "variables", dict, {})
    at = field(data, "at", str, None)
    reg = registry()
    version = reg.resolve(ref, "prompt")
    messages = reg.render(ref, variables, at=at)
    return json_response({"ref": version.ref, "version": version.number,
                  "messages": [{"role": m.role, "content": m.content} for m in messages]})


# ---- writes ----------------------------------------------------------------------------
@bp.put("/artifact")
def put_artifact() -> Response:
    """Create (no If-Match) or update (If-Match: the base version) an artifact."""
    state().policy.require_write_main(g.user, "saving to main")
    name, kind = validate_name(arg("name")), kind_arg("prompt")
    data = json_body()
    text = field(data, "text", str)
    message = field(data, "message", str, None) or f"save {name}"
    base = if_match()
    if base is None:
        base = field(data, "base", int, None)
    reg = registry()
    if base is None:
        current = _current(reg, name, kind)
        if current is not None and not current.deleted:
            raise PreconditionRequired(
                f"{kind} '{name}' exists (latest version {current.number}): send the version "
                f"your edit is based on, e.g. If-Match: \"{current.number}\"",
                details={"current": current.number})
        base = current.number if current is not None else 0
    version = reg.save(name, text, message=message, author=g.user.author, base=base, kind=kind,
                       account=g.user.name)
    status = 201 if version.number == 1 else 200
    # what `show` would warn about (an undeclared variable): saved, but worth a look
    warnings = reg.get(version.ref, kind).to_dict()["warnings"]
    return json_response({**version.to_dict(), "warnings": warnings}, status,
                         {"Location": f"/api/v1/artifact?ref={version.ref}"})


@bp.delete("/artifact")
def delete_artifact() -> Response:
    """Delete an artifact (a new version; history stays and it can be restored)."""
    state().policy.require_write_main(g.user, "deleting on main")
    name, kind = arg("name"), kind_arg()
    message = arg("message", None)
    version = registry().delete(name, message=message, author=g.user.author, base=if_match(),
                                kind=kind, account=g.user.name)
    return json_response(version.to_dict())


@bp.post("/restore")
def restore() -> Response:
    """Restore a deleted artifact (or any old version) as a new version."""
    state().policy.require_write_main(g.user, "restoring on main")
    data = json_body()
    name, kind = field(data, "name", str), valid_kind(field(data, "kind", str, None))
    reg = registry()
    to = field(data, "version", int, None)
    if to is None:
        history = [v for v in reg.history(name, kind) if not v.deleted]
        if not history:
            raise NotFound(f"'{name}' has no version with content to restore")
        to = history[0].number
    version = reg.rollback(name, to, message=field(data, "message", str, None),
                           author=g.user.author, account=g.user.name, kind=kind)
    return json_response(version.to_dict())


@bp.put("/labels")
def set_label() -> Response:
    """Set or move a label to a version."""
    name, label, kind = arg("name"), arg("label"), kind_arg()
    state().policy.require_label(g.user, label)
    data = json_body()
    version = field(data, "version", int)
    evaluate = field(data, "evaluate", bool, False)
    try:
        cleared = state().policy.require_move(g.user, registry(), name, label, version,
                                              kind=kind, override=_override(data))
    except EvidenceRequired as refusal:
        from promptrev.evaluation.gate import producible

        if not evaluate or not producible(refusal):
            raise
        from .eval_api import queue_release_evaluation

        return json_response(queue_release_evaluation(
            g.user, registry(), kind, name, label, version, refusal), 202)
    impact = plain(registry().label_impact(name, label, version)) \
        if registry().kind_of(name, kind) == "prompt" else []  # before the move: its effect
    event = registry().set_label(name, label, version, message=cleared.message(
        field(data, "message", str, None), f"label {name}@{label} -> {version}"),
        author=g.user.author, account=g.user.name, kind=kind, guard=cleared.guard)
    return json_response({"name": name, "label": label, "version": version,
                  "event": event.to_dict() if event else None,
                  "clearance": cleared.to_dict(), "impact": impact})


@bp.delete("/labels")
def remove_label() -> Response:
    """Remove a label."""
    name, label, kind = arg("name"), arg("label"), kind_arg()
    state().policy.require_label(g.user, label)
    cleared = state().policy.require_move(g.user, registry(), name, label, None, kind=kind,
                                          override=arg("override_reason", None))
    event = registry().remove_label(name, label, message=cleared.message(
        arg("message", None), f"remove label {name}@{label}"),
        author=g.user.author, account=g.user.name, kind=kind, guard=cleared.guard)
    return json_response({"name": name, "label": label,
                          "event": event.to_dict() if event else None})


@bp.post("/rollback")
def rollback() -> Response:
    """Roll back: move a label to an old version, or restore its content as a new version."""
    data = json_body()
    name, to = field(data, "name", str), field(data, "to", int)
    label = field(data, "label", str, None)
    kind = valid_kind(field(data, "kind", str, None))
    if label is None:
        state().policy.require_write_main(g.user, "rolling back on main")
        cleared = None
    else:
        state().policy.require_label(g.user, label)
        cleared = state().policy.require_move(g.user, registry(), name, label, to, kind=kind,
                                              what="rolling back", override=_override(data))
    message = field(data, "message", str, None)
    if cleared is not None and cleared.note:
        message = f"{message or 'rolled back'}\n\n{cleared.note}"
    result = registry().rollback(name, to, label=label, message=message,
                             author=g.user.author, account=g.user.name, kind=kind,
                             guard=cleared.guard if cleared else None)
    return json_response({"name": name, "to": to, "label": label,
                  "result": result.to_dict() if result else None})


def _override(data: dict) -> str | None:
    """An admin's written reason to move a gated label without its evidence."""
    return field(data, "override_reason", str, None)


def _current(reg, name: str, kind: str):
    try:
        return reg.resolve(name, kind)
    except NotFound:
        return None

