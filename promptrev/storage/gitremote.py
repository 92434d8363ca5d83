"""The registry repository's Git remotes, through real ``git`` (via GitPython).

Remotes are ordinary Git remotes in the bare repository's config, so ``git remote -v``
inside the registry shows them and Git's own credential machinery (credential helpers,
SSH keys and agents, a token in the URL) is what authenticates. Fetch and push run the
``git`` executable; nothing here moves ``refs/heads/main`` except a successful push to
the *remote*. Messages never show a URL's password: :func:`redact` removes it.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

import git
import pygit2

from ..errors import RemoteFailed
from . import durability

BRANCH_KEY = "promptrevbranch"  # remote.<name>.promptrevBranch: the remote's branch
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/@\s]*)@")
_TOKEN_LENGTH = 20  # a lone "user" this long in an http(s) URL is a token, not a name


@dataclass(frozen=True)
class RemoteConfig:
    """A remote as the registry's Git config holds it."""

    name: str
    url: str
    branch: str

    @property
    def tracking_ref(self) -> str:
        """Where fetches put the remote branch: ``refs/remotes/<name>/<branch>``."""
        return f"refs/remotes/{self.name}/{self.branch}"

    @property
    def refspec(self) -> str:
        """The fetch refspec of the remote's branch."""
        return f"+refs/heads/{self.branch}:{self.tracking_ref}"


@dataclass(frozen=True)
class PushOutcome:
    """What ``git push`` said about main: ``flag`` as in ``--porcelain`` output."""

    flag: str  # " " fast-forward, "*" new branch, "=" up to date, "!" rejected
    summary: str  # "abc1234..def5678", "[new branch]", "[rejected] (fetch first)"…
    stderr: str
    old: str | None = None  # the remote branch's commit before a fast-forward

    @property
    def rejected(self) -> bool:
        """Whether the remote refused the update."""
        return self.flag == "!"

    @property
    def behind(self) -> bool:
        """Refused because the remote has commits we lack (not by a hook or a rule)."""
        return self.rejected and ("non-fast-forward" in self.summary
                                  or "fetch first" in self.summary)


def valid_ref_name(ref: str) -> bool:
    """Whether Git accepts ``ref`` as a full reference name."""
    return pygit2.reference_is_valid_name(ref)


def redact(text: str) -> str:
    """``text`` with the passwords (and bare tokens) of any URLs in it replaced by ``***``."""

    def hide(match: re.Match) -> str:
        scheme, info = match["scheme"], match["info"]
        user, has_password, _ = info.partition(":")
        if has_password:
            return f"{scheme}{user}:***@"
        web = scheme.lower() in ("http://", "https://")
        if web and len(user) >= _TOKEN_LENGTH:
            return f"{scheme}***@"
        return match.group(0)

    return _USERINFO.sub(hide, text)


def remotes(path: str) -> list[RemoteConfig]:
    """The remotes configured in the repository at ``path``, by name."""
    status, out, _ = _git(path, ["config", "-z", "--get-regexp", r"^remote\."])
    if status not in (0, 1):  # 1: no remote configured at all
        raise RemoteFailed(f"could not read the Git config of {path}")
    urls: dict[str, str] = {}
    branches: dict[str, str] = {}
    for entry in filter(None, out.split("\0")):
        key, _, value = entry.partition("\n")
        section, _, variable = key.rpartition(".")
        name = section[len("remote."):]
        if variable == "url":
            urls[name] = value
        elif variable == BRANCH_KEY:
            branches[name] = value
    return [RemoteConfig(name, url, branches.get(name, "main"))
            for name, url in sorted(urls.items())]


def add_remote(path: str, remote: RemoteConfig) -> None:
    """Add a remote that fetches ``remote.branch`` and pushes ``main`` to it."""
    _check(path, ["remote", "add", "--no-tags", "--", remote.name, remote.url],
           f"could not add remote '{remote.name}'")
    _check(path, ["config", "--replace-all", f"remote.{remote.name}.fetch", remote.refspec],
           "could not configure the remote")
    _check(path, ["config", f"remote.{remote.name}.push",
                  f"refs/heads/main:refs/heads/{remote.branch}"],
           "could not configure the remote")
    _check(path, ["config", f"remote.{remote.name}.{BRANCH_KEY}", remote.branch],
           "could not configure the remote")


