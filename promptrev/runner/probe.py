"""Whether each configured model can answer, checked without running it.

``promptrev models`` prints this: the first thing to look at when nothing runs. A local
(``hf``) model is checked on disk (its folder, config and tokenizer files: loading the
weights would take minutes); an ``openai`` model by asking its server for its model list
(``GET /models``, no retries, a few seconds at most). Keys are never shown.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import PromptrevError
from .base import ModelSpec, get_backend

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def probe(name: str, spec: ModelSpec) -> dict[str, Any]:
    """``{"name", "backend", "model", "where", "ok", "status"}`` for one configured model."""
    out: dict[str, Any] = {"name": name, "backend": spec.backend, "model": spec.name}
    if spec.backend == "hf":
        out["where"] = spec.name
        ok, status = _local(spec.name)
    elif spec.backend == "openai":
        out["where"] = _where(spec.base_url) if spec.base_url else "OpenAI's API"
        ok, status = _server(spec)
    else:
        out["where"] = None
        ok, status = False, f"backend {spec.backend!r} cannot be checked from here"
    return {**out, "ok": ok, "status": status}


def _where(url: str) -> str:
    """Where a base URL points, without what may be a key: ``user:password@`` and the
    query (an Azure ``?api-key=``) are left out."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) or "(a base_url)"


def _local(path: str) -> tuple[bool, str]:
    if not os.path.isdir(path):
        return False, ("no such folder: an hf model is a local folder (download it once, "
                       "e.g. with 'hf download', and give its path)")
    files = set(os.listdir(path))
    if "config.json" not in files:
        return False, "the folder has no config.json: not a transformers model folder"
    if not files.intersection(TOKENIZER_FILES):
        return False, "the folder has no tokenizer files"
    weights = [f for f in files if f.endswith((".safetensors", ".bin"))]
    if not weights:
        return False, "the folder has no weights (*.safetensors or *.bin)"
    return True, f"local files present ({len(weights)} weight file(s)); loads on first use"


def _server(spec: ModelSpec) -> tuple[bool, str]:
    try:
        backend = get_backend(spec)
        backend.reachable()
        listed = backend.client.with_options(max_retries=0, timeout=5.0).models.list()
        served = [m.id for m in listed.data]
    except PromptrevError as exc:
        return False, exc.details.get("reason") or exc.message
    except Exception as exc:  # the client's errors: refused, 401, a server that is no API
        return False, f"the server did not answer its model list: {type(exc).__name__}"
    if spec.name in served:
        return True, f"answers; serves {spec.name!r} ({len(served)} model(s) in all)"
    return True, (f"answers ({len(served)} model(s)), but {spec.name!r} is not among them: "
                  f"{', '.join(served[:5]) or 'none listed'}")
