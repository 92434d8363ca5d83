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


def test_nginx_sends_writes_and_pushes_to_the_primary_and_reads_to_a_replica(tmp_path):
    """docs/deploy/nginx.conf, run for real in front of a primary and a replica."""
    import os
    import socket
    import tempfile
    import time

    import httpx

    from .live import free_port, start_server

    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run does)")
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    primary = start_server(tmp_path / "p", workers=1, env={"PROMPTREV_DURABILITY": "off"})
    servers = [primary]
    scratch = tempfile.mkdtemp(prefix="promptrev-nginx-")  # nginx's workers may be nobody
    os.chmod(scratch, 0o777)
    process = None
    try:
        token = primary.token()
        accounts = primary.registry / "promptrev-accounts.sqlite"
        replica = start_server(tmp_path / "r", workers=1, env={
            "PROMPTREV_PRIMARY": primary.url, "PROMPTREV_PRIMARY_TOKEN": token,
            "PROMPTREV_ACCOUNTS_URL": f"sqlite:///{accounts}", "PROMPTREV_DURABILITY": "off"})
        servers.append(replica)
        port = free_port()
        host = lambda s: s.url.removeprefix("http://")  # noqa: E731
        conf = (CONF.read_text().replace("10.0.0.10:8080", host(primary))
                .replace("10.0.0.11:8080", host(replica))
                .replace("        server 10.0.0.12:8080;  # replica 2\n", "")
                .replace("listen 8080;", f"listen 127.0.0.1:{port};")
                .replace("/tmp/promptrev-nginx", f"{scratch}/nginx"))
        (tmp_path / "nginx.conf").write_text(conf)
        process = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf"), "-g",
                                    "daemon off;"], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
        front = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {token}"}
        text = "---\nname: lb\n---\nsystem:\nThrough the balancer to {{ who }}.\n"
        saved = httpx.put(front + "/api/v1/artifact", params={"name": "lb"}, headers=auth,
                          json={"text": text, "base": 0}, timeout=30)
        assert saved.status_code == 201, saved.text  # no 307: nginx sent it to the primary
        assert "X-Promptrev-Role" not in saved.headers
        deadline = time.monotonic() + 10
        while True:  # reads come from the replica once it has the save
            read = httpx.get(front + "/api/v1/artifact", params={"ref": "lb"}, headers=auth,
                             timeout=30)
            if read.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert read.status_code == 200 and read.headers["X-Promptrev-Role"] == "replica"
        reviews = httpx.get(front + "/api/v1/reviews", headers=auth, timeout=30)
        assert reviews.status_code == 200 and "X-Promptrev-Role" not in reviews.headers
        work = tmp_path / "clone"
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        url = f"http://admin:{token}@127.0.0.1:{port}/git/registry.git"
        subprocess.run(["git", "clone", "-q", url, str(work)], check=True, env=env, timeout=60)
        target = next(work.rglob("lb.prompty"))
        target.write_text(text.replace("balancer", "pushed balancer"))
        subprocess.run(["git", "-C", str(work), "-c", "user.name=T", "-c", "user.email=t@x",
                        "commit", "-qam", "push through nginx"], check=True, timeout=60)
        pushed = subprocess.run(["git", "-C", str(work), "push", "-q", "origin", "HEAD:main"],
                                capture_output=True, text=True, env=env, timeout=60)
        assert pushed.returncode == 0, pushed.stderr  # a replica would have sent a 307
        on_primary = httpx.get(primary.url + "/api/v1/artifact", params={"ref": "lb"},
                               headers=auth, timeout=30).json()
        assert on_primary["version"] == 2 and "pushed balancer" in on_primary["text"]
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=15)
        for server in servers:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
