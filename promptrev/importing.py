"""Import a folder of artifact files (e.g. the starter library in ``prompts/``), or one file.

Files are recognised by suffix (``.prompty`` → prompt, ``.jsonl`` → dataset; other prompt
formats, ``.prompt`` (Dotprompt) and ``.prompt.yml`` (GitHub Models), are converted by
:mod:`promptrev.model.formats`, their test data becoming a dataset ``NAME-tests`` and
their evaluators an evaluation spec in the report). A Dotprompt partial in a folder is
named by its path under it, as Dotprompt's directory store names it
(``shared/_tone.prompt`` is ``shared/tone``): included by that name, it becomes the
registry prompt ``shared/tone`` and its includers include it, so shared parts stay
shared; a partial found only beside its prompt by its bare name (and every partial of a
single file's import) is stored inside the prompts that include it. The name is
the path relative to the folder without the suffix; a leading kind folder (``datasets/``,
``prompts/``) and the hashed bucket folders of a registry's tree (``@e/@7/``, see
:mod:`promptrev.model.fanout`) are dropped, so a checkout of a registry imports under the
same names.
Everything is validated first and written as one commit: all files or none.

Only regular files are read, and no link is ever followed: a folder may be a clone of a
registry that once accepted a link named like a prompt and pointing at any file of this
machine. A link, or anything else that is not a regular file, is refused by name.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

from promptrev.model import formats
from promptrev.model.artifacts import KINDS, kind_of_file
from promptrev.model.names import validate_name

from .errors import Conflict, NotFound, PreconditionRequired, PromptrevError, ValidationFailed
from .registry import DEFAULT_AUTHOR, Registry


@dataclass
class ImportReport:
    """What an import did."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    commit: str | None = None
    notes: list[str] = field(default_factory=list)  # what a conversion could not carry
    evaluations: dict[str, dict] = field(default_factory=dict)  # name → evaluation spec
    sources: dict[str, str] = field(default_factory=dict)  # stored file → converted file

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return {"created": self.created, "updated": self.updated,
                "unchanged": self.unchanged, "commit": self.commit, "notes": self.notes,
                "evaluations": self.evaluations}


@dataclass
class _Foreign:
    """A file in another prompt format, read but not yet converted."""

    path: str  # relative to the import's root
    name: str
    fmt: formats.Format
    data: bytes


TESTS_SUFFIX = "-tests"  # the dataset made of a file's test data: NAME-tests


def collect(root: str, max_bytes: int | None = None) -> list[tuple[str, str, bytes]]:
    """(kind, name, bytes) for every artifact file under ``root``, sorted by name.

    Walks by open folder handles and opens with ``O_NOFOLLOW``, so a link swapped in
    while it runs is not followed either. Links, other non-regular files and files over
    ``max_bytes`` are refused (:class:`ValidationFailed` naming each), never read.
    """
    return _collect(root, max_bytes)[0]


