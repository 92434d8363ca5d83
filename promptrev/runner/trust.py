"""What stored content may choose when it runs: secrets, destinations, local files.

A prompt is written by an editor and run by whoever may read it. On a server that means
the server's environment and network are at stake, so the server's rules are strict:

- a prompt names one of the operator's configured models (``PROMPTREV_MODELS``); its own
  connection fields (``base_url``, ``api_key``, ``azure_endpoint``, a local path for
  ``type: hf``...) are ignored, never resolved and never used;
- ``${env:NAME}`` in a stored file resolves only names the operator allows
  (``PROMPTREV_ALLOW_ENV``; none by default); any other name fails the run with an error
  that names the variable, never its value.

The CLI on a user's own machine runs with :meth:`Trust.local`: the prompt's own
connection and any ``${env:NAME}`` of the user's environment, as before (unless the user
sets ``PROMPTREV_ALLOW_ENV``). :func:`redact` keeps keys out of error messages.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import EnvNotAllowed

ENV_REFERENCE = re.compile(r"^\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::(.*))?\}$", re.S)
# What a prompt's model section may say on a server: which model, which backend. A v2
# ``connection: {kind: reference, name}`` names a configured model (``connection``).
MODEL_FIELDS = ("type", "name", "model", "azure_deployment", "connection")
REDACTED = "[redacted]"
# Things that look like credentials whatever their source: bearer tokens, API keys.
_CREDENTIALS = re.compile(
    r"(?i)(bearer\s+)[^\s\"',;]+"
    r"|\b(?:sk|pk|rk|prv|hf|ghp|gho|xox[bap])[-_][A-Za-z0-9_\-]{6,}"
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)")


@dataclass(frozen=True)
class Trust:
    """What a stored prompt may choose here.

    ``env_names``: the ``${env:NAME}`` names it may read (None: any). ``connections``:
    whether its own ``base_url``, ``api_key``, local model path and other backend settings
    are used (else only a configured model, named by the prompt, runs).
    """

    env_names: frozenset[str] | None = frozenset()
    connections: bool = False

    @classmethod
    def server(cls, allow_env: Iterable[str] | None = None) -> Trust:
        """A server's rules: configured models only; the allowed names (none by default)."""
        return cls(frozenset(allow_env or ()), False)

    @classmethod
    def local(cls, allow_env: Iterable[str] | None = None) -> Trust:
        """A user's own machine: the prompt's connection; any name unless ``allow_env``."""
        return cls(None if allow_env is None else frozenset(allow_env), True)

    def env_value(self, value: Any, env: Mapping[str, str], where: str) -> Any:
        """``value`` with a whole-string ``${env:NAME[:default]}`` filled from ``env``.

        A name these rules do not allow raises :class:`EnvNotAllowed` naming it (and
        ``where`` it was found), whether or not the variable is set.
        """
        if not isinstance(value, str):
            return value
        match = ENV_REFERENCE.match(value.strip())
        if not match:
            return value
        name = match.group(1)
        if self.env_names is not None and name not in self.env_names:
            allowed = ", ".join(sorted(self.env_names)) or "none"
            raise EnvNotAllowed(
                f"{where} reads ${{env:{name}}}, which is not an allowed variable here "
                f"(allowed: {allowed}). An operator lists the names stored files may read "
                "in PROMPTREV_ALLOW_ENV; connections and keys belong in the models file "
                "(PROMPTREV_MODELS)", details={"variable": name, "field": where})
        return env.get(name, match.group(2))

    def ignored(self, configuration: Mapping[str, Any]) -> list[str]:
        """The configuration fields these rules ignore (sorted), e.g. ``base_url``."""
        if self.connections:
            return []
        return sorted(str(k) for k in configuration if k not in MODEL_FIELDS)


def redact(text: str, secrets: Collection[str | None] = ()) -> str:
    """``text`` with each of ``secrets`` and anything that looks like a credential hidden."""
    for secret in sorted((s for s in secrets if isinstance(s, str) and len(s) >= 4),
                         key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return _CREDENTIALS.sub(lambda m: (m.group(1) or "") + REDACTED, text)
