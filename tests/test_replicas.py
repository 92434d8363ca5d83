"""One primary, two read replicas (issue 20): real ``promptrev serve`` processes on loopback.

The replicas follow the primary over its Git endpoint, woken by its long-poll; writes sent
to them are redirected (307) to the primary; reads say which commit they come from, with
the same ETag everywhere; a killed replica catches up; a dead primary leaves the replicas
reading (saying so) and refusing writes with 503.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from .live import ADMIN_PASSWORD, LiveServer, start_server

SECRET = "replica-tests-shared-secret"
LAG_LIMIT = 10.0  # seconds a save may take to reach a replica here (the bench measures it)


def prompt(word: str) -> str:
    return f"---\nname: greet\n---\nsystem:\nSay {word} to {{{{ who }}}}.\n"


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.primary = start_server(self._dir("primary"), workers=1,
                                    env={"PROMPTREV_SECRET_KEY": SECRET,
                                         "PROMPTREV_DURABILITY": "off"})
        self.token = self.primary.token()
        self.replicas = [self.start_replica(f"replica{i}") for i in (1, 2)]
        self.http = httpx.Client(headers={"Authorization": f"Bearer {self.token}"},
                                 timeout=30)

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path

    def replica_env(self) -> dict[str, str]:
        accounts = self.primary.registry / "promptrev-accounts.sqlite"
        return {"PROMPTREV_PRIMARY": self.primary.url, "PROMPTREV_PRIMARY_TOKEN": self.token,
                "PROMPTREV_ACCOUNTS_URL": f"sqlite:///{accounts}",
                "PROMPTREV_SECRET_KEY": SECRET, "PROMPTREV_DURABILITY": "off"}

    def start_replica(self, name: str) -> LiveServer:
        return start_server(self._dir(name), workers=1, env=self.replica_env())

    def save(self, server: LiveServer, text: str, **kwargs) -> httpx.Response:
        current = self.http.get(server.url + "/api/v1/artifact", params={"ref": "greet"})
        base = current.json()["version"] if current.status_code == 200 else 0
        return self.http.put(server.url + "/api/v1/artifact", params={"name": "greet"},
                             json={"text": text, "base": base}, **kwargs)

    def wait_for(self, server: LiveServer, number: int, limit: float = LAG_LIMIT
                 ) -> httpx.Response:
        """Poll ``server`` until it serves version ``number`` of greet (fails after limit)."""
        deadline = time.monotonic() + limit
        seen = None
        while time.monotonic() < deadline:
            answer = self.http.get(server.url + "/api/v1/artifact", params={"ref": "greet"})
            if answer.status_code == 200:
                seen = answer.json()["version"]
                if seen >= number:
                    return answer
            time.sleep(0.02)
        pytest.fail(f"{server.url} still serves version {seen}, not {number}, after {limit}s")

    def stop(self) -> None:
        self.http.close()
        for server in (*self.replicas, self.primary):
            server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    made = Cluster(tmp_path_factory.mktemp("replicas"))
    yield made
    made.stop()


def test_a_save_on_the_primary_reaches_both_replicas(cluster):
    saved = cluster.save(cluster.primary, prompt("hello"))
    assert saved.status_code in (200, 201), saved.text
    number = saved.json()["version"]
    head = cluster.http.get(cluster.primary.url + "/api/v1/artifact",
                            params={"ref": "greet"}).headers["X-Promptrev-Commit"]
    for replica in cluster.replicas:
        answer = cluster.wait_for(replica, number)
        assert "hello" in answer.json()["text"]
        assert answer.headers["X-Promptrev-Commit"] == head
        assert answer.headers["X-Promptrev-Role"] == "replica"
        assert "X-Promptrev-Stale" not in answer.headers
    status = json.loads(subprocess.run(
        [*_cli(cluster.replicas[0]), "replica", "status", "--json"], capture_output=True,
        text=True, timeout=60, check=True).stdout)
    assert status["primary"] == cluster.primary.url and status["reachable"] is True
    assert status["head"] == head


def test_reads_carry_the_commit_and_the_same_etag_on_every_replica(cluster):
    number = cluster.save(cluster.primary, prompt("etag")).json()["version"]
    answers = [cluster.wait_for(r, number) for r in cluster.replicas]
    primary = cluster.http.get(cluster.primary.url + "/api/v1/artifact",
                               params={"ref": "greet"})
    etags = {a.headers["ETag"] for a in [primary, *answers]}
    commits = {a.headers["X-Promptrev-Commit"] for a in [primary, *answers]}
    assert len(etags) == 1 and len(commits) == 1, (etags, commits)
    (etag,), (commit,) = etags, commits
    assert commit[:12] in etag  # the commit is part of the ETag
    for server in (cluster.primary, *cluster.replicas):  # a tag from one works on all
        again = cluster.http.get(server.url + "/api/v1/artifact", params={"ref": "greet"},
                                 headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.headers["ETag"] == etag


class RoundRobin(httpx.BaseTransport):
    """A load balancer in front of the replicas: each request goes to the next one."""

    def __init__(self, servers: list[LiveServer]):
        self.targets = [httpx.URL(s.url) for s in servers]
        self.inner = httpx.HTTPTransport()
        self.turn = 0
        self.answers: list[tuple[str, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        target = self.targets[self.turn % len(self.targets)]
        self.turn += 1
        request.url = request.url.copy_with(host=target.host, port=target.port)
        response = self.inner.handle_request(request)
        self.answers.append((f"{target.host}:{target.port}", response.status_code))
        return response


def test_the_client_cache_revalidates_across_replicas(cluster):
    from promptrev.client import Client

    number = cluster.save(cluster.primary, prompt("cached")).json()["version"]
    for replica in cluster.replicas:
        cluster.wait_for(replica, number)
    balancer = RoundRobin(cluster.replicas)
    with Client("http://balancer", cluster.token, ttl=0, transport=balancer) as client:
        assert "cached" in client.get("greet").text  # from replica 1: 200
        deadline = time.monotonic() + 10  # ttl 0: the next get revalidates in background
        while len(balancer.answers) < 2 and time.monotonic() < deadline:
            client.get("greet")
            time.sleep(0.05)
    assert [status for _, status in balancer.answers[:2]] == [200, 304], balancer.answers
    assert balancer.answers[0][0] != balancer.answers[1][0]  # two different replicas


def test_writes_to_a_replica_are_redirected_to_the_primary(cluster):
    replica = cluster.replicas[0]
    answer = cluster.save(replica, prompt("redirected"), follow_redirects=False)
    assert answer.status_code == 307, answer.text
    assert answer.headers["X-Promptrev-Redirected"] == "primary"
    assert answer.headers["Location"].startswith(cluster.primary.url + "/api/v1/artifact")
    assert answer.json()["redirect"]["details"]["primary"] == cluster.primary.url
    # the same request sent on to Location saves on the primary (a 307 keeps the method
    # and body; clients drop the token on a redirect to another origin, so it is resent
    # here: behind one load balancer, primary and replicas share an origin)
    request = answer.request
    followed = cluster.http.request(request.method, answer.headers["Location"],
                                    content=request.content,
                                    headers={"Content-Type": "application/json"})
    assert followed.status_code == 200, followed.text
    for server in cluster.replicas:
        assert "redirected" in cluster.wait_for(server, followed.json()["version"]
                                                ).json()["text"]
    # a page's form and a label move are writes too; a render is not
    form = cluster.http.post(replica.url + "/edit", data={"name": "greet"},
                             follow_redirects=False)
    assert form.status_code == 307
    label = cluster.http.put(replica.url + "/api/v1/labels",
                             params={"name": "greet", "label": "staging", "version": 1},
                             follow_redirects=False)
    assert label.status_code == 307
    reviews = cluster.http.get(replica.url + "/api/v1/reviews", follow_redirects=False)
    assert reviews.status_code == 307  # change requests live in the primary's database
    render = cluster.http.post(replica.url + "/api/v1/render",
                               json={"ref": "greet", "variables": {"who": "you"}})
    assert render.status_code == 200, render.text


def test_the_replica_registry_refuses_writes_of_its_own(cluster):
    replica = cluster.replicas[0]
    file = replica.registry.parent / "greet.prompty"
    file.write_text(prompt("local"))
    out = subprocess.run([*_cli(replica), "save", str(file), "--force"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "read replica of " + cluster.primary.url in out.stderr


def _cli(server: LiveServer) -> list[str]:
    import sys

    return [sys.executable, "-m", "promptrev.cli", "--registry", str(server.registry)]


def test_git_push_to_a_replica_lands_on_the_primary(cluster, tmp_path):
    replica = cluster.replicas[1]
    url = replica.url.replace("http://", f"http://admin:{cluster.token}@") + \
        "/git/registry.git"
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    work = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", url, str(work)], check=True, env=env, timeout=60)
    target = next(work.rglob("greet.prompty"))
    target.write_text(prompt("pushed"))
    subprocess.run(["git", "-C", str(work), "-c", "user.name=T", "-c", "user.email=t@x",
                    "commit", "-qam", "pushed through a replica"], check=True, timeout=60)
    # git sends a URL's password to that host only; a credential helper (as users have)
    # answers for the primary that the replica's 307 sends it to
    helper = f"!f() {{ echo username=admin; echo password={cluster.token}; }}; f"
    pushed = subprocess.run(["git", "-C", str(work), "-c", "credential.helper=",
                             "-c", f"credential.helper={helper}", "push",
                             replica.url + "/git/registry.git", "HEAD:main"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert pushed.returncode == 0, pushed.stderr
    primary = cluster.http.get(cluster.primary.url + "/api/v1/artifact",
                               params={"ref": "greet"}).json()
    assert "pushed" in primary["text"]
    for server in cluster.replicas:
        cluster.wait_for(server, primary["version"])


def test_a_killed_replica_restarts_and_catches_up(cluster):
    victim = cluster.replicas[1]
    os.killpg(victim.process.pid, signal.SIGKILL)  # server, workers and follower
    victim.process.wait(timeout=15)
    numbers = [cluster.save(cluster.primary, prompt(f"while down {i}")).json()["version"]
               for i in range(3)]
    cluster.replicas[1] = restarted = cluster.start_replica("replica2")
    answer = cluster.wait_for(restarted, numbers[-1])
    assert "while down 2" in answer.json()["text"]
    history = cluster.http.get(restarted.url + "/api/v1/versions",
                               params={"name": "greet"})
    assert history.status_code == 200, history.text
    got = {v["version"] for v in history.json()["versions"]}
    assert set(range(1, numbers[-1] + 1)) <= got  # nothing lost


def test_with_the_primary_down_replicas_read_stale_and_refuse_writes(cluster):
    number = cluster.save(cluster.primary, prompt("last words")).json()["version"]
    for replica in cluster.replicas:
        cluster.wait_for(replica, number)
    os.killpg(cluster.primary.process.pid, signal.SIGKILL)
    cluster.primary.process.wait(timeout=15)
    for replica in cluster.replicas:
        deadline = time.monotonic() + LAG_LIMIT
        while True:
            answer = cluster.http.get(replica.url + "/api/v1/artifact",
                                      params={"ref": "greet"})
            if "X-Promptrev-Stale" in answer.headers or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert answer.status_code == 200
        assert answer.headers["X-Promptrev-Stale"].startswith("primary unreachable since ")
        assert answer.json()["version"] == number and "last words" in answer.json()["text"]
        refused = cluster.save(replica, prompt("lost"), follow_redirects=False)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "primary_unreachable"
        assert "X-Promptrev-Redirected" not in refused.headers


def test_settings_refuse_a_primary_that_is_not_an_http_url():
    from promptrev.config import Settings
    from promptrev.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="PROMPTREV_PRIMARY must be an http"):
        Settings.from_env({"PROMPTREV_PRIMARY": "ftp://primary"})
    with pytest.raises(InvalidRequest, match="no credentials"):
        Settings.from_env({"PROMPTREV_PRIMARY": "http://u:p@primary"})
    assert Settings.from_env({"PROMPTREV_PRIMARY": "http://primary:8080/"}).primary == \
        "http://primary:8080"


def test_a_replica_registry_refuses_writes_until_promoted(tmp_path):
    from promptrev.errors import ReadOnlyReplica
    from promptrev.registry import Registry
    from promptrev.server import Settings, prepare

    path = tmp_path / "reg"
    Registry.init(path).close()
    with Registry.open(path) as reg:
        reg.set_replica_of("http://primary:8080")
    with Registry.open(path) as reg:  # the role is kept in the registry's Git config
        with pytest.raises(ReadOnlyReplica, match="read replica of http://primary:8080"):
            reg.save("greet", prompt("local"))
    done = prepare(Settings(registry=str(path), seed_from=None), admin_password="pw-123456")
    assert done.promoted  # started without PROMPTREV_PRIMARY: it takes writes again
    with Registry.open(path) as reg:
        assert reg.replica_of is None
        assert reg.save("greet", prompt("promoted")).number == 1


def test_the_follower_fast_forwards_and_refuses_a_rewritten_history(tmp_path):
    """``replication.advance`` on real registries: adopt, fast-forward, refuse divergence."""
    from promptrev.errors import Diverged
    from promptrev.registry import Registry
    from promptrev.replication import ReplicaStatus, advance
    from promptrev.storage import gitremote
    from promptrev.storage.gitremote import RemoteConfig

    primary = Registry.init(tmp_path / "primary")
    replica = Registry.init(tmp_path / "replica")
    replica.set_replica_of("http://primary:8080")
    try:
        primary.save("greet", prompt("one"))
        remote = RemoteConfig("primary", str(tmp_path / "primary"), "main")
        gitremote.add_remote(replica.path, remote)
        first = gitremote.fetch(replica.path, remote)
        assert advance(replica, first) == first  # a fresh replica adopts the history
        primary.save("greet", prompt("two"))
        second = gitremote.fetch(replica.path, remote)
        assert advance(replica, second) == second  # a fast-forward
        assert replica.get("greet").version.number == 2
        assert "two" in replica.get("greet").text
        other = Registry.init(tmp_path / "rewritten")  # the primary's history, replaced
        other.save("greet", prompt("elsewhere"))
        other.close()
        gitremote.remove_remote(replica.path, "primary")
        remote = RemoteConfig("primary", str(tmp_path / "rewritten"), "main")
        gitremote.add_remote(replica.path, remote)
        with pytest.raises(Diverged, match="does not continue this replica's"):
            advance(replica, gitremote.fetch(replica.path, remote))
        assert replica.sync() == second  # nothing changed
    finally:
        primary.close()
        replica.close()
    stopped = ReplicaStatus("http://p", second, True, 0.0, "the history\nwas rewritten ✗")
    assert stopped.stale == ("replication stopped since 1970-01-01T00:00:00Z: the history "
                             "was rewritten ?")
    assert ReplicaStatus("http://p", second, True).stale is None


assert ADMIN_PASSWORD  # the live helper's admin (the token above belongs to it)
