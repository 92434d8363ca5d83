"""Hostile numbers and JSON against a real ``promptrev serve``: refused with a clear 400.

Replays the attacks of the security issue (item 8): outcomes of ±1.7e308 or a 400-digit
integer that made ``/experiments`` and the artifact page fail for good, NaN/Infinity and
``1e999`` in raw JSON, a body nested 100,000 levels deep, lone surrogates, ``base_model``
given as a list, and a regex scorer pattern that backtracks exponentially.
"""

from __future__ import annotations

import glob
import re
import sqlite3
import time
from contextlib import closing

import httpx
import pytest

from promptrev.errors import InvalidRequest
from promptrev.evaluation.scorers import Score, ScoreInput, build_scorers
from promptrev.model.datasets import Case

from ..live import ADMIN_PASSWORD, start_server

JSON = {"Content-Type": "application/json"}
SPLIT = "summarize@staging"
SUMMARY = {"text": "A long story about a garage.", "max_words": 5}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("hostile"), workers=1)
    api = httpx.Client(base_url=server.url, timeout=60,
                       headers={"Authorization": f"Bearer {server.token()}"})
    text = api.get("/api/v1/artifact", params={"ref": "summarize"}).json()["text"]
    api.put("/api/v1/artifact", params={"name": "summarize"}, headers={"If-Match": "1"},
            json={"text": text + "\n"}).raise_for_status()
    api.put("/api/v1/labels", params={"name": "summarize", "label": "staging"},
            json={"version": 1}).raise_for_status()
    api.put("/api/v1/splits", params={"name": "summarize", "label": "staging"},
            json={"arms": {"1": 50, "2": 50}}).raise_for_status()
    yield server, api
    api.close()
    server.stop()


def _browser(server) -> httpx.Client:
    """A logged-in browser session (through the real login form)."""
    browser = httpx.Client(base_url=server.url, timeout=60)
    form = browser.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    r = browser.post("/login", data={"name": "admin", "password": ADMIN_PASSWORD,
                                     "csrf_token": csrf})
    assert r.status_code == 302, r.text
    return browser


def _refused(response: httpx.Response, *words: str) -> str:
    """The message of a 400 in the one error shape; it names every one of ``words``."""
    assert response.status_code == 400, (response.status_code, response.text[:300])
    message = response.json()["error"]["message"]
    for word in words:
        assert word in message, message
    assert "Traceback" not in response.text
    return message


def _pages_answer(server, api) -> tuple[dict, str]:
    """``/api/v1/experiments`` and the artifact page both answer 200."""
    report = api.get("/api/v1/experiments", params={"name": "summarize", "label": "staging"})
    assert report.status_code == 200, report.text[:300]
    with closing(_browser(server)) as browser:
        page = browser.get("/a/summarize")
    assert page.status_code == 200, page.text[:300]
    return report.json(), page.text


@pytest.mark.parametrize("raw, words", [
    ("1.7e308", ["'value'", "1e+12"]),
    ("-1.7e308", ["'value'", "1e+12"]),
    ("1" * 400, ["'value'", "integer too large", "400 digits"]),
    ("-" + "9" * 5000, ["'value'", "integer too large", "5000 digits"]),
    ("NaN", ["'value'", "finite", "NaN"]),
    ("Infinity", ["'value'", "finite", "Infinity"]),
    ("-Infinity", ["'value'", "finite"]),
    ("1e999", ["'value'", "finite", "1e999"]),
    ("1000000000001", ["'value'", "1e+12"]),
], ids=["1.7e308", "-1.7e308", "400-digits", "-5000-digits", "NaN", "Infinity", "-Infinity",
        "1e999", "1e12+1"])
def test_hostile_outcome_values_are_refused_and_the_pages_still_answer(live, raw, words):
    server, api = live
    body = f'{{"ref": "{SPLIT}", "key": "attacker", "value": {raw}}}'
    _refused(api.post("/api/v1/outcomes", content=body, headers=JSON), *words)
    report, _ = _pages_answer(server, api)
    assert all(m.get("left_out", 0) == 0 for m in report["metrics"])


def test_outcomes_at_the_bound_are_recorded(live):
    _, api = live
    for value in (1e12, -1e12, 0.5, True):
        r = api.post("/api/v1/outcomes", json={"ref": SPLIT, "key": f"k{value}",
                                               "value": value, "metric": "bounded"})
        assert r.status_code == 201, r.text


