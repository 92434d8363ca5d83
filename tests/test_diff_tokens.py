"""Tokens and cost in every diff (issue 18, part 3): the API's diff, the diff page, a change
request (page and API) and the label confirmation page show each rendered message's
tokens on both sides and the input cost per 1,000 calls, counted offline with the prompt's
model tokenizer and priced from the versioned price table (PROMPTREV_PRICES overrides)."""

from __future__ import annotations

import html
import re

import pytest

from promptrev.errors import InvalidRequest
from promptrev.runner.tokenizers import encoding

from .conftest import make_server_env

LINE = re.compile(r"^\+(\d+) tokens \(\+\d+ %\), \+\$[\d.]+ per 1,000 calls$")
LONGER = ("You are a meticulous editor. Keep every number and every name exactly as "
          "written, and never add facts that are not in the text.\n")


def _longer(env) -> str:
    text = env.api("GET", "/artifact?ref=summarize").get_json()["text"]
    head, sep, body = text.partition("\n---\n")
    return head + sep + body.replace("system:\n", "system:\n" + LONGER, 1)


def _save_v2(env) -> None:
    saved = env.api("PUT", "/artifact?name=summarize", headers={"If-Match": '"1"'},
                    json={"text": _longer(env), "message": "stricter"})
    assert saved.status_code == 200, saved.get_json()


def _added_tokens() -> int:
    """What the added sentence costs in gpt-4o-mini's tokenizer (the line break it adds
    to the system message included), counted apart from promptrev's own code."""
    enc = encoding("o200k_base")
    return len(enc.encode(LONGER + "x")) - len(enc.encode("x"))


def test_api_and_page_diffs_show_tokens_and_cost(tmp_path):
    env = make_server_env(tmp_path)
    _save_v2(env)
    diff = env.api("GET", "/diff?a=summarize@1&b=summarize@2").get_json()
    tokens = diff["tokens"]
    assert tokens["exact"] and tokens["tokenizer"] == "tiktoken o200k_base"
    assert LINE.match(tokens["summary"]), tokens["summary"]
    [system] = [m for m in tokens["messages"] if m["role"] == "system"]
    assert system["change"] == "changed"
    assert abs(system["delta"] - _added_tokens()) <= 1  # a boundary token may merge
    assert tokens["total"]["delta"] == sum(m["delta"] for m in tokens["messages"])
    assert tokens["cost"]["prices"]["version"] and tokens["cost"]["delta"] > 0
    assert "input tokens only" in tokens["cost"]["basis"]
    # A dataset diff has no messages, so no token counts.
    assert "tokens" not in env.api("GET", "/diff?a=sentiment@1&b=sentiment@1&kind=dataset"
                                   ).get_json()

    page = env.login("viewer").get("/diff?name=summarize&a=1&b=2").get_data(as_text=True)
    section = page[page.index('id="tokens"'):]
    assert html.escape(tokens["summary"]) in section
    assert "tiktoken o200k_base" in section and tokens["cost"]["prices"]["version"] in section


def test_change_request_and_label_confirmation_show_the_delta(tmp_path):
    env = make_server_env(tmp_path)
    opened = env.api("POST", "/reviews", role="editor", json={
        "title": "Stricter", "edits": [{"name": "summarize", "text": _longer(env)}]})
    number = opened.get_json()["number"]
    [change] = env.api("GET", f"/reviews/{number}", role="viewer").get_json()["changes"]
    assert LINE.match(change["tokens"]["summary"]), change["tokens"]
    page = env.login("viewer").get(f"/reviews/{number}").get_data(as_text=True)
    assert html.escape(change["tokens"]["summary"]) in page[page.index('id="tokens-1"'):]

    _save_v2(env)
    assert env.api("PUT", "/labels?name=summarize&label=staging",
                   json={"version": 1}).status_code == 200
    confirm = env.login().get("/label?name=summarize&label=staging&to=2").get_data(True)
    moved = env.api("GET", "/diff?a=summarize@1&b=summarize@2").get_json()["tokens"]
    assert "Tokens and cost against v1" in confirm
    assert html.escape(moved["summary"]) in confirm


def test_an_operators_price_table_prices_every_diff(tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text("version: team-2026-12\nas_of: '2026-12-01'\n"
                      "prices:\n  gpt-4o-mini: {input_per_1m: 1000.0, output_per_1m: 0}\n")
    env = make_server_env(tmp_path, prices_file=str(prices))
    _save_v2(env)
    tokens = env.api("GET", "/diff?a=summarize@1&b=summarize@2").get_json()["tokens"]
    assert tokens["cost"]["prices"]["version"] == "team-2026-12"
    per_call = tokens["total"]["delta"] * 1000.0 / 1_000_000
    assert tokens["cost"]["delta"] == pytest.approx(per_call * 1000)

    broken = tmp_path / "broken.yaml"
    broken.write_text("prices:\n  gpt-4o-mini: {input_per_1m: cheap}\n")
    with pytest.raises(InvalidRequest, match="gpt-4o-mini"):
        make_server_env(tmp_path / "other", prices_file=str(broken))


def test_the_cli_diff_shows_tokens_and_cost_offline(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from .live import ROOT

    env = {**os.environ, "PROMPTREV_REGISTRY": str(tmp_path / "reg"),
           "PROMPTREV_AUTHOR": "T <t@example.org>"}
    env.pop("OPENAI_API_KEY", None)

    def cli(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "promptrev.cli", *args], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    cli("init")
    cli("import", str(ROOT / "prompts"))
    text = (ROOT / "prompts" / "summarize.prompty").read_text()
    changed = tmp_path / "summarize.prompty"
    changed.write_text(text.replace("system:\n", "system:\n" + LONGER, 1))
    cli("save", str(changed), "--name", "summarize", "--base", "1")
    tokens = json.loads(cli("diff", "summarize", "--json"))["tokens"]
    assert LINE.match(tokens["summary"]) and tokens["exact"]
    assert abs(tokens["total"]["delta"] - _added_tokens()) <= 1
    shown = cli("diff", "summarize")
    assert f"tokens: {tokens['summary']}" in shown and "tiktoken o200k_base" in shown
