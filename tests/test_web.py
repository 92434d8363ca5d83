"""Web pages through Flask's test client: reading works without JavaScript."""

from __future__ import annotations

import re

from .conftest import PROMPT, csrf_token, variant


def _text(response) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data(as_text=True)


def _save(env, name, text, base=None, role="admin"):
    headers = {"If-Match": str(base)} if base else {}
    r = env.api("PUT", f"/artifact?name={name}", role=role, headers=headers,
                json={"text": text, "message": f"save {name} from {base}"})
    assert r.status_code in (200, 201), r.get_data(as_text=True)


def test_pages_have_no_scripts_and_no_cdn(server_env):
    client = server_env.login()
    for url in ["/", "/a/summarize", "/audit", "/account", "/edit?name=summarize"]:
        page = _text(client.get(url))
        assert "http://" not in page and "https://" not in page
        # Scripts only from the server's own static files, never inline (the CSP says so).
        for tag in re.findall(r"<script[^>]*>", page):
            assert re.fullmatch(r'<script src="/static/[\w.-]+\.js" defer>', tag), tag


def test_list_with_folders_search_and_labels(server_env):
    server_env.api("PUT", "/labels?name=summarize&label=production", json={"version": 1})
    client = server_env.login("viewer")
    page = _text(client.get("/"))
    assert 'href="/?prefix=sentiment"' in page  # a folder
    assert "/a/summarize" in page and "production → v1" in page
    assert "/a/sentiment/few-shot" not in page  # inside the folder, not at the top
    page = _text(client.get("/?prefix=sentiment"))
    assert "/a/sentiment/few-shot" in page and "/a/sentiment/zero-shot" in page
    page = _text(client.get("/?q=few"))
    assert "/a/sentiment/few-shot" in page and "/a/summarize" not in page
    page = _text(client.get("/?kind=dataset"))
    assert "/a/sentiment?kind=dataset" in page and "/a/summarize" not in page


def test_artifact_page_content_inputs_parameters_history(server_env):
    _save(server_env, "greet", PROMPT)
    _save(server_env, "greet", variant(PROMPT, 1), base=1, role="editor")
    server_env.api("PUT", "/labels?name=greet&label=production", json={"version": 1})
    page = _text(server_env.login("viewer").get("/a/greet"))
    assert '<span class="role">system:' in page  # role lines marked
    assert '<span class="cp">{{</span>' in page  # template tags highlighted
    inputs = page[page.index('id="inputs"'):page.index('id="parameters"')]
    assert "<code>who</code>" in inputs and "string" in inputs
    params = page[page.index('id="parameters"'):page.index("<h2>History")]
    assert "temperature" in params and "0.7" in params and "max_tokens" in params
    rows = re.findall(r'data-version="(\d+)"', page)
    assert rows == ["2", "1"]
    history = page[page.index('id="history"'):]
    assert "editor" in history and "save greet from 1" in history
    v1_row = history[history.index('data-version="1"'):]
    assert "production" in v1_row.split("</tr>")[0]
    # Viewers get no write controls.
    assert 'id="edit"' not in page and "data-rollback" not in page
    old = _text(server_env.login("viewer").get("/a/greet?v=1"))
    assert "version 1 of 2" in old and "variant 1" not in old


def test_diff_page_side_by_side_fields_rendered(server_env):
    changed = PROMPT.replace("temperature: 0.7", "temperature: 0.2").replace(
        "You are friendly.", "You are very friendly.").replace(
        "  who:\n    type: string\n", "  who:\n    type: string\n  tone:\n    type: string\n")
    _save(server_env, "greet", PROMPT)
    _save(server_env, "greet", changed, base=1)
    page = _text(server_env.login("viewer").get("/diff?name=greet&a=1&b=2"))
    contract = page[page.index('id="contract-changes"'):page.index('id="field-changes"')]
    assert '<code>inputs.tone</code> added' in contract and "Breaking" in contract
    assert "model.parameters.temperature: 0.7 → 0.2" in page
    assert '<mark class="add">very </mark>' in page or '<mark class="add">very</mark>' in page
    rendered = page[page.index('id="rendered"'):]
    assert 'You are <mark class="add">very </mark>friendly.' in rendered
    assert "Say hello to Ada." in rendered
    # Either order of the two versions works; the same version twice is a clear error.
    assert "v1 → v2" in _text(server_env.login("viewer").get("/diff?name=greet&a=2&b=1"))
    r = server_env.login("viewer").get("/diff?name=greet&a=2&b=2")
    assert r.status_code == 400 and "two different versions" in r.get_data(as_text=True)
    assert server_env.login("viewer").get("/diff?name=greet&a=1&b=9").status_code == 404


