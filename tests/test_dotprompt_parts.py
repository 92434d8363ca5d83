"""Shared parts across formats: Jinja2 includes exported as Dotprompt partials and back,
Handlebars partials that name registry prompts, a part's own input defaults, and
Dotprompt's ``{{media}}`` as a content part that reaches an OpenAI request.

Real registries, the real CLI (``promptrev save/export/import/render/dependents``), real
files on disk, and the official ``openai`` client against a recording OpenAI-compatible
server on loopback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from promptrev.errors import RenderFailed, ValidationFailed
from promptrev.model.prompty import split_front_matter
from promptrev.registry import Registry

HBS = "---\ntemplate: {format: handlebars}\n---\n"
PHOTO = "https://example.com/cat.png"


def _front(text: str) -> dict:
    return yaml.safe_load(split_front_matter(text)[0] or "") or {}


def _body(text: str) -> str:
    return split_front_matter(text)[1]


def _render(run, ref: str, *pairs: str, registry: Path | None = None) -> list[dict]:
    first = ["--registry", registry] if registry else []
    args = [a for pair in pairs for a in ("--var", pair)]
    return json.loads(run(*first, "render", ref, *args, "--json").stdout)


def _save(run, tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / (name.replace("/", "_") + ".prompty")
    path.write_text(text)
    run("save", path, "--name", name, "-m", f"save {name}")


TONE = "---\nname: tone\ninputs:\n  tone:\n    default: warm\n---\nBe {{ tone }}.\n"
JSON_PART = "---\nname: json\n---\nAnswer in JSON.\n"
REPLY = ("---\nname: reply\ninputs:\n  question:\n    sample: Where is my order?\n---\n"
         "system:\n{% include \"shared/tone\" %}\n{% include \"shared/json@1\" %}\n"
         "user:\n{{ question }}\n")


# ---- Jinja2 includes out to Dotprompt, and back --------------------------------------------
def test_jinja_includes_export_as_partials_dotprompt_loads_and_come_back_shared(run, tmp_path):
    _save(run, tmp_path, "shared/tone", TONE)
    _save(run, tmp_path, "shared/json", JSON_PART)
    _save(run, tmp_path, "team/reply", REPLY)
    before = _render(run, "team/reply", "question=q")
    assert before[0] == {"role": "system", "content": "Be warm.\n\nAnswer in JSON."}

    out = tmp_path / "out"
    result = run("export", ".", "--format", "dotprompt", "-o", out)
    # The pin is kept in the partial's name, and said.
    assert "'shared/json@1' is written as {{> \"shared/json@1\"}}" in result.output
    reply = (out / "team" / "reply.prompt").read_text()
    assert '{{> shared/tone}}\n\n{{> "shared/json@1"}}\n' in _body(reply)
    # Where Dotprompt's directory store loads partials shared/tone and shared/json@1.
    assert (out / "shared" / "_tone.prompt").read_text() == "Be {{tone}}.\n"
    assert (out / "shared" / "_json@1.prompt").read_text() == "Answer in JSON.\n"
    # A partial has no front matter: the part's default travels with the includer.
    front = _front(reply)
    assert front["input"]["default"] == {"tone": "warm"}
    assert front["metadata"]["prompty"]["partDefaults"] == ["tone"]

    fresh = tmp_path / "fresh"
    run("--registry", fresh, "init")
    imported = run("--registry", fresh, "import", out).stdout
    assert "created    shared/tone" in imported and "created    shared/json" in imported
    stored = run("--registry", fresh, "show", "team/reply").stdout
    assert "partials" not in _front(stored)["template"]  # the parts stay shared
    assert "tone" not in _front(stored)["inputs"]  # the default is the part's again
    assert _front(run("--registry", fresh, "show", "shared/tone").stdout)["inputs"] == {
        "tone": {"default": "warm"}}
    assert _render(run, "team/reply", "question=q", registry=fresh) == before
    deps = run("--registry", fresh, "dependents", "shared/tone").stdout
    assert "team/reply@1" in deps
    pinned = json.loads(run("--registry", fresh, "dependents", "shared/json",
                            "--json").stdout)["dependents"]
    assert [(d["name"], d["ref"], d["pinned"]) for d in pinned] == [
        ("team/reply", "shared/json@1", True)]
    # Importing the files again changes nothing.
    again = run("--registry", fresh, "import", out).stdout
    assert again.count("unchanged") == 3, again


def test_parts_exported_as_partials_alone_come_back_with_their_defaults(run, tmp_path):
    _save(run, tmp_path, "shared/tone", TONE)
    _save(run, tmp_path, "shared/json", JSON_PART)
    _save(run, tmp_path, "team/reply", REPLY)
    before = _render(run, "team/reply", "question=q")
    out = tmp_path / "out"
    run("export", "team/", "--format", "dotprompt", "-o", out)  # the parts: partials only
    assert not (out / "shared" / "tone.prompt").exists()
    fresh = tmp_path / "fresh"
    run("--registry", fresh, "init")
    run("--registry", fresh, "import", out)
    tone = _front(run("--registry", fresh, "show", "shared/tone").stdout)
    assert tone["inputs"] == {"tone": {"default": "warm"}}
    assert _render(run, "team/reply", "question=q", registry=fresh) == before


def test_a_part_that_cannot_be_resolved_or_converted_is_refused_by_export(run, tmp_path):
    _save(run, tmp_path, "shared/loop", "---\nname: loop\n---\n{% for i in [1] %}x{% endfor %}\n")
    _save(run, tmp_path, "uses", "---\nname: uses\n---\nuser:\n{% include \"shared/loop\" %}\n")
    result = run("export", "uses", "--format", "dotprompt", "-o", tmp_path / "out", ok=False)
    assert result.exit_code != 0
    assert "included part 'shared/loop' cannot be converted" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


# ---- a Dotprompt folder in: partials by path are registry prompts ---------------------------
def test_a_dotprompt_folder_keeps_partials_named_by_path_shared(run, tmp_path):
    root = tmp_path / "lib"
    (root / "shared").mkdir(parents=True)
    (root / "support").mkdir()
    (root / "shared" / "_tone.prompt").write_text("Be {{tone}}. {{> shared/sign}}")
    (root / "shared" / "_sign.prompt").write_text("-- the team")
    (root / "support" / "_greet.prompt").write_text("Hello!")
    (root / "support" / "reply.prompt").write_text(
        "---\ninput:\n  schema:\n    tone: string\n---\nHi: {{> greet}} {{> shared/tone}}\n")
    (root / "support" / "other.prompt").write_text("{{> shared/tone tone=\"calm\"}}\n")
    out = run("import", root).stdout
    assert "created    shared/tone" in out and "created    shared/sign" in out
    assert "greet" not in out  # found beside its prompt by its bare name: carried, as before
    reply = run("show", "support/reply").stdout
    assert _front(reply)["template"] == {"format": "handlebars",
                                         "partials": {"greet": "Hello!"}}
    assert "{{> shared/tone}}" in _body(reply)
    assert _render(run, "support/reply", "tone=brief") == [
        {"role": "user", "content": "Hi: Hello! Be brief. -- the team"}]
    assert _render(run, "support/other") == [
        {"role": "user", "content": "Be calm. -- the team"}]
    deps = json.loads(run("dependents", "shared/sign", "--json").stdout)["dependents"]
    assert {(d["name"], d["via"]) for d in deps} == {
        ("shared/tone", None), ("support/reply", "shared/tone"),
        ("support/other", "shared/tone")}


def test_a_partial_named_like_another_prompt_stays_inside_its_includers(run, tmp_path):
    root = tmp_path / "lib"
    root.mkdir()
    (root / "self.prompt").write_text("{{> self}}")
    (root / "_self.prompt").write_text("again")
    result = run("import", root)
    assert "the prompt self.prompt has another text" in result.output
    assert _front(run("show", "self").stdout)["template"]["partials"] == {"self": "again"}
    assert _render(run, "self") == [{"role": "user", "content": "again"}]


# ---- Handlebars bodies that include registry prompts ----------------------------------------
@pytest.fixture
def library(registry: Registry) -> Registry:
    registry.save("shared/tone", HBS + "Be warm.\n")                 # v1
    registry.save("shared/tone", HBS + "Be warm and brief.\n")       # v2
    registry.set_label("shared/tone", "production", 1)
    return registry


def _system(messages) -> str:
    return next(m.content for m in messages if m.role == "system")


def hbs_user(*refs: str) -> str:
    tags = "\n".join("{{> " + r + "}}" for r in refs)
    return ("---\ntemplate: {format: handlebars}\ninputs:\n  question: {sample: Where?}\n"
            '---\n{{role "system"}}\n' + tags + '\n{{role "user"}}\n{{question}}\n')


def test_handlebars_partials_resolve_as_registry_parts_at_a_commit(library):
    library.save("floating", hbs_user("shared/tone"))
    library.save("pinned", hbs_user('"shared/tone@1"'))
    library.save("labelled", hbs_user('"shared/tone@production"'))
    then = library.resolve("floating").commit
    assert _system(library.render("floating", {"question": "q"})) == "Be warm and brief."
    assert _system(library.render("pinned", {"question": "q"})) == "Be warm."
    assert _system(library.render("labelled", {"question": "q"})) == "Be warm."
    library.save("shared/tone", HBS + "Be curt.\n")
    assert _system(library.render("floating", {"question": "q"})) == "Be curt."
    assert _system(library.render("pinned", {"question": "q"})) == "Be warm."
    assert _system(library.render("floating", {"question": "q"}, at=then[:10])) == \
        "Be warm and brief."
    # A partial the prompt carries itself is no registry include.
    library.save("carried", "---\ntemplate:\n  format: handlebars\n  partials: "
                 "{shared/tone: Mine.}\n---\n{{> shared/tone}}\n")
    assert library.render("carried")[0].content == "Mine."
    assert not [d for d in library.dependents("shared/tone") if d["name"] == "carried"]
    with pytest.raises(RenderFailed, match="the included part 'shared/json' is not a "
                                           "Handlebars template"):
        library.save("shared/json", "---\nname: json\n---\nJSON.\n")
        library.save("mixed", hbs_user("shared/json"))
        library.render("mixed", {"question": "q"})


def test_handlebars_includes_are_checked_when_saved_and_indexed(library):
    with pytest.raises(ValidationFailed) as exc:
        library.save("top", hbs_user('"shared/tone@9"'))
    assert "top -> shared/tone@9" in exc.value.message
    assert "has no version 9 (versions 1..2)" in exc.value.message
    with pytest.raises(ValidationFailed, match="no prompt named 'nope'"):
        library.save("top", hbs_user("nope"))
    library.save("a", hbs_user("shared/tone"))
    with pytest.raises(ValidationFailed, match="shared/tone -> a -> shared/tone: the parts "
                                               "include each other"):
        library.save("shared/tone", HBS + "Be warm. {{> a}}\n")
    with pytest.raises(ValidationFailed, match="a -> shared/tone"):
        library.delete("shared/tone")
    library.save("b", hbs_user('"shared/tone@production"'))
    found = library.dependents("shared/tone")
    assert [(d["name"], d["ref"], d["uses"], d["pinned"]) for d in found] == [
        ("a", "shared/tone", 2, False), ("b", "shared/tone@production", 1, False)]
    before = library.index.dump()
    library.reindex()
    assert library.index.dump() == before


def test_a_handlebars_parts_diff_and_label_move_show_the_dependents_rendered(library):
    library.save("floating", hbs_user("shared/tone"))
    library.save("labelled", hbs_user('"shared/tone@production"'))
    result = library.diff("shared/tone@1", "shared/tone@2")
    by_name = {e["name"]: e for e in result.impact}
    assert by_name["floating"]["changed"] and not by_name["labelled"]["changed"]
    assert by_name["floating"]["rendered"].right[0]["content"] == "Be warm and brief."
    moved = {e["name"]: e for e in library.label_impact("shared/tone", "production", 2)}
    assert moved["labelled"]["changed"] and not moved["floating"]["changed"]


# ---- a part's own input defaults ---------------------------------------------------------
@pytest.mark.parametrize("engine", ["jinja2", "handlebars"])
def test_a_parts_defaults_apply_unless_the_includer_says_otherwise(registry, engine):
    if engine == "jinja2":
        registry.save("shared/tone", TONE)
        include, head = '{% include "shared/tone" %}', "---\nname: x\n"
    else:
        registry.save("shared/tone", "---\ntemplate: {format: handlebars}\ninputs:\n"
                      "  tone: {default: warm}\n---\nBe {{tone}}.\n")
        include, head = "{{> shared/tone}}", "---\ntemplate: {format: handlebars}\n"
    registry.save("plain", f"{head}---\n{include}\n")
    registry.save("own", f"{head}inputs:\n  tone: {{default: calm}}\n---\n{include}\n")
    registry.save("outer", f"{head}---\n" + (
        '{% include "plain" %}\n' if engine == "jinja2" else "{{> plain}}\n"))
    assert registry.render("plain")[0].content == "Be warm."
    assert registry.render("plain", {"tone": "curt"})[0].content == "Be curt."
    assert registry.render("own")[0].content == "Be calm."  # the includer's default wins
    assert registry.render("outer")[0].content == "Be warm."  # through another part
    # The preview a diff renders (the prompt's sample) agrees.
    registry.save("plain", f"{head}---\nNow: {include}\n")
    rendered = registry.diff("plain@1", "plain@2").rendered
    assert (rendered.left_error, rendered.right_error) == (None, None)
    assert rendered.right[0]["content"] == "Now: Be warm."


def test_cli_renders_with_a_parts_default(run, tmp_path):
    _save(run, tmp_path, "shared/tone", TONE)
    _save(run, tmp_path, "reply", REPLY.replace('{% include "shared/json@1" %}\n', ""))
    assert _render(run, "reply", "question=q")[0]["content"] == "Be warm."


# ---- {{media}} ---------------------------------------------------------------------------
MEDIA = ("---\ntemplate: {format: handlebars}\nmodel:\n  api: chat\n  configuration:\n"
         "    name: gpt-4o\n---\n{{role \"system\"}}\nDescribe what you are shown.\n"
         "{{role \"user\"}}\nWhat is this? {{media url=photo}}\n"
         "And this: {{media url=doc contentType=\"application/pdf\"}}\n")


def test_media_becomes_content_parts_that_reach_an_openai_request(registry):
    from promptrev.runner.base import ModelSpec
    from promptrev.runner.execute import Runner

    from .security.test_secrets import _model_server

    pytest.importorskip("openai")
    registry.save("look", MEDIA)
    messages = registry.render("look", {"photo": PHOTO, "doc": "https://example.com/a.pdf"})
    assert messages[1].content == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": PHOTO}},
        {"type": "text", "text": "And this:"},
        {"type": "file", "file": {"url": "https://example.com/a.pdf", "filename": "a.pdf"}}]
    assert messages[1].text.startswith("What is this?\n[image: https://example.com/cat.png]")
    upstream = _model_server()
    try:
        runner = Runner(registry, models={"gpt-4o": ModelSpec(
            "openai", "up-gpt-4o", base_url=f"{upstream.url}/v1", api_key="sk-test-123456")})
        runner.run("look", {"photo": "data:image/png;base64,iVBORw0KGgo=",
                            "doc": "data:application/pdf;base64,JVBERi0="})
        sent = json.loads(upstream.requests[-1].body)
    finally:
        upstream.httpd.shutdown()
        upstream.httpd.server_close()
    assert sent["messages"][0] == {"role": "system", "content": "Describe what you are shown."}
    assert sent["messages"][1]["content"][1] == {
        "type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    assert sent["messages"][1]["content"][3] == {
        "type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}}


@pytest.mark.parametrize("url, message", [
    ("file:///etc/passwd", "url 'file:///etc/passwd' is refused: only http(s) and data:"),
    ("/etc/passwd", "url '/etc/passwd' is refused"),
    ("javascript:alert(1)", "is refused"),
    ({"url": PHOTO}, "needs url= a http(s) or data: URL as text, not a mapping"),
])
def test_media_refuses_what_is_no_web_or_data_url(registry, url, message):
    registry.save("look", MEDIA)
    with pytest.raises(RenderFailed, match=message.replace("(", r"\(").replace(")", r"\)")):
        registry.render("look", {"photo": url, "doc": PHOTO})
