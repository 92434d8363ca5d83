"""The CLI never overwrites silently and says so readably (issue 19): ``import`` needs
``--base COMMIT`` or ``--force`` to replace existing artifacts, and a divergence from a
remote names commits with the same 12 hex digits as every other command.

``promptrev`` runs through click's runner on a real registry in a tmp folder; the remote
is a real bare Git repository with a teammate's real clone (tests/test_remotes.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from promptrev import Registry

from .conftest import PROMPT, at, variant
from .test_remotes import Teammate, git

HELLO = PROMPT.replace("Say hello", "Say a warm hello")


def _folder(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "export"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.prompty").write_text(text)
    return folder


def _versions(tmp_path: Path, name: str) -> list[int]:
    with Registry.open(tmp_path / "reg") as reg:
        return sorted(v.number for v in reg.history(name))


def _head(tmp_path: Path) -> str:
    with Registry.open(tmp_path / "reg") as reg:
        return reg.resolve("greet").commit


def test_import_overwrites_only_with_a_base_it_was_exported_from_or_force(run, tmp_path):
    folder = _folder(tmp_path, greet=PROMPT, hello=HELLO)
    assert "created    greet" in run("import", folder).output
    exported = _head(tmp_path)

    # Changed files over existing artifacts: refused without --base, naming them; nothing
    # is imported (not even the new file next to them).
    _folder(tmp_path, greet=variant(PROMPT, 2), fresh=HELLO)
    refused = run("import", folder, ok=False)
    assert refused.exit_code == 4, refused.output
    assert "import would overwrite 1 artifact that exists: greet (v1)" in refused.output
    assert "--base COMMIT" in refused.output and "--force" in refused.output
    assert _versions(tmp_path, "greet") == [1]
    with Registry.open(tmp_path / "reg") as reg:
        assert "fresh" not in {a.name for a in reg.list()}

    # With the commit the files came from: nothing changed since, so the import goes in.
    done = run("import", folder, "--base", exported[:12]).output
    assert "updated    greet" in done and "created    fresh" in done
    assert "unchanged  hello" in done
    assert _versions(tmp_path, "greet") == [1, 2]
    imported = _head(tmp_path)

    # Someone saves greet meanwhile: an import based on the older commit is refused.
    with Registry.open(tmp_path / "reg") as reg:
        reg.save("greet", variant(PROMPT, 3), base=2, author="Mate <mate@example.org>")
    _folder(tmp_path, greet=variant(PROMPT, 4))
    stale = run("import", folder, "--base", imported, ok=False)
    assert stale.exit_code == 4, stale.output
    assert (f"1 artifact changed on main since {imported[:12]}, so importing would "
            "overwrite that change: greet (v2 then, v3 now)") in stale.output
    assert _versions(tmp_path, "greet") == [1, 2, 3]

    # --force overwrites whatever is the latest.
    assert "updated    greet" in run("import", folder, "--force").output
    assert _versions(tmp_path, "greet") == [1, 2, 3, 4]


def test_import_base_must_name_a_commit_of_main(run, tmp_path):
    folder = _folder(tmp_path, greet=PROMPT)
    run("import", folder)
    _folder(tmp_path, greet=variant(PROMPT, 2))
    for base, expected in (("not-hex", "'not-hex' is not a commit hash"),
                           ("deadbeef", "no commit deadbeef in the history of main")):
        refused = run("import", folder, "--base", base, ok=False)
        assert refused.exit_code not in (0, 1) and expected in refused.output, refused.output
    both = run("import", folder, "--base", _head(tmp_path), "--force", ok=False)
    assert both.exit_code == 2 and "--base and --force exclude each other" in both.output
    assert _versions(tmp_path, "greet") == [1]


def test_an_artifact_created_after_the_base_counts_as_changed(run, tmp_path):
    first = _folder(tmp_path, greet=PROMPT)
    run("import", first)
    base = _head(tmp_path)
    with Registry.open(tmp_path / "reg") as reg:
        reg.save("hello", HELLO, author="Mate <mate@example.org>")
    _folder(tmp_path, hello=HELLO.replace("warm", "warmer"))
    refused = run("import", first, "--base", base, ok=False)
    assert refused.exit_code == 4 and "hello (not there then, v1 now)" in refused.output


def test_a_divergence_names_commits_with_twelve_hex_digits(run, tmp_path):
    bare = tmp_path / "team.git"
    git("init", "-q", "--bare", "--initial-branch=main", bare)
    prompt = tmp_path / "greet.prompty"
    prompt.write_text(PROMPT)
    run("save", prompt, "-m", "first")
    run("remote", "add", "origin", bare)
    run("push")
    mate = Teammate(bare, tmp_path / "mate")
    mate.write(at("greet"), variant(PROMPT, 2))
    theirs = mate.commit("theirs")
    mate.push()
    prompt.write_text(PROMPT.replace("Say hello", "Please say hello"))
    run("save", prompt, "-m", "ours", "--base", "1")
    refused = run("pull", ok=False)
    assert refused.exit_code == 4 and "diverged" in refused.output
    assert f"{theirs[:12]} 'theirs'" in refused.output, refused.output
    shown = set(re.findall(r"\b[0-9a-f]{7,40}\b", refused.output))
    assert shown and all(len(sha) == 12 for sha in shown), shown


def test_importing_one_file_of_another_format_is_held_to_the_same_rule(run, tmp_path):
    """A single Dotprompt file over an existing, different prompt: refused without --base."""
    source = tmp_path / "hello.prompt"
    source.write_text("---\nmodel: openai/gpt-4o-mini\n---\n{{role \"system\"}}\nBe warm.\n"
                      "{{role \"user\"}}\nHi {{name}}.\n")
    run("import", source)
    with Registry.open(tmp_path / "reg") as reg:
        base = reg.resolve("hello").commit
    source.write_text(source.read_text().replace("warm", "warmer"))
    refused = run("import", source, ok=False)
    assert refused.exit_code == 4 and "hello (v1)" in refused.output, refused.output
    assert _versions(tmp_path, "hello") == [1]
    assert "updated    hello" in run("import", source, "--base", base).output
    assert _versions(tmp_path, "hello") == [1, 2]
