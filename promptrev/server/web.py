"""Web pages: browse, history, side-by-side diff, edit, labels, rollback, audit, login.

Reading works with JavaScript off (plain links and GET forms); every write is a POST form
with a CSRF token, and label moves and rollbacks go through a confirmation page that
shows exactly what will change.
"""

from __future__ import annotations

import base64
import functools
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_user, logout_user

from promptrev.accounts import Backoff, User
from promptrev.errors import (
    Conflict,
    EvidenceRequired,
    InvalidRequest,
    NotFound,
    PromptrevError,
    TooManyAttempts,
    Unauthorized,
    ValidationFailed,
)
from promptrev.model.artifacts import KINDS
from promptrev.model.diffing import text_diff
from promptrev.model.names import validate_label, validate_name
from promptrev.model.prompty import parse_prompt
from promptrev.model.validation import check_content
from promptrev.reviews import Edit, Reviews

from .auth import SessionUser, client_address, state, web_user
from .highlight import highlight_artifact, stylesheet
from .message_folding import fold_message

bp = Blueprint("web", __name__, static_folder="static", static_url_path="/static")


def reader(view):
    """Pages that need read access: a login, or anonymous reads when enabled."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        user = web_user()
        if user is None:
            return redirect(url_for("web.login", next=request.full_path.rstrip("?")))
        return view(user, *args, **kwargs)

    return wrapper


def writer(view):
    """Pages that write: a logged-in user (roles are checked per action)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_authenticated:
            return redirect(url_for("web.login", next=request.full_path.rstrip("?")))
        return view(current_user.user, *args, **kwargs)

    return wrapper


def _reg():
    return state().registry


