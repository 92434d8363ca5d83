"""Property-based fuzz of ``/api/v1`` against its own OpenAPI document (schemathesis).

The app runs in-process (WSGI, no network) on a tmp registry seeded from ``prompts/``;
every documented operation is called as admin with generated valid and invalid input,
and every answer must be no 5xx, carry a documented status, content type and headers,
and match the documented schema (errors: the one shape ``{"error": {"code", "message",
"details"}}``); invalid input must be refused, a request without or with a wrong token
must get 401, and undocumented methods 405 with ``Allow``.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from promptrev.server.openapi import openapi_document

from .conftest import make_server_env

# Per operation; `PROMPTREV_FUZZ_EXAMPLES=500` (and `PROMPTREV_FUZZ_SEED=random`) for a long hunt.
MAX_EXAMPLES = int(os.environ.get("PROMPTREV_FUZZ_EXAMPLES", "60"))
DERANDOMIZE = os.environ.get("PROMPTREV_FUZZ_SEED") != "random"
STATUSES: dict[str, set[int]] = {}  # operation -> status codes seen


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory):
    env = make_server_env(tmp_path_factory.mktemp("fuzz"),
                          webhook_allow_private=True,  # the hooks below are on loopback
                          # the fuzzer sends thousands of bad tokens from one client: the
                          # per-client limit (tested in tests/security) would answer 429
                          auth_failure_limit="100000 per minute",
                          # the starter prompts' model, answering nowhere: an evaluation
                          # starts (202) and its run fails at once in the background
                          models={"gpt-4o-mini": {"backend": "openai", "name": "gpt-4o-mini",
                                                  "base_url": "http://127.0.0.1:9/v1",
                                                  "api_key": "none"}})
    # Webhooks 1 and 2 (the examples disable 1, remove 2 and redeliver delivery 1, which
    # the next save enqueues for hook 1); nothing delivers in this process.
    for n in (1, 2):
        env.api("POST", "/webhooks", json={"url": f"http://127.0.0.1:9/hook{n}"})
    # A second version and a split on `staging`, so the split and outcome handlers (whose
    # examples use them) can answer 2xx as well as refuse.
    summarize = env.api("GET", "/artifact?ref=summarize").get_json()["text"]
    env.api("PUT", "/artifact?name=summarize", headers={"If-Match": "1"},
            json={"text": summarize + "\n"})
    env.api("PUT", "/labels?name=summarize&label=staging", json={"version": 1})
    # Version 1 of the PUT example's artifact, which the example (If-Match "1") updates.
    env.api("PUT", "/artifact?name=drafts/summarize", json={"text": summarize})
    env.api("PUT", "/splits?name=summarize&label=staging", json={"arms": {"1": 50, "2": 50}})
    # Change requests #1-#4 by the editor, for the examples of the review operations (the
    # fuzz calls them as admin): #1 to read, comment and approve, #2 approved to merge, #3
    # to reject, #4 to update.
    for i in range(1, 5):
        opened = env.api("POST", "/reviews", role="editor", json={
            "title": f"request {i}", "edits": [{"name": "summarize",
                                                "text": summarize + "\n" * (i + 1)}]})
        assert opened.get_json()["number"] == i, opened.get_json()
    env.api("POST", "/reviews/2/approve")
    # `production` on the gate example's prompt, and evaluation run 1 (the run example).
    env.api("PUT", "/labels?name=sentiment/zero-shot&label=production", json={"version": 1})
    example = openapi_document()["paths"]["/api/v1/evaluations/gate"]["post"]
    started = env.api("POST", "/evaluations/gate",
                      json=example["requestBody"]["content"]["application/json"]["example"])
    assert started.status_code == 202 and started.get_json()["run"] == 1, started.get_json()
    yield env
    env.app.extensions["promptrev"].close()


@pytest.fixture(scope="module")
def api_schema(fuzz_env):
    # The document as served; loaded from a dict so that its own operation is fuzzed too
    # (`from_wsgi` leaves out the operation that serves the document).
    served = fuzz_env.client.get("/api/v1/openapi.json")
    assert served.status_code == 200, served.get_data(as_text=True)
    schema = schemathesis.openapi.from_dict(served.get_json())
    schema.app = fuzz_env.app  # in-process WSGI calls, no network
    token = fuzz_env.tokens["admin"]

    class AdminToken:
        """The admin's bearer token, as an auth provider so that `ignored_auth` can drop it."""

        def get(self, case, context):
            return token

        def set(self, case, data, context):
            if case.headers is None:
                case.headers = {}
            case.headers["Authorization"] = f"Bearer {data}"

    schema.auth()(AdminToken)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=DERANDOMIZE,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case):
    # Not `positive_data_acceptance`: names, references, labels and prompt text follow rules
    # JSON Schema cannot state (an ambiguous name, a reserved label, a template that does not
    # parse), and the API answers a schema-valid request that breaks them with 400/410/422.
    response = case.call()
    STATUSES.setdefault(case.operation.label, set()).add(response.status_code)
    case.validate_response(response, excluded_checks=[positive_data_acceptance])


