"""``promptrev serve`` for real: gunicorn workers sharing one registry, accounts from the CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx

from .conftest import PROMPT, variant
from .live import ROOT, start_server


def test_workers_share_one_registry_safely(tmp_path):
    server = start_server(tmp_path, workers=3)
    try:
        headers = {"Authorization": f"Bearer {server.token()}"}
        api = server.url + "/api/v1"
        httpx.put(f"{api}/artifact", params={"name": "shared"}, headers=headers,
                  json={"text": PROMPT}).raise_for_status()

        def edit(n: int) -> int:
            with httpx.Client(headers=headers, timeout=60) as http:
                base = http.get(f"{api}/artifact", params={"ref": "shared"}).json()["version"]
                r = http.put(f"{api}/artifact", params={"name": "shared"},
                             headers={"If-Match": str(base)},
                             json={"text": variant(PROMPT, n), "message": f"edit {n}"})
                assert r.status_code in (200, 409), r.text
                return r.status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(edit, range(1, 41)))
        accepted = statuses.count(200)
        assert accepted >= 1 and accepted + statuses.count(409) == 40
        history = httpx.get(f"{api}/versions", params={"name": "shared"},
                            headers=headers).json()["versions"]
        assert len(history) == accepted + 1  # every accepted write exactly once
        assert len({v["message"] for v in history}) == len(history)
        assert "ok" in server.cli("fsck")
    finally:
        server.stop()


def test_fresh_server_prints_an_admin_password_and_needs_login(tmp_path):
    server = start_server(tmp_path, workers=1, env={"PROMPTREV_ADMIN_PASSWORD": ""})
    try:
        assert httpx.get(server.url + "/api/v1/artifacts").status_code == 401
        page = httpx.get(server.url + "/", follow_redirects=False)
        assert page.status_code == 302 and "/login" in page.headers["location"]
        log = server.log.read_text()
        password = re.search(r"created user 'admin' \(role admin\) with password:\s+(\S+)",
                             log).group(1)
        with httpx.Client(base_url=server.url) as browser:
            form = browser.get("/login").text
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
            r = browser.post("/login", data={"name": "admin", "password": password,
                                             "csrf_token": csrf})
            assert r.status_code == 302
            assert "summarize" in browser.get("/").text  # seeded from prompts/
    finally:
        server.stop()


def test_cli_users_and_tokens_across_workers(tmp_path):
    server = start_server(tmp_path, workers=2)
    try:
        out = server.cli("user", "add", "dana", "--role", "viewer")
        assert "created user 'dana' (viewer)" in out and "password:" in out
        token = server.token("dana")
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(4):  # whichever worker answers
            assert httpx.get(server.url + "/api/v1/me", headers=headers).json()["user"][
                "name"] == "dana"
        r = httpx.put(server.url + "/api/v1/artifact", params={"name": "x"}, headers=headers,
                      json={"text": PROMPT})
        assert r.status_code == 403
        listing = server.cli("token", "list", "dana")
        token_id = listing.split()[0]
        assert token not in listing
        server.cli("token", "revoke", token_id)
        for _ in range(6):  # every worker refuses it at once
            assert httpx.get(server.url + "/api/v1/me", headers=headers).status_code == 401
        server.cli("user", "set", "dana", "--role", "editor")
        token = server.token("dana")
        r = httpx.put(server.url + "/api/v1/artifact", params={"name": "x"},
                      headers={"Authorization": f"Bearer {token}"}, json={"text": PROMPT})
        assert r.status_code == 201 and r.json()["author"] == "dana"
        audit = subprocess.run([sys.executable, "-m", "promptrev.cli", "--registry",
                                str(server.registry),
                                "audit", "--limit", "1"], capture_output=True, text=True,
                               cwd=ROOT, timeout=60)
        assert "create" in audit.stdout and "dana" in audit.stdout
    finally:
        server.stop()
