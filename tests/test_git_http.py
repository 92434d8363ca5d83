"""Git over HTTP: the real git CLI cloning from and pushing to a real ``promptrev serve``."""

from __future__ import annotations

import base64
import gzip
import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from promptrev.model.artifacts import KINDS

from .conftest import PROMPT, at, label_at, make_server_env, variant
from .live import ADMIN_PASSWORD, LiveServer, start_server

GIT_PATH = "/git/registry.git"


class Git:
    """The git CLI with its own HOME and config, and an API token in its credential helper."""

    def __init__(self, home: Path, server: LiveServer, token: str | None):
        home.mkdir(parents=True, exist_ok=True)
        self.home, self.server = home, server
        config = home / "gitconfig"
        config.write_text("[user]\n\tname = Test\n\temail = test@example.org\n"
                          "[init]\n\tdefaultBranch = main\n")
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith("GIT_") and key != "SSH_ASKPASS"}
        self.env.update({"HOME": str(home), "GIT_CONFIG_GLOBAL": str(config),
                         "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
                         "GIT_ASKPASS": "", "PROMPTREV_TEST_TOKEN": token or ""})
        if token:
            helper = '!f() { echo username=git; echo "password=$PROMPTREV_TEST_TOKEN"; }; f'
            self("config", "--global", "credential.helper", helper)

    def __call__(self, *args: str, cwd: Path | None = None, check: bool = True
                 ) -> subprocess.CompletedProcess:
        out = subprocess.run(["git", *args], cwd=cwd, env=self.env, capture_output=True,
                             text=True, timeout=120)
        if check:
            assert out.returncode == 0, f"git {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
        return out

    def clone(self, name: str = "work", path: str = GIT_PATH) -> Path:
        work = self.home / name
        self("clone", "-q", self.server.url + path, str(work))
        return work

    def commit(self, work: Path, message: str, author: str | None = None) -> str:
        self("add", "-A", cwd=work)
        extra = ["--author", author] if author else []
        self("commit", "-q", "-m", message, *extra, cwd=work)
        return self("rev-parse", "HEAD", cwd=work).stdout.strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_server(tmp_path_factory.mktemp("git-http"), workers=2)
    live.cli("user", "add", "erin", "--role", "editor")
    live.cli("user", "add", "vic", "--role", "viewer")
    live.tokens = {"admin": live.token(), "editor": live.token("erin"),
                   "viewer": live.token("vic")}
    yield live
    live.stop()


@pytest.fixture
def git_as(server, tmp_path):
    """``git_as("editor")``: a git client holding that role's token."""
    def make(role: str | None) -> Git:
        return Git(tmp_path / (role or "nobody"), server, server.tokens.get(role))
    return make


def api(server: LiveServer, path: str, **params) -> dict:
    r = httpx.get(server.url + "/api/v1" + path, params=params, timeout=30,
                  headers={"Authorization": f"Bearer {server.tokens['admin']}"})
    r.raise_for_status()
    return r.json()


