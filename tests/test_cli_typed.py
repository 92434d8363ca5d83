"""The CLI as people type it (issue 19): the real ``promptrev`` in a subprocess, on a real
registry in a tmp folder."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from promptrev import Registry, errors
from promptrev.cli.exit_codes import TABLE, exit_code

from .conftest import PROMPT, variant

ROOT = Path(__file__).resolve().parent.parent
UNDECLARED = PROMPT.replace("Say hello to {{ who }}.", "Say hello to {{ who }} from {{ town }}.")


@pytest.fixture
def cli(tmp_path):
    """Run ``promptrev`` as a process on a fresh registry; returns the finished process."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PROMPTREV_") and k not in ("NO_COLOR", "EDITOR", "VISUAL")}
    env.update(PYTHONPATH=str(ROOT), PROMPTREV_REGISTRY=str(tmp_path / "reg"),
               PROMPTREV_AUTHOR="Tester <t@example.org>")

    def promptrev(*args, code=0, **extra_env):
        out = subprocess.run([sys.executable, "-m", "promptrev.cli", *map(str, args)],
                             capture_output=True, text=True, cwd=tmp_path, timeout=120,
                             env={**env, **extra_env})
        assert out.returncode == code, (args, out.returncode, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr, out.stderr
        return out

    promptrev.env = env
    Registry.init(tmp_path / "reg").close()
    return promptrev


def _seed(tmp_path: Path, *texts: str, labels: dict[str, int] | None = None) -> None:
    """Versions of 'greet' (and labels), written through the core: set-up, not under test."""
    with Registry.open(tmp_path / "reg") as reg:
        for text in texts:
            reg.save("greet", text, author="Tester <t@example.org>")
        for label, version in (labels or {}).items():
            reg.set_label("greet", label, version)


def _file(tmp_path: Path, text: str, name: str = "greet.prompty") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_save_without_base_never_overwrites_a_newer_version(cli, tmp_path):
    f = _file(tmp_path, PROMPT)
    assert cli("save", f).stdout.startswith("greet@1 ")
    assert cli("save", f).stdout.startswith("greet@1 ")  # same content: nothing overwritten
    f.write_text(variant(PROMPT, 2))
    refused = cli("save", f, code=4)
    assert "prompt 'greet' exists (latest version 1)" in refused.stderr
    assert "--base 1" in refused.stderr and "--force" in refused.stderr
    assert cli("show", "greet").stdout == PROMPT  # nothing was written
    assert cli("save", f, "--base", "1").stdout.startswith("greet@2 ")
    f.write_text(variant(PROMPT, 3))
    assert "changed since version 1" in cli("save", f, "--base", "1", code=4).stderr
    assert cli("save", f, "--force").stdout.startswith("greet@3 ")
    assert "exclude each other" in cli("save", f, "--force", "--base", "3", code=2).stderr
    cli("rm", "greet")
    f.write_text(PROMPT)
    assert cli("save", f).stdout.startswith("greet@5 ")  # a deleted artifact is recreated
    assert "--force" in cli("save", "--help").stdout


def test_save_prints_validation_warnings(cli, tmp_path):
    out = cli("save", _file(tmp_path, UNDECLARED))
    assert out.stdout.startswith("greet@1 ")
    assert re.search(r"warning: greet\.prompty, line \d+: variable 'town' is used but not "
                     r"declared in inputs", out.stderr), out.stderr
    assert "warning" not in cli("save", _file(tmp_path, PROMPT, "clean.prompty")).stderr


def test_every_exit_code_of_the_table(cli, tmp_path):
    listed = cli("--help").stdout
    for code, meaning in TABLE:
        assert f"{code}  {meaning.split(':')[0]}" in listed
    f = _file(tmp_path, PROMPT)
    cli("save", f)  # 0
    missing = tmp_path / "missing.txt"
    assert "missing.txt" in cli("render", "greet", "--var", f"who=@{missing}", code=1).stderr
    assert "No such option" in cli("save", f, "--bogus", code=2).stderr
    assert "no artifact named 'nope'" in cli("show", "nope", code=3).stderr
    f.write_text(variant(PROMPT, 1))
    cli("save", f, "--base", "0", code=4)
    assert "loopback" in cli("webhook", "add", "http://127.0.0.1:9/hook", code=5).stderr
    bad = _file(tmp_path, "---\ninputs:\n  a: {}\n  a: {}\n---\nuser:\n{{ a }}\n", "bad.prompty")
    assert "declared twice" in cli("save", bad, code=6).stderr
    assert {code for code, _ in TABLE} == {0, 1, 2, 3, 4, 5, 6}


def test_restore_a_version_as_the_new_latest(cli, tmp_path):
    _seed(tmp_path, PROMPT, variant(PROMPT, 2))
    assert cli("restore", "greet", "--to", "1").stdout.strip() == "restored version 1 as greet@3"
    assert cli("show", "greet").stdout == PROMPT
    assert "greet@2" in cli("log", "greet").stdout  # history keeps everything in between
    assert "promptrev restore greet --to N" in cli("restore", "greet", code=2).stderr
    assert "give the registry first" in cli("restore", "greet", "--to", "1", "-r",
                                             tmp_path / "x", code=2).stderr
    assert "no version 9" in cli("restore", "greet", "--to", "9", code=3).stderr


def test_diff_with_one_reference_compares_with_the_version_before(cli, tmp_path):
    _seed(tmp_path, PROMPT, variant(PROMPT, 2), variant(PROMPT, 3))
    latest = cli("diff", "greet").stdout
    assert "--- greet@2" in latest and "+++ greet@3" in latest
    assert "+You are friendly (variant 3)." in latest
    second = cli("diff", "greet@2").stdout
    assert "--- greet@1" in second and "+You are friendly (variant 2)." in second
    assert "nothing before it" in cli("diff", "greet@1", code=2).stderr


EDITOR = """\
import pathlib, subprocess, sys
path = pathlib.Path(sys.argv[1])
calls = pathlib.Path(sys.argv[0]).with_suffix(".calls")
n = int(calls.read_text()) + 1 if calls.exists() else 1
calls.write_text(str(n))
pathlib.Path(sys.argv[0]).with_suffix(f".seen{n}").write_text(path.read_text())
plan = pathlib.Path(sys.argv[0]).with_suffix(".plan").read_text().split("\\n=====\\n")
step = plan[min(n, len(plan)) - 1]
if step.startswith("!"):  # "!command|args" and a newline before the text: another save
    command, _, step = step[1:].partition("\\n")
    subprocess.run(command.split("|"), check=True)
if step != "KEEP":
    path.write_text(step)
"""


def _editor(tmp_path: Path, *steps: str) -> str:
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    script.with_suffix(".plan").write_text("\n=====\n".join(steps))
    return f"{sys.executable} {script}"


def test_edit_saves_with_the_opened_version_as_base(cli, tmp_path):
    _seed(tmp_path, PROMPT)
    out = cli("edit", "greet", "-m", "warmer", EDITOR=_editor(tmp_path, variant(PROMPT, 7)))
    assert out.stdout.startswith("greet@2 ")
    assert (tmp_path / "editor.seen1").read_text() == PROMPT  # opened on the latest text
    assert cli("show", "greet").stdout == variant(PROMPT, 7)
    assert "warmer" in cli("log", "greet").stdout
    unchanged = cli("edit", "greet", EDITOR=_editor(tmp_path, "KEEP"))
    assert "no changes: nothing saved" in unchanged.stdout
    assert "greet@3" not in cli("log", "greet").stdout


def test_edit_reopens_the_editor_on_invalid_text_with_the_problem(cli, tmp_path):
    _seed(tmp_path, PROMPT)
    invalid = PROMPT.replace("inputs:\n", "inputs:\n  who:\n    type: string\n", 1)
    fixed = variant(PROMPT, 8)
    out = cli("edit", "greet", EDITOR=_editor(tmp_path, invalid, fixed))
    assert "declared twice" in out.stderr and "reopening the editor" in out.stderr
    second = (tmp_path / "editor.seen2").read_text()
    assert second.startswith("# promptrev: ") and "declared twice" in second.splitlines()[0]
    assert second.endswith(invalid)  # the user's text, below the comments
    assert out.stdout.startswith("greet@2 ")
    assert cli("show", "greet").stdout == fixed  # the comments were not saved


def test_edit_gives_up_when_invalid_text_is_left_unchanged(cli, tmp_path):
    _seed(tmp_path, PROMPT)
    invalid = PROMPT.replace("inputs:\n", "inputs:\n  who:\n    type: string\n", 1)
    out = cli("edit", "greet", EDITOR=_editor(tmp_path, invalid, "KEEP"), code=6)
    assert "nothing saved" in out.stderr and "declared twice" in out.stderr
    assert "greet@2" not in cli("log", "greet").stdout


def test_edit_never_overwrites_a_version_saved_meanwhile(cli, tmp_path):
    _seed(tmp_path, PROMPT)
    theirs = _file(tmp_path, variant(PROMPT, 5), "theirs.prompty")
    save_theirs = "|".join([sys.executable, "-m", "promptrev.cli", "save", str(theirs),
                            "--name", "greet", "--base", "1"])
    mine = variant(PROMPT, 6)
    out = cli("edit", "greet", EDITOR=_editor(tmp_path, f"!{save_theirs}\n{mine}"), code=4)
    assert "changed since version 1" in out.stderr
    kept = re.search(r"your text is kept in (\S+); save it with: promptrev save \S+ "
                     r"--name greet --base 2", out.stderr)
    assert kept, out.stderr
    assert Path(kept.group(1)).read_text() == mine
    assert cli("show", "greet").stdout == variant(PROMPT, 5)  # theirs, not overwritten


def test_did_you_mean_for_labels_and_names(cli, tmp_path):
    _seed(tmp_path, PROMPT, labels={"production": 1})
    latest = cli("show", "greet@latets", code=3).stderr
    assert "has no label 'latets'" in latest and "did you mean 'greet@latest'?" in latest
    assert "did you mean 'greet@production'?" in cli("show", "greet@prodution", code=3).stderr
    assert "did you mean 'greet'?" in cli("show", "gret", code=3).stderr
    assert "did you mean" not in cli("show", "greet@zzz", code=3).stderr


def test_a_label_differing_only_in_case_warns(cli, tmp_path):
    _seed(tmp_path, PROMPT)
    assert "warning" not in cli("label", "set", "greet", "production", "1").stderr
    out = cli("label", "set", "greet", "Production", "1")
    assert "'Production' and 'production', which differ only in case" in out.stderr


def test_render_warns_about_variables_the_prompt_does_not_use(cli, tmp_path):
    _seed(tmp_path, PROMPT)
    out = cli("render", "greet", "--var", "who=Ada", "--var", "bogus=1")
    assert "Say hello to Ada." in out.stdout
    assert "neither declares nor uses 'bogus' (its variables: who)" in out.stderr
    assert "warning" not in cli("render", "greet", "--var", "who=Ada").stderr


def test_list_has_a_header_and_aligned_columns(cli, tmp_path):
    _seed(tmp_path, PROMPT, labels={"production": 1})
    with Registry.open(tmp_path / "reg") as reg:
        reg.save("a-much-longer-name", PROMPT)
    lines = cli("list").stdout.splitlines()
    assert lines[0].split() == ["KIND", "LATEST", "LABELS", "SAVED", "BY"]
    column = lines[0].index("LABELS")
    assert [line[column:].split()[0] for line in lines[1:]] == ["-", "production=1"]
    assert lines[2].startswith("prompt  greet@1  ")


def test_commit_hashes_have_one_length(cli, tmp_path):
    saved = cli("save", _file(tmp_path, PROMPT)).stdout.split()[1]
    logged = cli("log", "greet").stdout.split()[1]
    assert re.fullmatch(r"[0-9a-f]{12}", saved) and logged == saved


def _on_a_terminal(cli, cwd: Path, *args, **extra_env) -> str:
    """Run ``promptrev`` with a pseudo-terminal as its stdout; return what it printed."""
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "promptrev.cli", *args], stdout=child,
                            stderr=subprocess.PIPE, env={**cli.env, **extra_env},
                            cwd=cwd)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=120)
    os.close(main)
    assert proc.returncode == 0, proc.stderr.read()
    return b"".join(chunks).decode()


