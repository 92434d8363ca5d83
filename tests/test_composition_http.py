"""Composition over HTTP, on a real ``promptrev serve`` on loopback: the API's render at a
commit (``at``), and the token counts of a change request to a prompt that includes a part.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import httpx
import pytest

from promptrev.runner.tokenizers import encoding

from .live import ADMIN_PASSWORD, LiveServer, start_server

MODEL = "model:\n  api: chat\n  configuration:\n    type: openai\n    name: gpt-4o-mini\n"


def part(text: str) -> str:
    return f"---\nname: tone\n---\n{text}\n"


def reply(extra: str = "") -> str:
    return ("---\nname: reply\n" + MODEL + "inputs:\n  question:\n    sample: Where is my "
            "order?\n---\nsystem:\n{% include \"shared/tone\" %}\n" + extra +
            "user:\n{{ question }}\n")


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[tuple[LiveServer, httpx.Client]]:
    server = start_server(tmp_path_factory.mktemp("composition"), workers=1)
    api = httpx.Client(base_url=server.url + "/api/v1", timeout=30,
                       headers={"Authorization": f"Bearer {server.token()}"})
    try:
        yield server, api
    finally:
        api.close()
        server.stop()


def _put(api: httpx.Client, name: str, text: str) -> dict:
    base = api.get("/artifact", params={"ref": name})
    headers = {"If-Match": f'"{base.json()["version"]}"'} if base.status_code == 200 else {}
    saved = api.put("/artifact", params={"name": name}, headers=headers, json={"text": text})
    assert saved.status_code in (200, 201), saved.text
    return saved.json()


def _commit_of(api: httpx.Client, name: str) -> str:
    return api.get("/artifact", params={"ref": name}).json()["commit"]


def test_render_at_a_commit_resolves_parts_as_main_had_them(live):
    _, api = live
    _put(api, "shared/tone", part("Be warm."))
    _put(api, "reply", reply())
    then = _commit_of(api, "reply")
    _put(api, "shared/tone", part("Be curt."))

    def system(**body) -> str:
        answer = api.post("/render", json={"ref": "reply", "variables": {"question": "q"},
                                           **body})
        assert answer.status_code == 200, answer.text
        return answer.json()["messages"][0]["content"]

    assert system() == "Be curt."
    assert system(at=then) == "Be warm."
    assert system(at=then[:8].upper()) == "Be warm."
    assert system(at=None) == "Be curt."

    for at, status, code, named in (
            ("0000000", 404, "not_found", "no commit '0000000' on main"),
            ("not-a-commit", 400, "invalid_reference", "'not-a-commit' is not a commit id"),
            ("%", 400, "invalid_reference", "'%' is not a commit id"),
            ("", 400, "invalid_reference", "'' is not a commit id")):
        refused = api.post("/render", json={"ref": "reply", "variables": {"question": "q"},
                                            "at": at})
        assert refused.status_code == status, (at, refused.text)
        error = refused.json()["error"]
        assert error["code"] == code and named in error["message"], error
    wrong_type = api.post("/render", json={"ref": "reply", "at": 12345})
    assert wrong_type.status_code == 400
    assert "field 'at' must be a str" in wrong_type.json()["error"]["message"]

    spec = httpx.get(live[0].url + "/api/v1/openapi.json").json()
    body = spec["paths"]["/api/v1/render"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    assert "at" in body["properties"] and re.fullmatch(
        body["properties"]["at"]["pattern"], then)


def test_a_change_request_counts_tokens_with_parts_resolved_at_its_head(live):
    server, api = live
    _put(api, "shared/tone", part("Be warm."))
    _put(api, "reply", reply())
    longer = "Be warm, and answer in the customer's own language, in two sentences at most."
    opened = api.post("/reviews", json={"title": "Longer tone", "edits": [
        {"name": "shared/tone", "text": part(longer)},
        {"name": "reply", "text": reply("Never promise a delivery date.\n")}]})
    assert opened.status_code == 201, opened.text
    number = opened.json()["number"]
    changes = {c["name"]: c for c in api.get(f"/reviews/{number}").json()["changes"]}
    tokens = changes["reply"]["tokens"]
    assert "unavailable" not in tokens, tokens
    assert tokens["exact"] and tokens["tokenizer"] == "tiktoken o200k_base"
    [system] = [m for m in tokens["messages"] if m["role"] == "system"]
    enc = encoding("o200k_base")
    # Both sides render with the parts as the request's head has them (as its rendered
    # diff does): the request's own tone, and the line it adds; counted as rendered.
    rendered = changes["reply"]["diff"]["rendered"]
    assert rendered["left"][0]["content"] == longer
    assert rendered["right"][0]["content"] == longer + "\n\nNever promise a delivery date."
    assert system["new"] - system["old"] == len(enc.encode(rendered["right"][0]["content"])) \
        - len(enc.encode(longer)) > 0
    assert tokens["total"]["delta"] == system["delta"]

    with httpx.Client(base_url=server.url) as browser:
        form = browser.get("/login").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        browser.post("/login", data={"name": "admin", "password": ADMIN_PASSWORD,
                                     "csrf_token": csrf})
        page = browser.get(f"/reviews/{number}").text
    assert html.escape(tokens["summary"]) in page
    assert "token counts unavailable" not in page
