"""Attacks on the Git LFS API (``/git/registry.git/info/lfs``): who may upload, and what.

Every refused upload leaves the object store as it was: an upload without a token, a
viewer's, bytes that are not the object they claim to be, an object over the size limit,
an object id that tries to leave the store.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from promptrev.model.lfs import MAX_BATCH, MEDIA_TYPE

from ..conftest import make_server_env

LFS = "/git/registry.git/info/lfs"
DATA = b"\x01adapter weights" * 512
OID = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def env(tmp_path):
    env = make_server_env(tmp_path, anonymous_read=True, git_max_request_bytes=64 * 1024)
    yield env
    env.app.extensions["promptrev"].close()


def stored(env) -> list[str]:
    root = Path(env.settings.registry) / "lfs" / "objects"
    return sorted(name for _, _, names in os.walk(root) for name in names)


def batch(env, operation: str, objects: list[dict], role: str | None = "editor", **extra):
    headers = {"Accept": MEDIA_TYPE, "Content-Type": MEDIA_TYPE}
    if role:
        headers.update(env.headers(role))
    return env.client.post(LFS + "/objects/batch", headers=headers,
                           json={"operation": operation, "transfers": ["basic"],
                                 "objects": objects, **extra})


def put(env, oid: str, data: bytes, role: str | None, query: str = ""):
    headers = env.headers(role) if role else {}
    return env.client.put(f"{LFS}/objects/{oid}{query}", data=data, headers=headers)


def test_uploads_need_a_token_even_when_reads_are_open(env):
    before = stored(env)
    refused = batch(env, "upload", [{"oid": OID, "size": len(DATA)}], role=None)
    assert refused.status_code == 401
    assert refused.headers["LFS-Authenticate"] == 'Basic realm="promptrev"'
    assert refused.content_type == MEDIA_TYPE and "API token" in refused.json["message"]
    assert put(env, OID, DATA, None).status_code == 401
    verify = env.client.post(LFS + "/verify", json={"oid": OID, "size": len(DATA)})
    assert verify.status_code == 401
    assert stored(env) == before
    # Reads are open here, so an anonymous download is answered (404: no such object).
    anonymous = batch(env, "download", [{"oid": OID, "size": len(DATA)}], role=None)
    assert anonymous.status_code == 200
    assert anonymous.json["objects"][0]["error"]["code"] == 404
    # A token that is not one is refused, never taken as anonymous.
    forged = env.client.put(f"{LFS}/objects/{OID}", data=DATA,
                            headers={"Authorization": "Bearer prv_forged-token"})
    assert forged.status_code == 401 and stored(env) == before


def test_a_viewer_cannot_upload(env):
    before = stored(env)
    refused = batch(env, "upload", [{"oid": OID, "size": len(DATA)}], role="viewer")
    assert refused.status_code == 403
    assert "uploading Git LFS objects needs the editor role" in refused.json["message"]
    assert put(env, OID, DATA, "viewer").status_code == 403
    assert stored(env) == before


def test_bytes_that_are_not_the_object_are_never_stored(env):
    before = stored(env)
    forged = DATA[:-1] + b"!"
    answer = put(env, OID, forged, "editor")
    assert answer.status_code == 422 and "hashes to" in answer.json["message"]
    short = put(env, OID, DATA[:100], "editor", f"?size={len(DATA)}")
    assert short.status_code == 422 and "announced as" in short.json["message"]
    assert stored(env) == before
    assert put(env, OID, DATA, "editor", f"?size={len(DATA)}").status_code == 200
    assert stored(env) == [OID]


def test_objects_over_the_size_limit_are_refused(env):
    big = {"oid": "a" * 64, "size": 64 * 1024 + 1}
    answer = batch(env, "upload", [big]).json["objects"][0]
    assert "actions" not in answer and answer["error"]["code"] == 422
    assert "PROMPTREV_GIT_MAX_REQUEST_BYTES" in answer["error"]["message"]
    data = b"x" * (64 * 1024 + 1)
    refused = put(env, hashlib.sha256(data).hexdigest(), data, "editor")
    assert refused.status_code == 413 and stored(env) == []


@pytest.mark.parametrize("oid", ["..%2F..%2Fconfig", "A" * 64, "0" * 63, "%2e%2e",
                                 "0" * 64 + "%2F..", "../../promptrev-accounts.sqlite"])
def test_object_ids_never_leave_the_store(env, oid):
    for response in (env.client.get(f"{LFS}/objects/{oid}", headers=env.headers("admin")),
                     put(env, oid, b"x", "admin")):
        assert response.status_code in (404, 405), (oid, response.status_code)
    assert stored(env) == []


def test_malformed_batches_are_refused_by_name(env):
    many = [{"oid": f"{n:064x}", "size": 1} for n in range(MAX_BATCH + 1)]
    assert batch(env, "upload", many).status_code == 413
    other_hash = batch(env, "upload", [{"oid": OID, "size": 1}], hash_algo="sha512")
    assert other_hash.status_code == 409 and "sha256" in other_hash.json["message"]
    for objects, word in (([{"oid": "../x", "size": 1}], "oid"),
                          ([{"oid": OID, "size": -1}], "size"),
                          ([{"oid": OID, "size": True}], "size"), ([], "objects")):
        refused = batch(env, "upload", objects)
        assert refused.status_code == 422 and word in refused.json["message"]
    wrong_operation = batch(env, "delete", [{"oid": OID, "size": 1}])
    assert wrong_operation.status_code == 422 and "operation" in wrong_operation.json["message"]
    assert stored(env) == []
