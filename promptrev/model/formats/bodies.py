"""Template bodies between engines: role lines, ``{{role}}`` markers, placeholders.

Only what means the same in both languages is converted: plain substitutions
(``{{ name }}``, ``{{name}}``, dotted paths) and message boundaries. Anything else (a
Jinja2 ``{% for %}``, a Handlebars ``{{#each}}``) is refused with the reason, never
approximated: the prompt is exported as Prompty instead, which keeps everything.
"""

from __future__ import annotations

import re

from promptrev.errors import ValidationFailed

from ..prompty import ROLES

ROLE_LINE = re.compile(r"^[ \t]*(?P<role>" + "|".join(ROLES) + r")[ \t]*:[ \t]*$",
                       re.IGNORECASE | re.MULTILINE)
_PATH = r"[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*"
JINJA_SUBSTITUTION = re.compile(r"\{\{[ \t]*(" + _PATH + r")[ \t]*\}\}")
HBS_SUBSTITUTION = re.compile(r"(?<!\\)\{\{[ \t]*(" + _PATH + r")[ \t]*\}\}")
HBS_ROLE = re.compile(r"^[ \t]*\{\{~?[ \t]*role[ \t]+[\"'](?P<role>\w+)[\"'][ \t]*~?\}\}[ \t]*$",
                      re.MULTILINE)
_NOT_NAMES = {"true", "false", "none", "None", "True", "False", "this", "else"}


def split_roles(body: str, lead_role: str) -> list[tuple[str, str]]:
    """(role, template text) per message of a body with Prompty role lines.

    ``lead_role`` is whose text before the first role line is (``system`` in Prompty,
    ``user`` in Handlebars bodies, as in Dotprompt).
    """
    out: list[tuple[str, str]] = []
    matches = list(ROLE_LINE.finditer(body))
    lead = body[: matches[0].start()] if matches else body
    if lead.strip():
        out.append((lead_role, lead.strip("\n")))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(body)
        text = body[match.end():end].strip("\n")
        if text.strip():
            out.append((match.group("role").lower(), text))
    return out


def hbs_markers_to_role_lines(body: str) -> str:
    """``{{role "system"}}`` alone on a line becomes the role line ``system:``."""
    return HBS_ROLE.sub(lambda m: ("assistant" if m.group("role") == "model"
                                   else m.group("role")) + ":", body)


def role_lines_to_hbs_markers(body: str) -> str:
    """Prompty role lines become Dotprompt's ``{{role "..."}}`` markers."""
    return ROLE_LINE.sub(lambda m: '{{role "' + _dotprompt_role(m.group("role")) + '"}}', body)


def _dotprompt_role(role: str) -> str:
    role = role.lower()
    return "model" if role == "assistant" else role


# ``{% include "name@ref" %}`` as written: no whitespace control, no ``ignore missing``,
# no ``with``/``without context`` (a Handlebars partial has the caller's context anyway).
JINJA_INCLUDE = re.compile(r"\{%[ \t]*include[ \t]+(\"[^\"\n]+\"|'[^'\n]+')[ \t]*%\}")
_HBS_NAME = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")


def partial_tag(ref: str) -> str:
    """``{{> ref}}``; quoted where ``ref`` is no Handlebars path (``"shared/tone@3"``)."""
    return "{{> " + (ref if _HBS_NAME.fullmatch(ref) else '"' + ref + '"') + "}}"


def jinja_to_hbs(text: str, what: str, partial=None) -> str:
    """A Jinja2 body of plain substitutions as Handlebars; refused if it is more.

    With ``partial`` (reference as written → the partial's name), an
    ``{% include "shared/tone" %}`` becomes ``{{> shared/tone}}``. Alone on its line, it
    is followed by one more line end: Handlebars drops a standalone partial's line end,
    Jinja2 keeps it, so the rendered text stays the same.
    """
    if partial is not None and "{%" in text:
        tags: list[str] = []

        def mark(m: re.Match) -> str:
            start = text.rfind("\n", 0, m.start()) + 1
            alone = not text[start:m.start()].strip() and text[m.end():m.end() + 1] == "\n"
            tags.append(partial_tag(partial(m.group(1)[1:-1])) + ("\n" if alone else ""))
            return f"\x00{len(tags) - 1}\x00"

        marked = jinja_to_hbs(JINJA_INCLUDE.sub(mark, text), what)
        return re.sub("\x00(\\d+)\x00", lambda m: tags[int(m.group(1))], marked)
    if "{%" in text or "{#" in text:
        raise _unconvertible(what, "uses Jinja2 statements or comments ({% … %}, {# … #})")
    converted = JINJA_SUBSTITUTION.sub(lambda m: "{{" + m.group(1) + "}}", text)
    rest = JINJA_SUBSTITUTION.sub("", text)
    if "{{" in rest or any(m.group(1) in _NOT_NAMES for m in JINJA_SUBSTITUTION.finditer(text)):
        raise _unconvertible(what, "uses Jinja2 expressions (filters, calls, operators)")
    return converted


def text_to_hbs(text: str) -> str:
    """A verbatim body (``template: text``) as Handlebars: every ``{{`` escaped."""
    return text.replace("{{", "\\{{")


def hbs_to_plain(text: str, what: str) -> str:
    """A Handlebars body of plain ``{{name}}`` substitutions as GitHub Models writes them."""
    rest = HBS_SUBSTITUTION.sub("", text)
    if re.search(r"(?<!\\)\{\{", rest):
        raise _unconvertible(what, "uses Handlebars blocks, helpers or partials "
                             "({{#if}}, {{#each}}, {{> name}}…)")
    converted = HBS_SUBSTITUTION.sub(lambda m: "{{" + m.group(1) + "}}", text)
    return converted.replace("\\{{", "{{")


def plain_to_hbs(text: str) -> str:
    """GitHub Models content (only ``{{name}}`` is a placeholder) as Handlebars."""
    marked = HBS_SUBSTITUTION.sub(lambda m: "\x00" + m.group(1) + "\x01", text)
    marked = marked.replace("{{", "\\{{")
    return marked.replace("\x00", "{{").replace("\x01", "}}")


def _unconvertible(what: str, why: str) -> ValidationFailed:
    return ValidationFailed(f"{what} cannot be converted: its template {why}, which the "
                            "target format cannot express; export it as prompty "
                            "(--format prompty keeps everything)")