def _kind() -> str:
    kind = request.values.get("kind") or "prompt"
    if kind not in KINDS:
        raise InvalidRequest(f"unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
    return kind


def _need(name: str) -> str:
    value = request.values.get(name, "").strip()
    if not value:
        raise InvalidRequest(f"'{name}' is required")
    return value


def _int(name: str, default: int | None = None) -> int | None:
    value = request.values.get(name, "").strip()
    if not value:
        if default is None:
            raise InvalidRequest(f"'{name}' is required")
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        what = "a page number" if name == "page" else "a version number"
        raise InvalidRequest(f"'{name}' must be {what}, not {value[:20]!r}")
    return int(value)


# ---- browsing --------------------------------------------------------------------------
PER_PAGE = 100  # artifacts per page of a folder: 10,000 in one page made 2 MB of HTML

@bp.get("/")
@reader
def index(user: User) -> str:
    """Artifact list: folders, search, labels."""
    query = request.args.get("q", "").strip()[:255] or None
    prefix = request.args.get("prefix", "").strip().strip("/")
    kind = request.args.get("kind") or None
    if kind not in (None, *KINDS):
        kind = None
    listing = _reg().browse(prefix, kind=kind, query=query, page=_int("page", 1),
                            per_page=PER_PAGE)
    crumbs = []
    if prefix:
        parts = prefix.split("/")
        crumbs = [("/".join(parts[: i + 1]), part) for i, part in enumerate(parts)]
    return render_template("index.html", user=user, rows=listing.items,
                           folders=listing.folders, prefix=prefix, query=query or "", kind=kind,
                           crumbs=crumbs, total=listing.total, listing=listing)


@bp.get("/a/<path:name>")
@reader
def artifact(user: User, name: str) -> str:
    """Artifact page: content, inputs and parameters, history timeline with labels."""
    reg, kind = _reg(), _kind()
    history = reg.history(name, kind)
    selected = _int("v", history[0].number)
    version = next((v for v in history if v.number == selected), None)
    if version is None:
        raise NotFound(f"{kind} '{name}' has no version {selected} "
                       f"(versions 1..{history[0].number})")
    text = prompt = None
    if not version.deleted:
        text = reg.get(f"{name}@{version.number}", kind).text
        if kind == "prompt":
            prompt = parse_prompt(text, f"{name}.prompty")
    labels = reg.labels(name, kind)
    dependents = reg.dependents(name) if kind == "prompt" and not version.deleted else []
    return render_template(
        "artifact.html", user=user, name=name, kind=kind, version=version, history=history,
        dependents=dependents,
        text=text, highlighted=highlight_artifact(text, kind) if text is not None else None,
        prompt=prompt, labels=labels, protected=state().policy.protected_labels,
        latest=history[0].number, experiments=_experiments(reg, name, kind))


def _experiments(reg, name: str, kind: str) -> list[dict]:
    """Live online-A/B statistics of every label of the artifact that splits traffic."""
    splits = reg.splits(name, kind)
    if not splits:
        return []
    from promptrev.evaluation.online import Outcomes

    outcomes = Outcomes(reg)
    return [outcomes.report(reg, name, label, kind) for label in sorted(splits)]


@bp.get("/diff")
@reader
def diff(user: User) -> str:
    """Side-by-side diff of two versions: field changes on top, then text, then rendered.

    ``a`` and ``b`` are references as the API takes them (``summarize@1``,
    ``summarize@production``, ``prompt:summarize``); with ``name``, a bare number or label
    is a version of that artifact (``name=summarize&a=1&b=production``).
    """
    reg, name = _reg(), request.args.get("name", "").strip()
    kind = request.args.get("kind") or None
    if kind is not None:
        kind = _kind()
    left, right = (reg.resolve(_version_ref(name, _need(side)), kind) for side in "ab")
    same = (left.kind, left.name) == (right.kind, right.name)
    if same and left.number == right.number:
        raise InvalidRequest(f"{_need('a')} and {_need('b')} are the same version "
                             f"({left.ref}): pick two different versions to compare")
    if same and left.number > right.number:
        left, right = right, left
    result = reg.diff(left.ref, right.ref, kind=left.kind if same else None)
    tokens = state().tokens(reg, left.ref, right.ref) if result.rendered else None
    return render_template("diff.html", user=user, name=left.name, kind=left.kind,
                           a=left.number, b=right.number, left=left, right=right,
                           diff=result, tokens=tokens,
                           history=reg.history(left.name, left.kind) if same else None)


def _version_ref(name: str, value: str) -> str:
    """A reference for ``value``: a version or label of ``name``, or a whole reference."""
    if name and "@" not in value and ":" not in value and value != name:
        return f"{name}@{value}"
    return value


@bp.get("/audit")
@reader
def audit(user: User) -> str:
    """Every write, label move and rollback: who, when, why."""
    before = _int("before", 0) or None
    entries = _reg().audit(100, before)
    return render_template("audit.html", user=user, entries=entries,
                           older=entries[-1].seq if len(entries) == 100 else None)


@bp.get("/highlight.css")
def highlight_css() -> Response:
    """Pygments styles."""
    return Response(stylesheet(), mimetype="text/css",
                    headers={"Cache-Control": "public, max-age=86400"})


# ---- editing ---------------------------------------------------------------------------
@bp.route("/edit", methods=["GET", "POST"])
@writer
def edit(user: User) -> str | Response:
    """Edit with a commit message; an edit that meets another change loses neither.

    When the artifact moved on since the editor opened (``base``), the edit is merged
    three-way with the latest version, as change requests merge. A clean merge is shown
    for confirmation (saving it is based on the latest version, so a further change is
    caught again); where both changed the same lines, both sides are shown and only the
    named "overwrite" button (``overwrite``: the version it replaces) saves over theirs.
    """
    reg, kind = _reg(), _kind()
    creating = request.values.get("new") == "1"
    name = request.values.get("name", "").strip()
    page: dict[str, Any] = {}
    if request.method == "POST":
        name = validate_name(_need("name"))
        text = request.form.get("text", "").replace("\r\n", "\n")
        base = _int("base", 0)
        message = request.form.get("message", "").strip() or f"save {name}"
        if request.form.get("propose"):
            proposed = Reviews(reg, state().policy).open(user, message,
                                                         [Edit(name, text, kind)])
            flash(f"opened change request #{proposed.number}")
            return redirect(url_for("reviews.review", number=proposed.number))
        state().policy.require_write_main(user, "saving to main")
        overwrite = _int("overwrite", 0) if request.form.get("overwrite") else None
        try:
            version = reg.save(name, text, message=message, author=user.author,
                               base=base if overwrite is None else overwrite, kind=kind,
                               account=user.name)
        except Conflict as exc:
            page = _conflict_page(reg, name, kind, text, base, exc)
            text, base = page.pop("text"), page.pop("base")
        else:
            _flash_saved(reg, version)
            return redirect(url_for("web.artifact", name=name, kind=kind, v=version.number))
    elif creating:
        text, base = _NEW_PROMPT if kind == "prompt" else "", 0
    else:
        name = _need("name")
        current = reg.resolve(name, kind)
        base = current.number
        text = "" if current.deleted else reg.get(f"{name}@{base}", kind).text
    return render_template("edit.html", user=user, name=name, kind=kind, text=text, base=base,
                           message=request.form.get("message", ""), creating=creating,
                           may_save=state().policy.may_write_main(user), **page)


@bp.post("/edit/check")
@writer
def edit_check(user: User) -> Response:
    """What saving this text would say, without saving: the edit page's live check.

    The same check as a save (size, encoding, the kind's format); JSON for the page's
    script, which sends the form's CSRF token. Problems and warnings carry their line.
    """
    kind = _kind()
    name = request.form.get("name", "").strip()
    text = request.form.get("text", "").replace("\r\n", "\n")
    problems: list[dict[str, Any]] = []
    try:
        validate_name(name)
    except PromptrevError as exc:
        problems.append({"line": None, "severity": "error", "message": exc.message})
        name = "untitled"
    warnings: list[dict[str, Any]] = []
    filename = KINDS[kind].filename(name)
    try:
        _, found = check_content(kind, name, text, _reg().max_bytes)
        warnings = [w.to_dict(filename) for w in found]
    except ValidationFailed as exc:
        problems.extend(exc.problems or [{"line": None, "severity": "error",
                                          "message": exc.message}])
    except PromptrevError as exc:  # too large, not UTF-8
        problems.append({"line": None, "severity": "error", "message": exc.message})
    return jsonify(valid=not problems, file=filename, problems=problems, warnings=warnings)


def _conflict_page(reg, name: str, kind: str, text: str, base: int, conflict: Conflict
                   ) -> dict[str, Any]:
    """What the edit page shows after a save met a newer version: the merge, or both sides.

    ``text`` and ``base`` are what the form then holds: the merged text on the latest
    version when the merge is clean, else the edit (with the latest version's other
    changes merged in) still on the version the editor began from.
    """
    current = conflict.details.get("current", 0)
    page: dict[str, Any] = {"conflict": conflict, "text": text, "base": base,
                            "current": current, "other": None}
    if 0 < conflict.details.get("base", 0) < current:
        page["other"] = reg.diff(f"{name}@{conflict.details['base']}", f"{name}@{current}",
                                 kind=kind)
    merge = reg.merge_edit(name, text, base, kind)
    if merge is None:
        return page
    latest = merge.latest
    page.update(current=latest.number, latest=latest)
    theirs = f"v{latest.number} ({_person(latest.author)})"
    if merge.text is not None:
        page.update(merged=text_diff(reg.get(f"{name}@{latest.number}", kind).text,
                                     merge.text, theirs, "merged"),
                    text=merge.text, base=latest.number)
    else:
        page.update(clash=text_diff(merge.theirs, merge.mine, theirs, "your version"),
                    text=merge.mine)
    return page


def _flash_saved(reg, version) -> None:
    """Say what a save made, and what ``show`` would warn about in it."""
    flash(f"saved {version.name} as version {version.number}")
    filename = KINDS[version.kind].filename(version.name)
    for warning in reg.get(version.ref, version.kind).warnings:
        flash(f"warning: {warning.describe(filename)}", "warning")


_NEW_PROMPT = """---
name: new prompt
description: What this prompt does.
inputs:
  question:
    type: string
sample:
  question: What is a prompt registry?
---
system:
You are a helpful assistant.

user:
{{ question }}
"""


# ---- labels and rollback ---------------------------------------------------------------
@bp.route("/label", methods=["GET", "POST"])
@writer
def label(user: User) -> str | Response:
    """Move (or remove) a label, after a confirmation that shows what changes."""
    reg, kind = _reg(), _kind()
    name, label_name = _need("name"), validate_label(_need("label"))
    remove = request.values.get("remove") == "1"
    to = None if remove else _int("to")
    state().policy.require_label(user, label_name)
    labels = reg.labels(name, kind)
    current = labels.get(label_name)
    if request.method == "POST":
        cleared = state().policy.require_move(user, reg, name, label_name, to, kind=kind,
                                              override=_override_reason())
        message = request.form.get("message", "").strip() or None
        if remove:
            reg.remove_label(name, label_name, author=user.author, kind=kind, account=user.name,
                             message=cleared.message(message, f"remove label {name}@{label_name}"),
                             guard=cleared.guard)
            flash(f"removed label {label_name} from {name}")
        else:
            reg.set_label(name, label_name, to, author=user.author, kind=kind, account=user.name,
                          message=cleared.message(message, f"label {name}@{label_name} -> {to}"),
                          guard=cleared.guard)
            flash(f"{label_name} now points at {name}@{to}"
                  + (f" (was version {current})" if current else ""))
        return redirect(url_for("web.artifact", name=name, kind=kind))
    target = reg.resolve(f"{name}@{to}", kind) if to is not None else None
    change = tokens = None
    if current is not None and to is not None and current != to:
        change = reg.diff(f"{name}@{current}", f"{name}@{to}", kind=kind)
        if change.rendered:
            tokens = state().tokens(reg, f"{name}@{current}", f"{name}@{to}")
    impact = reg.label_impact(name, label_name, to) if kind == "prompt" and \
        to is not None and current != to else []
    return render_template("confirm_label.html", user=user, name=name, kind=kind,
                           impact=impact,
                           label=label_name, current=current, to=to, target=target,
                           remove=remove, change=change, tokens=tokens,
                           gate=_gate(user, reg, name, label_name, to, kind))


@bp.route("/rollback", methods=["GET", "POST"])
@writer
def rollback(user: User) -> str | Response:
    """Roll back: move a label back, or restore an old version's content as a new version."""
    reg, kind = _reg(), _kind()
    name, to = _need("name"), _int("to")
    label_name = request.values.get("label", "").strip() or None
    if label_name:
        state().policy.require_label(user, label_name)
    else:
        state().policy.require_write_main(user, "rolling back on main")
    latest = reg.resolve(name, kind)
    current = reg.labels(name, kind).get(label_name) if label_name else latest.number
    if request.method == "POST":
        message = request.form.get("message", "").strip() or None
        guard = None
        if label_name:
            cleared = state().policy.require_move(user, reg, name, label_name, to, kind=kind,
                                                  what="rolling back",
                                                  override=_override_reason())
            message = cleared.message(message, "rolled back") if cleared.note else message
            guard = cleared.guard
        reg.rollback(name, to, label=label_name, message=message, author=user.author,
                     kind=kind, account=user.name, guard=guard)
        flash(f"rolled back {name}" + (f"@{label_name}" if label_name else "")
              + f" to version {to}")
        return redirect(url_for("web.artifact", name=name, kind=kind))
    change = None
    if current is not None and current != to:
        change = reg.diff(f"{name}@{current}", f"{name}@{to}", kind=kind)
    return render_template("confirm_rollback.html", user=user, name=name, kind=kind, to=to,
                           label=label_name, current=current, latest=latest.number,
                           change=change, gate=_gate(user, reg, name, label_name, to, kind)
                           if label_name else None)


def _override_reason() -> str | None:
    """The admin's written reason to move a gated label without evidence (form field)."""
    return request.form.get("override_reason", "").strip() or None


def _gate(user: User, reg, name: str, label_name: str, to: int | None, kind: str
          ) -> dict[str, Any]:
    """What the release policy says of the move: its clearance, or why it is refused."""
    try:
        cleared = state().policy.require_move(user, reg, name, label_name, to, kind=kind)
    except EvidenceRequired as exc:
        from promptrev.evaluation.gate import producible

        queue = producible(exc) and user.may("write") and to is not None
        return {"refused": exc.message, "details": exc.details,
                "may_override": state().policy.may_override(user),
                "queue": {"name": name, "kind": kind, "label": label_name, "to": to}
                if queue else None}
    return {"clearance": cleared}


# ---- accounts --------------------------------------------------------------------------
@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response:
    """Log in with name and password (session cookie).

    Failed logins back off per account name and per client (429 with Retry-After). A
    successful login starts a new session: what the old one held, its CSRF token
    included, is dropped.
    """
    error, status, headers = None, 200, {}
    if request.method == "POST":
        try:
            user = state().accounts.login(
                request.form.get("name", ""), request.form.get("password", ""),
                client=client_address(), backoff=Backoff.from_settings(state().settings))
        except TooManyAttempts as exc:
            error, status = exc.message, 429
            headers["Retry-After"] = str(exc.retry_after)
        except Unauthorized as exc:
            error = exc.message
        else:
            session.clear()  # rotates the CSRF token: a pre-login one is refused from now
            login_user(SessionUser(user))
            return redirect(_safe_next(request.form.get("next")))
    page = render_template("login.html", user=web_user(), error=error,
                           next=request.values.get("next", ""))
    return Response(page, status, headers, mimetype="text/html")


@bp.post("/logout")
def logout() -> Response:
    """End the session, and every other session of the same user (their cookies too)."""
    if current_user.is_authenticated:
        state().accounts.end_sessions(current_user.user.name)
    logout_user()
    session.clear()
    return redirect(url_for("web.login"))


@bp.route("/account", methods=["GET", "POST"])
@writer
def account(user: User) -> str | Response:
    """The user's API tokens: create (shown once) and revoke.

    A form post redirects back here (post/redirect/get), so reloading the page never
    creates another token; a new token waits in the session for that one page, which
    takes it out again, so it is shown once.
    """
    accounts = state().accounts
    if request.method == "POST":
        if request.form.get("revoke"):
            accounts.revoke_token(_int("revoke"), owner=user.name)
            flash("token revoked")
        else:
            label_text = request.form.get("label", "").strip()[:100] or "web"
            token, _info = accounts.create_token(user.name, label_text)
            session[_NEW_TOKEN] = _seal(token)
        return redirect(url_for("web.account"), 303)
    new_token = _unseal(session.pop(_NEW_TOKEN, None))
    page = render_template("account.html", user=user, tokens=accounts.tokens(user.name),
                           new_token=new_token)
    headers = {"Cache-Control": "no-store"} if new_token else {}
    return Response(page, 200, headers, mimetype="text/html")


_NEW_TOKEN = "new_token"  # the session key a created token waits under for its one page


def _fernet():
    """Authenticated encryption (cryptography's Fernet) under a key derived from the app's
    secret key with HKDF, for what the session cookie must carry but not show."""
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    secret = current_app.secret_key
    secret = secret.encode() if isinstance(secret, str) else bytes(secret)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"promptrev new token").derive(secret)
    return Fernet(base64.urlsafe_b64encode(key))


