"""``promptrev eval gate --server URL``: the gate judged on a server, through its API.

``POST /api/v1/evaluations/gate`` answers 202 while the run it started (or found going)
is not done, and 200 with the verdict and the JUnit and Markdown reports once it is; this
posts again until then, with a growing pause.
"""

from __future__ import annotations

import time
from typing import Any

import click
import httpx

from promptrev.client import ServerUnavailable
from promptrev.errors import Busy, error_from_dict


def remote_gate(url: str, token: str | None, wait_s: int, body: dict[str, Any]
                ) -> dict[str, Any]:
    """The server's verdict on ``body`` (waiting at most ``wait_s`` seconds for the run)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline, pause = time.monotonic() + wait_s, 0.5
    payload = {k: v for k, v in body.items() if v is not None}
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=120) as http:
        while True:
            try:
                answer = http.post("/api/v1/evaluations/gate", json=payload)
            except httpx.TransportError as exc:
                raise ServerUnavailable(f"cannot reach the promptrev server at {url}: "
                                        f"{exc}") from None
            data = _answer(answer, url)
            if data.get("status") == "failed":
                raise Busy(f"evaluation run {data['run']} on {url} failed: {data.get('error')} "
                           f"(see {data['url']}; resume it there with 'promptrev eval resume "
                           f"{data['run']}')", details={"run": data["run"]})
            if "passed" in data:
                return data
            if data.get("started"):
                payload["started_run"] = data["run"]
                click.echo(f"evaluation run {data['run']} started on the server: {data['url']}",
                           err=True)
            if time.monotonic() + pause > deadline:
                raise Busy(f"evaluation run {data['run']} on {url} is not done after {wait_s} "
                           f"s; run the gate again later (it picks the run up): {data['url']}",
                           details={"run": data["run"]})
            time.sleep(pause)
            pause = min(pause * 1.5, 10.0)


def _answer(response: httpx.Response, url: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise Busy(f"{url} answered {response.status_code} without JSON: is it a promptrev "
                   "server?") from None
    if response.status_code >= 400:
        raise error_from_dict(data if isinstance(data, dict) else {}, response.status_code)
    return data
