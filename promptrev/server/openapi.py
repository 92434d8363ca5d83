"""The OpenAPI 3.0 document of ``/api/v1`` (served at ``/api/v1/openapi.json``).

Written as data next to the views it describes; ``tests/test_api.py`` checks that every
API route is documented and every documented route exists, and the fuzz test checks the
responses against these schemas.
"""

from __future__ import annotations

import functools
from typing import Any

from promptrev import __version__
from promptrev.model.artifacts import KINDS, text_kinds
from promptrev.model.outcomes import MAX_OUTCOME
from promptrev.webhooks import STATUSES, event_patterns

from .params import MAX_INT_FIELD

_STR = {"type": "string"}
_INT = {"type": "integer"}
_NULL_INT = {"type": "integer", "nullable": True}
_NONEMPTY = {"type": "string", "minLength": 1}
_KINDS = {"type": "string", "enum": list(KINDS)}
_NULL_STR = {"type": "string", "nullable": True}
_ID = {"type": "integer", "minimum": 1, "maximum": 2 ** 31 - 1}
# Bounds the server enforces on what it reads (hostile numbers): an integer field (version,
# weight, line) is at most 1,000,000 and an outcome within ±1e12. Every JSON body is refused
# with 400 when it nests deeper than 64 levels, holds NaN/Infinity/1e999, an integer beyond
# 64 bits, or a lone surrogate (`\ud800`): see promptrev.model.untrusted_json.
_IN_INT = {"type": "integer", "minimum": 1, "maximum": MAX_INT_FIELD}
_OUTCOME = {"oneOf": [{"type": "number", "minimum": -MAX_OUTCOME, "maximum": MAX_OUTCOME},
                      {"type": "boolean"}]}


_NUM = {"type": "number"}
# A split's planned size: as such, or the planner's inputs (GET /api/v1/experiments/plan).
_RATE = {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1,
         "exclusiveMaximum": True}
_POSITIVE = {"type": "number", "minimum": 0, "exclusiveMinimum": True}
_ALPHA = {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 0.5}
_POWER = {"type": "number", "minimum": 0.5, "maximum": 1, "exclusiveMaximum": True}
_PLAN_INPUT = {"type": "object", "additionalProperties": False, "properties": {
    "per_arm": {"type": "integer", "minimum": 1, "maximum": 10**9}, "mde": _NUM,
    "baseline": _RATE, "sd": _POSITIVE, "alpha": _ALPHA, "power": _POWER,
    "auto_stop": {"type": "string", "enum": ["promote", "rollback"], "description":
                  "end the split by itself once the always-valid test decides"},
    "stop_metric": {"type": "string", "minLength": 1, "maxLength": 100}}}
_NULL_NUM = {"type": "number", "nullable": True}
_PLAN = {"type": "object", "required": ["per_arm", "alpha"], "properties": {
    "per_arm": _INT, "alpha": _NUM, "power": _NULL_NUM, "mde": _NULL_NUM,
    "baseline": _NULL_NUM, "sd": _NULL_NUM, "created": _INT,
    "auto_stop": {"type": "string", "nullable": True},
    "stop_metric": {"type": "string", "nullable": True}}}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    schema = {**schema, "nullable": True}
    if "enum" in schema:  # OpenAPI 3.0: an enum admits null only when it lists it
        schema["enum"] = [*schema["enum"], None]
    return schema


def _input(required: list[str], **props: Any) -> dict[str, Any]:
    """A request body: the server reads an optional field sent as ``null`` as absent."""
    return _obj(required, **{name: schema if name in required else _nullable(schema)
                             for name, schema in props.items()})


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _q(name: str, description: str, required: bool = False, schema: dict | None = None,
       example: str | None = None) -> dict[str, Any]:
    param = {"name": name, "in": "query", "required": required, "description": description,
             "schema": schema or {"type": "string", "minLength": 1}}
    if not required:  # the server reads an empty optional parameter (`?kind=`) as absent
        param["allowEmptyValue"] = True
    if example is not None:  # names from the starter library that `prepare` seeds
        param["example"] = example
    return param


