"""``promptrev.Client``: how applications read prompts from a promptrev server.

This is a transport (an HTTP client), kept apart from the core: no core module imports
it, and ``import promptrev`` does not load it (or httpx) until ``promptrev.Client`` is
first used.

Caching is stale-while-revalidate, per reference string:

- an answer younger than ``ttl`` seconds is served from memory, no network;
- an older one is still served at once, and a background request revalidates it with
  ``If-None-Match`` (a 304 just refreshes its age; a 200 replaces it), so a label moved
  on the server reaches the application at most ``ttl`` + one round trip later;
- when the server cannot be reached (or answers 5xx), the last known version keeps being
  served; with nothing cached, the ``fallback`` the application passed in is used;
- an answer is only cached for the reference it answers: same artifact name, and the
  requested label or version number on it. Anything else is refused, never served.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from promptrev.model.prompty import Message, Prompt, parse_prompt
from promptrev.model.references import parse_reference

from .errors import Busy, PromptrevError, error_from_dict

_RETRY_AFTER_FAILURE = 1.0  # seconds before retrying a server that did not answer


@dataclass(frozen=True)
class RemoteVersion:
    """A prompt version as the client knows it; ``source`` says where it came from."""

    name: str
    version: int | None
    text: str
    labels: tuple[str, ...] = ()
    commit: str | None = None
    source: str = "server"  # "server", "cache", "stale" or "fallback"

    @property
    def ref(self) -> str:
        """``name@N`` (or the bare name for a fallback)."""
        return f"{self.name}@{self.version}" if self.version else self.name


@dataclass
class _Entry:
    value: RemoteVersion
    etag: str | None
    fetched: float
    retry_at: float = 0.0
    prompt: Prompt | None = field(default=None, repr=False)


class ServerUnavailable(Busy):
    """The server did not answer and nothing was cached or given as a fallback."""

    code = "server_unavailable"


class Client:
    """Read prompts from a promptrev server, with a stale-while-revalidate cache."""

    def __init__(self, url: str, token: str | None = None, *, ttl: float = 30.0,
                 timeout: float = 5.0, fallbacks: dict[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers,
                                  timeout=timeout, transport=transport)
        self.ttl = ttl
        self.fallbacks = dict(fallbacks or {})
        self._cache: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._parts: dict[str, Prompt] = {}  # included parts by their text
        self._pending: dict[str, Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="promptrev-swr")

    def close(self) -> None:
        """Stop background work and close connections."""
        self._pool.shutdown(wait=True)
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- public API ------------------------------------------------------------------
    def get(self, ref: str, *, fallback: str | None = None,
            caller: str | None = None) -> RemoteVersion:
        """The version ``ref`` names (``name``, ``name@production``, ``name@4``).

        ``caller`` (a user or session id) takes part in a label's traffic split: the same
        caller always gets the same version while the split stands.
        """
        key = str(parse_reference(ref, "prompt"))
        if caller:
            key = f"{key}\x00{caller}"
        now = time.monotonic()
        with self._lock:
            entry = self._cache.get(key)
        if entry is not None:
            age = now - entry.fetched
            if age < self.ttl:
                return replace(entry.value, source="cache")
            if now >= entry.retry_at:
                self._revalidate_later(key)
            return replace(entry.value, source="stale")
        try:
            return self._fetch(key, None).value
        except (httpx.TransportError, ServerUnavailable) as exc:
            text = fallback if fallback is not None else self.fallbacks.get(ref,
                                                                            self.fallbacks.get(key))
            if text is None:
                raise ServerUnavailable(f"promptrev server unreachable and no cached or "
                                        f"fallback version of '{key}': {exc}") from None
            name = parse_reference(key.split("\x00")[0], "prompt").name
            return RemoteVersion(name, None, text, source="fallback")

    def resolve(self, ref: str, caller: str | None = None) -> int | None:
        """The version number ``ref`` points at (None when serving a fallback)."""
        return self.get(ref, caller=caller).version

    def render(self, ref: str, variables: dict[str, Any] | None = None, *,
               fallback: str | None = None, caller: str | None = None) -> list[Message]:
        """Render ``ref`` locally (sandboxed, like the server) into chat messages."""
        value = self.get(ref, fallback=fallback, caller=caller)
        key = str(parse_reference(ref, "prompt")) + (f"\x00{caller}" if caller else "")
        with self._lock:
            entry = self._cache.get(key)
        if entry is not None and entry.value.text == value.text:
            if entry.prompt is None:
                entry.prompt = parse_prompt(value.text, f"{value.name}.prompty")
            return entry.prompt.render(variables, includes=self._part)
        return parse_prompt(value.text, f"{value.name}.prompty").render(
            variables, includes=self._part)

    def _part(self, ref: str) -> Prompt:
        """A part named by ``{% include "ref" %}``, fetched and cached like any reference."""
        value = self.get(ref)
        prompt = self._parts.get(value.text)
        if prompt is None:
            prompt = parse_prompt(value.text, f"{value.name}.prompty")
            with self._lock:
                if len(self._parts) > 256:
                    self._parts.clear()
                self._parts[value.text] = prompt
        return prompt

    def wait(self, timeout: float = 10.0) -> None:
        """Wait for background revalidations in flight (tests, graceful shutdown)."""
        with self._lock:
            pending = list(self._pending.values())
        for fut in pending:
            fut.result(timeout=timeout)

    # ---- internals -------------------------------------------------------------------
    def _revalidate_later(self, key: str) -> None:
        with self._lock:
            if key in self._pending:
                return
            self._pending[key] = self._pool.submit(self._revalidate, key)

    def _revalidate(self, key: str) -> None:
        try:
            with self._lock:
                entry = self._cache.get(key)
            self._fetch(key, entry)
        except (httpx.TransportError, ServerUnavailable):
            with self._lock:  # keep serving what we have; try again a little later
                if key in self._cache:
                    self._cache[key].retry_at = time.monotonic() + _RETRY_AFTER_FAILURE
        except PromptrevError:
            with self._lock:  # the server says the reference is gone or changed meaning
                self._cache.pop(key, None)
        finally:
            with self._lock:
                self._pending.pop(key, None)

    def _fetch(self, key: str, entry: _Entry | None) -> _Entry:
        headers = {"If-None-Match": entry.etag} if entry and entry.etag else {}
        ref, _, caller = key.partition("\x00")
        params = {"ref": ref, "kind": "prompt", **({"key": caller} if caller else {})}
        response = self._http.get("/api/v1/artifact", params=params, headers=headers)
        now = time.monotonic()
        if response.status_code == 304 and entry is not None:
            with self._lock:
                entry.fetched, entry.retry_at = now, 0.0
            return entry
        if response.status_code >= 500:
            raise ServerUnavailable(f"server answered {response.status_code}")
        data = _json(response)
        if response.status_code != 200:
            raise error_from_dict(data, response.status_code)
        value = _checked(key, data)
        fresh = _Entry(value, response.headers.get("ETag"), now)
        with self._lock:
            self._cache[key] = fresh
        return fresh


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise ServerUnavailable(f"server answered {response.status_code} without JSON"
                                ) from None
    if not isinstance(data, dict):
        raise ServerUnavailable("server answered with unexpected JSON")
    return data


def _checked(key: str, data: dict[str, Any]) -> RemoteVersion:
    """Accept an answer only if it is the artifact, label or version that was asked for."""
    key, _, caller = key.partition("\x00")
    ref = parse_reference(key, "prompt")
    try:
        value = RemoteVersion(data["name"], int(data["version"]), data["text"],
                              tuple(data.get("labels") or ()), data.get("commit"))
    except (KeyError, TypeError, ValueError):
        raise ServerUnavailable("server answer is missing name, version or text") from None
    ok = value.name == ref.name and data.get("kind", "prompt") == "prompt"
    sel = ref.selector
    if ok and caller and data.get("assigned"):  # a split assigned this caller a version
        ok = data["assigned"] == f"{value.name}@{value.version}"
    elif ok and sel is not None:
        ok = (value.version == ref.number
              or (ref.may_be_label and sel in value.labels)
              or (ref.may_be_commit and (value.commit or "").startswith(sel.lower())))
    if not ok:
        raise ServerUnavailable(f"server answered {value.ref} for '{key}'; not cached")
    return value