def test_values_stored_by_an_older_version_are_left_out_with_a_note(live, tmp_path):
    """An older promptrev accepted ±1.7e308 (and SQLite keeps inf): the pages must not fail."""
    server, api = live
    (db,) = glob.glob(str(server.registry / "**" / "promptrev-index.sqlite"), recursive=True)
    with sqlite3.connect(db) as conn:
        for i, value in enumerate([1.7e308, -1.7e308, float("inf"), 1.7e308, 2.0, 3.0, 4.0]):
            conn.execute("INSERT INTO ab_outcome (kind, name, label, version, key, metric, "
                         "value, created) VALUES ('prompt', 'summarize', 'staging', ?, ?, "
                         "'old', ?, 0)", (1 + i % 2, f"old-{i}", value))
    report, page = _pages_answer(server, api)
    (old,) = [m for m in report["metrics"] if m["metric"] == "old"]
    assert old["left_out"] == 4
    note = "old: 4 stored outcomes outside ±1e+12 or not finite left out"
    assert any(note in line for line in report["verdict"])
    assert note in page
    assert old["arms"]["v1"]["n"] + old["arms"]["v2"]["n"] == 3


@pytest.mark.parametrize("path", ["/api/v1/outcomes", "/api/v1/render", "/api/v1/reviews",
                                  "/api/v1/webhooks", "/v1/chat/completions"])
def test_a_body_nested_100000_levels_deep_is_refused(live, path):
    _, api = live
    for body in ("[" * 100_000 + "]" * 100_000,
                 '{"ref": ' + '{"a": ' * 100_000 + "1" + "}" * 100_001):
        _refused(api.post(path, content=body, headers=JSON), "nested deeper than 64 levels")
    nested = "[" * 60 + "]" * 60
    ok_depth = f'{{"ref": "{SPLIT}", "key": "deep", "value": 1, "x": {nested}}}'
    assert api.post("/api/v1/outcomes", content=ok_depth, headers=JSON).status_code == 201


def test_lone_surrogates_are_refused_naming_the_field(live):
    _, api = live
    _refused(api.post("/api/v1/outcomes", headers=JSON,
                      content=f'{{"ref": "{SPLIT}", "key": "a\\ud800b", "value": 1}}'),
             "'key'", "lone surrogate", "\\ud800")
    _refused(api.put("/api/v1/artifact", params={"name": "surrogate"}, headers=JSON,
                     content='{"text": "---\\nname: x\\n---\\nuser:\\nhi \\udfff"}'),
             "'text'", "lone surrogate")
    _refused(api.post("/api/v1/render", headers=JSON,
                      content='{"ref": "summarize", "variables": {"text": "\\udc80", '
                              '"max_words": 3}}'),
             "'variables.text'", "lone surrogate")
    _refused(api.post("/api/v1/render", headers=JSON,
                      content='{"ref": "summarize", "variables": {"\\ud800": 1}}'),
             "a key in field 'variables'", "lone surrogate")
    assert api.get("/api/v1/artifact", params={"ref": "surrogate"}).status_code == 404


def test_huge_integers_elsewhere_are_refused(live):
    _, api = live
    _refused(api.put("/api/v1/labels", params={"name": "summarize", "label": "staging"},
                     headers=JSON, content='{"version": %s}' % ("9" * 400)),
             "'version'", "integer too large")
    _refused(api.put("/api/v1/splits", params={"name": "summarize", "label": "staging"},
                     json={"arms": {"1": 2**62, "2": 1}}), "'arms.1 (a weight)'")
    _refused(api.put("/api/v1/splits", params={"name": "summarize", "label": "staging"},
                     json={"arms": {"9" * 5000: 1, "2": 1}}), "'arms (a version)'")
    _refused(api.get("/api/v1/diff", params={"a": "summarize@1", "b": "summarize@2",
                                              "variables": '{"text": NaN}'}),
             "field 'text' of query parameter 'variables'", "finite")


@pytest.mark.parametrize("extra, words", [
    ('"temperature": 1e999', ["'temperature'", "finite", "1e999"]),
    ('"temperature": NaN', ["'temperature'", "finite"]),
    ('"temperature": 7', ["'temperature'", "between 0 and 2"]),
    ('"top_p": -1', ["'top_p'", "between 0 and 1"]),
    ('"max_tokens": 1e999', ["'max_tokens'", "finite"]),
    ('"max_tokens": 2.5', ["'max_tokens'", "integer"]),
    ('"seed": ' + "7" * 400, ["'seed'", "integer too large"]),
    ('"base_model": ["gpt-4o-mini"]', ["'base_model'", "configured model", "list"]),
    ('"base_model": {"name": "x"}', ["'base_model'", "dict"]),
    ('"stream": true, "stream_options": [1]', ["'stream_options'", "object"]),
])
def test_v1_chat_completions_refuses_hostile_parameters(live, extra, words):
    _, api = live
    body = ('{"model": "prompt:summarize", "messages": [], "variables": '
            '{"text": "A long story.", "max_words": 3}, ' + extra + "}")
    _refused(api.post("/v1/chat/completions", content=body, headers=JSON), *words)