def _number(example: int) -> dict[str, Any]:
    return {"name": "number", "in": "path", "required": True,
            "description": "change request number", "example": example,
            "schema": {"type": "integer", "minimum": 1, "maximum": 999999999}}


_NAME = _q("name", "artifact name, e.g. `support/reply`", True, example="summarize")
_KIND = _q("kind", "artifact kind", schema=_KINDS)
_IF_MATCH = {"name": "If-Match", "in": "header", "required": False,
             "description": 'the version the change is based on, e.g. `"3"`',
             "schema": {"type": "string", "pattern": '^"?[0-9]{1,9}"?$'}, "example": '"1"'}
_IF_NONE_MATCH = {"name": "If-None-Match", "in": "header", "required": False,
                  "description": "an ETag from an earlier answer: 304 when unchanged",
                  "schema": _STR}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": _ref("Error")}}}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {"400": _error("invalid request, name or reference"),
           "401": _error("missing, invalid or revoked token"),
           "404": _error("no such artifact, version or label"),
           "410": _error("the artifact is deleted"),
           "413": _error("request too large"),
           "422": _error("invalid artifact content or render error")}
_WRITE_ERRORS = {**_ERRORS, "403": _error("the user's role does not allow this"),
                 "409": _error("conflict: the artifact changed since the base version"),
                 "428": _error("update without If-Match"),
                 "503": _error("registry busy")}


def _read(summary: str, params: list, schema: dict, etag: bool = True) -> dict[str, Any]:
    responses = {"200": _ok(schema), **_ERRORS}
    if etag:
        params = [*params, _IF_NONE_MATCH]
        responses["304"] = {"description": "not modified (If-None-Match matched the ETag)"}
    return {"get": {"summary": summary, "parameters": params, "responses": responses}}


def _write(method: str, summary: str, params: list, body: dict | None, schema: dict,
           extra: dict | None = None, example: dict | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": params,
                          "responses": {"200": _ok(schema), **(extra or {}), **_WRITE_ERRORS}}
    if body is not None:
        media: dict[str, Any] = {"schema": body}
        if example is not None:
            media["example"] = example
        op["requestBody"] = {"required": True, "content": {"application/json": media}}
    return {method: op}


