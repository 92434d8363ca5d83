"""The distribution: a wheel (non-editable install) carries everything the server needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parent.parent

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


def test_package_list_matches_the_tree():
    """pyproject lists packages by hand (data folders too): none may be missing."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set(find_packages(str(ROOT), include=["promptrev*"]))
    data_only = {"promptrev.data", "promptrev.data.tiktoken", "promptrev.server.githooks",
                 "promptrev.server.static", "promptrev.server.templates",
                 "promptrev.storage.migrations.versions"}
    assert set(config["packages"]) == found | data_only
    assert "package-dir" not in config  # one import root, laid out as it is installed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the source tree (no build/ folder left in the repo)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "promptrev", src / "promptrev", ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                             "--no-build-isolation", "-q", "-w", str(out), str(src)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("promptrev-*.whl")
    return built


def test_wheel_holds_templates_static_and_hooks(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    server = "promptrev/server"
    templates = sorted(p.name for p in (ROOT / server / "templates").glob("*.html"))
    assert templates, "no templates in the source tree"
    assert {f"{server}/templates/{t}" for t in templates} <= names
    assert f"{server}/static/app.css" in names
    assert {f"{server}/githooks/pre-receive", f"{server}/githooks/post-receive"} <= names
    revisions = sorted(p.name for p in
                       (ROOT / "promptrev/storage/migrations/versions").glob("*.py"))
    assert {f"promptrev/storage/migrations/versions/{r}" for r in revisions} <= names
    assert "promptrev/storage/migrations/script.py.mako" in names
    # the default price table and tiktoken's tables: token counts work offline
    tables = sorted(p.name for p in (ROOT / "promptrev/data/tiktoken").glob("*.tiktoken.gz"))
    assert len(tables) >= 2, tables
    assert {f"promptrev/data/tiktoken/{t}" for t in tables} <= names
    assert "promptrev/data/prices.yaml" in names
    # exactly one top-level import name (plus the wheel's own metadata folder)
    assert {n.split("/")[0] for n in names} - {n.split("/")[0] for n in names
                                                if ".dist-info/" in n} == {"promptrev"}


def test_installed_wheel_serves_pages(wheel, tmp_path):
    """Install the wheel into a folder, import it from there, and render real pages."""
    target = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                             "--target", str(target), str(wheel)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for hook in ("pre-receive", "post-receive"):  # Git runs only executable hooks
        assert os.access(target / "promptrev" / "server" / "githooks" / hook, os.X_OK), hook
    script = f"""
import os
import promptrev.server as server
assert server.__file__.startswith({str(target)!r}), server.__file__
assert server.TEMPLATES == os.path.join({str(target)!r}, "promptrev", "server", "templates")
from promptrev.server import Settings, create_app, prepare
settings = Settings(registry={str(tmp_path / "reg")!r}, seed_from=None)
prepare(settings, admin_password="pw")
app = create_app(settings)
client = app.test_client()
page = client.get("/login")
assert page.status_code == 200 and b"<form" in page.data, page.status_code
css = client.get("/static/app.css")
assert css.status_code == 200 and len(css.data) > 100, css.status_code
print("served", len(page.data), len(css.data))
"""
    # The installed copy must win over the editable install of the work tree.
    env = dict(os.environ, PYTHONPATH=str(target))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("served ")
