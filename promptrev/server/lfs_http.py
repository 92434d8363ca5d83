"""The Git LFS API at ``/git/registry.git/info/lfs``: adapter weights for ``git lfs``.

``git clone`` of the registry brings weights pointers; ``git lfs pull`` asks this batch
endpoint (``POST …/info/lfs/objects/batch``) and downloads each object with the basic
transfer (``GET …/objects/<oid>``); ``git push`` runs ``git lfs pre-push``, which uploads
the objects a push needs (``PUT …/objects/<oid>``, then ``POST …/verify``) before the pack,
so the receive hooks find them in the object store. Callers authenticate as for Git over
HTTP (:func:`.git_http.caller`: an API token as the Basic password or a bearer token);
downloads need the viewer role (nothing with anonymous reads), uploads the editor role,
both asked of the policy. Uploads are streamed into the object store and kept only if
their sha256 and size are the object's; each is limited to
``PROMPTREV_GIT_MAX_REQUEST_BYTES``, as a push is. Errors are the LFS JSON shape
(``{"message": …}``, ``application/vnd.git-lfs+json``), which git-lfs prints to the user.
"""

from __future__ import annotations

from flask import Blueprint, Response, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import get_input_stream

from promptrev import lfs_transfer
from promptrev.errors import (
    InvalidRequest,
    NotFound,
    PromptrevError,
    TooLarge,
    ValidationFailed,
)
from promptrev.model.lfs import MEDIA_TYPE, BatchRequest, Pointer, valid_oid

from .auth import state
from .errors import http_status
from .git_http import CHALLENGE, caller
from .params import json_object
from .state import json_bytes

bp = Blueprint("lfs", __name__, url_prefix="/git")
ROOTS = ("/registry.git/info/lfs", "/registry/info/lfs")
CHUNK = 64 * 1024


def _routes(suffix: str, methods: list[str]):
    def register(view):
        for root in ROOTS:
            bp.add_url_rule(root + suffix, view_func=view, methods=methods)
        return view
    return register


@_routes("/objects/batch", ["POST"])
def batch() -> Response:
    """The batch API: actions to download or upload each object the client names."""
    try:
        body = BatchRequest.parse(json_object(request.get_data(), "the batch request"))
        user = caller(push=body.operation == "upload")
        if body.operation == "upload":
            state().policy.require(user, "write", "uploading Git LFS objects")
        else:
            state().policy.require(user, "read", "downloading Git LFS objects")
        settings = state().settings
        header = {"Authorization": request.headers["Authorization"]} \
            if request.headers.get("Authorization") else {}
        answer = lfs_transfer.batch_answer(
            state().registry.objects, body, href=_endpoint(), header=header,
            max_bytes=settings.git_max_request_bytes)
    except PromptrevError as exc:
        return lfs_error(exc)
    return _json(answer)


@_routes("/objects/<oid>", ["GET"])
def download(oid: str) -> Response:
    """The basic transfer's download: the object's bytes."""
    try:
        _check_oid(oid)
        state().policy.require(caller(push=False), "read", "downloading Git LFS objects")
        fh, size = lfs_transfer.download(state().registry.objects, oid)
    except PromptrevError as exc:
        return lfs_error(exc)

    def chunks():
        with fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    return Response(chunks(), 200,
                    {"Content-Length": str(size)}, mimetype="application/octet-stream",
                    direct_passthrough=True)


@_routes("/objects/<oid>", ["PUT"])
def upload(oid: str) -> Response:
    """The basic transfer's upload: kept only if its bytes are exactly the object."""
    settings = state().settings
    try:
        _check_oid(oid)
        state().policy.require(caller(push=True), "write", "uploading Git LFS objects")
        size = _announced_size()
        body = get_input_stream(request.environ, safe_fallback=False,
                                max_content_length=settings.git_max_request_bytes)
        lfs_transfer.receive(state().registry.objects, Pointer(oid, size), body,
                             settings.git_max_request_bytes)
    except PromptrevError as exc:
        return lfs_error(exc)
    except RequestEntityTooLarge:
        return lfs_error(TooLarge(
            f"the upload is larger than this server's limit of "
            f"{settings.git_max_request_bytes:,} bytes (PROMPTREV_GIT_MAX_REQUEST_BYTES)"))
    return Response(b"", 200)


@_routes("/verify", ["POST"])
def verify() -> Response:
    """The verify action: the upload arrived whole."""
    try:
        state().policy.require(caller(push=True), "write", "uploading Git LFS objects")
        data = json_object(request.get_data(), "the verify request")
        oid, size = data.get("oid"), data.get("size")
        if not isinstance(oid, str) or not valid_oid(oid) or not isinstance(size, int) \
                or isinstance(size, bool) or size < 0:
            raise InvalidRequest("a verify request is {\"oid\": <sha256>, \"size\": <bytes>}")
        lfs_transfer.verify(state().registry.objects, Pointer(oid, size))
    except PromptrevError as exc:
        return lfs_error(exc)
    return _json({"message": "verified"})


@_routes("/locks/verify", ["POST"])
@_routes("/locks", ["GET", "POST"])
def locks() -> Response:
    """No file locking here: git-lfs notes it once and goes on with the push."""
    return lfs_error(NotFound("this server does not implement the Git LFS locking API"))


def _announced_size() -> int:
    """The size the batch request announced (in the upload's URL), checked against the
    body's length: a body of another size is refused before any byte is stored."""
    length = request.content_length
    if length is None:
        raise InvalidRequest("an upload needs a Content-Length: the object's size")
    announced = request.args.get("size", str(length))
    if not announced.isdigit() or len(announced) > 19:
        raise InvalidRequest("the upload URL's size must be a byte count")
    if int(announced) != length:
        raise ValidationFailed(f"the upload is {length:,} bytes, but its object was "
                               f"announced as {int(announced):,} bytes: nothing was stored")
    return length


def _check_oid(oid: str) -> None:
    if not valid_oid(oid):
        raise NotFound(f"no such object: {oid[:80]!r} is not a sha256 (64 lowercase hex "
                       "digits)")


def _endpoint() -> str:
    """This LFS endpoint's URL, as the client reached it (``…/registry.git/info/lfs``)."""
    path = request.path
    return request.host_url.rstrip("/") + path[:path.index("/info/lfs") + len("/info/lfs")]


def _json(payload) -> Response:
    return Response(json_bytes(payload), 200, mimetype=MEDIA_TYPE)


def lfs_error(exc: PromptrevError) -> Response:
    """An error as the Git LFS API gives it: ``{"message": …}`` with the status."""
    status = http_status(exc)
    headers = {}
    if status == 401:
        headers = {"LFS-Authenticate": CHALLENGE, "WWW-Authenticate": CHALLENGE}
    return Response(json_bytes({"message": exc.message, "code": exc.code}), status, headers,
                    mimetype=MEDIA_TYPE)
