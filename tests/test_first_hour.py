"""The first hour with a model (issue 19): a fresh install says at once why nothing runs
and which setting fixes it, ``promptrev models`` says which configured model answers, and
an OpenAI-compatible server (here a real ``promptrev serve`` on loopback running the tiny
local model) takes the starter prompts, as the README shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .live import ROOT, free_port, start_server

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SECRET = "sk-test-never-printed-4321"


def promptrev(tmp: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OPENAI_API_KEY", "PROMPTREV_MODELS") and "PROXY" not in k.upper()}
    return subprocess.run([sys.executable, "-m", "promptrev.cli", "--registry",
                           str(tmp / "reg"), *args], capture_output=True, text=True,
                          cwd=ROOT, env={**clean, **(env or {})}, timeout=120)


@pytest.fixture
def starter(tmp_path):
    for args in (("init",), ("import", str(ROOT / "prompts"))):
        assert promptrev(tmp_path, *args).returncode == 0
    return tmp_path


def test_a_starter_prompt_without_a_key_names_the_key_and_the_models_file(starter):
    ran = promptrev(starter, "run", "summarize", "--sample")
    assert ran.returncode != 0
    assert "OPENAI_API_KEY" in ran.stderr and "PROMPTREV_MODELS" in ran.stderr, ran.stderr
    assert "after retries" not in ran.stderr and "Traceback" not in ran.stderr


def test_a_server_that_is_not_running_is_said_at_once(starter):
    models = starter / "models.yaml"
    models.write_text(f"local: {{backend: openai, name: llama3.2, "
                      f"base_url: 'http://127.0.0.1:{free_port()}/v1', api_key: {SECRET}}}\n"
                      "nowhere: {backend: openai, name: m, base_url: 'http://x.invalid/v1'}\n")
    env = {"PROMPTREV_MODELS": str(models)}
    ran = promptrev(starter, "run", "summarize", "--sample", "--model", "local", env=env)
    assert ran.returncode != 0
    assert "nothing listens there" in ran.stderr and "'llama3.2'" in ran.stderr, ran.stderr
    assert "after retries" not in ran.stderr and "127.0.0.1" not in ran.stderr
    assert SECRET not in ran.stderr
    ran = promptrev(starter, "run", "summarize", "--sample", "--model", "nowhere", env=env)
    assert "does not resolve" in ran.stderr, ran.stderr


def test_models_lists_each_configured_model_and_whether_it_answers(tmp_path, tiny):
    served_models = tmp_path / "served.yaml"
    served_models.write_text(f"tiny:\n  backend: hf\n  path: {tiny.model}\n")
    (tmp_path / "server").mkdir()
    server = start_server(tmp_path / "server", workers=1,
                          env={"PROMPTREV_MODELS": str(served_models)})
    try:
        token = server.token()
        mine = tmp_path / "mine.yaml"
        mine.write_text(
            f"local-tiny: {{backend: hf, path: '{tiny.model}'}}\n"
            f"missing: {{backend: hf, path: '{tmp_path / 'no-such-model'}'}}\n"
            f"served: {{backend: openai, name: tiny, base_url: '{server.url}/v1', "
            f"api_key: '{token}'}}\n"
            f"down: {{backend: openai, name: llama3.2, "
            f"base_url: 'http://127.0.0.1:{free_port()}/v1', api_key: {SECRET}}}\n"
            "openai: {backend: openai, name: gpt-4o-mini}\n")
        for args in (("init",), ("import", str(ROOT / "prompts"))):
            assert promptrev(tmp_path, *args).returncode == 0
        env = {"PROMPTREV_MODELS": str(mine)}
        listed = promptrev(tmp_path, "models", "--json", env=env)
        assert listed.returncode == 0, listed.stderr  # some model answers
        found = {m["name"]: m for m in json.loads(listed.stdout)["models"]}
        assert {n: m["ok"] for n, m in found.items()} == {
            "local-tiny": True, "missing": False, "served": True, "down": False,
            "openai": False}
        assert "serves 'tiny'" in found["served"]["status"]
        assert "no such folder" in found["missing"]["status"]
        assert "nothing listens" in found["down"]["status"]
        assert "OPENAI_API_KEY" in found["openai"]["status"]
        text = promptrev(tmp_path, "models", env=env)
        assert SECRET not in text.stdout + listed.stdout and token not in text.stdout
        assert "OPENAI_API_KEY is not set" in text.stdout

        # The README's path: a starter prompt on an OpenAI-compatible server's model.
        ran = promptrev(tmp_path, "run", "summarize", "--sample", "--model", "served",
                        "--max-tokens", "4", "--json", env=env)
        assert ran.returncode == 0, ran.stderr
        answer = json.loads(ran.stdout)
        assert answer["generation"]["completion_tokens"] > 0
        assert answer["generation"]["model"] == "tiny"
    finally:
        server.stop()
    nothing = promptrev(tmp_path, "models")
    assert nothing.returncode == 1 and "no models configured" in nothing.stdout