def _seal(token: str) -> str:
    """``token`` encrypted for the session cookie, which is signed but readable by whoever
    holds it (a copy kept after logout included): only this server can read it back."""
    return _fernet().encrypt(token.encode()).decode()


def _unseal(value: object) -> str | None:
    """The token :func:`_seal` hid in ``value`` (None when there is none, or not ours)."""
    from cryptography.fernet import InvalidToken

    if not isinstance(value, str):
        return None
    try:
        return _fernet().decrypt(value.encode(), ttl=600).decode("ascii", "replace")
    except (InvalidToken, ValueError):
        return None


def _safe_next(target: str | None) -> str:
    """Only redirect to paths on this server after login."""
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(
            target).netloc:
        return target
    return url_for("web.index")


# ---- template helpers ------------------------------------------------------------------
def _when(value: Any) -> str:
    if isinstance(value, int):
        value = datetime.fromtimestamp(value, timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _person(author: str) -> str:
    return author.split(" <", 1)[0]


def _label_class(label: str) -> str:
    """One look per label everywhere: protected labels (production) one colour, others one."""
    return "label protected" if label in state().policy.protected_labels else "label"


def install_filters(app: Flask) -> None:
    """Template filters used by the pages."""
    app.add_template_filter(_when, "when")
    app.add_template_filter(_person, "person")
    app.add_template_filter(_label_class, "label_class")
    app.add_template_filter(fold_message, "fold_message")

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"kinds": tuple(KINDS)}

