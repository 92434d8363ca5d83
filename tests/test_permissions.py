"""Roles, tokens, protected labels, CSRF and anonymous reads."""

from __future__ import annotations

import pytest

from promptrev.accounts import Accounts
from promptrev.errors import Conflict, InvalidName, Unauthorized

from .conftest import PROMPT, csrf_token, make_server_env


def test_viewer_reads_but_cannot_write(server_env):
    assert server_env.api("GET", "/artifact?ref=summarize", role="viewer").status_code == 200
    for method, path, body in [
        ("PUT", "/artifact?name=x", {"text": PROMPT}),
        ("DELETE", "/artifact?name=summarize", None),
        ("POST", "/restore", {"name": "summarize"}),
        ("PUT", "/labels?name=summarize&label=staging", {"version": 1}),
        ("DELETE", "/labels?name=summarize&label=staging", None),
        ("POST", "/rollback", {"name": "summarize", "to": 1}),
    ]:
        r = server_env.api(method, path, role="viewer", json=body)
        assert r.status_code == 403, (method, path, r.get_data(as_text=True))
        assert r.get_json()["error"]["details"]["needs"] == "editor"
    assert server_env.api("GET", "/artifact?ref=x").status_code == 404  # nothing written


def test_editor_cannot_move_protected_label(server_env):
    r = server_env.api("PUT", "/labels?name=summarize&label=staging", role="editor",
                       json={"version": 1})
    assert r.status_code == 200
    for method, path, body in [
        ("PUT", "/labels?name=summarize&label=production", {"version": 1}),
        ("POST", "/rollback", {"name": "summarize", "to": 1, "label": "production"}),
    ]:
        r = server_env.api(method, path, role="editor", json=body)
        assert r.status_code == 403 and "protected label 'production'" in r.get_json()[
            "error"]["message"]
    assert server_env.api("PUT", "/labels?name=summarize&label=production", role="admin",
                          json={"version": 1}).status_code == 200
    r = server_env.api("DELETE", "/labels?name=summarize&label=production", role="editor")
    assert r.status_code == 403
    assert server_env.api("GET", "/labels?name=summarize").get_json()["labels"] == {
        "production": 1, "staging": 1}


def test_every_write_is_attributed_to_the_user(server_env):
    server_env.api("PUT", "/artifact?name=mine", role="editor", json={"text": PROMPT})
    version = server_env.api("GET", "/versions?name=mine").get_json()["versions"][0]
    assert version["author"] == "editor" and version["email"] == "editor@localhost"


def test_revoked_token_is_refused_at_once(server_env):
    token, info = server_env.accounts.create_token("editor", "ci")
    headers = {"Authorization": f"Bearer {token}"}
    assert server_env.api("GET", "/me", role=None, headers=headers).status_code == 200
    server_env.accounts.revoke_token(info.id)
    r = server_env.api("GET", "/me", role=None, headers=headers)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    # A second process (another gunicorn worker) sees the revocation too.
    other = Accounts(server_env.app.extensions["promptrev"].settings.accounts_url)
    with pytest.raises(Unauthorized):
        other.authenticate(token)
    other.close()


def test_disabled_user_and_unknown_tokens(server_env):
    server_env.accounts.update_user("editor", disabled=True)
    assert server_env.api("GET", "/me", role="editor").status_code == 401
    for header in ["Bearer ", "Bearer prv_nope", "Basic YWRtaW46eA==", "Token x"]:
        r = server_env.api("GET", "/me", role=None, headers={"Authorization": header})
        assert r.status_code == 401


def test_tokens_are_hashed_at_rest(server_env, tmp_path):
    import sqlite3

    path = server_env.app.extensions["promptrev"].settings.accounts_url.removeprefix(
        "sqlite:///")
    dump = "\n".join(sqlite3.connect(path).iterdump())
    for token in server_env.tokens.values():
        assert token not in dump and token[:12] in dump  # only a prefix, to recognise it
    assert "admin-pw" not in dump