def test_edit_saves_with_message_and_conflict_loses_nothing(server_env):
    alice, bob = server_env.login("editor"), server_env.login("admin")
    form_a = _text(alice.get("/edit?name=summarize"))
    form_b = _text(bob.get("/edit?name=summarize"))
    assert 'name="base" value="1"' in form_a
    original = server_env.api("GET", "/artifact?ref=summarize").get_json()["text"]
    r = bob.post("/edit", data={"name": "summarize", "base": "1", "kind": "prompt",
                                "text": original.replace("precise", "careful"),
                                "message": "bob: careful", "csrf_token": csrf_token(form_b)})
    assert r.status_code == 302 and r.location.endswith("v=2")
    mine = original.replace("precise", "exact")
    r = alice.post("/edit", data={"name": "summarize", "base": "1", "kind": "prompt",
                                  "text": mine, "message": "alice: exact",
                                  "csrf_token": csrf_token(form_a)})
    page = _text(r)
    assert 'id="conflict"' in page and "bob: careful" in page
    assert "careful" in page[page.index('id="conflict"'):page.index('id="edit-form"')]
    assert "exact" in page[page.index('id="edit-text"'):]  # her text is still there
    assert 'name="base" value="1"' in page  # saving again does not silently win
    r = alice.post("/edit", data={"name": "summarize", "base": "1", "kind": "prompt",
                                  "text": mine, "message": "alice: exact",
                                  "csrf_token": csrf_token(page)})
    assert 'id="conflict"' in _text(r)
    assert 'name="overwrite" value="2"' in page  # overwriting bob is a named choice
    r = alice.post("/edit", data={"name": "summarize", "base": "1", "kind": "prompt",
                                  "text": mine, "message": "alice: exact", "overwrite": "2",
                                  "csrf_token": csrf_token(page)})
    assert r.status_code == 302
    versions = server_env.api("GET", "/versions?name=summarize").get_json()["versions"]
    assert [(v["version"], v["author"], v["message"]) for v in versions] == [
        (3, "editor", "alice: exact"), (2, "admin", "bob: careful"), (1, "promptrev",
                                                                      versions[2]["message"])]


def test_new_prompt_and_invalid_content(server_env):
    client = server_env.login("editor")
    form = _text(client.get("/edit?new=1"))
    r = client.post("/edit", data={"new": "1", "name": "team/new", "kind": "prompt",
                                   "base": "0", "text": PROMPT, "message": "add",
                                   "csrf_token": csrf_token(form)})
    assert r.status_code == 302 and "/a/team/new" in r.location
    r = client.post("/edit", data={"new": "1", "name": "team/bad", "kind": "prompt", "base": "0",
                                   "text": "---\nmodel: [\n---\nuser:\nhi\n", "message": "x",
                                   "csrf_token": csrf_token(form)})
    assert r.status_code == 422 and "line" in r.get_data(as_text=True)
    r = client.post("/edit", data={"new": "1", "name": "../etc", "kind": "prompt", "base": "0",
                                   "text": PROMPT, "csrf_token": csrf_token(form)})
    assert r.status_code == 400


def test_label_move_confirmation_shows_what_changes(server_env):
    _save(server_env, "greet", PROMPT)
    _save(server_env, "greet", variant(PROMPT, 1), base=1)
    server_env.api("PUT", "/labels?name=greet&label=production", json={"version": 2})
    client = server_env.login("admin")
    page = _text(client.get("/label?name=greet&label=production&to=1"))
    what = page[page.index('id="what-changes"'):]
    assert "v2 → <strong>v1</strong>" in what
    assert "variant 1" in page  # the side-by-side of what production will serve instead
    assert server_env.api("GET", "/labels?name=greet").get_json()["labels"] == {
        "production": 2}  # nothing moved yet
    r = client.post("/label", data={"name": "greet", "label": "production", "to": "1",
                                    "message": "revert", "csrf_token": csrf_token(page)})
    assert r.status_code == 302
    assert server_env.api("GET", "/labels?name=greet").get_json()["labels"] == {
        "production": 1}
    page = _text(client.get("/label?name=greet&label=production&remove=1"))
    assert "will be removed" in page
    client.post("/label", data={"name": "greet", "label": "production", "remove": "1",
                                "csrf_token": csrf_token(page)})
    assert server_env.api("GET", "/labels?name=greet").get_json()["labels"] == {}


def test_rollback_in_two_clicks(server_env):
    _save(server_env, "greet", PROMPT)
    _save(server_env, "greet", variant(PROMPT, 1), base=1)
    server_env.api("PUT", "/labels?name=greet&label=production", json={"version": 2})
    client = server_env.login("admin")
    page = _text(client.get("/a/greet"))
    link = re.search(r'href="([^"]+)" data-rollback="production"', page).group(1)
    confirm = _text(client.get(link.replace("&amp;", "&")))
    assert "v2 → <strong>v1</strong>" in confirm
    r = client.post("/rollback", data={"name": "greet", "to": "1", "label": "production",
                                       "csrf_token": csrf_token(confirm)})
    assert r.status_code == 302
    page = _text(client.get(r.location))
    assert "production → v1" in page and "rolled back greet@production to version 1" in page
    # Content rollback: a new version with the old text.
    confirm = _text(client.get("/rollback?name=greet&to=1"))
    assert "new version <strong>v3</strong>" in confirm
    client.post("/rollback", data={"name": "greet", "to": "1", "csrf_token": csrf_token(confirm)})
    latest = server_env.api("GET", "/artifact?ref=greet").get_json()
    assert latest["version"] == 3 and latest["text"] == PROMPT