def test_fuzz_reached_every_handler():
    """Guard against a hollow fuzz: every operation answered a generated request with 2xx."""
    if len(STATUSES) < sum(len(ops) for ops in openapi_document()["paths"].values()):
        pytest.skip("the fuzz test did not run (or not all of it) in this session")
    never = {op: sorted(codes) for op, codes in STATUSES.items()
             if not any(200 <= c < 300 for c in codes)}
    assert never == {}, f"operations never answered 2xx (statuses seen): {never}"


# ---- hostile JSON ----------------------------------------------------------------------
# Raw JSON tokens that Python's json reads but promptrev cannot hold (security issue, item
# 8): each is put in place of one field of a generated valid body, or is the whole body.
_HOSTILE_TOKENS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1.7e308", "-1.7e308",
                   "1" * 400, "-" + "9" * 5000, str(2**63), '"\\ud800"', '"a\\udfffb"',
                   '{"\\udc00": 1}', '["gpt-4o-mini"]', '{"a": [1e999]}', "[]", "{}", "null"]
_PLACEHOLDER = "\x00hostile\x00"
# Number strings for query parameters: '²'.isdigit() is true but int('²') fails; 25 digits
# overflow a SQL integer.
_HOSTILE_QUERY = ["²", "٣", "9" * 25, "1e999", "NaN", "-1", "summarize@²",
                  "summarize@" + "9" * 25, '{"a": NaN}', "[" * 5000]


def _hostile_token():
    from hypothesis import strategies as st

    deep = st.integers(65, 100_000).map(lambda n: "[" * n + "]" * n)
    surrogate = st.integers(0xD800, 0xDFFF).map(lambda c: f'"x\\u{c:04x}y"')
    return st.one_of(st.sampled_from(_HOSTILE_TOKENS), deep, surrogate)


def test_hostile_json_and_numbers_never_get_a_server_error(api_schema, fuzz_env):
    import json

    from hypothesis import given
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error

    operations = [result.ok() for result in api_schema.get_all_operations()]
    auth = {"Authorization": f"Bearer {fuzz_env.tokens['admin']}"}
    refused: set[str] = set()  # operations that answered a hostile request with 400

    @settings(max_examples=max(MAX_EXAMPLES * 4, 150), deadline=None,
              derandomize=DERANDOMIZE, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def attack(data):
        operation = data.draw(st.sampled_from(operations), label="operation")
        case = data.draw(operation.as_strategy(), label="case")
        queries = [p.name for p in operation.query]
        name = data.draw(st.sampled_from([None, *queries]), label="query parameter")
        if name is not None:
            case.query = {**(case.query or {}), name: data.draw(
                st.sampled_from(_HOSTILE_QUERY), label="query value")}
        kwargs = {}
        if operation.body:
            token = data.draw(_hostile_token(), label="token")
            body = case.body if isinstance(case.body, dict) else {}
            fields = sorted({*body, *operation.body[0].definition.get("schema", {}).get(
                "properties", {})})
            target = data.draw(st.sampled_from([None, *fields]), label="field")
            raw = token if target is None else json.dumps(
                {**body, target: _PLACEHOLDER}).replace(json.dumps(_PLACEHOLDER), token)
            kwargs["data"] = raw.encode("utf-8")
        response = case.call(headers=auth, **kwargs)
        assert response.status_code < 500, (operation.label, case.query, kwargs.get(
            "data", b"")[:200], response.text[:300])
        case.validate_response(response, checks=[not_a_server_error])
        if response.status_code == 400:
            refused.add(operation.label)

    attack()
    assert len(refused) >= len(operations) // 2, f"hostile requests reached only {refused}"
