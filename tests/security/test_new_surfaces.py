"""Attack: the template engines, includes and endpoints that landed together (mustache,
handlebars, text, composition, live check, evaluations from the API), as an editor who
stores a prompt and a viewer who renders it, against a real ``promptrev serve``.

Found and fixed here:

- mustache looked names up with ``getattr`` after ``value[name]``: ``{{text.upper}}``
  printed a bound method with its memory address, ``{{items.budget}}`` the render budget
  object, ``{{#text.format}}…{{/text.format}}`` called a method, and a list item's method
  shadowed an input of the same name (``{{#items}}{{count}}{{/items}}``);
- mustache and handlebars counted literal text only once the whole output was built: a
  section over a list, nested twice, around 100 KB of text filled ~700 MB in the second
  the clock allowed (Jinja2 stops at ``max_chars``);
- handlebars partials calling two partials each rendered 2^n times with no loop to count
  them: 22 levels held a worker 35 s, 30 levels for hours.

Checked when Handlebars partials became registry parts and ``{{media}}`` content parts:
registry parts fanning out are counted as carried partials are; a partial name is a
checked reference (no path); ``{{media}}`` sends http(s) and data: URLs only, never a
``file:`` URL or a path of the server.
"""

from __future__ import annotations

import http.server
import json
import threading
import time

import httpx
import pytest
import yaml

from ..live import start_server

BIG = "A" * 100_000
PARTIAL_LEVELS = 24  # 2^24 partial renders: minutes of a worker before the fix
FAN_LEVELS = 14

