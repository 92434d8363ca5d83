"""Syntax highlighting of artifacts for the pages (Pygments, server-side, no JavaScript).

A Prompty file is YAML front matter plus a Jinja2 chat template: each part gets its own
lexer, and role lines (``system:``) are marked so reviewers see message boundaries.
"""

from __future__ import annotations

import functools
import re

from markupsafe import Markup, escape
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DjangoLexer, JsonLexer, YamlLexer

_FORMATTER = HtmlFormatter(nowrap=True)
_FRONT = re.compile(r"\A(---[ \t]*\r?\n)(.*?\r?\n)(---[ \t]*\r?\n?)", re.S)
_ROLE_LINE = re.compile(r"^((?:system|user|assistant|developer|tool|function)[ \t]*:[ \t]*\r?\n)",
                        re.M | re.I)
_MAX_HIGHLIGHT = 512 * 1024  # beyond this, plain escaped text (Pygments is ~1 MB/s)


def highlight_artifact(text: str, kind: str) -> Markup:
    """HTML for ``text`` with front matter, template tags and role lines highlighted."""
    if len(text) > _MAX_HIGHLIGHT:
        return Markup(escape(text))
    if kind == "dataset":
        return Markup(highlight(text, JsonLexer(), _FORMATTER))
    if kind == "adapter":  # the card
        return Markup(highlight(text, YamlLexer(), _FORMATTER))
    match = _FRONT.match(text)
    front_html = ""
    body = text
    if match:
        front_html = (str(escape(match.group(1)))
                      + highlight(match.group(2), YamlLexer(), _FORMATTER)
                      + str(escape(match.group(3))))
        body = text[match.end():]
    parts = []
    for i, chunk in enumerate(_ROLE_LINE.split(body)):
        if i % 2:  # the split keeps role lines at odd positions
            parts.append(f'<span class="role">{escape(chunk)}</span>')
        elif chunk:
            parts.append(highlight(chunk, DjangoLexer(), _FORMATTER))
    return Markup(front_html + "".join(parts))


@functools.lru_cache(maxsize=1)
def stylesheet() -> str:
    """The Pygments CSS for highlighted blocks."""
    return _FORMATTER.get_style_defs(".hl")