_SCHEMAS: dict[str, Any] = {
    "Error": _obj(["error"], error=_obj(["code", "message", "details"], code=_STR,
                                        message=_STR, details={"type": "object"})),
    "Version": _obj(["kind", "name", "version", "commit", "deleted", "author", "message",
                     "time", "labels"],
                    kind=_STR, name=_STR, version=_INT, commit=_STR,
                    blob={"type": "string", "nullable": True}, deleted={"type": "boolean"},
                    author=_STR, email=_STR, account=_NULL_STR, message=_STR, time=_STR,
                    labels={"type": "array", "items": _STR}),
    "Snapshot": {"allOf": [_ref("Version"), _obj(["text", "warnings"], text=_STR, warnings={
        "type": "array", "items": {"type": "object"}})]},
    "Summary": _obj(["kind", "name", "latest", "deleted", "labels"], kind=_STR, name=_STR,
                    latest=_INT, deleted={"type": "boolean"},
                    labels={"type": "object", "additionalProperties": _INT}, author=_STR,
                    time=_STR, message=_STR),
    "LabelEvent": _obj(["kind", "name", "label", "from", "to", "commit"], kind=_STR,
                       name=_STR, label=_STR, commit=_STR, author=_STR, account=_NULL_STR,
                       message=_STR, time=_STR, **{"from": _NULL_INT, "to": _NULL_INT}),
    "Diff": _obj(["left", "right", "text", "fields", "contract_changes"], left=_STR,
                 right=_STR, text=_obj(["unified", "rows", "added", "removed"], unified=_STR,
                                       rows={"type": "array"}, added=_INT, removed=_INT),
                 fields={"type": "array"}, contract_changes={"type": "array"},
                 rendered={"type": "object", "nullable": True}, cases={"type": "array"},
                 impact={"type": "array", "items": _ref("Impact")}),
    "Impact": _obj(["name", "version", "ref", "changed"], name=_STR, version=_INT, ref=_STR,
                   via={"type": "string", "nullable": True}, changed={"type": "boolean"},
                   rendered={"type": "object"}),
    "Dependent": _obj(["name", "version", "ref", "part", "pinned", "uses"], name=_STR,
                      version=_INT, ref=_STR, part=_STR,
                      selector={"type": "string", "nullable": True},
                      pinned={"type": "boolean"}, uses={"type": "integer", "nullable": True},
                      problem={"type": "string", "nullable": True},
                      via={"type": "string", "nullable": True}),
    "EvaluationRun": _obj(["run", "status", "url"], run=_INT, status={
        "type": "string", "enum": ["running", "done", "failed"]}, name=_STR, dataset=_STR,
        cases=_INT, error=_NULL_STR, url=_STR, started={"type": "boolean"},
        report={"type": "object", "nullable": True},
        queue={"type": "object", "nullable": True, "description":
               "Where a run started on the server stands on the job queue: state (queued, "
               "running, stalled: its worker stopped reporting and another one resumes it, "
               "done, failed), worker, heartbeat_age or waiting_s (seconds)",
               "properties": {"state": {"type": "string", "enum": [
                   "queued", "running", "stalled", "done", "failed"]},
                   "worker": {"type": "string", "nullable": True},
                   "heartbeat_age": _INT, "waiting_s": _INT}}),
    "FinetuneJob": _obj(["job", "status", "name"], job=_INT, status={
        "type": "string", "enum": ["running", "done", "failed"]}, name=_STR,
        dataset=_STR, model=_STR, adapter=_NULL_STR, error=_NULL_STR, author=_STR,
        queue={"type": "object", "nullable": True}),
    "Review": _obj(["number", "title", "description", "author", "branch", "head", "status",
                    "created", "updated", "approvals", "required_approvals", "approved",
                    "comments"],
                   number=_INT, title=_STR, description=_STR, author=_STR, branch=_STR,
                   head=_STR, status={"type": "string", "enum": [
                       "open", "merged", "rejected", "closed"]}, created=_INT, updated=_INT,
                   closed_by={"type": "string", "nullable": True},
                   reason={"type": "string", "nullable": True},
                   merge_commit={"type": "string", "nullable": True},
                   approvals={"type": "array", "items": {"type": "object"}},
                   required_approvals=_INT, approved={"type": "boolean"},
                   comments={"type": "array", "items": {"type": "object"}},
                   versions={"type": "array", "items": _STR},
                   contributors={"type": "array", "items": _STR}),
    "Comment": _obj(["id", "author", "body", "path", "line", "head", "created", "outdated"],
                    id=_INT, author=_STR, body=_STR,
                    path={"type": "string", "nullable": True}, line=_NULL_INT, head=_STR,
                    created=_INT, outdated={"type": "boolean"}),
    "Webhook": _obj(["id", "url", "events", "active", "created", "created_by"], id=_INT,
                    url=_STR, events={"type": "array", "items": _STR},
                    active={"type": "boolean"}, created=_STR, created_by=_STR),
    "WebhookAttempt": _obj(["number", "started", "duration_ms", "status_code", "error"],
                           number=_INT, started=_STR, duration_ms={"type": "number"},
                           status_code=_NULL_INT, error=_NULL_STR, response=_NULL_STR),
    "WebhookDelivery": _obj(
        ["id", "webhook_id", "event", "status", "attempts", "created", "body"], id=_INT,
        webhook_id=_INT, event=_STR, status={"type": "string", "enum": list(STATUSES)},
        attempts=_INT, next_attempt=_NULL_STR, last_status=_NULL_INT, last_error=_NULL_STR,
        created=_STR, delivered=_NULL_STR, redelivery_of=_NULL_INT,
        body=_obj(["event", "time", "payload"], event=_STR, time=_STR,
                  payload={"type": "object"}),
        attempt_log={"type": "array", "items": _ref("WebhookAttempt")}),
    "AuditEntry": _obj(["seq", "commit", "author", "message", "time", "action", "versions",
                        "label_moves"], seq=_INT, commit=_STR, author=_STR, email=_STR,
                       account=_NULL_STR, message=_STR, time=_STR, action=_STR,
                       versions={"type": "array"}, label_moves={"type": "array"}),
}