def _collect(root: str, max_bytes: int | None) -> tuple[list[tuple[str, str, bytes]],
                                                        list[_Foreign]]:
    if not os.path.isdir(root):
        raise NotFound(f"{root} is not a folder")
    found: list[tuple[str, str, bytes]] = []
    foreign: list[_Foreign] = []
    problems: list[dict[str, str]] = []
    for folder, dirs, files, fd in os.fwalk(root):  # never descends into a linked folder
        dirs.sort()
        for dirname in [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            problems.append(_refused(root, folder, dirname, "is a symbolic link to a "
                                     "folder: import reads regular files only"))
        dirs[:] = [d for d in dirs if not d.startswith(".") and not os.path.islink(
            os.path.join(folder, d))]
        for filename in sorted(files):
            kind = kind_of_file(filename)
            fmt = formats.format_of(filename) if kind is None else None
            if kind is None and fmt is None:
                continue
            data = _read_regular(fd, filename, max_bytes)
            if isinstance(data, str):
                problems.append(_refused(root, folder, filename, data))
                continue
            relative = _relative(root, folder, filename)
            if fmt is not None:
                foreign.append(_Foreign(relative, formats.stem(relative, fmt), fmt, data))
                continue
            # A checkout of a registry keeps its files in buckets (model.fanout); the name
            # is the path without them.
            if not relative.startswith(kind.folder + "/"):
                relative = f"{kind.folder}/{relative}"
            name = kind.artifact_of(relative) or relative[len(kind.folder) + 1:
                                                          -len(kind.suffix)]
            found.append((kind.name, name, data))
    if problems:
        first = problems[0]
        raise ValidationFailed(f"{len(problems)} problem(s) in {root}; nothing was imported: "
                               f"{first['file']} {first['message']}", problems)
    return found, foreign


def _read_regular(dir_fd: int, filename: str, max_bytes: int | None) -> bytes | str:
    """The file's bytes, or why it is not read (a link, not a regular file, too large)."""
    try:
        fd = os.open(filename, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        try:
            link = stat.S_ISLNK(os.lstat(filename, dir_fd=dir_fd).st_mode)
        except OSError:
            link = False
        if link:
            return "is a symbolic link: import reads regular files only, never a link's target"
        return f"cannot be read ({exc.strerror})"
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            return "is not a regular file: import reads regular files only"
        if max_bytes is not None and info.st_size > max_bytes:
            return f"is {info.st_size:,} bytes; the limit is {max_bytes:,} bytes"
        return fh.read()


def _relative(root: str, folder: str, filename: str) -> str:
    return os.path.relpath(os.path.join(folder, filename), root).replace(os.sep, "/")


def _refused(root: str, folder: str, filename: str, why: str) -> dict[str, str]:
    return {"file": _relative(root, folder, filename), "message": why}


def import_folder(registry: Registry, root: str, *, message: str | None = None,
                  author: str = DEFAULT_AUTHOR, base: str | None = None,
                  force: bool = True) -> ImportReport:
    """Import every artifact file under ``root`` in one commit.

    Unless ``force``, a file that would change an existing artifact needs ``base`` (see
    :func:`check_overwrites`).
    """
    files, foreign = _collect(root, registry.max_bytes)
    return _import(registry, files, foreign, root,
                   message or f"import {os.path.basename(root.rstrip('/'))}", author,
                   base=base, force=force, shared_parts=True)


def import_path(registry: Registry, path: str, *, message: str | None = None,
                author: str = DEFAULT_AUTHOR, base: str | None = None,
                force: bool = True) -> ImportReport:
    """Import a folder (:func:`import_folder`) or one file of any known format.

    A file's name is its file name without the suffix. A Dotprompt file's partials are the
    ``_name.prompt`` files beside it.
    """
    if os.path.isdir(path):
        return import_folder(registry, path, message=message, author=author, base=base,
                             force=force)
    folder, filename = os.path.split(os.path.abspath(path))
    kind, fmt = kind_of_file(filename), formats.format_of(filename)
    if kind is None and fmt is None:
        known = ", ".join(sorted({".prompty", ".jsonl", *(
            s for f in formats.FORMATS.values() if f.importer for s in f.suffixes)}))
        raise ValidationFailed(f"{path}: not a file promptrev imports (suffixes: {known})")
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        data = _read_regular(fd, filename, registry.max_bytes)
        partials = _sibling_partials(fd, registry.max_bytes) if fmt is not None else []
    finally:
        os.close(fd)
    if isinstance(data, str):
        raise ValidationFailed(f"{path} {data}; nothing was imported")
    files: list[tuple[str, str, bytes]] = []
    foreign: list[_Foreign] = partials
    if fmt is not None:
        foreign.append(_Foreign(filename, formats.stem(filename, fmt), fmt, data))
    else:
        files.append((kind.name, filename[: -len(kind.suffix)], data))
    return _import(registry, files, foreign, path, message or f"import {filename}", author,
                   base=base, force=force)


def _sibling_partials(dir_fd: int, max_bytes: int | None) -> list[_Foreign]:
    dotprompt = formats.FORMATS["dotprompt"]
    out = []
    for entry in sorted(os.listdir(dir_fd)):
        if entry.startswith("_") and formats.format_of(entry) is dotprompt:
            data = _read_regular(dir_fd, entry, max_bytes)
            if isinstance(data, bytes):
                out.append(_Foreign(entry, formats.stem(entry, dotprompt), dotprompt, data))
    return out


def _convert(foreign: list[_Foreign], files: list[tuple[str, str, bytes]],
             report: ImportReport, registry: Registry, *, shared_parts: bool = False
             ) -> tuple[dict[str, list], list[dict]]:
    """Convert the files in other formats into ``files``; (scorers by name, problems).

    With ``shared_parts`` (a folder), a Dotprompt partial is named by its path under the
    folder, as Dotprompt's directory store names it (``shared/_tone.prompt`` is
    ``shared/tone``): a prompt that includes it by that name includes the registry prompt
    ``shared/tone``, which the partial becomes (with the front matter of ``shared/tone.prompt``
    when the folder has that file with the same body: an export writes both). A partial
    found only beside its prompt by its bare name is stored inside that prompt, as before.
    """
    problems: list[dict] = []
    partials = {os.path.basename(f.name)[1:]: f.data.decode("utf-8", "replace")
                for f in foreign if _is_partial(f)}
    known = _known(registry)
    shared, notes = _shared_partials(foreign, partials, known) if shared_parts else ({}, [])
    report.notes += notes
    scorers: dict[str, list] = {}
    defaults: dict[str, object] = {}  # parts' defaults the includers' exports carried
    wanted = [name for name, part in shared.items() if part.front is not None]
    for item in foreign:
        if _is_partial(item):
            continue  # a shared part once included, else stored with its includers
        try:
            validate_name(item.name)  # '..prompt' or 'a b.prompt.yml': named as the file
            text = item.data.decode("utf-8")
            converted = item.fmt.importer(text, item.path, partials=partials, shared=shared,
                                          known=known)
        except UnicodeDecodeError:
            problems.append({"file": item.path, "message": "is not UTF-8 text"})
            continue
        except PromptrevError as exc:
            problems.append({"file": item.path, "message": exc.message})
            continue
        if item.name in shared and shared[item.name].front is not None:
            continue  # the partial of the same name is this part: stored from it below
        files.append(("prompt", item.name, converted.prompt.encode("utf-8")))
        report.sources[KINDS["prompt"].filename(item.name)] = item.path
        wanted += [p.partition("@")[0] for p in converted.parts]
        for key, value in converted.part_defaults.items():
            defaults.setdefault(key, value)
        if converted.dataset is not None:
            files.append(("dataset", item.name + TESTS_SUFFIX,
                          converted.dataset.encode("utf-8")))
        for suffix, judge in converted.prompts.items():  # the judge prompts its scorers use
            files.append(("prompt", item.name + suffix, judge.encode("utf-8")))
            report.sources[KINDS["prompt"].filename(item.name + suffix)] = item.path
        if converted.scorers:
            scorers[item.name] = [_judge_named(spec, item.name, converted.prompts)
                                  for spec in converted.scorers]
        report.notes += converted.notes
    problems += _store_parts(shared, wanted, partials, registry, files, report, defaults)
    return scorers, problems


def _judge_named(spec: Any, name: str, prompts: dict[str, str]) -> Any:
    """A judge scorer spec naming one of the converted file's own prompts by its suffix,
    given that prompt's full name (``summarize`` + ``-judge-tone``)."""
    judge = spec.get("judge") if isinstance(spec, dict) else None
    if isinstance(judge, dict) and judge.get("prompt") in prompts:
        return {"judge": {**judge, "prompt": name + judge["prompt"]}}
    return spec


@dataclass
class _Part:
    """A partial that is a registry prompt: its file, text, and its prompt file's front."""

    path: str
    text: str
    front: dict | None = None  # the front matter of the prompt file of the same name


def _shared_partials(foreign: list[_Foreign], partials: dict[str, str], known
                     ) -> tuple[dict[str, _Part], list[str]]:
    """The partials by their path under the folder; a partial whose name is also a prompt
    file's with another body stays inside its includers (Dotprompt keeps prompts and
    partials apart), as does one pinned to a version (``_tone@3.prompt``) the registry does
    not hold, said in the notes."""
    prompts = {f.name: f for f in foreign if not _is_partial(f)}
    shared: dict[str, _Part] = {}
    notes: list[str] = []
    pinned: list[tuple[str, str, str]] = []
    for item in foreign:
        if not _is_partial(item):
            continue
        folder, base = os.path.split(item.name)
        name = f"{folder}/{base[1:]}" if folder else base[1:]
        text = item.data.decode("utf-8", "replace")
        if "@" in name:  # a copy of a pinned or labelled version, as an export writes it
            pinned.append((name, item.path, text))
            continue
        part = _Part(item.path, text)
        twin = prompts.get(name)
        if twin is not None:
            front, body = _front_and_body(twin)
            if body is None or _without_system_lead(body) != text.strip("\n"):
                partials.setdefault(name, text)
                notes.append(f"{item.path}: the prompt {twin.path} has another text, so the "
                             "partial is stored inside the prompts that include it")
                continue
            part.front = front
        shared[name] = part
    for name, path, text in pinned:
        _pinned_twin(name, path, text, shared, prompts)
        if not known(name) and not _first_version(name, text, shared, known):
            partials.setdefault(name, text)
            notes.append(f"{path}: this registry has no '{name}', so the partial is "
                         "stored inside the prompts that include it")
    return shared, notes


def _pinned_twin(ref: str, path: str, text: str, shared: dict[str, _Part],
                 prompts: dict[str, _Foreign]) -> None:
    """A pinned copy (``_json@1.prompt``) with no ``_json.prompt`` beside it, whose body is
    that of the prompt file ``json.prompt``, is the part that prompt file is."""
    name = ref.partition("@")[0]
    if name in shared or name not in prompts:
        return
    front, body = _front_and_body(prompts[name])
    if body is not None and _without_system_lead(body) == text.strip("\n"):
        shared[name] = _Part(path, text, front)


def _first_version(ref: str, text: str, shared: dict[str, _Part], known) -> bool:
    """Whether ``name@1`` is the part this very import creates, with this text."""
    name, _, selector = ref.partition("@")
    part = shared.get(name)
    if selector != "1" or part is None or known(name) or part.text.strip() != text.strip():
        return False
    known.also.add(ref)
    return True


def _front_and_body(item: _Foreign) -> tuple[dict | None, str | None]:
    from promptrev.model import safe_yaml
    from promptrev.model.prompty import split_front_matter

    if item.fmt.name != "dotprompt":
        return None, None
    try:
        fm, body, _ = split_front_matter(item.data.decode("utf-8"))
        front = safe_yaml.load(fm, item.path) if fm else {}
    except (UnicodeDecodeError, PromptrevError):
        return None, None
    return (front if isinstance(front, dict) else None), body


def _without_system_lead(body: str) -> str:
    """A Dotprompt body without the ``{{role "system"}}`` line an export starts a Prompty
    body's leading text with (the partial is that text, without a role)."""
    body = body.strip("\n")
    marker = '{{role "system"}}\n'
    return body[len(marker):] if body.startswith(marker) else body


def _known(registry: Registry):
    """Whether a reference names a live prompt version of the registry (or ``also`` one
    the import makes)."""
    def known(ref: str) -> bool:
        if ref in known.also:
            return True
        try:
            return not registry.resolve(ref, "prompt").deleted
        except PromptrevError:
            return False

    known.also = set()
    return known


def _store_parts(shared: dict[str, _Part], wanted: list[str], partials: dict[str, str],
                 registry: Registry, files: list[tuple[str, str, bytes]],
                 report: ImportReport, defaults: dict[str, object]) -> list[dict]:
    """Store each shared partial the imported prompts include (and those it includes) as
    the registry prompt of its name."""
    from promptrev.model.formats.dotprompt import import_dotprompt, import_partial

    problems: list[dict] = []
    done: set[str] = set()
    while wanted:
        name = wanted.pop(0)
        if name in done or name not in shared:
            continue
        done.add(name)
        part = shared[name]
        try:
            validate_name(name)
            if part.front is not None:
                meta = import_dotprompt(f"---\n{_yaml(part.front)}---\n", part.path).prompt
                front = _front_of(meta)
            else:
                front = None
            converted = import_partial(part.text, part.path, partials=partials,
                                       shared=shared, known=_known(registry), front=front,
                                       defaults=defaults)
        except PromptrevError as exc:
            problems.append({"file": part.path, "message": exc.message})
            continue
        files.append(("prompt", name, converted.prompt.encode("utf-8")))
        report.sources[KINDS["prompt"].filename(name)] = part.path
        wanted += [p.partition("@")[0] for p in converted.parts]
    return problems


def _yaml(data: dict) -> str:
    from promptrev.model.formats import dump_yaml

    return dump_yaml(data)


def _front_of(text: str) -> dict:
    from promptrev.model import safe_yaml
    from promptrev.model.prompty import split_front_matter

    fm, _, _ = split_front_matter(text)
    front = safe_yaml.load(fm, "<part>") if fm else {}
    return front if isinstance(front, dict) else {}


def _is_partial(item: _Foreign) -> bool:
    """A Dotprompt partial: ``_name.prompt``."""
    return item.fmt.name == "dotprompt" and os.path.basename(item.name).startswith("_")


def _import(registry: Registry, files: list[tuple[str, str, bytes]], foreign: list[_Foreign],
            root: str, message: str, author: str, *, base: str | None = None,
            force: bool = True, shared_parts: bool = False) -> ImportReport:
    """Write ``files`` and the converted ``foreign`` ones in one commit."""
    report = ImportReport()
    scorers, problems = _convert(foreign, files, report, registry,
                                 shared_parts=shared_parts)
    seen: dict[tuple[str, str], int] = {}
    for kind, name, _ in files:
        seen[(kind, name)] = seen.get((kind, name), 0) + 1
    problems += [{"file": name, "message": f"two files give the {kind} '{name}'"}
                 for (kind, name), count in seen.items() if count > 1]
    if problems:
        raise ValidationFailed(f"{len(problems)} problem(s) in {root}; nothing was imported: "
                               f"{problems[0]['file']}: {problems[0]['message']}", problems)
    if not force:
        check_overwrites(registry, files, base)
    existing = {(s.kind, s.name): s for s in registry.list(include_deleted=True)}
    by_kind: dict[str, list[tuple[str, bytes]]] = {}
    for kind, name, data in files:
        by_kind.setdefault(kind, []).append((name, data))
    with registry.transaction(message=message, author=author) as tx:
        for kind, items in by_kind.items():
            try:
                tx.save_many(items, kind=kind)  # large folders are validated on every core
            except ValidationFailed as exc:
                problems += exc.problems or [{"file": kind, "message": exc.message}]
            except PromptrevError as exc:
                problems.append({"file": kind, "message": exc.message})
        for problem in problems:  # name the file converted, not the one it became
            source = report.sources.get(str(problem.get("file")))
            if source:
                problem["file"] = f"{source} (converted to {problem['file']})"
        if problems:
            first = problems[0]
            where = f"{first.get('file')}, line {first['line']}" if first.get("line") \
                else first.get("file")
            raise ValidationFailed(f"{len(problems)} problem(s) in {root}; nothing was "
                                   f"imported: {where}: {first.get('message')}", problems)
    report.commit = tx.commit_sha
    made = {(v.kind, v.name) for v in tx.versions}
    for kind, name, _ in files:
        label = name if kind == "prompt" else f"{kind}:{name}"
        if (kind, name) not in made:
            report.unchanged.append(label)
        elif (kind, name) in existing:
            report.updated.append(label)
        else:
            report.created.append(label)
    for name, specs in scorers.items():
        report.evaluations[name] = evaluation_spec(registry, name, specs)
    return report


def evaluation_spec(registry: Registry, name: str, scorers: list) -> dict:
    """The evaluation an imported file's evaluators describe: its test data scored on the
    imported version and on the latest one (the imported one is the baseline)."""
    imported = registry.resolve(name, "prompt").ref
    dataset = registry.resolve(name + TESTS_SUFFIX, "dataset").ref
    return {"name": f"{name}: imported vs latest", "dataset": dataset,
            "variants": [{"name": "imported", "prompt": imported},
                         {"name": "latest", "prompt": name}],
            "scorers": [_judge_pinned(registry, spec) for spec in scorers],
            "baseline": "imported"}


def _judge_pinned(registry: Registry, spec: Any) -> Any:
    """A judge scorer spec with its prompt pinned to the version the import saved."""
    judge = spec.get("judge") if isinstance(spec, dict) else None
    if isinstance(judge, dict) and isinstance(judge.get("prompt"), str):
        return {"judge": {**judge, "prompt": registry.resolve(judge["prompt"], "prompt").ref}}
    return spec


# ---- never overwrite silently ------------------------------------------------------------
# An import that would replace the content of existing artifacts needs to say what its files
# were based on: ``base``, the commit they were exported or checked out from (refused,
# naming them, when any of those artifacts changed on main since), or ``force``. New
# artifacts, deleted ones and files identical to the latest version need neither.

SHOWN = 10  # artifacts named in a refusal; the rest are counted


@dataclass(frozen=True)
class Overwrite:
    """An existing artifact an import would give new content."""

    label: str  # ``name``, or ``kind:name`` for other kinds than prompts
    current: int  # its latest version now
    at_base: int | None = None  # its version at --base (None: it did not exist then)


def check_overwrites(reg: Registry, files: list[tuple[str, str, bytes]],
                     base: str | None) -> list[Overwrite]:
    """The artifacts ``files`` would overwrite; refused unless ``base`` covers them.

    Without ``base`` any overwrite is refused (:class:`PreconditionRequired`); with it,
    those that changed on main since ``base`` are (:class:`Conflict`). ``force`` is the
    caller's: it does not call this.
    """
    commit = reg.commit_of(base) if base is not None else None
    found = overwrites(reg, files, commit)
    if commit is None and found:
        raise PreconditionRequired(
            f"import would overwrite {_count(found)} that exist{'s' if len(found) == 1 else ''}"
            f": {_names(found, with_base=False)}. Give --base COMMIT (the commit the files "
            "were exported or checked out from) to overwrite only what has not changed "
            "since, or --force to overwrite whatever is the latest",
            details={"overwrites": [o.label for o in found]})
    stale = [o for o in found if o.at_base != o.current]
    if stale:
        raise Conflict(
            f"{_count(stale)} changed on main since {(commit or '')[:12]}, so importing "
            f"would overwrite {'that change' if len(stale) == 1 else 'those changes'}: "
            f"{_names(stale, with_base=True)}. Nothing was imported: merge them into the "
            "files (e.g. check out main again) and import with the new --base, or use "
            "--force", details={"stale": [o.label for o in stale], "base": commit})
    return found


def overwrites(reg: Registry, files: list[tuple[str, str, bytes]],
               commit: str | None) -> list[Overwrite]:
    """Existing artifacts whose content ``files`` (kind, name, bytes) would replace."""
    out = []
    for kind, name, data in files:
        try:
            current = reg.resolve(name, kind)
        except NotFound:
            continue
        if current.deleted or reg.get(current.ref, kind).text.encode("utf-8") == data:
            continue
        at_base = None
        if commit is not None:
            try:
                at_base = reg.resolve(f"{name}@{commit}", kind).number
            except NotFound:  # it did not exist yet at that commit
                at_base = None
        out.append(Overwrite(name if kind == "prompt" else f"{kind}:{name}", current.number,
                             at_base))
    return out


def _count(items: list[Overwrite]) -> str:
    return f"{len(items)} artifact{'' if len(items) == 1 else 's'}"


def _names(items: list[Overwrite], *, with_base: bool) -> str:
    def one(o: Overwrite) -> str:
        if not with_base:
            return f"{o.label} (v{o.current})"
        then = f"v{o.at_base}" if o.at_base is not None else "not there"
        return f"{o.label} ({then} then, v{o.current} now)"

    shown = ", ".join(one(o) for o in items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")