def test_audit_page(server_env):
    _save(server_env, "greet", PROMPT, role="editor")
    server_env.api("PUT", "/labels?name=greet&label=staging", json={"version": 1},
                   role="editor")
    page = _text(server_env.login("viewer").get("/audit"))
    rows = re.findall(r'<tr class="action-(\w+)">', page)
    assert rows[:2] == ["label", "create"] and rows[-1] == "init"
    first = page[page.index('<tr class="action-label">'):].split("</tr>")[0]
    assert 'title="editor@localhost">editor<' in first and "staging" in first


def test_account_tokens_shown_once_and_revocable(server_env):
    client = server_env.login("editor")
    page = _text(client.get("/account"))
    r = client.post("/account", data={"label": "my app", "csrf_token": csrf_token(page)})
    assert r.status_code == 303 and r.location.endswith("/account")
    page = _text(client.get("/account"))
    token = re.search(r"<pre>(prv_[^<]+)</pre>", page).group(1)
    assert server_env.api("GET", "/me", role=None,
                          headers={"Authorization": f"Bearer {token}"}).status_code == 200
    again = _text(client.get("/account"))
    assert token not in again and token[:12] in again
    token_id = re.search(r'name="revoke" value="(\d+)"', again).group(1)
    client.post("/account", data={"revoke": token_id, "csrf_token": csrf_token(again)})
    assert server_env.api("GET", "/me", role=None,
                          headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_error_pages_are_html_for_people(server_env):
    client = server_env.login("viewer")
    r = client.get("/a/nope")
    assert r.status_code == 404 and r.mimetype == "text/html"
    assert "prompt &#39;nope&#39;" in r.get_data(as_text=True) or "nope" in r.get_data(
        as_text=True)
    r = client.get("/a/summarize?v=abc")
    assert r.status_code == 400 and "version number" in r.get_data(as_text=True)


def test_adapter_pages(server_env, tmp_path):
    from promptrev import Registry

    from .test_adapters import make_adapter

    with Registry.open(server_env.settings.registry) as reg:
        reg.push_adapter("tone", str(make_adapter(tmp_path / "a", seed=1)))
        reg.push_adapter("tone", str(make_adapter(tmp_path / "b", seed=2)), base=1)
    client = server_env.login("viewer")
    page = _text(client.get("/?kind=adapter"))
    assert "/a/tone?kind=adapter" in page
    page = _text(client.get("/a/tone?kind=adapter"))
    assert "peft_type" in page and "LORA" in page and 'data-version="2"' in page
    page = _text(client.get("/diff?name=tone&kind=adapter&a=1&b=2"))
    weights = page[page.index('id="weights"'):]
    assert "layers.0.self_attn.q_proj" in weights and "changed" in weights
    r = server_env.api("GET", "/artifact?ref=tone@1&kind=adapter")
    assert r.status_code == 200 and "adapter_model.safetensors" in r.get_json()["text"]


def test_a_large_folder_is_listed_a_page_at_a_time(server_env, tmp_path):
    from promptrev import Registry

    with Registry.open(server_env.settings.registry) as reg:
        with reg.transaction(message="many") as tx:
            for i in range(230):
                tx.save(f"bulk{i:03d}", variant(PROMPT, i))
            for i in range(7):
                tx.save(f"team/deep{i}", variant(PROMPT, i))
    client = server_env.login("viewer")
    page = _text(client.get("/"))
    names = re.findall(r'href="/a/(bulk\d+)\?', page)
    assert names == [f"bulk{i:03d}" for i in range(100)]  # the first page, in order
    assert 'href="/?prefix=team"' in page and 'class="folder-icon"' in page
    assert "📁" not in page  # drawn, not an emoji that may render as an empty box
    assert "1–100 of 23" in page and 'rel="next" href="/?page=2"' in page
    assert 'rel="prev"' not in page
    last = _text(client.get("/?page=3"))
    assert re.findall(r'href="/a/(bulk\d+)\?', last)[0] == "bulk200"
    assert 'rel="next"' not in last and 'rel="prev" href="/?page=2"' in last
    # the starter library's top-level artifacts sort after bulk*, on the last page too
    direct = int(re.search(r"1–100 of (\d+)", page).group(1))
    assert direct > 230 and f"201–{direct} of {direct}" in last
    assert len(re.findall(r'<tr>\s*<td><a href="/a/', last)) == direct - 200
    assert _text(client.get("/?page=99")) == last  # past the end: the last page
    searched = _text(client.get("/?q=bulk1&page=1"))
    assert re.findall(r'href="/a/(bulk\d+)\?', searched) == [f"bulk1{i:02d}" for i in range(100)]
    assert 'rel="next"' not in searched
    bad = client.get("/?page=two")
    assert bad.status_code == 400 and "&#39;page&#39; must be a page number" in bad.get_data(True)