@functools.lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The OpenAPI document (built once)."""
    label_q = _q("label", "label name, e.g. `production`", True, example="staging")
    labels_schema = _obj(["name", "labels"], name=_STR, labels={
        "type": "object", "additionalProperties": _INT}, protected={"type": "array"})
    clearance = {"type": "object", "description": "how the label's release policy allowed "
                 "the move: ungated, evidence (the run, its interval and verdict), rollback "
                 "or override"}
    override = {**_NONEMPTY, "pattern": r"\S", "description": "admin only: move a label "
                "with a release policy without its evidence, for this written reason (kept in "
                "the commit message and the audit log)"}
    label_result = _obj(["name", "label"], name=_STR, label=_STR, version=_INT,
                        event={"allOf": [_ref("LabelEvent")], "nullable": True},
                        clearance=clearance,
                        impact={"type": "array", "items": _ref("Impact")})
    paths = {
        "/api/v1/openapi.json": {"get": {"summary": "This document", "security": [],
                                         "responses": {"200": _ok({"type": "object"})}}},
        "/api/v1/me": _read("The caller's account", [], _obj(["user"], user=_obj(
            ["name", "role"], name=_STR, email=_STR, role=_STR,
            disabled={"type": "boolean"})), etag=False),
        "/api/v1/artifacts": _read("List or search artifacts", [
            _q("q", "part of the name, any case"), _q("prefix", "folder prefix"), _KIND,
            _q("deleted", "include deleted artifacts", schema={
                "type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]}),
            _q("limit", "page size", schema={"type": "integer", "minimum": 1,
                                             "maximum": 5000}),
            _q("offset", "skip this many", schema={"type": "integer", "minimum": 0})],
            _obj(["total", "artifacts"], total=_INT, offset=_INT,
                 artifacts={"type": "array", "items": _ref("Summary")})),
        "/api/v1/artifact": {
            **_read("Get a version by reference (with `key`: the version a split assigns)", [
                _q("key", "caller id: a label with a traffic split answers this caller's "
                   "version"),
                _q("ref", "`name`, `name@4`, `name@production` or `name@<commit>`", True,
                   example="summarize@1"),
                _KIND], _ref("Snapshot")),
            **_write("put", "Create (no If-Match) or update (If-Match: base version)",
                     # its own example name: the example's If-Match "1" is that artifact's
                     # latest version, so the example updates it (summarize is at 2+)
                     [_q("name", "artifact name, e.g. `support/reply`", True,
                         example="drafts/summarize"), _KIND, _IF_MATCH],
                     _input(["text"], text=_STR, message=_STR,
                            base={**_IN_INT, "minimum": 0}),
                     _ref("Version"), {"201": _ok(_ref("Version"), "created")},
                     {"text": "---\nname: summarize\n---\nuser:\nSummarize in at most "
                              "{{max_words}} words: {{text}}\n", "message": "shorter prompt"}),
            **_write("delete", "Delete (a new version; restorable)", [
                _NAME, _KIND, _IF_MATCH, _q("message", "commit message")], None,
                _ref("Version")),
        },
        "/api/v1/restore": _write("post", "Restore a deleted or old version as a new version",
                                  [], _input(["name"], name=_NONEMPTY, kind=_KINDS,
                                             version=_IN_INT, message=_STR), _ref("Version"),
                                  example={"name": "summarize", "version": 1}),
        "/api/v1/versions": _read("History of an artifact, newest first", [_NAME, _KIND],
                                  _obj(["name", "versions", "labels"], name=_STR,
                                       versions={"type": "array", "items": _ref("Version")},
                                       labels={"type": "object"})),
        "/api/v1/diff": _read("Diff two references: text, fields, rendered", [
            _q("a", "left reference", True, example="summarize@1"),
            _q("b", "right reference", True, example="summarize"), _KIND,
            _q("variables", "JSON object of variables for the rendered diff",
               example='{"text": "A long story.", "max_words": 5}')],
            _ref("Diff")),
        "/api/v1/dependents": _read(
            "Prompts that include a part, with the version each uses (and, with label and "
            "to, what moving that label would change in them)", [
                _q("name", "the part's name", True, example="summarize"),
                _q("label", "a label of the part, to preview its move"),
                _q("to", "the version the label would move to", schema=_INT)],
            _obj(["name", "dependents"], name=_STR,
                 dependents={"type": "array", "items": _ref("Dependent")},
                 impact={"type": "array", "items": _ref("Impact")})),
        "/api/v1/labels": {
            **_read("Labels of an artifact", [_NAME, _KIND], labels_schema),
            **_write("put", "Set or move a label", [_NAME, label_q, _KIND],
                     _input(["version"], version=_IN_INT,
                            message=_STR, override_reason=override, evaluate={
                                "type": "boolean", "description": "when the release policy "
                                "refuses the move for want of an evaluation, start it on the "
                                "server and answer 202 with the run (move again once done)"}),
                     label_result, {"202": _ok(_obj(["moved", "evaluation"], moved={
                         "type": "boolean"}, refused={"type": "object"},
                         evaluation=_ref("EvaluationRun")), "evaluation started")},
                     example={"version": 1, "message": "promote"}),
            **_write("delete", "Remove a label", [_NAME, label_q, _KIND,
                                                   _q("message", "commit message"),
                                                   _q("override_reason", override[
                                                       "description"])],
                     None, label_result),
        },
        "/api/v1/label-events": _read("Label moves, newest first", [
            _q("name", "one artifact (default: all)", example="summarize"), _KIND,
            _q("limit", "at most", schema={"type": "integer", "minimum": 1, "maximum": 5000})],
            _obj(["events"], events={"type": "array", "items": _ref("LabelEvent")})),
        "/api/v1/audit": _read("Every write on main, newest first", [
            _q("limit", "at most", schema={"type": "integer", "minimum": 1, "maximum": 1000}),
            _q("before", "older than this seq", schema={"type": "integer", "minimum": 0})],
            _obj(["entries"], entries={"type": "array", "items": _ref("AuditEntry")})),
        "/api/v1/splits": {
            **_read("Traffic splits of an artifact's labels", [_NAME, _KIND],
                    _obj(["name", "splits"], name=_STR, splits={"type": "object"})),
            **_write("put", "Split a label's traffic over versions (sticky per caller key)",
                     [_NAME, _q("label", "label name", True, example="staging"), _KIND],
                     _input(["arms"], arms={"type": "object", "additionalProperties": _IN_INT},
                            message=_STR, plan=_PLAN_INPUT, override_reason=override),
                     _obj(["name", "label", "arms"], name=_STR, label=_STR,
                          arms={"type": "object"}, plan=_nullable(_PLAN),
                          clearance=clearance),
                     example={"arms": {"1": 60, "2": 40},
                              "plan": {"mde": 0.05, "baseline": 0.2, "power": 0.8}}),
            **_write("delete", "End a label's traffic split",
                     [_NAME, _q("label", "label name", True, example="staging"), _KIND],
                     None, _obj(["name", "label", "arms"], name=_STR, label=_STR,
                                arms={"type": "object"})),
        },
        "/api/v1/outcomes": _write(
            "post", "Record an outcome for a caller key under a split label", [],
            _input(["ref", "key", "value"], ref=_NONEMPTY,
                   key={**_NONEMPTY, "maxLength": 200}, value=_OUTCOME,
                   metric={**_NONEMPTY, "maxLength": 100}, kind=_KINDS),
            _obj(["name", "label", "version", "metric", "value"], name=_STR, label=_STR,
                 version=_INT, metric=_STR, value={"type": "number"}),
            example={"ref": "summarize@staging", "key": "user-1", "value": True},
            extra={"201": _ok(_obj(["name", "label", "version", "metric", "value"], name=_STR,
                             label=_STR, version=_INT, metric=_STR,
                             value={"type": "number"}, auto_stop={
                                 "type": "object", "description": "the split's plan "
                                 "stopped it on this outcome: what was done"}),
                              "recorded")}),
        "/api/v1/experiments": _read(
            "Live statistics per arm of a split label", [
                _NAME, _q("label", "label name", True, example="staging"), _KIND],
            _obj(["name", "label", "split", "metrics", "verdict"], name=_STR, label=_STR,
                 kind=_STR, split={"type": "object"}, plan=_nullable(_PLAN), alpha=_NUM,
                 method=_STR, metrics={"type": "array"},
                 verdict={"type": "array", "items": _STR}), etag=False),
        "/api/v1/experiments/plan": _read(
            "Outcomes per arm a split needs (normal approximation, two-sided)", [
                _q("mde", "minimum detectable effect (a difference of means or rates)", True,
                   schema={"type": "number"}, example="0.05"),
                _q("baseline", "baseline rate, for pass/fail outcomes (or give sd)",
                   schema=_RATE, example="0.2"),
                _q("sd", "standard deviation, for continuous outcomes", schema=_POSITIVE),
                _q("alpha", "significance level (default 0.05)", schema=_ALPHA),
                _q("power", "power (default 0.8)", schema=_POWER),
                _q("arms", "arms of the split (default 2); alpha is split over the pairs",
                   schema={"type": "integer", "minimum": 2, "maximum": 20})],
            _obj(["per_arm", "total", "alpha", "power", "mde", "arms", "method"],
                 per_arm=_INT, total=_INT, alpha=_NUM, power=_NUM, mde=_NUM,
                 baseline=_NULL_NUM, sd=_NULL_NUM, arms=_INT, method=_STR),
            etag=False),
        "/api/v1/rollback": _write("post", "Roll back by label move or content restore", [],
                                   _input(["name", "to"], name=_NONEMPTY, to=_IN_INT,
                                          label=_NONEMPTY,
                                          kind=_KINDS, message=_STR,
                                          override_reason=override),
                                   _obj(["name", "to"], name=_STR, to=_INT,
                                        label={"type": "string", "nullable": True},
                                        result={"type": "object", "nullable": True}),
                                   example={"name": "summarize", "to": 1, "label": "staging"}),
        "/api/v1/render": _write("post", "Render a prompt version to chat messages", [],
                                 _input(["ref"], ref=_NONEMPTY, variables={"type": "object"},
                                        at={"type": "string", "pattern": "^[0-9a-fA-F]{4,40}$",
                                            "description": "a commit of main (or a prefix "
                                            "of one): included parts resolve as main had "
                                            "them then (default: now); an unknown commit "
                                            "is a 404 naming it"}),
                                 _obj(["ref", "version", "messages"], ref=_STR, version=_INT,
                                      messages={"type": "array", "items": _obj(
                                          ["role", "content"], role=_STR, content={
                                              # text, or OpenAI content parts (an image)
                                              "oneOf": [_STR, {"type": "array", "items": {
                                                  "type": "object"}}]})}),
                                 example={"ref": "summarize@1", "variables": {
                                     "text": "A long story.", "max_words": 5}}),
        **_review_paths(),
    }
    paths.update(_webhook_paths())
    paths.update(_evaluation_paths())
    paths.update(_replication_paths())
    return {
        "openapi": "3.0.3",
        "info": {"title": "promptrev", "version": __version__,
                 "description": "Prompt registry: versions, diffs, labels, rollback."},
        "components": {"schemas": _SCHEMAS, "securitySchemes": {
            "token": {"type": "http", "scheme": "bearer"}}},
        "security": [{"token": []}],
        "paths": paths,
    }


def _review_paths() -> dict[str, Any]:
    edits = {"type": "array", "minItems": 1, "items": _obj(
        ["name", "text"], name=_NONEMPTY, text={"type": "string", "nullable": True},
        kind=_nullable({"type": "string", "enum": text_kinds()}))}
    edit_example = [{"name": "summarize", "text": "---\nname: summarize\n---\nuser:\n"
                     "Summarize in {{max_words}} words: {{text}}\n"}]
    detail = {"allOf": [_ref("Review"), _obj(
        ["changes"], changes={"type": "array", "items": _obj(
            ["kind", "name", "path", "change", "main_moved", "diff"], kind=_STR, name=_STR,
            path=_STR, change=_STR, main_moved={"type": "boolean"}, diff=_ref("Diff"))},
        conflicts={"type": "array"}, label_moves={"type": "array", "items": _STR},
        problems={"type": "array"})]}
    created = {"201": _ok(_ref("Review"), "opened")}
    reject = _write("post", "Close a request without merging", [_number(3)],
                    _input([], reason=_STR), _ref("Review"), example={"reason": "not needed"})
    reject["post"]["requestBody"]["required"] = False  # the reason is optional
    return {
        "/api/v1/reviews": {
            **_read("Change requests, newest first", [
                _q("status", "only these", schema={"type": "string", "enum": [
                    "open", "merged", "rejected", "closed"]}),
                _q("limit", "at most", schema={"type": "integer", "minimum": 1,
                                               "maximum": 1000})],
                _obj(["reviews"], reviews={"type": "array", "items": _ref("Review")}),
                etag=False),
            **_write("post", "Open a change request from edits (main does not change)", [],
                     _input(["title", "edits"], title=_NONEMPTY, description=_STR,
                            edits=edits), _ref("Review"), created,
                     example={"title": "Shorter summaries", "edits": edit_example}),
        },
        "/api/v1/reviews/{number}": _read(
            "A change request with its diff against main, conflicts and problems",
            [_number(1)], detail, etag=False),
        "/api/v1/reviews/{number}/edits": _write(
            "post", "Add edits to an open request (merges main in when it moved; approvals "
            "reset)", [_number(4)], _input(["edits"], message=_STR, edits=edits),
            _ref("Review"), example={"message": "answer review", "edits": edit_example}),
        "/api/v1/reviews/{number}/comments": _write(
            "post", "Comment on a request, or on a line of one of its files", [_number(1)],
            _input(["body"], body=_NONEMPTY, path=_NONEMPTY,
                   line=_IN_INT),
            _ref("Comment"), {"201": _ok(_ref("Comment"), "created")},
            example={"body": "Looks good", "path": "prompts/summarize.prompty", "line": 2}),
        "/api/v1/reviews/{number}/approve": _write(
            "post", "Approve a request at its current commit", [_number(1)], None,
            _ref("Review")),
        "/api/v1/reviews/{number}/merge": _write(
            "post", "Merge a request into main (409: conflict or not approved)", [_number(2)],
            None, _ref("Review")),
        "/api/v1/reviews/{number}/reject": reject,
    }


def _evaluation_paths() -> dict[str, Any]:
    """Evaluation runs, and ``promptrev eval gate`` on the server."""
    verdict = {"allOf": [_ref("EvaluationRun"), _obj(
        ["passed", "evidence", "junit", "markdown"], passed={"type": "boolean"},
        evidence={"type": "object"}, source=_STR, tokens={"type": "object"},
        baseline=_STR, candidate=_STR, junit=_STR, markdown=_STR)]}
    text = {"type": "string", "minLength": 1, "maxLength": 200_000}
    return {
        "/api/v1/evaluations/run": _read("An evaluation run: its state, page and report", [
            _q("id", "run id", True, schema=_ID, example=1)], _ref("EvaluationRun"),
            etag=False),
        "/api/v1/evaluations/gate": _write(
            "post", "Judge a spec's candidate against a label's holder (promptrev eval "
            "gate): 200 with the verdict once its run is done, else 202 with the run "
            "started or going (post again to poll)", [],
            _input(["spec", "baseline"], spec=text, baseline=_NONEMPTY, candidate=_NONEMPTY,
                   policy=text, started_run=_ID, rule=_input(
                       ["require", "metric"], require={"type": "string", "enum": [
                           "superior", "non-inferior"]}, metric=_NONEMPTY,
                       margin={"type": "number"}, alpha={"type": "number"})), verdict,
            {"202": _ok(_ref("EvaluationRun"), "run started or still going")},
            {"spec": "dataset: sentiment\nscorers: [exact]\nlimit: 2\nvariants:\n"
                     "  - {name: candidate, prompt: sentiment/zero-shot}\n",
             "baseline": "production", "rule": {"require": "non-inferior",
                                                "metric": "exact", "margin": 0.05}}),
        "/api/v1/finetunes": _write(
            "post", "Start a fine-tuning job (promptrev finetune on the server's queue): a "
            "worker trains on a configured local model and pushes the adapter version; "
            "202 with the job (poll /finetunes/job)", [],
            _input(["dataset", "model", "name"], dataset=_NONEMPTY, model=_NONEMPTY,
                   name=_NONEMPTY, prompt=_NONEMPTY, config={"type": "object"}),
            _ref("FinetuneJob"), {"202": _ok(_ref("FinetuneJob"), "job queued")},
            {"dataset": "sentiment", "model": "tiny", "name": "sentiment-lora",
             "prompt": "sentiment/zero-shot", "config": {"method": "lora", "max_steps": 20}}),
        "/api/v1/finetunes/job": _read("A fine-tuning job: its state and adapter version", [
            _q("id", "job id", True, schema=_ID, example=1)], _ref("FinetuneJob"),
            etag=False),
    }


def _webhook_paths() -> dict[str, Any]:
    """Webhooks and their deliveries (admins only)."""
    hook_id = _q("id", "webhook id", True, schema=_ID, example=1)
    events = {"type": "array", "items": {"type": "string", "enum": event_patterns()}}
    created = {"allOf": [_ref("Webhook"), _obj(["secret"], secret=_STR)]}
    return {
        "/api/v1/webhooks": {
            **_write("get", "List webhooks (admin)", [], None,
                     _obj(["webhooks"], webhooks={"type": "array", "items": _ref("Webhook")})),
            **_write("post", "Add a webhook (admin); the answer shows its secret once", [],
                     _input(["url"], url={"type": "string", "minLength": 1, "maxLength": 2000},
                            events=events, active={"type": "boolean"},
                            secret={"type": "string", "minLength": 1, "maxLength": 200}),
                     created, {"201": _ok(created, "created")},
                     {"url": "http://127.0.0.1:9/hooks/promptrev",
                      "events": ["version.saved", "label.moved"]}),
            **_write("patch", "Enable or disable a webhook (admin)", [hook_id],
                     _input(["active"], active={"type": "boolean"}), _ref("Webhook"),
                     example={"active": True}),
            **_write("delete", "Remove a webhook and its delivery log (admin)",
                     [_q("id", "webhook id", True, schema=_ID, example=2)], None,
                     _obj(["id", "removed"], id=_INT, removed={"type": "boolean"})),
        },
        "/api/v1/webhook-deliveries": _write(
            "get", "Webhook deliveries, newest first, with their attempts (admin)", [
                _q("webhook", "one webhook's deliveries", schema=_ID),
                _q("status", "only deliveries in this state",
                   schema={"type": "string", "enum": list(STATUSES)}),
                _q("event", "only this event", schema={"type": "string", "minLength": 1,
                                                         "maxLength": 64}),
                _q("limit", "at most", schema={"type": "integer", "minimum": 1,
                                                "maximum": 1000})], None,
            _obj(["deliveries"], deliveries={"type": "array",
                                             "items": _ref("WebhookDelivery")})),
        "/api/v1/webhook-deliveries/redeliver": _write(
            "post", "Send a delivery again, as a new delivery (admin)", [],
            _input(["id"], id=_ID), _ref("WebhookDelivery"),
            {"201": _ok(_ref("WebhookDelivery"), "queued")}, {"id": 1}),
    }


def _replication_paths() -> dict[str, Any]:
    """The long-poll read replicas follow the primary with (issue 20)."""
    read = _read("Wait until main is no longer at a commit (read replicas' long-poll)", [
        _q("after", "the commit the caller has (empty: none); answered at once when main is "
           "elsewhere", schema={"type": "string", "pattern": "^[0-9a-fA-F]{0,64}$"},
           example=""),
        _q("timeout", "seconds to wait at most (capped by PROMPTREV_REPLICATION_WAIT)",
           schema={"type": "number", "minimum": 0, "maximum": 60}, example="0")],
        _obj(["commit", "changed"], commit={"type": "string", "nullable": True},
             changed={"type": "boolean"}), etag=False)
    read["get"]["responses"]["503"] = _error("too many long-polls wait on this server "
                                             "process; retry in a second")
    return {"/api/v1/replication/wait": read}
