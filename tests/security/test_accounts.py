"""Attacks on accounts replayed against a real ``promptrev serve``: password guessing,
user-name probing by timing, replayed session cookies and CSRF tokens, framing and
sniffing (missing security headers)."""

from __future__ import annotations

import re
import statistics
import time

import pytest
import requests

from tests.live import ADMIN_PASSWORD, start_server

# The main server: generous per-client limits, so that only what a test means to trip trips.
MAIN_ENV = {"PROMPTREV_LOGIN_FREE_ATTEMPTS": "3", "PROMPTREV_LOGIN_BACKOFF_BASE": "2",
            "PROMPTREV_LOGIN_CLIENT_FREE_ATTEMPTS": "1000",
            "PROMPTREV_LOGIN_RATE_LIMIT": "1000 per minute",
            "PROMPTREV_AUTH_FAILURE_LIMIT": "1000 per minute"}
USERS = {"bob": "bob-pw-123", "carol": "carol-pw-123", "dave": "dave-pw-123",
         "erin": "erin-pw-123", "frank": "frank-pw-123"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_server(tmp_path_factory.mktemp("accounts"), env=MAIN_ENV)
    try:
        for name, password in USERS.items():
            live.cli("user", "add", name, "--role", "editor", "--password", password)
        yield live
    finally:
        live.stop()


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "page has no CSRF token"
    return match.group(1)


def _login(url: str, name: str, password: str, session: requests.Session | None = None
           ) -> tuple[requests.Session, requests.Response]:
    """Post the real login form (with its CSRF token); no redirects followed."""
    session = session or requests.Session()
    token = _csrf(session.get(url + "/login").text)
    answer = session.post(url + "/login", data={"name": name, "password": password,
                                                "csrf_token": token},
                          allow_redirects=False)
    return session, answer


def _cookie_only(url: str, source: requests.Session) -> requests.Session:
    """A new client that replays ``source``'s session cookie (what a thief holds)."""
    thief = requests.Session()
    thief.cookies.set("session", source.cookies.get("session"),
                      domain=source.cookies.list_domains()[0] or "127.0.0.1")
    return thief


# ---- password guessing -----------------------------------------------------------------
def test_wrong_passwords_back_off_per_account(server):
    url = server.url
    for _ in range(4):  # 3 free failures, the 4th starts a 2 s backoff
        _, answer = _login(url, "bob", "guess")
        assert answer.status_code == 200 and "wrong user name or password" in answer.text
    _, refused = _login(url, "bob", "another guess")
    assert refused.status_code == 429, refused.text[:300]
    assert "too many failed logins for user &#39;bob&#39;" in refused.text
    first_wait = int(refused.headers["Retry-After"])
    assert 1 <= first_wait <= 2
    # while backing off, even the right password is not checked
    _, refused = _login(url, "bob", USERS["bob"])
    assert refused.status_code == 429
    time.sleep(first_wait + 0.2)
    _, answer = _login(url, "bob", "guess")  # the 5th failure: the wait doubles
    assert answer.status_code == 200
    _, refused = _login(url, "bob", "guess")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > first_wait
    time.sleep(int(refused.headers["Retry-After"]) + 0.2)
    _, answer = _login(url, "bob", USERS["bob"])
    assert answer.status_code == 302  # the right password, once the wait is over
    for _ in range(3):  # ...and a success starts the count afresh
        assert _login(url, "bob", "guess")[1].status_code == 200


def test_backoff_is_shared_by_every_worker(server):
    # Each login form comes from a fresh connection: gunicorn hands them to either of
    # the two workers; the count lives in the accounts database, not in a worker.
    statuses = [_login(server.url, "carol", f"guess {i}")[1].status_code for i in range(8)]
    assert statuses[:4] == [200] * 4 and set(statuses[4:]) == {429}


def test_spraying_many_accounts_backs_off_per_client(tmp_path):
    live = start_server(tmp_path, env={"PROMPTREV_LOGIN_CLIENT_FREE_ATTEMPTS": "4",
                                       "PROMPTREV_LOGIN_RATE_LIMIT": "8 per minute",
                                       "PROMPTREV_AUTH_FAILURE_LIMIT": "5 per minute"})
    try:
        messages = []
        for i in range(40):  # a different name each time: no account backs off
            _, answer = _login(live.url, f"user{i}", "guess")
            messages.append((answer.status_code, answer.text))
            if "too many login attempts from this client" in answer.text:
                break
        statuses = [status for status, _ in messages]
        assert statuses[:5] == [200] * 5
        assert statuses[5] == 429 and "too many failed logins from this client" in \
            messages[5][1]
        # Flask-Limiter's request limit on the form (8 a minute per worker) comes next
        assert "too many login attempts from this client (limit: 8 per minute)" in \
            messages[-1][1] and statuses[-1] == 429

        # asking without credentials (Git does, for the challenge) is not guessing
        for _ in range(12):  # more than twice the limit: a worker would have tripped
            assert requests.get(live.url + "/api/v1/me").status_code == 401
        # guessing API tokens: refused tokens are limited per client too
        answers = [requests.get(live.url + "/api/v1/me",
                                headers={"Authorization": f"Bearer prv_guess{i}"})
                   for i in range(30)]
        codes = [a.status_code for a in answers]
        assert codes[:5] == [401] * 5 and 429 in codes
        limited = answers[codes.index(429)]
        assert int(limited.headers["Retry-After"]) > 0
        assert limited.json()["error"]["code"] == "too_many_requests"
        assert "too many refused credentials" in limited.json()["error"]["message"]
    finally:
        live.stop()


# ---- probing user names by timing ------------------------------------------------------
def test_unknown_users_cost_the_same_as_known_ones(server):
    known, unknown = [], []
    for i in range(6):
        session = requests.Session()
        token = _csrf(session.get(server.url + "/login").text)
        start = time.perf_counter()
        answer = session.post(server.url + "/login", allow_redirects=False, data={
            "name": "dave", "password": USERS["dave"], "csrf_token": token})
        known.append(time.perf_counter() - start)
        assert answer.status_code == 302
        session = requests.Session()
        token = _csrf(session.get(server.url + "/login").text)
        start = time.perf_counter()
        answer = session.post(server.url + "/login", allow_redirects=False, data={
            "name": f"nobody-{i}", "password": "whatever", "csrf_token": token})
        unknown.append(time.perf_counter() - start)
        assert answer.status_code == 200
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 <= ratio <= 2.0, (known, unknown)


# ---- replayed sessions and CSRF tokens -------------------------------------------------
def test_session_cookie_is_refused_after_logout(server):
    session, answer = _login(server.url, "erin", USERS["erin"])
    assert answer.status_code == 302
    stolen = _cookie_only(server.url, session)
    assert stolen.get(server.url + "/account", allow_redirects=False).status_code == 200
    page = session.get(server.url + "/account").text
    logout = session.post(server.url + "/logout", data={"csrf_token": _csrf(page)},
                          allow_redirects=False)
    assert logout.status_code == 302
    replay = stolen.get(server.url + "/account", allow_redirects=False)
    assert replay.status_code == 302 and "/login" in replay.headers["Location"]


def test_session_cookie_is_refused_after_a_password_change(server):
    session, answer = _login(server.url, "frank", USERS["frank"])
    assert answer.status_code == 302
    assert session.get(server.url + "/account", allow_redirects=False).status_code == 200
    server.cli("user", "set", "frank", "--password", "frank-new-pw-456")
    replay = session.get(server.url + "/account", allow_redirects=False)
    assert replay.status_code == 302 and "/login" in replay.headers["Location"]
    assert _login(server.url, "frank", "frank-new-pw-456")[1].status_code == 302


def test_csrf_token_from_before_login_is_refused_after_login(server):
    session = requests.Session()
    planted = _csrf(session.get(server.url + "/login").text)  # what a fixating page knows
    answer = session.post(server.url + "/login", allow_redirects=False, data={
        "name": "admin", "password": ADMIN_PASSWORD, "csrf_token": planted})
    assert answer.status_code == 302
    forged = session.post(server.url + "/account", data={"label": "forged",
                                                         "csrf_token": planted})
    assert forged.status_code == 400 and "csrf" in forged.text.lower()
    fresh = _csrf(session.get(server.url + "/account").text)
    assert fresh != planted
    made = session.post(server.url + "/account", data={"label": "mine", "csrf_token": fresh})
    assert made.status_code == 200 and "prv_" in made.text


# ---- security headers ------------------------------------------------------------------
def _assert_protected(answer: requests.Response) -> None:
    headers = answer.headers
    csp = headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, (answer.url, csp)
    assert "unsafe-inline" not in csp
    assert headers.get("X-Frame-Options") == "DENY", answer.url
    assert headers.get("X-Content-Type-Options") == "nosniff", answer.url
    assert headers.get("Referrer-Policy") == "same-origin", answer.url
    assert "Strict-Transport-Security" not in headers  # plain HTTP on loopback


def test_security_headers_on_every_kind_of_answer(server):
    url, token = server.url, server.token()
    bearer = {"Authorization": f"Bearer {token}"}
    session, _ = _login(url, "admin", ADMIN_PASSWORD)
    answers = [
        requests.get(url + "/login"),  # a page
        session.get(url + "/"),
        requests.get(url + "/static/app.css"),
        requests.get(url + "/api/v1/me", headers=bearer),  # an API answer
        requests.get(url + "/api/v1/me"),  # an API error (401)
        requests.get(url + "/no/such/page"),  # an error page (404)
        requests.get(url + "/v1/models", headers=bearer),
        requests.get(url + "/git/registry.git/info/refs?service=git-upload-pack"),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 401, 404, 200, 401]
    # the label read: the first is built by Flask, the next served from cache below it
    first = requests.get(url + "/api/v1/artifact?ref=summarize", headers=bearer)
    again = requests.get(url + "/api/v1/artifact?ref=summarize", headers=bearer)
    cached = requests.get(url + "/api/v1/artifact?ref=summarize",
                          headers={**bearer, "If-None-Match": first.headers["ETag"]})
    assert (first.status_code, again.status_code, cached.status_code) == (200, 200, 304)
    for answer in [*answers, first, again, cached]:
        _assert_protected(answer)


def test_the_fast_label_read_itself_adds_the_headers(tmp_path):
    # In process, at the WSGI layer: proves the cached answer (not Flask) carries them.
    from promptrev.server.fastpath import FastReads
    from tests.conftest import make_server_env
    from tests.test_fastpath import _environ

    env = make_server_env(tmp_path)
    try:
        headers = env.headers("viewer")
        assert env.client.get("/api/v1/artifact?ref=summarize", headers=headers
                              ).status_code == 200
        layer = env.app.wsgi_app
        assert isinstance(layer, FastReads)
        environ = _environ("/api/v1/artifact", "ref=summarize", headers)
        assert layer._cached(environ) is not None  # this read is answered below Flask
        seen = {}
        layer(environ, lambda status, sent: seen.update(status=status, headers=dict(sent)))
        assert seen["status"] == "200 OK"
        assert seen["headers"]["X-Frame-Options"] == "DENY"
        assert seen["headers"]["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in seen["headers"]["Content-Security-Policy"]
        assert seen["headers"]["Referrer-Policy"] == "same-origin"
    finally:
        env.app.extensions["promptrev"].close()