def remote_main(server: LiveServer) -> str:
    """Where main points on the server, asked of the registry itself."""
    out = subprocess.run(["git", "--git-dir", str(server.registry), "rev-parse", "main"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def break_front_matter(text: str) -> str:
    return text.replace("---\n", "---\nname: [unclosed\n", 1)


# ---- reading -------------------------------------------------------------------------------
def test_clone_has_every_artifact_of_the_registry(server, git_as):
    work = git_as("viewer").clone()
    names = {a["name"] for a in api(server, "/artifacts")["artifacts"] if a["kind"] == "prompt"}
    cloned = {KINDS["prompt"].artifact_of(p.relative_to(work).as_posix())
              for p in (work / "prompts").rglob("*.prompty")}
    assert names and cloned == names
    head = git_as("viewer")("rev-parse", "HEAD", cwd=work).stdout.strip()
    assert head == remote_main(server)
    # The alias without ".git" serves the same repository.
    again = git_as("viewer").clone("again", "/git/registry")
    assert git_as("viewer")("rev-parse", "HEAD", cwd=again).stdout.strip() == head


def test_clone_without_a_token_is_refused_with_a_basic_challenge(server, git_as):
    r = httpx.get(server.url + GIT_PATH + "/info/refs",
                  params={"service": "git-upload-pack"})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Basic realm="promptrev"'
    nobody = git_as(None)
    out = nobody("clone", server.url + GIT_PATH, str(nobody.home / "w"), check=False)
    assert out.returncode != 0 and "could not read Username" in out.stderr
    bad = Git(git_as(None).home / "bad", server, "prv_not-a-token")
    out = bad("clone", server.url + GIT_PATH, str(bad.home / "w"), check=False)
    assert out.returncode != 0 and "Authentication failed" in out.stderr


# ---- pushing to main -----------------------------------------------------------------------
def test_push_to_main_makes_a_version_with_the_git_author(server, git_as):
    git = git_as("editor")
    work = git.clone()
    before = api(server, "/artifact", ref="summarize")["version"]
    path = work / at("summarize")
    path.write_text(path.read_text().replace("system:", "system:\nAnswer in one line.", 1))
    labels = work / label_at("summarize")
    labels.parent.mkdir(parents=True, exist_ok=True)
    labels.write_text(f"staging: {before + 1}\n")
    sha = git.commit(work, "shorter summaries", author="Grace Hopper <grace@navy.mil>")
    out = git("push", "origin", "main", cwd=work)
    assert f"prompt summarize is now version {before + 1}" in out.stderr  # remote: ...
    assert remote_main(server) == sha

    latest = api(server, "/artifact", ref="summarize")
    assert (latest["version"], latest["commit"]) == (before + 1, sha)
    assert (latest["author"], latest["email"]) == ("Grace Hopper", "grace@navy.mil")
    assert "Answer in one line." in latest["text"]
    assert api(server, "/artifact", ref="summarize@staging")["version"] == before + 1
    history = api(server, "/versions", name="summarize")
    assert history["versions"][0]["message"] == "shorter summaries"
    assert history["labels"] == {"staging": before + 1}
    page = logged_in(server).get("/a/summarize")
    assert page.status_code == 200 and "Answer in one line." in page.text
    assert "Grace Hopper" in page.text and sha[:10] in page.text


def logged_in(server: LiveServer) -> httpx.Client:
    browser = httpx.Client(base_url=server.url, timeout=30)
    form = browser.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    r = browser.post("/login", data={"name": "admin", "password": ADMIN_PASSWORD,
                                     "csrf_token": csrf})
    assert r.status_code == 302
    return browser


def test_invalid_prompty_is_refused_naming_the_file(server, git_as):
    git = git_as("editor")
    work = git.clone()
    main_before = remote_main(server)
    before = api(server, "/artifact", ref="reasoning/chain-of-thought")["version"]
    path = work / at("reasoning/chain-of-thought")
    path.write_text(break_front_matter(path.read_text()))
    fine = work / at("fine")  # a valid file in the same push
    fine.parent.mkdir(parents=True, exist_ok=True)
    fine.write_text(PROMPT)
    git.commit(work, "broken")
    out = git("push", "origin", "main", cwd=work, check=False)
    assert out.returncode != 0
    assert "remote: error:" in out.stderr
    assert "prompts/reasoning/chain-of-thought.prompty" in out.stderr
    assert "is stored at" not in out.stderr  # refused for its content, not its place
    assert "pre-receive hook declined" in out.stderr
    assert remote_main(server) == main_before
    assert api(server, "/artifact", ref="reasoning/chain-of-thought")["version"] == before
    assert "fine" not in {a["name"] for a in api(server, "/artifacts")["artifacts"]}


def test_protected_label_moves_need_an_admin(server, git_as):
    name = "sentiment/zero-shot"
    admin = git_as("admin")
    work = admin.clone("admin")
    (work / at(name)).write_text(variant(PROMPT, 1))
    admin.commit(work, "second version")
    admin("push", "-q", "origin", "main", cwd=work)
    latest = api(server, "/artifact", ref=name)["version"]
    labels = work / label_at(name)
    labels.parent.mkdir(parents=True, exist_ok=True)
    labels.write_text(f"production: {latest - 1}\n")
    admin.commit(work, "production on the first version")
    admin("push", "-q", "origin", "main", cwd=work)
    assert api(server, "/artifact", ref=f"{name}@production")["version"] == latest - 1

    editor = git_as("editor")
    mine = editor.clone()
    (mine / label_at(name)).write_text(f"production: {latest}\n")
    editor.commit(mine, "promote")
    main_before = remote_main(server)
    out = editor("push", "origin", "main", cwd=mine, check=False)
    assert out.returncode != 0
    assert "protected label 'production'" in out.stderr and "admin" in out.stderr
    assert remote_main(server) == main_before
    assert api(server, "/artifact", ref=f"{name}@production")["version"] == latest - 1
    # The same change pushed by an admin goes through.
    admin("pull", "-q", "--rebase", cwd=work)
    labels.write_text(f"production: {latest}\n")
    admin.commit(work, "promote")
    admin("push", "-q", "origin", "main", cwd=work)
    assert api(server, "/artifact", ref=f"{name}@production")["version"] == latest


def test_viewer_cannot_push(server, git_as):
    git = git_as("viewer")
    work = git.clone()
    (work / at("from-viewer")).parent.mkdir(parents=True, exist_ok=True)
    (work / at("from-viewer")).write_text(PROMPT)
    git.commit(work, "viewer edit")
    main_before = remote_main(server)
    out = git("push", "origin", "main", cwd=work, check=False)
    assert out.returncode != 0
    assert "403" in out.stderr and "viewer" in out.stderr
    assert remote_main(server) == main_before


def test_push_without_a_token_is_401(server, git_as):
    r = httpx.get(server.url + GIT_PATH + "/info/refs", params={"service": "git-receive-pack"})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Basic realm="promptrev"'
    work = git_as("viewer").clone()
    nobody = git_as(None)
    (work / at("anon")).parent.mkdir(parents=True, exist_ok=True)
    (work / at("anon")).write_text(PROMPT)
    nobody.commit(work, "anonymous edit")
    main_before = remote_main(server)
    out = nobody("push", "origin", "main", cwd=work, check=False)
    assert out.returncode != 0 and remote_main(server) == main_before


def test_only_main_and_review_branches_are_accepted(server, git_as):
    git = git_as("editor")
    work = git.clone()
    (work / at("elsewhere")).parent.mkdir(parents=True, exist_ok=True)
    (work / at("elsewhere")).write_text(PROMPT)
    git.commit(work, "on a feature branch")
    for refspec in ("HEAD:refs/heads/feature/x", "HEAD:refs/tags/v1"):
        out = git("push", "origin", refspec, cwd=work, check=False)
        assert out.returncode != 0
        assert "accepts pushes to refs/heads/main and refs/heads/review/<name>" in out.stderr
    refs = git("ls-remote", "origin", cwd=work).stdout
    assert "feature/x" not in refs and "refs/tags/v1" not in refs


def test_history_rewrites_and_deleting_main_are_refused(server, git_as):
    git = git_as("admin")  # even an admin cannot renumber versions
    work = git.clone()
    main_before = remote_main(server)
    git("reset", "-q", "--hard", "HEAD~1", cwd=work)
    (work / at("rewritten")).parent.mkdir(parents=True, exist_ok=True)
    (work / at("rewritten")).write_text(PROMPT)
    git.commit(work, "rewrite")
    out = git("push", "--force", "origin", "main", cwd=work, check=False)
    assert out.returncode != 0 and "first-parent history" in out.stderr
    out = git("push", "origin", ":main", cwd=work, check=False)
    assert out.returncode != 0 and "main cannot be deleted" in out.stderr
    assert remote_main(server) == main_before


# ---- proposals -----------------------------------------------------------------------------
def review_number(server: LiveServer, output: str) -> int:
    match = re.search(r"remote: change request #(\d+): (\S+)", output)
    assert match, output
    assert match.group(2) == f"{server.url}/reviews/{match.group(1)}"
    return int(match.group(1))


def post(server: LiveServer, path: str, role: str) -> dict:
    r = httpx.post(server.url + "/api/v1" + path, json={}, timeout=60,
                   headers={"Authorization": f"Bearer {server.tokens[role]}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_push_to_a_review_branch_opens_a_change_request_that_merges(server, git_as):
    git = git_as("editor")
    work = git.clone()
    git("switch", "-q", "-c", "review/tone", cwd=work)
    path = work / at("product-description")
    good = path.read_text()
    path.write_text(break_front_matter(good))
    git.commit(work, "broken on the way")
    out = git("push", "origin", "review/tone", cwd=work, check=False)
    assert out.returncode != 0 and "prompts/product-description.prompty" in out.stderr
    assert "is stored at" not in out.stderr  # refused for its content, not its place
    assert "review/tone" not in git("ls-remote", "origin", cwd=work).stdout

    # Fixed in a later commit: only the end result counts, so the branch is accepted.
    path.write_text(good.replace("system:", "system:\nWarm tone.", 1))
    first = git.commit(work, "Warmer product descriptions")
    number = review_number(server, git("push", "-u", "origin", "review/tone", cwd=work).stderr)
    request = api(server, f"/reviews/{number}")
    assert (request["branch"], request["head"], request["status"]) == ("review/tone", first,
                                                                        "open")
    assert (request["author"], request["title"]) == ("erin", "Warmer product descriptions")
    # More commits update the same request.
    path.write_text(good.replace("system:", "system:\nWarm, short tone.", 1))
    second = git.commit(work, "shorter")
    assert review_number(server, git("push", cwd=work).stderr) == number
    assert api(server, f"/reviews/{number}")["head"] == second
    assert "Warm" not in api(server, "/artifact", ref="product-description")["text"]

    post(server, f"/reviews/{number}/approve", "admin")
    merged = post(server, f"/reviews/{number}/merge", "editor")
    assert merged["status"] == "merged" and merged["merge_commit"] == remote_main(server)
    git("switch", "-q", "main", cwd=work)
    git("pull", "-q", "--ff-only", cwd=work)
    parents = git("log", "-1", "--format=%P", cwd=work).stdout.split()
    assert git("rev-parse", "HEAD", cwd=work).stdout.strip() == merged["merge_commit"]
    assert len(parents) == 2 and parents[1] == second
    assert "Warm, short tone." in path.read_text()
    assert "Warm, short tone." in api(server, "/artifact", ref="product-description")["text"]


def test_deleting_a_review_branch_closes_its_request(server, git_as):
    git = git_as("editor")
    work = git.clone()
    git("switch", "-q", "-c", "review/drop-me", cwd=work)
    (work / at("drop-me")).parent.mkdir(parents=True, exist_ok=True)
    (work / at("drop-me")).write_text(PROMPT)
    git.commit(work, "An idea")
    number = review_number(server, git("push", "origin", "review/drop-me", cwd=work).stderr)
    git("push", "origin", ":review/drop-me", cwd=work)
    assert api(server, f"/reviews/{number}")["status"] == "closed"
    assert "review/drop-me" not in git("ls-remote", "origin", cwd=work).stdout


# ---- the endpoint itself -------------------------------------------------------------------
def test_request_size_limit_answers_413(tmp_path):
    env = make_server_env(tmp_path, git_max_request_bytes=1000)
    try:
        token = env.tokens["editor"]
        auth = "Basic " + base64.b64encode(f"x:{token}".encode()).decode()
        r = env.client.post(GIT_PATH + "/git-receive-pack", data=b"0" * 5000,
                            headers={"Authorization": auth,
                                     "Content-Type": "application/x-git-receive-pack-request"})
        assert r.status_code == 413 and "1000 bytes" in r.get_data(as_text=True)
    finally:
        env.app.extensions["promptrev"].close()


def test_push_larger_than_the_limit_streamed_in_chunks_is_refused(tmp_path):
    server = start_server(tmp_path, workers=1,
                          env={"PROMPTREV_GIT_MAX_REQUEST_BYTES": "200000"})
    try:
        server.tokens = {"admin": server.token()}
        git = Git(tmp_path / "home", server, server.tokens["admin"])
        work = git.clone()
        rows = "".join(f'{{"id": "{i}", "vars": {{"x": "{os.urandom(60).hex()}"}}}}\n'
                       for i in range(3000))  # ~400 KB that does not compress
        (work / "datasets").mkdir(exist_ok=True)
        (work / "datasets/big.jsonl").write_text(rows)
        git.commit(work, "big dataset")
        main_before = remote_main(server)
        # A small post buffer makes git send the pack chunked, without a Content-Length.
        out = git("-c", "http.postBuffer=65536", "push", "origin", "main", cwd=work,
                  check=False)
        assert out.returncode != 0 and "413" in out.stderr
        assert remote_main(server) == main_before
    finally:
        server.stop()


def test_gzipped_fetch_and_anonymous_reads(tmp_path):
    env = make_server_env(tmp_path, anonymous_read=True)
    try:
        refs = env.client.get(GIT_PATH + "/info/refs?service=git-upload-pack")
        assert refs.status_code == 200
        assert refs.headers["Content-Type"] == "application/x-git-upload-pack-advertisement"
        head = subprocess.run(["git", "--git-dir", env.settings.registry, "rev-parse", "main"],
                              capture_output=True, text=True, check=True).stdout.strip()
        assert head.encode() in refs.data

        def pkt(line: str) -> bytes:
            return f"{len(line) + 4:04x}{line}".encode()

        body = pkt(f"want {head} side-band-64k\n") + b"0000" + pkt("done\n")
        r = env.client.post(GIT_PATH + "/git-upload-pack", data=gzip.compress(body),
                            headers={"Content-Encoding": "gzip",
                                     "Content-Type": "application/x-git-upload-pack-request"})
        assert r.status_code == 200 and b"PACK" in r.data
        # Only Git's own files are served: never the accounts, the index or the secret key.
        for name in ("promptrev-accounts.sqlite", "promptrev-server-secret",
                     "promptrev-index.sqlite", "config", "../reg/config", "%2e%2e/x"):
            assert env.client.get(f"{GIT_PATH}/{name}").status_code in (403, 404), name
        # Anonymous reads never extend to pushes.
        push = env.client.get(GIT_PATH + "/info/refs?service=git-receive-pack")
        assert push.status_code == 401
        assert "Set-Cookie" not in push.headers
    finally:
        env.app.extensions["promptrev"].close()


# ---- the rules, without HTTP ---------------------------------------------------------------
def test_push_rules_in_the_core(registry, prompt_text):
    from promptrev.accounts import User
    from promptrev.errors import Conflict, Forbidden
    from promptrev.policy import Policy
    from promptrev.receive import RefUpdate, check_push
    from promptrev.storage.gitstore import Signature

    registry.save("greet", prompt_text)
    head = registry.store.head()
    blob = registry.store.write_blob(variant(prompt_text, 2).encode())
    new = registry.store.commit(head, {at("greet"): blob}, "edit",
                                Signature.parse("Ed <ed@x.org>"))
    editor = User(2, "ed", "ed@x.org", "editor")
    to_main = RefUpdate(head, new, "refs/heads/main")
    check_push(registry, Policy(), editor, [to_main])  # allowed: nothing raised
    with pytest.raises(Forbidden, match="needs the admin role.*change request"):
        check_push(registry, Policy(merge_role="admin"), editor, [to_main])
    check_push(registry, Policy(merge_role="admin"), editor,
               [RefUpdate("0" * 40, new, "refs/heads/review/greet")])
    with pytest.raises(Conflict, match="main moved"):
        check_push(registry, Policy(), editor, [RefUpdate(new, new, "refs/heads/main")])
    with pytest.raises(Forbidden, match="viewer"):
        check_push(registry, Policy(), User(3, "v", "v@x.org", "viewer"),
                   [RefUpdate("0" * 40, new, "refs/heads/review/greet")])


def test_hooks_are_copied_where_they_can_run_when_installed_without_exec_bits(
        tmp_path, monkeypatch):
    from promptrev.server import git_http

    assert git_http.hooks_dir(str(tmp_path / "unused")) == git_http.HOOKS  # shipped runnable
    plain = tmp_path / "hooks"
    plain.mkdir()
    for name in git_http.HOOK_NAMES:
        (plain / name).write_text((Path(git_http.HOOKS) / name).read_text())
        (plain / name).chmod(0o644)
    monkeypatch.setattr(git_http, "HOOKS", str(plain))
    folder = Path(git_http.hooks_dir(str(tmp_path / "reg")))
    assert folder == tmp_path / "reg" / "promptrev-hooks"
    for name in git_http.HOOK_NAMES:
        assert os.access(folder / name, os.X_OK)
        assert f"hook {name}" in (folder / name).read_text()