def remove_remote(path: str, name: str) -> None:
    """Remove a remote, its config and its remote-tracking refs."""
    _check(path, ["remote", "remove", "--", name], f"could not remove remote '{name}'")


def fetch(path: str, remote: RemoteConfig, *, interactive: bool = False) -> str | None:
    """Fetch the remote's branch; return its commit, or None when the branch does not exist."""
    status, _, err = _git(path, ["fetch", "--no-tags", "--no-write-fetch-head", "--",
                                 remote.name, remote.refspec], interactive=interactive)
    if status != 0:
        if "couldn't find remote ref" in err:
            _git(path, ["update-ref", "-d", remote.tracking_ref])
            return None
        raise RemoteFailed(f"could not fetch from remote '{remote.name}' "
                           f"({redact(remote.url)}): {_last_lines(err)}",
                           details={"remote": remote.name, "git": redact(err.strip())})
    ref = _git(path, ["rev-parse", "--verify", "--quiet", remote.tracking_ref + "^{commit}"])
    return ref[1].strip() or None


def push(path: str, remote: RemoteConfig, *, interactive: bool = False) -> PushOutcome:
    """Push ``main`` to the remote's branch, never forced; the outcome says if it was refused."""
    target = f"refs/heads/{remote.branch}"
    status, out, err = _git(path, ["push", "--porcelain", "--", remote.name,
                                   f"refs/heads/main:{target}"], interactive=interactive)
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1].endswith(":" + target):
            flag, summary = parts[0][:1] or " ", parts[2]
            old = None
            if flag == " " and ".." in summary:  # "abc1234..def5678": a fast-forward
                old = _git(path, ["rev-parse", "--verify", "--quiet",
                                  summary.split("..")[0] + "^{commit}"])[1].strip() or None
            return PushOutcome(flag, summary, redact(err.strip()), old)
    raise RemoteFailed(f"could not push to remote '{remote.name}' ({redact(remote.url)}): "
                       f"{_last_lines(err) or f'git exited with status {status}'}",
                       details={"remote": remote.name, "git": redact(err.strip())})


def credentials(path: str, url: str) -> tuple[str, str] | None:
    """What Git's credential helpers give for ``url`` (no prompt), or None.

    For requests Git does not make itself (the Git LFS batch API of a remote), so they
    authenticate the way ``git fetch`` and ``git push`` do.
    """
    try:
        out = subprocess.run(["git", "--git-dir", path, "credential", "fill"],
                             input=f"url={url}\n\n", capture_output=True, text=True,
                             timeout=30, env={**os.environ, "GIT_TERMINAL_PROMPT": "0",
                                              "GIT_ASKPASS": "", "SSH_ASKPASS": ""})
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    fields = dict(line.partition("=")[::2] for line in out.stdout.splitlines())
    if not fields.get("password") and not fields.get("username"):
        return None
    return fields.get("username", ""), fields.get("password", "")


def _git(path: str, args: list[str], *, interactive: bool = False) -> tuple[int, str, str]:
    # Without a terminal, git must fail rather than wait for a password nobody will type.
    env = None if interactive else {"GIT_TERMINAL_PROMPT": "0"}
    try:
        status, out, err = git.Git(path).execute(
            ["git", *durability.git_options(), "--git-dir", path, *args],
            with_extended_output=True,
            with_exceptions=False, env=env)
    except OSError as exc:  # no git executable
        raise RemoteFailed(f"could not run git: {exc}") from None
    return status, out, err


def _check(path: str, args: list[str], what: str) -> None:
    status, _, err = _git(path, args)
    if status != 0:
        raise RemoteFailed(f"{what}: {_last_lines(err) or f'git exited with status {status}'}")


def _last_lines(err: str, count: int = 3) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return redact(" ".join(lines[-count:]))