def test_a_backreference_pattern_is_refused_when_the_evaluation_starts(live):
    server, _ = live
    spec = ("name: hostile\ndataset: sentiment\nlimit: 2\nvariants:\n"
            "  - name: a\n    prompt: sentiment/zero-shot\n"
            "  - name: b\n    prompt: sentiment/few-shot\n"
            "scorers:\n  - regex: {pattern: '(a+)\\1'}\n")
    with closing(_browser(server)) as browser:
        form = browser.get("/eval/new").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        page = browser.post("/eval/new", data={"spec": spec, "csrf_token": csrf})
        runs = browser.get("/eval/").text
    assert page.status_code == 400, page.status_code
    assert "regex: invalid pattern" in page.text and "(a+)\\1" in page.text
    assert "no backreferences or lookaround" in page.text
    assert "hostile" not in runs  # nothing started


def test_the_regex_scorer_takes_linear_time_on_a_catastrophic_pattern():
    (scorer,) = build_scorers([{"regex": {"pattern": "^(a+)+$"}}])

    def timed(output: str) -> tuple[float, float | None]:
        start = time.perf_counter()
        (score,) = scorer.score([ScoreInput(Case("c", {}, None), output)])
        return time.perf_counter() - start, score.value

    # 26 characters first: Python's backtracking `re` takes seconds here (and would not
    # finish 10,000), so a regression fails this assertion instead of hanging the suite.
    short, value = timed("a" * 26 + "!")
    assert value == 0.0 and short < 0.2, short
    long, value = timed("a" * 10_000 + "!")
    assert value == 0.0 and long < 0.2, long
    assert timed("a" * 10_000)[1] == 1.0
    for pattern, why in [(r"(a)\1", "backreferences"), (r"(?=a)a", "lookaround"),
                         (r"(?<!x)a", "lookaround"), ("a" * 2001, "longer than 2000")]:
        with pytest.raises(InvalidRequest, match="regex: invalid pattern") as caught:
            build_scorers([{"regex": {"pattern": pattern}}])
        assert why in str(caught.value)


def test_a_dataset_line_nested_100000_levels_deep_is_an_invalid_file(live):
    _, api = live
    for line, why in [('{"id": "d", "vars": ' + '{"a": ' * 100_000 + "1" + "}" * 100_001,
                       "nested too deeply"),
                      ('{"id": "d", "vars": {"n": ' + "1" * 5000 + "}}", "4300 digits")]:
        r = api.put("/api/v1/artifact", params={"name": "hostile-cases", "kind": "dataset"},
                    json={"text": line + "\n"})
        assert r.status_code == 422, (r.status_code, r.text[:300])
        message = r.json()["error"]["message"]
        assert "hostile-cases.jsonl, line 1: invalid JSON" in message and why in message


def test_numbers_beyond_float_range_are_shown_not_raised():
    from promptrev.server.eval_pages import _num, _signed, axis

    for value in (10**400, -(10**400), float("inf"), float("nan"), None, "x"):
        assert _num(value) == "—" and _signed(value) == "—"
    assert _num(1.7e308) == "1.7e+308" and _signed(-2.5) == "-2.5"
    assert axis([1.7e308, -1.7e308, float("nan")], False)[:2] == (0.0, 1.0)
    low, high, ticks = axis([2.0, 4.0, float("inf")], False)
    assert low <= 2.0 and high >= 4.0 and ticks


def test_json_schema_patterns_run_in_linear_time_too():
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}},
              "patternProperties": {"^x(y+)+$": {"type": "integer"}},
              "additionalProperties": False}
    (scorer,) = build_scorers([{"json_schema": {"schema": schema}}])

    def timed(output: str) -> tuple[float, Score]:
        start = time.perf_counter()
        (score,) = scorer.score([ScoreInput(Case("c", {}, None), output)])
        return time.perf_counter() - start, score

    # 24 characters: about a second with Python's `re` (what jsonschema uses by default).
    for output in ('{"a": "%s!"}' % ("a" * 24), '{"x%s!": 1}' % ("y" * 24)):
        elapsed, score = timed(output)
        assert score.value == 0.0 and elapsed < 0.2, (elapsed, score)
    assert timed('{"a": "aaa", "xyy": 3}')[1].value == 1.0
    assert "not match" in timed('{"a": "%s!"}' % ("a" * 10_000))[1].detail
    assert "nested too deeply" in timed("[" * 100_000 + "]" * 100_000)[1].detail
    with pytest.raises(InvalidRequest, match=r"json_schema: invalid pattern '\(a\)\\1'"):
        build_scorers([{"json_schema": {"schema": {"type": "string", "pattern": r"(a)\1"}}}])