PROMPTS = {
    "mu-reach": (
        "---\ntemplate: {format: mustache}\ninputs:\n  text: {type: string}\n"
        "  items: {type: array}\n  count: {type: string}\n---\nuser:\n"
        "[{{text.upper}}] [{{items.budget}}] [{{items.budget.limits}}] "
        "[{{#text.format}}called{{/text.format}}] "
        "[{{#items}}{{count}}{{/items}}] [{{items.0}}]\n"),
    "mu-loop": ("---\ntemplate: {format: mustache}\ninputs:\n  l: {type: array}\n---\n"
                "user:\n{{#l}}{{#l}}" + BIG + "{{/l}}{{/l}}\n"),
    "hb-loop": ("---\ntemplate: {format: handlebars}\ninputs:\n  l: {type: array}\n---\n"
                "{{#each l}}{{#each ../l}}" + BIG + "{{/each}}{{/each}}\n"),
    "hb-fanout": ("---\ntemplate:\n  format: handlebars\n  partials:\n" + "".join(
        f"    p{i}: '{{{{> p{i + 1}}}}}{{{{> p{i + 1}}}}}'\n" for i in range(PARTIAL_LEVELS))
        + f"    p{PARTIAL_LEVELS}: ''\n---\n{{{{> p0}}}}\n"),
    # registry parts (4^14 renders; parts nest at most 16 deep), saved last first: each
    # must exist when its includer is saved
    **{f"fan/p{i}": "---\ntemplate: {format: handlebars}\n---\n" + (
        f"{{{{> fan/p{i + 1}}}}}" * 4 if i < FAN_LEVELS else "")
       for i in range(FAN_LEVELS, -1, -1)},
    "hb-media": ("---\ntemplate: {format: handlebars}\ninputs:\n  u: {type: string}\n---\n"
                 "Look: {{media url=u}}\n"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_server(tmp_path_factory.mktemp("surfaces"), workers=2)
    try:
        live.cli("user", "add", "eddie", "--role", "editor", "--password", "eddie-pw-1234")
        live.cli("user", "add", "vic", "--role", "viewer", "--password", "vic-pw-1234")
        live.editor = {"Authorization": f"Bearer {live.token('eddie')}"}
        live.viewer = {"Authorization": f"Bearer {live.token('vic')}"}
        for name, text in PROMPTS.items():
            r = httpx.put(live.url + "/api/v1/artifact", params={"name": name},
                          headers=live.editor, json={"text": text}, timeout=60)
            assert r.status_code in (200, 201), r.text[:500]
        yield live
    finally:
        live.stop()


def _render(server, ref: str, variables: dict) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = httpx.post(server.url + "/api/v1/render", headers=server.viewer,
                   json={"ref": ref, "variables": variables}, timeout=120)
    return r, time.monotonic() - started


def test_mustache_names_reach_no_method_and_no_internals(server):
    r, _ = _render(server, "mu-reach@1", {"text": "hi", "items": ["first"], "count": "7"})
    assert r.status_code == 200, r.text[:500]
    (message,) = r.json()["messages"]
    content = message["content"]
    for leak in ("built-in method", "Budget", "RenderLimits", "0x", "called"):
        assert leak not in content, content
    # The input 'count' is not shadowed by str.count inside the section; {{items.0}} is
    # the list's first item, as Mustache means it.
    assert content == "[] [] [] [] [7] [first]", content


@pytest.mark.parametrize("name", ["mu-loop", "hb-loop"])
def test_a_loop_of_literal_text_stops_at_the_size_limit(server, name):
    r, elapsed = _render(server, f"{name}@1", {"l": list(range(300))})
    assert r.status_code == 422, r.text[:300]
    error = r.json()["error"]
    assert error["code"] == "render_limit", error
    # the size limit, reached as the text grows: not the clock, after ~700 MB were built
    assert error["details"]["limit"] == "size", error
    assert elapsed < 5, f"{elapsed:.1f} s"


def test_handlebars_partials_fanning_out_are_held_to_the_budget(server):
    r, elapsed = _render(server, "hb-fanout@1", {})
    assert r.status_code == 422, r.text[:300]
    error = r.json()["error"]
    assert error["code"] == "render_limit", error
    assert error["details"]["limit"] in ("iterations", "time"), error
    assert elapsed < 5, f"the render held a worker {elapsed:.1f} s"


def test_handlebars_registry_parts_fanning_out_are_held_to_the_budget(server):
    r, elapsed = _render(server, "fan/p0", {})
    assert r.status_code == 422, r.text[:300]
    assert r.json()["error"]["details"]["limit"] in ("iterations", "time"), r.text[:300]
    assert elapsed < 5, f"the render held a worker {elapsed:.1f} s"


def test_media_sends_no_local_file_and_a_partial_names_no_path(server):
    for url in ("file:///etc/passwd", "/etc/passwd", "FILE:/etc/hostname", "ftp://x/y"):
        r, _ = _render(server, "hb-media", {"u": url})
        assert r.status_code == 422, r.text[:300]
        assert "only http(s) and data: URLs are sent" in r.json()["error"]["message"]
        assert "root:" not in r.text
    r, _ = _render(server, "hb-media", {"u": "https://example.com/a.png"})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["messages"][0]["content"][1] == {
        "type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    bad = httpx.put(server.url + "/api/v1/artifact", params={"name": "hb-path"},
                    headers=server.editor, timeout=60, json={
                        "text": "---\ntemplate: {format: handlebars}\n---\n"
                                "{{> \"../../etc/passwd\"}}\n"})
    assert bad.status_code == 422, bad.text[:300]
    assert "segment '..'" in bad.json()["error"]["message"]


@pytest.mark.parametrize("filename", ["..prompt", "two words.prompt.yml", "-x.prompt"])
def test_an_imported_file_whose_name_is_no_artifact_name_is_named(run, tmp_path, filename):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "fine.prompt").write_text("hello {{name}}\n")
    text = "hello\n" if filename.endswith(".prompt") else \
        "messages:\n  - role: user\n    content: hello\n"
    (folder / filename).write_text(text)
    result = run("import", folder, ok=False)
    assert result.exit_code != 0
    assert filename in result.output, result.output  # the file, not "reference '.'"
    assert "nothing was imported" in result.output, result.output
    assert "Traceback" not in result.output
    assert "fine" not in run("list").output


def test_a_mustache_input_of_millions_of_values_is_held_to_the_clock():
    from promptrev.errors import RenderLimitExceeded
    from promptrev.model.prompty import parse_prompt
    from promptrev.model.render_budget import RenderLimits

    prompt = parse_prompt("---\ntemplate: {format: mustache}\ninputs:\n  x: {type: array}\n"
                          "---\nuser:\n{{#x}}{{.}}{{/x}}\n")
    started = time.monotonic()
    with pytest.raises(RenderLimitExceeded) as refused:
        prompt.render({"x": list(range(3_000_000))}, limits=RenderLimits(seconds=0.5))
    elapsed = time.monotonic() - started
    assert refused.value.details["limit"] == "time"
    # copying the values into placeholders took ~9 s before the clock was checked there
    assert elapsed < 3, f"{elapsed:.1f} s"


def test_mustache_names_of_a_bool_inside_an_inverted_section_are_refused_when_saved(server):
    text = ("---\ntemplate: {format: mustache}\ninputs:\n  done: {type: boolean}\n---\n"
            "user:\n{{^done}}[{{to_bytes}}]{{/done}}\n")
    r = httpx.put(server.url + "/api/v1/artifact", params={"name": "mu-inverted"},
                  headers=server.editor, json={"text": text}, timeout=60)
    # before: saved, and rendered '<built-in method to_bytes of bool object at 0x…>'
    assert r.status_code == 422, r.text[:300]
    message = r.json()["error"]["message"]
    assert "to_bytes" in message and "inverted section" in message, message


SLOW_DEPENDENTS = 12


def test_moving_a_label_on_a_part_with_many_slow_dependents_answers_in_bounded_time(server):
    # An editor saves a part and many prompts that include it, each rendering until the
    # render's clock stops it (1 s): moving the part's label rendered each twice, holding
    # the worker dependents × 2 s (here ~24 s; with thousands of dependents, hours).
    api, headers = server.url + "/api/v1", server.editor
    r = httpx.put(f"{api}/artifact", params={"name": "part"}, headers=headers,
                  json={"text": "user:\npart one\n"}, timeout=60)
    assert r.status_code == 201, r.text[:300]
    r = httpx.put(f"{api}/labels", params={"name": "part", "label": "live"},
                  headers=headers, json={"version": 1}, timeout=60)
    assert r.status_code == 200, r.text[:300]
    slow = ("user:\n{% include \"part@live\" %}{% for j in range(10) %}"
            "{% for i in range(99999) %}{% if ('x' | center(100000 + i) | length) == 0 %}x"
            "{% endif %}{% endfor %}{% endfor %}\n")
    for i in range(SLOW_DEPENDENTS):
        r = httpx.put(f"{api}/artifact", params={"name": f"uses-part-{i}"}, headers=headers,
                      json={"text": slow}, timeout=60)
        assert r.status_code == 201, r.text[:300]
    r = httpx.put(f"{api}/artifact", params={"name": "part"},
                  headers={**headers, "If-Match": '"1"'},
                  json={"text": "user:\npart two\n"}, timeout=60)
    assert r.status_code == 200, r.text[:300]
    started = time.monotonic()
    r = httpx.put(f"{api}/labels", params={"name": "part", "label": "live"},
                  headers=headers, json={"version": 2}, timeout=120)
    elapsed = time.monotonic() - started
    assert r.status_code == 200, r.text[:300]
    impact = r.json()["impact"]
    assert len(impact) == SLOW_DEPENDENTS
    skipped = [e for e in impact if e["changed"] is None]
    assert skipped and all("not rendered" in e["skipped"] for e in skipped), impact[-1]
    assert elapsed < 15, f"the label move took {elapsed:.1f} s"


# ---- evaluations started from the API -------------------------------------------------

class _SlowModel(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that answers after a while, counting how many
    requests it holds at once."""

    lock = threading.Lock()
    open_now = 0
    most = 0

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        cls = type(self)
        with cls.lock:
            cls.open_now += 1
            cls.most = max(cls.most, cls.open_now)
        try:
            time.sleep(4)
            data = json.dumps({
                "id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "positive"}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1,
                          "total_tokens": 6}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            with cls.lock:
                cls.open_now -= 1

    def log_message(self, *args):
        pass


RUNS = 16


def test_evaluations_started_from_the_api_run_a_few_at_a_time(tmp_path):
    # An editor posts many distinct gate specs: each started a thread of its own, all
    # calling the model at once (and opening a registry each), without bound.
    model = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowModel)
    model.daemon_threads = True
    threading.Thread(target=model.serve_forever, daemon=True).start()
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"slow": {
        "backend": "openai", "name": "slow", "api_key": "k",
        "base_url": f"http://127.0.0.1:{model.server_address[1]}/v1"}}))
    (tmp_path / "srv").mkdir()
    live = start_server(tmp_path / "srv", workers=1, env={"PROMPTREV_MODELS": str(models)})
    try:
        live.cli("user", "add", "eddie", "--role", "editor", "--password", "eddie-pw-1234")
        headers = {"Authorization": f"Bearer {live.token('eddie')}"}
        api = live.url + "/api/v1"
        r = httpx.put(f"{api}/labels", params={"name": "sentiment/zero-shot",
                                                "label": "staging"},
                      headers=headers, json={"version": 1}, timeout=60)
        assert r.status_code == 200, r.text[:300]
        for i in range(RUNS):
            spec = {"dataset": "sentiment", "model": "slow", "scorers": ["exact"],
                    "limit": 1, "batch_size": 1, "params": {"max_tokens": i + 1},
                    "variants": [{"name": "candidate", "prompt": "sentiment/zero-shot@1"}]}
            r = httpx.post(f"{api}/evaluations/gate", headers=headers, timeout=60, json={
                "spec": yaml.safe_dump(spec), "baseline": "staging",
                "rule": {"require": "non-inferior", "metric": "exact", "margin": 0.1}})
            assert r.status_code == 202 and r.json()["started"], r.text[:300]
        time.sleep(3)
        # A few runs at once (each may send its variants' requests together), not all.
        assert 0 < _SlowModel.most < RUNS, _SlowModel.most
    finally:
        live.stop()
        model.shutdown()