def test_diff_colours_only_on_a_terminal_and_never_with_no_color(cli, tmp_path):
    _seed(tmp_path, PROMPT, variant(PROMPT, 2))
    coloured = _on_a_terminal(cli, tmp_path, "diff", "greet")
    assert "\x1b[1m+++ greet@2" in coloured  # bold, readable on any background
    assert "\x1b[32m+You are friendly (variant 2)." in coloured
    assert "\x1b[31m-You are friendly." in coloured
    assert "\x1b[37m" not in coloured and "\x1b[97m" not in coloured  # never white
    assert "\x1b[" not in _on_a_terminal(cli, tmp_path, "diff", "greet", NO_COLOR="1")
    assert "\x1b[" not in cli("diff", "greet").stdout  # a pipe is not a terminal


def test_an_editor_that_fails_saves_nothing(cli, tmp_path):
    _seed(tmp_path, PROMPT)
    temp = tmp_path / "temp"
    temp.mkdir()
    out = cli("edit", "greet", EDITOR=f"{sys.executable} -c 'raise SystemExit(3)'",
              TMPDIR=str(temp), code=1)
    assert "Editing failed" in out.stderr
    assert "greet@2" not in cli("log", "greet").stdout
    assert list(temp.iterdir()) == []  # no file left behind
    cli("edit", "greet", EDITOR=_editor(tmp_path, variant(PROMPT, 2)), TMPDIR=str(temp))
    assert list(temp.iterdir()) == []


