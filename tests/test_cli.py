"""The ``promptrev`` command line, through click's runner and as the installed script."""

import ast
import json
import subprocess
import sys
from pathlib import Path

from .conftest import PROMPT, variant

ROOT = Path(__file__).resolve().parent.parent


def test_init_import_list_show(run):
    out = run("import", ROOT / "prompts").output
    assert "created    sentiment/zero-shot" in out
    assert "created    dataset:sentiment" in out
    assert "unchanged  summarize" in run("import", ROOT / "prompts").output
    listing = json.loads(run("list", "--json").output)
    assert {i["name"] for i in listing} >= {"summarize", "sentiment/few-shot", "sentiment"}
    assert run("show", "summarize").output == (ROOT / "prompts/summarize.prompty").read_text()
    shown = json.loads(run("show", "summarize@1", "--json").output)
    assert (shown["version"], shown["author"]) == (1, "Tester")


def test_save_log_diff_label_rollback(run, tmp_path):
    f = tmp_path / "greet.prompty"
    f.write_text(PROMPT)
    assert run("save", f, "-m", "first").output.startswith("greet@1 ")
    f.write_text(variant(PROMPT, 2))
    run("save", f, "-m", "second", "--base", "1")
    stale = run("save", f, "--base", "1", ok=False)
    assert stale.exit_code == 4
    assert "changed since version 1" in stale.output
    log = json.loads(run("log", "greet", "--json").output)
    assert [(v["version"], v["message"]) for v in log] == [(2, "second"), (1, "first")]
    assert "greet@2" in run("log", "greet").output
    diff = run("diff", "greet@1", "greet@2").output
    assert "+You are friendly (variant 2)." in diff
    assert "rendered:" in diff
    as_json = json.loads(run("diff", "greet@1", "greet@2", "--json").output)
    assert as_json["text"]["added"] == 1
    run("label", "set", "greet", "production", "2")
    assert json.loads(run("label", "list", "greet", "--json").output) == {"production": 2}
    assert "greet@production -> 1" in run("rollback", "greet", "--to", "1",
                                          "--label", "production").output
    assert json.loads(run("label", "log", "greet", "--json").output)[0]["to"] == 1
    assert "restored version 1 as greet@3" in run("rollback", "greet", "--to", "1").output
    rendered = json.loads(run("render", "greet@production", "--var", "who=Ada",
                              "--json").output)
    assert rendered[1] == {"role": "user", "content": "Say hello to Ada."}
    assert "Say hello to Ada." in run("render", "greet", "--sample").output
    run("label", "rm", "greet", "production")
    assert run("rm", "greet").output.strip() == "deleted greet@4"
    assert json.loads(run("list", "--json").output) == []
    assert run("list", "--deleted").output.splitlines()[1].startswith("prompt  greet@4 (deleted)")


def test_render_var_from_file(run, tmp_path):
    f = tmp_path / "greet.prompty"
    f.write_text(PROMPT)
    run("save", f)
    (tmp_path / "who.txt").write_text("Grace Hopper")
    out = run("render", "greet", "--var", f"who=@{tmp_path / 'who.txt'}").output
    assert "Say hello to Grace Hopper." in out


def test_errors_are_messages_not_tracebacks(run, tmp_path):
    result = run("show", "missing@2", ok=False)
    assert result.exit_code == 3
    assert result.output.strip() == "error: no artifact named 'missing'"
    bad = tmp_path / "bad.prompty"
    bad.write_text("---\ninputs:\n  a: {}\n  a: {}\n---\nsytem:\n{{ a }\n")
    result = run("save", bad, ok=False)
    assert "bad.prompty, line 4: input 'a' is declared twice" in result.output
    assert "Traceback" not in result.output
    result = run("render", "x@@", ok=False)
    assert "more than one '@'" in result.output


def test_reindex_and_fsck(run):
    run("import", ROOT / "prompts")
    assert "rebuilt index" in run("reindex").output
    report = json.loads(run("fsck", "--json").output)
    assert report["ok"] and report["rows"]["version"] == 8


def test_installed_script_runs_without_heavy_imports(tmp_path):
    code = ("import sys; from promptrev.cli.main import main\n"
            "heavy = {'torch', 'transformers', 'peft', 'openai', 'flask'} & set(sys.modules)\n"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    # The script pip installed beside this interpreter, not whatever PATH finds first.
    script = Path(sys.executable).parent / "promptrev"
    assert script.is_file(), f"no promptrev script in {script.parent}: run 'make install'"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert "Prompt registry" in out.stdout and "rollback" in out.stdout


def _imports(nodes):
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module.split(".")[0]


def test_core_never_imports_transport_or_heavy_libraries():
    edges = (ROOT / "promptrev" / "cli", ROOT / "promptrev" / "server")
    for path in (ROOT / "promptrev").rglob("*.py"):
        if path.parent in edges:
            continue  # the transports themselves
        tree = ast.parse(path.read_text(), str(path))
        anywhere = set(_imports(ast.walk(tree)))
        assert not anywhere & {"flask", "click"}, f"{path} imports a transport library"
        top_level = set(_imports(tree.body))  # heavy libraries may be imported lazily only
        if path.parent.name == "runner" and path.stem in ("hf", "openai_backend"):
            continue  # backend modules are themselves imported only when used
        assert not top_level & {"torch", "transformers", "peft", "openai"}, path


def test_cli_server_and_reads_never_load_heavy_libraries(tmp_path):
    code = (
        "import sys, promptrev, promptrev.runner, promptrev.runner.execute, promptrev.cli.main\n"
        "from promptrev.server import Settings, create_app, prepare\n"
        f"s = Settings(registry={str(tmp_path / 'r')!r}, seed_from={str(ROOT / 'prompts')!r})\n"
        "prepare(s, admin_password='pw')\n"
        "app = create_app(s)\n"
        "token = app.extensions['promptrev'].accounts.create_token('admin')[0]\n"
        "c = app.test_client()\n"
        "h = {'Authorization': 'Bearer ' + token}\n"
        "assert c.get('/api/v1/artifact?ref=summarize', headers=h).status_code == 200\n"
        "assert c.get('/v1/models', headers=h).status_code == 200\n"
        "heavy = {'torch', 'transformers', 'peft', 'openai'} & set(sys.modules)\n"
        "print(sorted(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_bad_models_file_matters_only_to_commands_that_run_models(run, monkeypatch, tmp_path):
    monkeypatch.setenv("PROMPTREV_MODELS", str(tmp_path / "missing.yaml"))
    assert run("list").exit_code == 0  # no model is needed to list
    result = run("run", "greet", ok=False)
    assert result.exit_code == 6
    assert "PROMPTREV_MODELS: cannot read" in result.output and "missing.yaml" in result.output
    (tmp_path / "bad.yaml").write_text("a: [\n")
    monkeypatch.setenv("PROMPTREV_MODELS", str(tmp_path / "bad.yaml"))
    result = run("run", "greet", ok=False)
    assert result.exit_code == 6 and "is not valid YAML" in result.output
    assert "Traceback" not in result.output
