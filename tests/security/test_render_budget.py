"""Attack: templates that hold a worker or fill its memory, on every path that renders.

Replays issue 14 item 2 against a real ``promptrev serve``: ``{{ 'a'*10**8 }}``,
``|center(10**8)``, ``'{:>100000000}'.format(1)``, a 10^8-iteration loop and a recursive
macro, through the API's render and diff, the diff, label and review pages, ``/v1``,
``promptrev.Client`` and an evaluation run. Each must be refused quickly with a 422-style
error that names the limit, and the server must keep answering others meanwhile.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

import httpx
import pytest
import yaml

from promptrev import Client
from promptrev.errors import RenderFailed, RenderLimitExceeded

from ..live import ADMIN_PASSWORD, ROOT, start_server

SAFE = "---\ninputs:\n  who: {default: you}\n---\nuser:\nHello {{ who }}\n"
BOMBS = {
    "repeat": ("{{ 'a' * 10**8 }}", "size"),
    "center": ("{{ 'x' | center(10**8) }}", "size"),
    "format": ("{{ '{:>100000000}'.format(1) }}", "size"),
    "loop": ("{% for i in range(10000) %}{% for j in range(10000) %}."
             "{% endfor %}{% endfor %}", "iterations|time"),  # whichever comes first
    "slow": ("{% for k in range(9) %}{% for i in range(90000) %}"
             "{% if ('a' * 1000000)|length == 0 %}x{% endif %}{% endfor %}{% endfor %}", "time"),
    "macro": ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "depth"),
    # Found by an attack on the first version: cheap to build, costly to compare or print.
    "compare": ("{% set s = 'a' * 1000000 %}{% set t = 'a' * 999999 ~ 'a' %}"
                "{% set A = [s] * 99999 + ['x'] %}{% set B = [t] * 99999 + ['y'] %}"
                "{{ B in [A] * 3 }}", "size"),
    "print-list": ("{% set s = 'a' * 10000 %}{{ [s] * 100000 }}", "size"),
    "batch": ("{{ ([1] | batch(100000000, 0) | first) | length }}", "iterations"),
    "sum": ("{{ ([[1] * 10] * 1000) | sum(start=[]) | length }}", "size"),
}


def _bomb(body: str) -> str:
    return f"user:\n{body}\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_server(tmp_path_factory.mktemp("render"), workers=2)
    try:
        token = live.token("admin")
        headers = {"Authorization": f"Bearer {token}"}
        api = live.url + "/api/v1"
        for name, (body, _) in BOMBS.items():
            # version 1 is harmless, version 2 the bomb; 'staging' holds version 1
            for base, text in ((0, SAFE), (1, _bomb(body))):
                r = httpx.put(f"{api}/artifact", params={"name": f"bomb-{name}"},
                              headers={**headers, "If-Match": f'"{base}"'} if base else headers,
                              json={"text": text}, timeout=30)
                assert r.status_code in (200, 201), r.text
            r = httpx.put(f"{api}/labels", params={"name": f"bomb-{name}", "label": "staging"},
                          headers=headers,
                          json={"version": 1}, timeout=30)
            assert r.status_code == 200, r.text
        live.headers = headers
        yield live
    finally:
        live.stop()


def _limit_error(response: httpx.Response, limit: str) -> None:
    assert response.status_code == 422, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert error["code"] == "render_limit", error
    assert error["details"]["limit"] in limit.split("|")
    assert "render limit reached" in error["message"]


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_api_render_is_refused_quickly_naming_the_limit(server, name):
    started = time.monotonic()
    r = httpx.post(server.url + "/api/v1/render", headers=server.headers,
                   json={"ref": f"bomb-{name}@2"}, timeout=60)
    elapsed = time.monotonic() - started
    _limit_error(r, BOMBS[name][1])
    assert len(r.content) < 10_000
    assert elapsed < 5, f"render held the worker {elapsed:.1f} s"


def test_v1_chat_completions_is_refused_before_any_model_runs(server):
    for name, (_, limit) in BOMBS.items():
        r = httpx.post(server.url + "/v1/chat/completions", headers=server.headers,
                       json={"model": f"prompt:bomb-{name}@2"}, timeout=60)
        _limit_error(r, limit)


def test_api_diff_reports_the_limit_on_the_side_that_reached_it(server):
    for name in BOMBS:
        r = httpx.get(server.url + "/api/v1/diff", headers=server.headers,
                      params={"a": f"bomb-{name}@1", "b": f"bomb-{name}@2"}, timeout=60)
        assert r.status_code == 200, r.text[:300]
        rendered = r.json()["rendered"]
        assert rendered["left_error"] is None
        assert "render limit reached" in rendered["right_error"]
        assert len(r.content) < 100_000


def _login(server) -> httpx.Client:
    web = httpx.Client(base_url=server.url, timeout=60, follow_redirects=True)
    page = web.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = web.post("/login", data={"name": "admin", "password": ADMIN_PASSWORD,
                                 "csrf_token": token})
    assert r.status_code == 200 and "/logout" in r.text, r.text[:500]
    return web


def test_diff_label_and_review_pages_show_the_limit_instead_of_failing(server):
    web = _login(server)
    for name in BOMBS:
        started = time.monotonic()
        page = web.get("/diff", params={"name": f"bomb-{name}", "a": 1, "b": 2})
        assert page.status_code == 200 and "render limit reached" in page.text
        assert len(page.content) < 200_000
        confirm = web.get("/label", params={"name": f"bomb-{name}", "label": "staging",
                                            "to": 2})
        # the confirmation renders both sides for its diff (it shows the text diff)
        assert confirm.status_code == 200 and 'id="confirm"' in confirm.text
        assert time.monotonic() - started < 10
    opened = httpx.post(server.url + "/api/v1/reviews", headers=server.headers, timeout=60,
                        json={"title": "bomb", "edits": [
                            {"name": "bomb-macro", "text": _bomb(BOMBS["repeat"][0])}]})
    assert opened.status_code == 201, opened.text
    review = web.get(f"/reviews/{opened.json()['number']}")
    assert review.status_code == 200 and "render limit reached" in review.text


def test_the_server_keeps_answering_while_bombs_are_rendered(server):
    results: list[int] = []

    def bomb() -> None:
        r = httpx.post(server.url + "/api/v1/render", headers=server.headers,
                       json={"ref": "bomb-slow@2"}, timeout=60)
        results.append(r.status_code)

    threads = [threading.Thread(target=bomb) for _ in range(3)]
    for t in threads:
        t.start()
    started = time.monotonic()
    ok = httpx.post(server.url + "/api/v1/render", headers=server.headers,
                    json={"ref": "bomb-slow@1"}, timeout=60)
    assert ok.status_code == 200 and ok.json()["messages"][0]["content"] == "Hello you"
    assert time.monotonic() - started < 10
    for t in threads:
        t.join()
    assert results == [422, 422, 422]


def test_client_render_is_held_to_the_budget(server):
    token = server.headers["Authorization"].split()[1]
    with Client(server.url, token) as client:
        for name, (_, limit) in BOMBS.items():
            started = time.monotonic()
            with pytest.raises(RenderLimitExceeded) as caught:
                client.render(f"bomb-{name}@2")
            assert caught.value.details["limit"] in limit.split("|")
            assert time.monotonic() - started < 5
        assert client.render("bomb-repeat@1")[0].content == "Hello you"


def test_limits_are_settings(tmp_path):
    """A smaller output limit refuses what the default allows, naming the setting."""
    live = start_server(tmp_path, workers=1, env={"PROMPTREV_RENDER_MAX_CHARS": "1000"})
    try:
        headers = {"Authorization": f"Bearer {live.token('admin')}"}
        r = httpx.put(live.url + "/api/v1/artifact", params={"name": "big"}, headers=headers,
                      json={"text": _bomb("{{ 'a' * 5000 }}")}, timeout=30)
        assert r.status_code == 201, r.text
        r = httpx.post(live.url + "/api/v1/render", headers=headers, json={"ref": "big@1"},
                       timeout=30)
        _limit_error(r, "size")
        assert "PROMPTREV_RENDER_MAX_CHARS" in r.json()["error"]["message"]
    finally:
        live.stop()


def test_evaluation_run_records_the_limit_for_each_case(tmp_path):
    """The eval runner renders through the same budget: each case fails, the run ends."""
    registry = tmp_path / "reg"
    models = tmp_path / "models.yaml"
    # The model is never reached: rendering fails first. Port 9 is the discard port.
    models.write_text("remote:\n  backend: openai\n  name: m\n  base_url: http://127.0.0.1:9/v1\n")
    env = {"PROMPTREV_MODELS": str(models), "PROMPTREV_AUTHOR": "T <t@example.org>",
           "PATH": "/usr/bin:/bin"}

    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, "-m", "promptrev.cli", "--registry",
                              str(registry), *args], capture_output=True, text=True,
                             cwd=ROOT, env=env, timeout=120)
        assert not check or out.returncode == 0, out.stderr
        return out

    cli("init")
    cli("import", str(ROOT / "prompts"))
    bomb = tmp_path / "bomb.prompty"
    bomb.write_text("---\ninputs:\n  review: {}\n---\nuser:\n{{ review }}" + BOMBS["repeat"][0])
    cli("save", str(bomb))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "bomb", "dataset": "sentiment@1", "model": "remote",
        "variants": [{"name": "bomb", "prompt": "bomb@1"},
                     {"name": "plain", "prompt": "sentiment/zero-shot@1"}],
        "scorers": ["exact"]}))
    started = time.monotonic()
    out = cli("eval", "run", str(spec), check=False)
    assert time.monotonic() - started < 60
    text = out.stdout + out.stderr
    assert "render limit reached" in text, text[-2000:]
    assert "Traceback" not in text


def test_in_process_render_raises_a_render_error(tmp_path):
    """The library path: a Prompt rendered directly is held to the same default limits."""
    from promptrev.model.prompty import parse_prompt

    for body, limit in BOMBS.values():
        with pytest.raises(RenderFailed) as caught:
            parse_prompt(_bomb(body)).render({})
        assert caught.value.details["limit"] in limit.split("|")
