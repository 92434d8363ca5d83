"""An author line a Git commit cannot record is refused by name, never an internal error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from promptrev import Registry
from promptrev.errors import InvalidRequest

from .conftest import PROMPT

ROOT = Path(__file__).resolve().parent.parent

BAD = {
    "Evil <a>b@x>": "contains '>'",
    "A <b> <c@d>": "contains '>'",
    "Bad\nName <x@y>": "contains '\\n'",
    "Nul\x01 <x@y>": "contains '\\x01'",
    "<>": "has no name",
    "Ann <ann@x": "contains '<'",
}


@pytest.mark.parametrize("author", sorted(BAD))
def test_a_malformed_author_is_refused_and_nothing_is_written(tmp_path: Path,
                                                              author: str) -> None:
    Registry.init(tmp_path / "reg").close()
    (tmp_path / "greet.prompty").write_text(PROMPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTREV_")}
    out = subprocess.run(
        [sys.executable, "-m", "promptrev.cli", "-r", str(tmp_path / "reg"),
         "--author", author, "save", str(tmp_path / "greet.prompty")],
        capture_output=True, text=True, timeout=120, env={**env, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 6, (out.stdout, out.stderr)  # invalid value
    assert BAD[author] in out.stderr and "internal error" not in out.stderr, out.stderr
    with Registry.open(tmp_path / "reg") as reg:
        assert all(a.name != "greet" for a in reg.list())


def test_well_formed_authors_are_recorded_as_written(tmp_path: Path) -> None:
    with Registry.init(tmp_path / "reg") as reg:
        reg.save("greet", PROMPT, author="Ann Lee <ann@example.org>")
        reg.save("greet", PROMPT + "\n", author="Bo")
    log = subprocess.run(["git", "--git-dir", str(tmp_path / "reg"), "log", "--format=%an|%ae",
                          "-2", "main"], capture_output=True, text=True, check=True).stdout
    assert log.splitlines() == ["Bo|Bo@promptrev", "Ann Lee|ann@example.org"]


def test_a_commit_message_with_a_nul_is_refused_before_anything_is_written(
        tmp_path: Path) -> None:
    with Registry.init(tmp_path / "reg") as reg:
        with pytest.raises(InvalidRequest, match="NUL"):
            reg.save("greet", PROMPT, message="first\x00line")
        assert all(a.name != "greet" for a in reg.list())
        assert reg.save("greet", PROMPT, message="first line").number == 1
