"""A team's real prompt library imports without edits (issue: prompts refused for style).

Every text here is the kind of prompt teams write by hand: headings that end in a colon,
YAML-looking lines inside content, a markdown horizontal rule at the top, code samples
full of braces. Only the known role words start a message; everything else is content.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptrev.model.prompty import parse_prompt

# Each of these was refused before ("unknown role" or "front matter ... no closing line").
LIBRARY = {
    "context-heading": (
        "You are a support agent for ACME.\n\nContext:\n{{ ticket }}\n\n"
        "Answer in two sentences.\n",
        {"ticket": "My order is late."}),
    "prompt-role-use": (
        "Role:\nAct as a senior Python reviewer.\n\nPrompt:\nReview the diff below.\n\n"
        "Use:\nShort bullet points.\n\n{{ diff }}\n",
        {"diff": "- x = 1\n+ x = 2"}),
    "image-generation": (
        "system:\nYou write prompts for an image model.\n\nuser:\n"
        "image-generation:\n  style: watercolor\n  subject: {{ subject }}\n",
        {"subject": "a lighthouse"}),
    "messages-line": (
        "user:\nConvert this chat log to JSON.\nmessages:\n{{ log }}\n",
        {"log": "A: hi\nB: hello"}),
    "act-as-a-linux-terminal": (
        "---\n\nI want you to act as a linux terminal. I will type commands and you will "
        "reply with what the terminal should show.\n\nMy first command is {{ command }}\n",
        {"command": "pwd"}),
}


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_each_refused_kind_parses_and_renders_as_content(name: str) -> None:
    text, variables = LIBRARY[name]
    prompt = parse_prompt(text, f"{name}.prompty")
    messages = prompt.render(variables)
    joined = "\n".join(m.content for m in messages)
    # Nothing was dropped: every line that is not a role line is in some message.
    for line in text.splitlines():
        if line.strip() and line.strip().rstrip(":") not in ("system", "user"):
            if "{{" not in line:
                assert line.strip() in joined, (line, joined)
    for value in variables.values():
        assert value in joined


def test_headings_stay_in_their_message() -> None:
    text, variables = LIBRARY["image-generation"]
    messages = parse_prompt(text).render(variables)
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[1].content.startswith("image-generation:\n  style: watercolor")


def test_near_misses_warn_with_a_suggestion_and_never_refuse() -> None:
    prompt = parse_prompt("system:\nBe brief.\n\nasistant:\nHello!\n\nUsr:\nhi\n")
    messages = [w.message for w in prompt.warnings]
    assert any("did you mean 'assistant'" in m for m in messages), messages
    assert any("did you mean 'user'" in m for m in messages), messages
    assert all(w.severity == "warning" for w in prompt.warnings)
    assert len(prompt.render({})) == 1  # content, not new messages
    # Headings made of a role word are not typos of it: no warning.
    for heading in ("Use", "Tools", "Users", "Developers"):
        assert parse_prompt(f"system:\nhi\n{heading}:\nx\n").warnings == [], heading


def test_a_plain_text_prompt_renders_its_braces_verbatim() -> None:
    body = ("system:\nYou explain Go templates.\n\nuser:\nWhat does {{ .Name }} print in\n"
            "{{ range .Items }}{{ . }}{{ end }} and {% raw %} mean?\n")
    with pytest.raises(Exception, match="template syntax error"):
        parse_prompt(body)  # Jinja2 cannot read it...
    prompt = parse_prompt("---\nname: go-help\ntemplate:\n  format: text\n---\n" + body)
    assert prompt.variables == frozenset()
    assert prompt.render({})[1].content == (
        "What does {{ .Name }} print in\n{{ range .Items }}{{ . }}{{ end }} and "
        "{% raw %} mean?")
    # ...and Prompty v2's spelling of the same section is understood too.
    v2 = parse_prompt("---\ntemplate:\n  format:\n    kind: text\n  parser:\n    kind: "
                      "prompty\n---\n" + body)
    assert v2.render({}) == prompt.render({})


def test_an_unknown_format_is_refused_naming_the_supported_ones() -> None:
    with pytest.raises(Exception) as info:
        parse_prompt("---\ntemplate: {format: liquid}\n---\nuser:\nhi\n")
    assert "'liquid' is not supported" in str(info.value)
    assert "text" in str(info.value) and "jinja2" in str(info.value)


def test_the_library_imports_without_edits_through_the_cli(tmp_path: Path, run) -> None:
    folder = tmp_path / "library"
    folder.mkdir()
    for name, (text, _variables) in LIBRARY.items():
        (folder / f"{name}.prompty").write_text(text)
    (folder / "go-help.prompty").write_text(
        "---\ntemplate:\n  format: text\n---\nuser:\nExplain {{ .Name }}.\n")
    result = run("import", folder, "--json")
    assert sorted(json.loads(result.output)["created"]) == sorted([*LIBRARY, "go-help"])
    for name, (_text, variables) in LIBRARY.items():
        args = [a for k, v in variables.items() for a in ("--var", f"{k}={v}")]
        shown = run("render", name, *args, "--json").output
        for value in variables.values():
            assert value in json.loads(shown)[-1]["content"] or value in shown
    assert "{{ .Name }}" in run("render", "go-help", "--json").output