def test_a_prompts_output_schema_patterns_run_in_linear_time():
    """The runner checks a prompt's ``outputs`` (runner and /v1) with the same RE2 patterns."""
    from promptrev.runner.execute import check_output

    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}}
    start = time.perf_counter()
    error, parsed = check_output('{"a": "%s!"}' % ("a" * 10_000), schema)
    assert time.perf_counter() - start < 0.5
    assert parsed is None and "does not match" in error
    assert check_output('{"a": "aaa"}', schema) == (None, {"a": "aaa"})
    error, _ = check_output('{"a": "x"}', {"properties": {"a": {"pattern": r"(a)\1"}}})
    assert "cannot be used" in error and "backreferences" in error
    error, _ = check_output("[" * 100_000 + "]" * 100_000, schema)
    assert "nested too deeply" in error


@pytest.mark.parametrize("parameter", ["max_tokens: .inf", "temperature: .nan",
                                       "temperature: -.inf", "top_p: 1.0e+999"])
def test_non_finite_parameters_in_a_stored_prompt_are_refused_when_it_runs(live, parameter):
    """Refused when the prompt is saved, or (stored before saves checked it) when it runs."""
    _, api = live
    text = ("---\nname: hostile\nmodel:\n  api: chat\n  configuration:\n    type: openai\n"
            f"    name: gpt-4o-mini\n  parameters:\n    {parameter}\n---\nuser:\nhi\n")
    name = "hostile-" + parameter.split(":")[0].replace("_", "-")
    current = api.get("/api/v1/artifact", params={"ref": name})
    headers = {"If-Match": str(current.json()["version"])} if current.status_code == 200 else {}
    saved = api.put("/api/v1/artifact", params={"name": name}, headers=headers,
                    json={"text": text})
    if saved.status_code == 422:  # refused at save (bounded YAML, issue 14 item 3)
        assert "is not finite" in saved.json()["error"]["message"], saved.text
        return
    assert saved.status_code in (200, 201), saved.text
    _refused(api.post("/v1/chat/completions", json={"model": f"prompt:{name}"}),
             "invalid model parameter", parameter.split(":")[0].split("_")[0])


def test_numbers_in_references_and_query_strings_are_refused_not_crashed(live):
    """'²'.isdigit() is true but int('²') fails; 23 digits overflow a SQL integer."""
    server, api = live
    for ref in ("summarize@²", "summarize@" + "9" * 23, "summarize@٣"):
        r = api.get("/api/v1/artifact", params={"ref": ref})
        assert r.status_code in (400, 404), (ref, r.status_code, r.text[:200])
        assert "summarize" in r.json()["error"]["message"]
    r = api.get("/api/v1/diff", params={"a": "summarize@²", "b": "summarize"})
    assert r.status_code == 400, r.text[:200]
    with closing(_browser(server)) as browser:
        for path, statuses in [("/a/summarize?v=²", {400}), ("/eval/new?from=²", {200}),
                               ("/eval/?page=²", {200}), ("/eval/" + "9" * 25, {404}),
                               ("/a/summarize?v=" + "9" * 25, {400})]:
            r = browser.get(path)
            assert r.status_code in statuses, (path, r.status_code)


def test_experiments_answer_strict_json_even_when_a_statistic_is_undefined(live):
    """One outcome per arm: no interval exists; the answer says null, never NaN."""
    import json

    _, api = live
    arms: dict[int, str] = {}  # one caller key per version of the split
    for i in range(200):
        version = api.get("/api/v1/artifact", params={"ref": SPLIT, "key": f"solo-{i}"}
                          ).json()["version"]
        arms.setdefault(version, f"solo-{i}")
        if len(arms) == 2:
            break
    for key in arms.values():
        api.post("/api/v1/outcomes", json={"ref": SPLIT, "key": key, "value": 2.5,
                                           "metric": "solo"}).raise_for_status()
    r = api.get("/api/v1/experiments", params={"name": "summarize", "label": "staging"})
    assert r.status_code == 200

    def refuse(token):
        raise AssertionError(f"{token} in a JSON answer: {r.text[:300]}")

    report = json.loads(r.text, parse_constant=refuse)
    (solo,) = [m for m in report["metrics"] if m["metric"] == "solo"]
    (comparison,) = solo["comparisons"]
    # one outcome per arm: the always-valid test has not started, nothing is estimated
    assert comparison["sequential"]["started"] is False
    assert comparison["p_value"] is None and comparison["low"] is None
    assert comparison["sequential"]["low"] is None and not comparison["significant"]
