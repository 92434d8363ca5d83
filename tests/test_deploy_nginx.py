"""The nginx configuration of docs/deploy (issue 20) is one nginx accepts (``nginx -t``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parent.parent / "docs" / "deploy" / "nginx.conf"


def test_the_deploy_nginx_config_is_valid():
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run does): "
                    "docs/deploy/nginx.conf was not checked")
    out = subprocess.run([nginx, "-t", "-c", str(CONF)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "test is successful" in out.stderr


def test_writes_and_pushes_go_to_the_primary_in_the_config():
    text = CONF.read_text()
    assert "default promptrev_primary;" in text  # every method but GET/HEAD/OPTIONS
    assert "git-receive-pack promptrev_primary;" in text  # git push's first GET