def test_every_core_error_has_an_exit_code_of_the_table():
    codes = {code for code, _ in TABLE}
    for cls in errors._all_errors():
        assert exit_code(cls("x")) in codes, cls
    assert exit_code(errors.ArtifactDeleted("x")) == 3
    assert exit_code(errors.Diverged("x")) == exit_code(errors.PreconditionRequired("x")) == 4
    assert exit_code(errors.TargetRefused("x")) == 5  # refused, though an InvalidRequest
    assert exit_code(errors.StorageFull("x")) == 1


def _stderr_on_a_terminal(cli, cwd: Path, *args, **extra_env) -> str:
    """Run ``promptrev`` with a pseudo-terminal as its stderr; return what it printed there."""
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "promptrev.cli", *args],
                            stdout=subprocess.DEVNULL, stderr=child,
                            env={**cli.env, **extra_env}, cwd=cwd)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=120)
    os.close(main)
    assert proc.returncode == 0, b"".join(chunks).decode()
    return b"".join(chunks).decode()


def test_warnings_are_yellow_on_a_terminal_and_plain_otherwise(cli, tmp_path):
    _seed(tmp_path, UNDECLARED)
    coloured = _stderr_on_a_terminal(cli, tmp_path, "show", "greet")
    assert re.search(r"\x1b\[33mwarning: .*town", coloured), repr(coloured)
    plain = _stderr_on_a_terminal(cli, tmp_path, "show", "greet", NO_COLOR="1")
    assert "warning: " in plain and "town" in plain and "\x1b[" not in plain
    piped = cli("show", "greet").stderr  # a pipe is not a terminal
    assert piped.startswith("warning: ") and "town" in piped and "\x1b[" not in piped
    # A save prints the same warning the same way.
    saved = _stderr_on_a_terminal(cli, tmp_path, "save", _file(tmp_path, UNDECLARED + "\n"),
                                  "--base", "1")
    assert re.search(r"\x1b\[33mwarning: greet\.prompty.*town", saved), repr(saved)
