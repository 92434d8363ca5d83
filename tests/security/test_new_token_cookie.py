"""The account page's new API token, replayed against a real ``promptrev serve``.

The page stashes a freshly created token in the session until the one page that shows it
(post/redirect/get). Flask's session cookie is signed, not encrypted: whoever holds a copy
of the cookie (a proxy or browser store, an old copy kept after the user logged out, since
logging out makes the server refuse the cookie but cannot make the copy unreadable) could
read a working API token out of it with base64 and zlib alone. The token must travel
sealed, readable only by the server, and still be shown once and work.
"""

from __future__ import annotations

import base64
import re
import zlib

import pytest
import requests

from tests.live import start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_server(tmp_path_factory.mktemp("token-cookie"), workers=1)
    try:
        live.cli("user", "add", "erin", "--role", "editor", "--password", "erin-pw-123")
        yield live
    finally:
        live.stop()


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "page has no CSRF token"
    return match.group(1)


def _cookie_payload(cookie: str) -> bytes:
    """What anyone holding Flask's session cookie can read, without the server's key."""
    compressed = cookie.startswith(".")
    body = cookie.lstrip(".").split(".", 1)[0]
    data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    return zlib.decompress(data) if compressed else data


def test_new_token_is_not_readable_from_the_session_cookie(server) -> None:
    s = requests.Session()
    page = s.get(server.url + "/login").text
    r = s.post(server.url + "/login", data={"name": "erin", "password": "erin-pw-123",
                                            "csrf_token": _csrf(page)}, allow_redirects=False)
    assert r.status_code == 302
    page = s.get(server.url + "/account").text
    r = s.post(server.url + "/account", data={"csrf_token": _csrf(page), "label": "leak"},
               allow_redirects=False)
    assert r.status_code == 303 and "prv_" not in r.headers["Location"]
    stashed = r.cookies.get("session") or s.cookies.get("session")
    assert stashed, "the post set no session cookie"
    copy = _cookie_payload(stashed)  # what a copy of the cookie holds, read offline

    shown = s.get(server.url + "/account")
    assert shown.headers.get("Cache-Control") == "no-store"
    match = re.search(r"<pre>(prv_[^<]+)</pre>", shown.text)
    assert match, "the new token was not shown"
    token = match.group(1)
    assert token.encode() not in copy, "the API token can be read from the session cookie"
    # It works, and it is shown only once.
    me = requests.get(server.url + "/api/v1/artifacts",
                      headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert token not in s.get(server.url + "/account").text
    # A copy of the cookie kept after logging out gives nothing either.
    s.post(server.url + "/logout", data={"csrf_token": _csrf(s.get(
        server.url + "/account").text)})
    replay = requests.get(server.url + "/account", cookies={"session": stashed},
                          allow_redirects=False)
    assert token not in replay.text