def test_csrf_less_form_posts_are_refused(server_env):
    client = server_env.login("admin")
    for path, data in [("/label", {"name": "summarize", "label": "staging", "to": "1"}),
                       ("/rollback", {"name": "summarize", "to": "1"}),
                       ("/edit", {"name": "summarize", "base": "1", "text": PROMPT}),
                       ("/account", {"label": "x"})]:
        r = client.post(path, data=data)
        assert r.status_code == 400 and "CSRF" in r.get_data(as_text=True), path
        r = client.post(path, data={**data, "csrf_token": "forged"})
        assert r.status_code == 400, path
    assert server_env.api("GET", "/labels?name=summarize").get_json()["labels"] == {}
    # The login form itself is protected too.
    r = server_env.app.test_client().post("/login", data={"name": "admin",
                                                           "password": "admin-pw"})
    assert r.status_code == 400


def test_web_roles(server_env):
    viewer = server_env.login("viewer")
    page = viewer.get("/a/summarize").get_data(as_text=True)
    r = viewer.post("/label", data={"name": "summarize", "label": "staging", "to": "1",
                                    "csrf_token": csrf_token(page)})
    assert r.status_code == 403
    editor = server_env.login("editor")
    page = editor.get("/a/summarize").get_data(as_text=True)
    assert editor.get("/label?name=summarize&label=production&to=1").status_code == 403
    r = editor.post("/label", data={"name": "summarize", "label": "production", "to": "1",
                                    "csrf_token": csrf_token(page)})
    assert r.status_code == 403
    r = editor.post("/label", data={"name": "summarize", "label": "staging", "to": "1",
                                    "csrf_token": csrf_token(page)})
    assert r.status_code == 302


def test_login_required_unless_anonymous_read(server_env, tmp_path):
    anon = server_env.app.test_client()
    assert anon.get("/").status_code == 302 and anon.get("/audit").status_code == 302
    assert anon.get("/a/summarize").location.startswith("/login?next=")
    assert server_env.api("GET", "/artifacts", role=None).status_code == 401
    r = anon.post("/login", data={"name": "admin", "password": "wrong",
                                  "csrf_token": csrf_token(anon.get("/login").get_data(True))})
    assert "wrong user name or password" in r.get_data(as_text=True)

    open_env = make_server_env(tmp_path / "open", anonymous_read=True)
    anon = open_env.app.test_client()
    assert anon.get("/").status_code == 200 and anon.get("/a/summarize").status_code == 200
    assert open_env.api("GET", "/artifacts", role=None).status_code == 200
    # Reads only: writes still need a token or a login.
    assert open_env.api("PUT", "/artifact?name=x", role=None,
                        json={"text": PROMPT}).status_code == 401
    assert anon.get("/edit?name=summarize").status_code == 302


def test_login_redirect_stays_on_this_server(server_env):
    client = server_env.app.test_client()
    page = client.get("/login").get_data(as_text=True)
    r = client.post("/login", data={"name": "admin", "password": "admin-pw",
                                    "csrf_token": csrf_token(page),
                                    "next": "https://evil.example/"})
    assert r.location == "/"


def test_accounts_validation(tmp_path):
    accounts = Accounts(f"sqlite:///{tmp_path}/a.sqlite")
    accounts.add_user("ada", "editor", password="pw")
    with pytest.raises(Conflict):
        accounts.add_user("ada", "viewer")
    with pytest.raises(InvalidName):
        accounts.add_user("../x", "viewer")
    with pytest.raises(InvalidName):
        accounts.add_user("bob", "owner")
    with pytest.raises(Unauthorized):
        accounts.login("ada", "nope")
    with pytest.raises(Unauthorized):
        accounts.login("nobody", "pw")
    assert accounts.login("ada", "pw").role == "editor"
    accounts.close()


def test_fresh_server_never_runs_open(tmp_path):
    from promptrev.server import Settings, prepare

    done = prepare(Settings(registry=str(tmp_path / "r"), seed_from=None))
    assert done.created_registry and done.admin_password and len(done.admin_password) >= 12
    accounts = Accounts(done.settings.accounts_url)
    assert [u.role for u in accounts.users()] == ["admin"]
    assert accounts.login("admin", done.admin_password).name == "admin"
    accounts.close()
    again = prepare(Settings(registry=str(tmp_path / "r"), seed_from=None))
    assert again.admin_password is None and not again.created_registry
