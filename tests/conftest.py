"""Fixtures: real bare Git repositories and real SQLite files in tmp folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from promptrev import Registry
from promptrev.model.artifacts import KINDS

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


def at(name: str, kind: str = "prompt") -> str:
    """Where an artifact's file sits in the registry's tree (in its bucket)."""
    return KINDS[kind].path(name)


def label_at(name: str, kind: str = "prompt") -> str:
    """Where an artifact's label map sits in the registry's tree (in its bucket)."""
    return KINDS[kind].label_path(name)


def variant(text: str, n: int) -> str:
    """A different but valid prompt text."""
    return text.replace("You are friendly.", f"You are friendly (variant {n}).")


class ServerEnv:
    """A real app on a tmp registry with one user (and token) per role."""

    def __init__(self, app, settings):
        self.app = app
        self.settings = settings
        self.accounts = app.extensions["promptrev"].accounts
        self.tokens: dict[str, str] = {}
        for role in ("viewer", "editor", "admin"):
            if role != "admin":
                self.accounts.add_user(role, role, password=f"{role}-pw")
            self.tokens[role] = self.accounts.create_token(role, "tests")[0]
        self.client = app.test_client()

    def headers(self, role: str = "admin", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}", **extra}

    def api(self, method: str, path: str, role: str | None = "admin", headers=None, **kw):
        all_headers = self.headers(role) if role else {}
        all_headers.update(headers or {})
        return self.client.open("/api/v1" + path, method=method, headers=all_headers, **kw)

    def login(self, role: str = "admin", client=None):
        """A test client with a logged-in session (through the real login form)."""
        client = client or self.app.test_client()
        token = csrf_token(client.get("/login").get_data(as_text=True))
        password = "admin-pw" if role == "admin" else f"{role}-pw"
        response = client.post("/login", data={"name": role, "password": password,
                                                "csrf_token": token})
        assert response.status_code == 302, response.get_data(as_text=True)
        return client


def csrf_token(page: str) -> str:
    import re

    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "page has no CSRF token"
    return match.group(1)


def make_server_env(tmp_path: Path, **settings_kw) -> ServerEnv:
    from promptrev.server import Settings, create_app, prepare

    settings_kw.setdefault("seed_from", str(ROOT / "prompts"))
    settings = Settings(registry=str(tmp_path / "reg"), **settings_kw)
    prepare(settings, admin_password="admin-pw")
    app = create_app(settings)
    app.config["TESTING"] = True
    return ServerEnv(app, settings)


@pytest.fixture
def server_env(tmp_path: Path):
    env = make_server_env(tmp_path)
    yield env
    env.app.extensions["promptrev"].close()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny random Llama, its tokenizer and PEFT adapters, built locally (no downloads)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from .tiny_models import tiny_models

    # 64-wide matrices gain nothing from threads, and a second torch thread waiting for a
    # core busy with other work made these tests 2-3x slower on the 2-core machines.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_models(tmp_path_factory)
    torch.set_num_threads(threads)


def hf_prompt(model_dir, body: str = "user:\nSay something about {{ topic }}.\n",
              max_tokens: int = 8, extra: str = "") -> str:
    """A prompt whose front matter runs it on a local transformers model."""
    return (f"---\nname: tiny\nmodel:\n  api: chat\n  configuration:\n    type: hf\n"
            f"    name: {model_dir}\n  parameters:\n    max_tokens: {max_tokens}\n"
            f"    temperature: 0\ninputs:\n  topic:\n    type: string\n{extra}"
            f"sample:\n  topic: prompts\n---\n{body}")


@pytest.fixture
def cli(monkeypatch):
    """``promptrev`` through click's runner, with no registry or database from the env."""
    from click.testing import CliRunner

    from promptrev.cli.main import main

    for name in ("PROMPTREV_REGISTRY", "PROMPTREV_INDEX_URL", "PROMPTREV_ACCOUNTS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROMPTREV_AUTHOR", "Tester <t@example.org>")
    runner = CliRunner()

    def invoke(*args, ok=True):
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


@pytest.fixture
def run(tmp_path, monkeypatch, cli):
    """``promptrev`` through click's runner on a fresh registry in ``tmp_path``."""
    monkeypatch.setenv("PROMPTREV_REGISTRY", str(tmp_path / "reg"))
    cli("init")
    return cli


PG_URL = os.environ.get("PROMPTREV_TEST_POSTGRES_URL")


@pytest.fixture
def pg_url():
    """A PostgreSQL URL whose search_path is a fresh schema (dropped afterwards).

    Skips unless PROMPTREV_TEST_POSTGRES_URL names a server, e.g.
    ``postgresql+psycopg://postgres@127.0.0.1:55432/promptrev_test`` (.ci/run starts one).
    """
    if not PG_URL:
        pytest.skip("PROMPTREV_TEST_POSTGRES_URL not set")
    import uuid
    from urllib.parse import quote

    import sqlalchemy as sa

    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()
