"""Attack: YAML that explodes, loops, or saves fine and then breaks every page showing it.

Replays issue 14 item 3 against a real ``promptrev serve``: an alias bomb (9^7 values
from a few hundred bytes), a recursive anchor, a 5,000-digit integer, a list used as a
key, non-finite numbers and odd tags in prompt front matter, through the API, a Git push
and the evaluation page. Each is refused at save time with a clear 422 naming the line,
quickly; what is accepted (dates, merge keys) is shown by the artifact page, the API, the
diff and ``/v1`` without a 500.
"""

from __future__ import annotations

import re
import subprocess
import time

import httpx
import pytest

from ..live import ADMIN_PASSWORD, start_server


def _bomb(levels: int = 7) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 9)}]")
    return "\n".join(lines)


BODY = "user:\nHello\n"
POISON = {
    "alias-bomb": (_bomb(), "aliases expand"),
    "recursive-anchor": ("loop: &x [a, *x]", "recursive anchor"),
    "recursive-map": ("loop: &x {self: *x}", "recursive anchor"),
    "huge-int": ("seed: " + "9" * 5000, "too large"),
    "big-int": ("seed: 123456789012345678901234", "too large"),
    "list-key": ("? [a, b]\n: 1", "a key must be plain text"),
    "map-key": ("? {a: 1}\n: 1", "a key must be plain text"),
    "date-key": ("2024-01-01: x", "a key must be plain text"),
    "infinity": ("model:\n  parameters:\n    temperature: .inf", "not finite"),
    "nan": ("model:\n  parameters:\n    temperature: .nan", "not finite"),
    "binary": ("blob: !!binary aGVsbG8=", "unsupported YAML tag"),
    "set": ("tags: !!set {a, b}", "unsupported YAML tag"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_server(tmp_path_factory.mktemp("yaml"), workers=2)
    live.headers = {"Authorization": f"Bearer {live.token('admin')}"}
    yield live
    live.stop()


def _save(server, name: str, text: str, base: int | None = None) -> httpx.Response:
    headers = dict(server.headers)
    if base:
        headers["If-Match"] = f'"{base}"'
    return httpx.put(server.url + "/api/v1/artifact", params={"name": name},
                     headers=headers, json={"text": text}, timeout=60)


@pytest.mark.parametrize("case", sorted(POISON))
def test_poisoned_front_matter_is_refused_at_save(server, case):
    front, expected = POISON[case]
    started = time.monotonic()
    r = _save(server, f"poison-{case}", f"---\n{front}\n---\n{BODY}")
    assert time.monotonic() - started < 5
    assert r.status_code == 422, (r.status_code, r.text[:300])
    error = r.json()["error"]
    assert error["code"] == "invalid_artifact"
    assert expected in error["message"], error["message"]
    assert re.search(r"line \d+", error["message"]), error["message"]
    missing = httpx.get(server.url + "/api/v1/artifact", params={"ref": f"poison-{case}"},
                        headers=server.headers, timeout=30)
    assert missing.status_code == 404


def test_a_push_of_poisoned_front_matter_is_refused_without_a_traceback(server, tmp_path):
    token = server.headers["Authorization"].split()[1]
    url = server.url.replace("http://", f"http://admin:{token}@") + "/git/registry.git"
    work = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", url, str(work)], check=True, timeout=60)
    for case in ("alias-bomb", "recursive-anchor", "huge-int"):
        (work / "prompts" / f"{case}.prompty").write_text(
            f"---\n{POISON[case][0]}\n---\n{BODY}")
        subprocess.run(["git", "-C", str(work), "add", "-A"], check=True)
        subprocess.run(["git", "-C", str(work), "-c", "user.name=a", "-c",
                        "user.email=a@example.org", "commit", "-qm", case], check=True)
        started = time.monotonic()
        push = subprocess.run(["git", "-C", str(work), "push", "origin", "HEAD:main"],
                              capture_output=True, text=True, timeout=120)
        assert time.monotonic() - started < 30
        assert push.returncode != 0, push.stderr
        assert POISON[case][1] in push.stderr, push.stderr
        assert "Traceback" not in push.stderr
        subprocess.run(["git", "-C", str(work), "reset", "-q", "--hard", "HEAD~1"], check=True)


def test_dates_and_merge_keys_are_stored_and_shown_everywhere(server):
    text = ("---\ncreated: 2024-01-01\nreviewed: 2024-02-03T04:05:06Z\nbase: &base\n"
            "  temperature: 0.2\nmodel:\n  parameters:\n    <<: *base\n    max_tokens: 5\n"
            "---\n" + BODY)
    assert _save(server, "dated", text).status_code == 201
    changed = text.replace("2024-01-01", "2024-01-02")
    assert _save(server, "dated", changed, base=1).status_code == 200
    api = httpx.get(server.url + "/api/v1/diff", headers=server.headers, timeout=30,
                    params={"a": "dated@1", "b": "dated@2"})
    assert api.status_code == 200, api.text[:300]
    fields = {f["path"]: f for f in api.json()["fields"]}
    assert fields["created"]["old"] == "2024-01-01" and fields["created"]["new"] == "2024-01-02"
    web = httpx.Client(base_url=server.url, timeout=30, follow_redirects=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/login").text).group(1)
    web.post("/login", data={"name": "admin", "password": ADMIN_PASSWORD, "csrf_token": token})
    for path, params in (("/a/dated", {}), ("/diff", {"name": "dated", "a": 1, "b": 2})):
        page = web.get(path, params=params)
        assert page.status_code == 200 and "2024-01-02" in page.text, page.status_code
    v1 = httpx.post(server.url + "/api/v1/render", headers=server.headers, timeout=30,
                    json={"ref": "dated@2"})
    assert v1.status_code == 200 and v1.json()["messages"][0]["content"] == "Hello"


def test_an_evaluation_spec_alias_bomb_is_refused_not_stored(server):
    web = httpx.Client(base_url=server.url, timeout=60, follow_redirects=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/login").text).group(1)
    web.post("/login", data={"name": "admin", "password": ADMIN_PASSWORD, "csrf_token": token})
    form = web.get("/eval/new").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    spec = (_bomb(6) + "\nname: x\ndataset: sentiment@1\nvariants:\n"
            "  - {name: a, prompt: summarize}\n  - {name: b, prompt: summarize}\n")
    assert len(spec) < 1000
    started = time.monotonic()
    r = web.post("/eval/new", data={"spec": spec, "csrf_token": token})
    assert time.monotonic() - started < 5
    assert r.status_code == 422 and "aliases expand" in r.text, (r.status_code, r.text[-800:])
    assert len(r.content) < 200_000
    runs = web.get("/eval/")
    assert runs.status_code == 200 and "/eval/1" not in runs.text
