"""``promptrev export -o DIR`` writes inside DIR, whatever the stored prompt names.

A prompt's ``template.partials`` keys come from whoever saved it (a push, a pull from a
team's repository, an import); the Dotprompt export writes each as ``_<name>.prompt``.
A name with ``..`` must never put a file outside the output folder: the export refuses,
naming the file, and writes nothing.
"""

from __future__ import annotations

import os

import pytest


def _files(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root)
                  for d, _, names in os.walk(root) for n in names)


@pytest.mark.parametrize("partial", ["x/../../../../escaped", "x/../../escaped", "a/../../b/.."])
def test_export_never_writes_outside_its_folder(run, tmp_path, partial):
    source = tmp_path / "in"
    source.mkdir()
    (source / "evil.prompty").write_text(
        "---\nname: evil\ntemplate:\n  format: handlebars\n  partials:\n"
        f"    \"{partial}\": \"PWNED {{{{topic}}}}\"\n---\n"
        f"user:\nHello {{{{> {partial}}}}} {{{{topic}}}}\n")
    run("import", source / "evil.prompty")
    out = tmp_path / "a" / "b" / "out"
    out.mkdir(parents=True)
    before = _files(tmp_path / "a")
    result = run("export", "evil", "--format", "dotprompt", "-o", out, ok=False)
    assert result.exit_code != 0, result.output
    assert "outside the output folder" in result.output, result.output
    assert "Traceback" not in result.output
    assert _files(tmp_path / "a") == before  # nothing written, inside or out
    assert not [p for p in _files(tmp_path) if "escaped" in p]


def test_export_of_an_ordinary_partial_still_writes_it(run, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "ok.prompty").write_text(
        "---\nname: ok\ntemplate:\n  format: handlebars\n  partials:\n"
        "    greet: \"Hi {{topic}}\"\n---\nuser:\n{{> greet}} there\n")
    run("import", source / "ok.prompty")
    out = tmp_path / "out"
    run("export", "ok", "--format", "dotprompt", "-o", out)
    assert _files(out) == ["_greet.prompt", "ok.prompt"]
