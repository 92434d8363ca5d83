"""Fixtures: real bare Git repositories and real SQLite files in tmp folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptrev import Registry

ROOT = Path(__file__).resolve().parent.parent

PROMPT = """\
---
name: greet
description: Greets a user.
model:
  api: chat
  parameters:
    temperature: 0.7
    max_tokens: 50
inputs:
  who:
    type: string
sample:
  who: Ada
---
system:
You are friendly.

user:
Say hello to {{ who }}.
"""


@pytest.fixture
def registry(tmp_path: Path):
    reg = Registry.init(tmp_path / "reg.git")
    yield reg
    reg.close()


@pytest.fixture
def prompt_text() -> str:
    return PROMPT


def variant(text: str, n: int) -> str:
    """A different but valid prompt text."""
    return text.replace("You are friendly.", f"You are friendly (variant {n}).")
