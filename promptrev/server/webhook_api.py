"""Webhook routes of the JSON API (admins only): hooks, their deliveries, redelivery.

They hang on the ``api`` blueprint, so they share its token authentication, its request
parsing and its one error shape; :mod:`server.openapi` documents them.
"""

from __future__ import annotations

from flask import Response, g

from promptrev.errors import InvalidRequest
from promptrev.webhook_targets import TargetPolicy
from promptrev.webhooks import Webhooks

from .api import bp
from .auth import state
from .params import arg, field, int_arg, json_body, json_response, to_int

MAX_ID = 2 ** 31 - 1


def _hooks() -> Webhooks:
    state().policy.require(g.user, "manage_webhooks", "managing webhooks")
    return Webhooks(state().registry, targets=TargetPolicy.from_settings(state().settings))


def _id(name: str = "id") -> int:
    return to_int(arg(name), name, 1, MAX_ID)


@bp.get("/webhooks")
def list_webhooks() -> Response:
    """Every webhook (secrets are never shown again)."""
    return json_response({"webhooks": _hooks().list()})


@bp.post("/webhooks")
def add_webhook() -> Response:
    """Add a webhook; the answer shows its secret this once."""
    hooks = _hooks()
    data = json_body()
    hook = hooks.add(field(data, "url", str), events=field(data, "events", list, None),
                     secret=field(data, "secret", str, None),
                     active=field(data, "active", bool, True), created_by=g.user.name)
    return json_response(hook, 201)


@bp.patch("/webhooks")
def update_webhook() -> Response:
    """Enable or disable a webhook (enabling checks its URL against the targets allowed)."""
    hooks = _hooks()
    hook_id = _id()
    return json_response(hooks.set_active(hook_id, field(json_body(), "active", bool)))


@bp.delete("/webhooks")
def remove_webhook() -> Response:
    """Remove a webhook with its delivery log."""
    hooks = _hooks()
    hook_id = _id()
    hooks.remove(hook_id)
    return json_response({"id": hook_id, "removed": True})


@bp.get("/webhook-deliveries")
def list_deliveries() -> Response:
    """Deliveries, newest first, each with its attempts."""
    hooks = _hooks()
    return json_response({"deliveries": hooks.deliveries(
        webhook_id=int_arg("webhook", None, 1, MAX_ID), status=arg("status", None),
        event=arg("event", None, max_len=64), limit=int_arg("limit", 50, 1, 1000))})


@bp.post("/webhook-deliveries/redeliver")
def redeliver() -> Response:
    """Send a delivery again (as a new delivery)."""
    hooks = _hooks()
    value = json_body().get("id")
    if value is None:
        raise InvalidRequest("field 'id' is required (the delivery to send again)")
    if isinstance(value, str):  # a JSON number, as documented
        raise InvalidRequest("field 'id' must be an integer")
    return json_response(hooks.redeliver(to_int(value, "id", 1, MAX_ID)), 201)
