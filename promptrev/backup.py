"""Backups: one archive with everything a registry cannot rebuild, and restoring it.

A backup is one gzip'd tar file, mode 0600 (it holds password hashes, token digests,
webhook secrets and remote URLs, which may carry credentials):

- ``registry.bundle``: every ref of the bare repository (``git bundle --all``);
- ``git-remotes.json``: the ``remote.*`` entries of the repository's Git config;
- ``tables/<database>/<table>.jsonl``: one JSON object per row of each table that is not
  derived from Git nor a passing log like the event outbox (:func:`migrations.
  kept_tables`), found by reflecting the live database, every table of one database read
  in one transaction;
- ``lfs/<oid>``: every object of the object store (adapter weights);
- ``manifest.json``, last: format, release, refs, each database's schema revision, row
  counts, and the sha256 and size of every other member.

The refs and the registry tables are read at one instant, under the writer lock, so no
save is caught half-way (its commit made, its index rows and webhook events not yet); the
bundle is then made from exactly those refs while writers go on.

A restore builds the registry in a folder beside the target, checks every member against
the manifest before it writes anything, creates each database at the backup's schema
revision, loads the rows, upgrades to this release's head, rebuilds the derived index from
Git, and only then renames the folder into place. Derived tables are never in an archive.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import __version__
from .config import ACCOUNTS_FILE
from .errors import Conflict, InvalidRequest, StorageError
from .registry import INDEX_FILE, Registry
from .storage import migrations
from .storage.gitstore import MAIN, GitStore
from .storage.objects import CorruptObject, ObjectStore
from .storage.sql import create_engine

FORMAT = 1
MANIFEST, BUNDLE, REMOTES = "manifest.json", "registry.bundle", "git-remotes.json"
PARTIAL, RESTORING = ".promptrev-partial", ".promptrev-restoring"
_MEMBER = re.compile(r"manifest\.json|registry\.bundle|git-remotes\.json"
                     r"|tables/[a-z]+/[A-Za-z_][A-Za-z0-9_]*\.jsonl|lfs/[0-9a-f]{64}")
_OID = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1024 * 1024
_BATCH = 1000


class BackupError(StorageError):
    """A backup or restore that could not be done; nothing was left half-written."""

    code = "backup_failed"


class CorruptArchive(InvalidRequest):
    """An archive that is cut short, damaged, or not a promptrev backup."""

    code = "corrupt_archive"


class ArchiveTooNew(InvalidRequest):
    """An archive made by a newer release (its format or a schema revision is unknown)."""

    code = "archive_too_new"


class RestoreRefused(Conflict):
    """A restore target that is not new: a folder or a database that holds data."""

    code = "restore_refused"


# ---- backup ---------------------------------------------------------------------------
def backup(registry: Registry, out_path: str | os.PathLike, *,
           accounts_url: str | None = None) -> dict[str, Any]:
    """Write ``registry`` to one archive at ``out_path``; return what it holds.

    The file appears only once complete (a temporary file beside it, fsync'd, renamed),
    mode 0600. The accounts database is included when ``accounts_url`` is given or the
    default file beside the registry exists.
    """
    out_path = os.path.abspath(os.fspath(out_path))
    if os.path.isdir(out_path):
        raise BackupError(f"{out_path} is a folder: name the archive file to write")
    accounts = _accounts_engine(registry.path, accounts_url)
    try:
        with _os_errors(f"could not write the backup {out_path}"):
            folder, name = os.path.split(out_path)
            os.makedirs(folder, exist_ok=True)
            _remove_stale(folder, f".{name}.", PARTIAL)
            registry.sync()
            with _partial(out_path) as raw, \
                    tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
                manifest, counts = _archive(tar, registry, accounts)
            size = os.path.getsize(out_path)
    finally:
        if accounts is not None:
            accounts.dispose()
    shown = {k: v for k, v in manifest.items() if k != "members"}
    return {"path": out_path, "size": size, **shown, **counts}


def _archive(tar: tarfile.TarFile, registry: Registry, accounts: Engine | None
             ) -> tuple[dict[str, Any], dict[str, int]]:
    """Write every member, the manifest last; return it and the index's counts."""
    now = time.time()
    refs, schema, dumps, counts = _registry_snapshot(registry)
    if accounts is not None:
        with _db_errors("could not read the accounts database"), accounts.connect() as conn:
            _repeatable(conn)
            with conn.begin():
                schema["accounts"] = _revision(conn, "accounts")
                dumps += _dump_database(conn, "accounts")
    members: dict[str, dict[str, Any]] = {}
    tables: dict[str, dict[str, int]] = {database: {} for database in schema}
    for database, table, rows, fh in dumps:
        with fh:
            members[f"tables/{database}/{table}.jsonl"] = _add(
                tar, f"tables/{database}/{table}.jsonl", fh, fh.seek(0, os.SEEK_END), now)
        tables[database][table] = rows
    with _bundle(registry.path, refs) as fh:
        members[BUNDLE] = _add(tar, BUNDLE, fh, fh.seek(0, os.SEEK_END), now)
    members[REMOTES] = _add_bytes(tar, REMOTES, json.dumps(_remotes(registry.path)), now)
    objects = _add_objects(tar, registry.objects.root, members, now)
    manifest = {"format": FORMAT, "promptrev": __version__, "created": _iso(now),
                "head": refs.get(MAIN), "refs": refs, "schema": schema, "tables": tables,
                "objects": objects, "members": members}
    _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2, sort_keys=True), now)
    return manifest, counts


def _registry_snapshot(registry: Registry) -> tuple[dict[str, str], dict[str, str], list,
                                                   dict[str, int]]:
    """Refs and registry tables at one instant, read under the writer lock."""
    with _db_errors("could not read the registry database"), \
            registry.engine.connect() as conn:
        _repeatable(conn)
        with conn.begin():
            with registry.writing():
                schema = {"registry": _revision(conn, "registry")}  # first read: snapshot
                refs = _refs(registry.path)
            dumps = _dump_database(conn, "registry")
            counts = {"commits": _count(conn, "commit"), "versions": _count(conn, "version")}
    return refs, schema, dumps, counts


def _repeatable(conn: Connection) -> None:
    # PostgreSQL's default gives each statement its own snapshot; one snapshot for all
    # tables needs REPEATABLE READ. SQLite's WAL already keeps one per transaction.
    if conn.dialect.name == "postgresql":
        conn.execution_options(isolation_level="REPEATABLE READ")


def _revision(conn: Connection, database: str) -> str:
    found = migrations.current(conn, database)
    if len(found) != 1:
        raise BackupError(f"the {database} database records no single schema revision "
                          f"({', '.join(found) or 'none'}); open it once with this release")
    return found[0]


def _dump_database(conn: Connection, database: str) -> list[tuple[str, str, int, IO[bytes]]]:
    """(database, table, rows, file of JSON lines) for each kept table, in FK order."""
    names = migrations.kept_tables(database, sa.inspect(conn).get_table_names())
    meta = sa.MetaData()
    meta.reflect(conn, only=names)
    return [(database, table.name, *_dump_table(conn, table)) for table in meta.sorted_tables]


def _dump_table(conn: Connection, table: sa.Table) -> tuple[int, IO[bytes]]:
    def refuse(value: Any) -> None:
        raise BackupError(f"table {table.name} holds a {type(value).__name__} value, "
                          "which backups cannot store")

    fh = tempfile.TemporaryFile()  # unlinked: a killed backup leaves nothing behind
    rows = 0
    stmt = sa.select(table).order_by(*table.primary_key.columns)
    for row in conn.execute(stmt.execution_options(stream_results=True)):
        fh.write(json.dumps(dict(row._mapping), ensure_ascii=False, default=refuse).encode()
                 + b"\n")
        rows += 1
    return rows, fh


def _count(conn: Connection, table: str) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar()


@contextmanager
def _bundle(git_dir: str, refs: dict[str, str]) -> Iterator[IO[bytes]]:
    """``git bundle --all`` of exactly ``refs``, even if the registry moved on since.

    A scratch repository borrows the registry's objects (Git alternates) and holds only
    those refs; objects never change, so writers need not wait for the bundle.
    """
    with tempfile.TemporaryDirectory(prefix="promptrev-bundle-") as scratch, \
            tempfile.TemporaryFile() as out:
        _git(["init", "--bare", "--quiet", scratch])
        with open(os.path.join(scratch, "objects", "info", "alternates"), "w") as fh:
            fh.write(os.path.join(os.path.abspath(git_dir), "objects") + "\n")
        lines = "".join(f"create {ref} {sha}\n" for ref, sha in refs.items())
        _git(["update-ref", "--stdin"], git_dir=scratch, stdin=lines.encode())
        _git(["bundle", "create", "--quiet", "-", "--all"], git_dir=scratch, stdout=out)
        yield out


def _remotes(git_dir: str) -> list[list[str | None]]:
    """The ``remote.*`` entries of the repository's config, in order ([key, value])."""
    out = _git(["config", "-z", "--get-regexp", r"^remote\."], git_dir=git_dir, ok=(0, 1))
    pairs: list[list[str | None]] = []
    for entry in filter(None, out.split("\0")):
        key, sep, value = entry.partition("\n")
        pairs.append([key, value if sep else None])
    return pairs


def _add_objects(tar: tarfile.TarFile, root: str, members: dict, now: float
                 ) -> dict[str, int]:
    """Add every stored object, checking each against its name on the way."""
    count = total = 0
    for oid, path in _stored_objects(root):
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            entry = _add(tar, f"lfs/{oid}", fh, size, now)
        if entry["sha256"] != oid:
            raise CorruptObject(f"object {oid[:12]}… in {root} is corrupt (its content hashes "
                                f"to {entry['sha256'][:12]}…): no backup was written; restore "
                                "it from an older backup or push the adapter again")
        members[f"lfs/{oid}"] = entry
        count, total = count + 1, total + size
    return {"count": count, "bytes": total}


def _stored_objects(root: str) -> list[tuple[str, str]]:
    """(oid, path) of every object under ``root`` (``aa/bb/<oid>``; temporary files skipped)."""
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if _OID.fullmatch(name) and folder == os.path.join(root, name[:2], name[2:4]):
                found.append((name, os.path.join(folder, name)))
    return sorted(found)


class _Hashing:
    """A file read through: counts and hashes what tarfile copies into the archive."""

    def __init__(self, fh: IO[bytes]):
        self.fh, self.digest, self.size = fh, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data


def _add(tar: tarfile.TarFile, name: str, fh: IO[bytes], size: int, now: float
         ) -> dict[str, Any]:
    fh.seek(0)
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(now)
    reader = _Hashing(fh)
    tar.addfile(info, reader)
    return {"sha256": reader.digest.hexdigest(), "size": reader.size}


def _add_bytes(tar: tarfile.TarFile, name: str, text: str, now: float) -> dict[str, Any]:
    with tempfile.TemporaryFile() as fh:
        fh.write(text.encode())
        return _add(tar, name, fh, fh.tell(), now)


@contextmanager
def _partial(out_path: str) -> Iterator[IO[bytes]]:
    """A temporary file beside ``out_path`` that becomes it only if the block succeeds.

    Its flock tells a later backup that it is still being written; once the lock is free
    (the writer was killed) the next backup to that path removes it.
    """
    folder, name = os.path.split(out_path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=PARTIAL, dir=folder)  # 0600
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with os.fdopen(fd, "wb", closefd=False) as raw:
            yield raw
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out_path)
        _fsync_folder(folder)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)


def _accounts_engine(path: str, url: str | None) -> Engine | None:
    """The accounts database to back up, or None when there is none (no file)."""
    url = url or "sqlite:///" + os.path.join(os.path.abspath(path), ACCOUNTS_FILE)
    file = _sqlite_file(url)
    if file is not None and not os.path.exists(file):
        return None
    with _db_errors(f"could not open the accounts database {_shown(url)}"):
        return create_engine(url, database="accounts")


# ---- restore --------------------------------------------------------------------------
@dataclass
class _Target:
    """A database a restore writes, and how to undo that if the restore fails."""

    database: str
    url: str
    engine: Engine
    revision: str
    inside: bool = False  # a SQLite file in the folder being built: it goes with it
    new_file: str | None = None  # a SQLite file this restore creates
    fresh: bool = True  # held none of promptrev's tables: drop them again


def restore(archive_path: str | os.PathLike, path: str | os.PathLike, *,
            index_url: str | None = None, accounts_url: str | None = None) -> dict[str, Any]:
    """Restore a backup into a new registry at ``path``; return what was restored.

    ``path`` must not exist or be an empty folder, and the databases (default: SQLite
    files inside ``path``) must hold no rows. Every member is checked against the
    manifest before anything is written; on any failure what was created is removed.
    """
    archive_path = os.path.abspath(os.fspath(archive_path))
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    with _os_errors(f"could not restore into {path}"):
        _check_folder(path)
        os.makedirs(parent, exist_ok=True)
        _remove_stale(parent, f".{name}.", RESTORING)
        work = tempfile.mkdtemp(prefix=f".{name}.", suffix=RESTORING, dir=parent)
        lock = _lock_folder(work)
        try:
            return _restore(archive_path, path, work, index_url, accounts_url)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            os.close(lock)


def _restore(archive_path: str, path: str, work: str, index_url: str | None,
             accounts_url: str | None) -> dict[str, Any]:
    staged, building = os.path.join(work, "archive"), os.path.join(work, "registry")
    manifest = unpack(archive_path, staged)
    targets = _targets(manifest, building, path, index_url, accounts_url)
    try:
        summary = _build(manifest, staged, building, targets)
        _dispose(targets)
        os.rename(building, path)
        _fsync_folder(os.path.dirname(path))
    except BaseException:
        _undo(targets)
        raise
    finally:
        _dispose(targets)
    return {"path": path, "archive": archive_path, **summary}


def _build(manifest: dict, staged: str, building: str, targets: list[_Target]
           ) -> dict[str, Any]:
    """Git, remotes, objects, rows, then the derived index: the registry in ``building``."""
    GitStore.init(building)
    _fetch_bundle(building, os.path.join(staged, BUNDLE), manifest["refs"])
    _set_remotes(building, os.path.join(staged, REMOTES))
    objects = _place_objects(os.path.join(staged, "lfs"),
                             ObjectStore(os.path.join(building, "lfs", "objects")))
    tables = {t.database: _load(t, staged, manifest["tables"].get(t.database, {}))
              for t in targets}
    registry_url = next(t.url for t in targets if t.database == "registry")
    with _db_errors("could not rebuild the index"), \
            Registry.open(building, index_url=registry_url) as reg:
        index = reg.reindex()  # a rebuild announces nothing to webhooks
    return {"head": manifest["head"], "refs": manifest["refs"], "tables": tables,
            "objects": objects, "index": index, "created": manifest["created"],
            "promptrev": manifest["promptrev"]}


def _check_folder(path: str) -> None:
    if os.path.isdir(path):
        if os.listdir(path):
            raise RestoreRefused(f"{path} is not empty: restore into a new folder (or an "
                                 "empty one); nothing was changed")
    elif os.path.lexists(path):
        raise RestoreRefused(f"{path} exists and is not a folder; nothing was changed")


def _targets(manifest: dict, building: str, final: str, index_url: str | None,
             accounts_url: str | None) -> list[_Target]:
    """Open and check every database the backup fills; nothing is written yet."""
    urls = {"registry": index_url or _sqlite_url(os.path.join(building, INDEX_FILE)),
            "accounts": accounts_url or _sqlite_url(os.path.join(building, ACCOUNTS_FILE))}
    for database, revision in manifest["schema"].items():
        _check_revision(database, revision)
    targets: list[_Target] = []
    try:
        for database, revision in manifest["schema"].items():
            url = _relocated(urls[database], final, building)
            with _db_errors(f"could not open the {database} database {_shown(url)}"):
                targets.append(_Target(database, url, create_engine(
                    url, database=database, migrate=False), revision))
                _check_target(targets[-1], building)
    except BaseException:
        _dispose(targets)
        raise
    return targets


def _check_revision(database: str, revision: Any) -> None:
    if database not in migrations.DATABASES:
        raise ArchiveTooNew(f"the backup holds a '{database}' database, which this release "
                            "of promptrev does not know: it was made by a newer release; "
                            "upgrade promptrev to restore it")
    if revision not in migrations.known_revisions(database):
        raise ArchiveTooNew(f"the backup's {database} database is at schema revision "
                            f"{revision}, which this release of promptrev does not know: it "
                            "was made by a newer release; upgrade promptrev to restore it")


def _check_target(target: _Target, building: str) -> None:
    """Refuse a database that holds rows, or tables at another revision than the backup."""
    file = _sqlite_file(target.url)
    if file is not None and _within(file, building):
        target.inside = True
        return
    if file is not None and not os.path.exists(file):
        target.new_file = file
        return
    shown = _shown(target.url)
    with target.engine.connect() as conn:
        ours = _ours(target.database, sa.inspect(conn).get_table_names())
        full = {t: n for t in ours if t != "index_state" and (n := _count(conn, t))}
        current = migrations.current(conn, target.database)
    if full:
        listed = ", ".join(f"{t} ({n} row{'s' if n > 1 else ''})"
                           for t, n in sorted(full.items()))
        raise RestoreRefused(f"the {target.database} database {shown} already holds data: "
                             f"{listed}; restore into a new, empty database")
    if current not in ([], [target.revision]):
        raise RestoreRefused(f"the {target.database} database {shown} is at schema revision "
                             f"{', '.join(current)} and the backup at {target.revision}; "
                             "restore into a new, empty database")
    target.fresh = not ours


def _ours(database: str, names: list[str]) -> list[str]:
    """The tables of ``database`` among ``names``: kept and (registry) derived or
    transient ones."""
    derived = [n for n in names if n in migrations.DERIVED_TABLES | migrations.TRANSIENT_TABLES]
    return migrations.kept_tables(database, names) + (derived if database == "registry"
                                                      else [])


def _fetch_bundle(building: str, bundle: str, refs: dict[str, str]) -> None:
    _git(["-c", "core.fsync=all", "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
          "--update-head-ok", bundle, "refs/*:refs/*"], git_dir=building)
    got = _refs(building)
    if got != refs:
        missing = sorted(set(refs) ^ set(got)) or sorted(r for r in refs if got[r] != refs[r])
        raise CorruptArchive(f"the Git bundle's refs differ from the manifest's "
                             f"({', '.join(missing[:5])}): the archive is damaged")


def _set_remotes(building: str, file: str) -> None:
    with open(file, encoding="utf-8") as fh:
        pairs = _json(fh.read(), REMOTES)
    if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
            and p[0].startswith("remote.") and isinstance(p[1], (str, type(None)))
            for p in pairs):
        raise CorruptArchive(f"{REMOTES} is not a list of [remote.* key, value] pairs")
    for key, value in pairs:
        _git(["config", "--add", key, "true" if value is None else value], git_dir=building)


def _place_objects(staged: str, store: ObjectStore) -> dict[str, int]:
    """Move the (already verified) objects into the new registry's object store."""
    count = total = 0
    for oid in sorted(os.listdir(staged)) if os.path.isdir(staged) else []:
        dest = store.path(oid)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.replace(os.path.join(staged, oid), dest)
        count, total = count + 1, total + os.path.getsize(dest)
    return {"count": count, "bytes": total}


def _load(target: _Target, staged: str, expected: dict[str, int]) -> dict[str, int]:
    """Create ``target`` at the backup's revision, insert its rows, upgrade to head."""
    database = target.database
    with _db_errors(f"could not restore the {database} database {_shown(target.url)}"):
        migrations.upgrade(target.engine, database, revision=target.revision)
        with target.engine.connect() as conn:
            conn.execution_options(write_lock=True)
            with conn.begin():
                counts = {table.name: _insert(conn, database, table, staged,
                                              expected[table.name])
                          for table in _reflect(conn, database, list(expected))}
        migrations.upgrade(target.engine, database)
    return counts


def _reflect(conn: Connection, database: str, names: list[str]) -> list[sa.Table]:
    """The target's tables named ``names``, parents before children."""
    missing = sorted(set(names) - set(sa.inspect(conn).get_table_names()))
    if missing:
        raise CorruptArchive(f"the backup has {database} tables this schema revision lacks: "
                             f"{', '.join(missing)}")
    meta = sa.MetaData()
    meta.reflect(conn, only=names)
    return list(meta.sorted_tables)


def _insert(conn: Connection, database: str, table: sa.Table, staged: str,
            expected: int) -> int:
    columns = {c.name for c in table.columns}
    rows, batch = 0, []
    with open(os.path.join(staged, "tables", database, f"{table.name}.jsonl"), "rb") as fh:
        for line in fh:
            rows += 1
            row = _json(line, f"row {rows} of table {table.name}")
            if not isinstance(row, dict) or not set(row) <= columns:
                raise CorruptArchive(f"row {rows} of table {table.name} does not match the "
                                     f"table's columns ({', '.join(sorted(columns))})")
            batch.append(row)
            if len(batch) == _BATCH:
                conn.execute(table.insert(), batch)
                batch = []
    if batch:
        conn.execute(table.insert(), batch)
    if rows != expected:
        raise CorruptArchive(f"table {table.name} has {rows} rows in the archive, the "
                             f"manifest says {expected}")
    if conn.dialect.name == "postgresql":
        _reset_sequences(conn, table)
    return rows


def _reset_sequences(conn: Connection, table: sa.Table) -> None:
    """Point each serial column's sequence past the ids just inserted (PostgreSQL)."""
    quote = conn.dialect.identifier_preparer.quote
    for column in table.primary_key.columns:
        if not isinstance(column.type, sa.Integer):
            continue
        sequence = conn.execute(sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                                {"t": quote(table.name), "c": column.name}).scalar()
        if sequence:
            name = quote(column.name)
            conn.execute(sa.text(f"SELECT setval(:s, coalesce(max({name}), 1), "
                                 f"max({name}) IS NOT NULL) FROM {quote(table.name)}"),
                         {"s": sequence})


def _undo(targets: list[_Target]) -> None:
    """Remove what a failed restore put in databases outside its folder (best effort)."""
    for target in targets:
        if target.inside:
            continue  # removed with the folder
        with suppress(Exception):
            target.engine.dispose()
            if target.new_file:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    with suppress(FileNotFoundError):
                        os.unlink(target.new_file + suffix)
            elif target.fresh:
                migrations.downgrade(target.engine, target.database, "base")
            else:
                _delete_rows(target)


def _delete_rows(target: _Target) -> None:
    with target.engine.begin() as conn:
        meta = sa.MetaData()
        meta.reflect(conn, only=_ours(target.database, sa.inspect(conn).get_table_names()))
        for table in reversed(meta.sorted_tables):
            conn.execute(table.delete())


def _dispose(targets: list[_Target]) -> None:
    for target in targets:
        target.engine.dispose()


# ---- reading an archive ---------------------------------------------------------------
def unpack(archive_path: str, dest: str) -> dict[str, Any]:
    """Extract a backup into ``dest`` and check every member; return its manifest.

    Only the expected members (plain files with the names a backup writes) are accepted;
    each must match the sha256 and size the manifest gives, and every object its name.
    """
    os.makedirs(dest)
    found: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(archive_path, "r|gz") as tar:
            for member in tar:
                found[member.name] = _extract(tar, member, dest, found, archive_path)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise CorruptArchive(f"{archive_path} is damaged, cut short or not a promptrev "
                             f"backup ({exc or type(exc).__name__})") from None
    manifest = _read_manifest(dest, archive_path, found)
    _verify(manifest, found, archive_path)
    return manifest


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: str, found: dict,
             archive_path: str) -> dict[str, Any]:
    name = member.name
    if not member.isfile() or not _MEMBER.fullmatch(name) or name in found:
        raise CorruptArchive(f"{archive_path} has an unexpected entry {name!r}: it is not "
                             "a promptrev backup")
    target = os.path.join(dest, *name.split("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    source, digest, size = tar.extractfile(member), hashlib.sha256(), 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())  # objects are moved, not copied, into the new registry
    return {"sha256": digest.hexdigest(), "size": size}


def _read_manifest(dest: str, archive_path: str, found: dict) -> dict[str, Any]:
    if MANIFEST not in found:
        raise CorruptArchive(f"{archive_path} has no {MANIFEST}: it is cut short or not a "
                             "promptrev backup")
    with open(os.path.join(dest, MANIFEST), "rb") as fh:
        manifest = _json(fh.read(), MANIFEST)
    version = manifest.get("format") if isinstance(manifest, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CorruptArchive(f"{MANIFEST} in {archive_path} has no valid format number")
    if version > FORMAT:
        raise ArchiveTooNew(f"{archive_path} has backup format {version}, made by a newer "
                            f"release of promptrev ({manifest.get('promptrev')}); this "
                            f"release reads format {FORMAT}: upgrade promptrev to restore it")
    wrong = [key for key, ok in _SHAPES.items() if not ok(manifest.get(key))]
    if wrong or "registry" not in manifest["schema"] or \
            manifest["refs"].get(MAIN) != manifest["head"]:
        raise CorruptArchive(f"{MANIFEST} in {archive_path} is malformed "
                             f"({', '.join(wrong) or 'no registry, or head is not main'})")
    return manifest


def _mapping(value: Any, check) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and check(v) for k, v in value.items())


def _count_map(value: Any) -> bool:
    return _mapping(value, lambda n: isinstance(n, int) and not isinstance(n, bool))


# What each field of a manifest must be (checked before any of it is used).
_SHAPES = {
    "refs": lambda v: _mapping(v, lambda sha: isinstance(sha, str)),
    "schema": lambda v: _mapping(v, lambda rev: isinstance(rev, str)),
    "tables": lambda v: _mapping(v, _count_map),
    "members": lambda v: _mapping(v, lambda m: isinstance(m, dict)),
    "head": lambda v: isinstance(v, str),
    "created": lambda v: isinstance(v, str),
    "promptrev": lambda v: isinstance(v, str),
}


def _verify(manifest: dict, found: dict, archive_path: str) -> None:
    """Every member the manifest lists is there, intact; nothing else is."""
    listed = manifest["members"]
    for name in sorted(set(listed) | set(found) - {MANIFEST}):
        if name not in listed:
            raise CorruptArchive(f"{archive_path} holds {name}, which its manifest does not "
                                 "list: it is not a promptrev backup")
        if name not in found:
            raise CorruptArchive(f"{archive_path} lacks {name}, which its manifest lists: "
                                 "it is cut short or damaged")
        if found[name] != listed[name]:
            raise CorruptArchive(f"{name} in {archive_path} is damaged: its sha256 is "
                                 f"{found[name]['sha256'][:12]}… ({found[name]['size']} "
                                 f"bytes), the manifest says "
                                 f"{str(listed[name].get('sha256'))[:12]}…")
        if name.startswith("lfs/") and found[name]["sha256"] != name[4:]:
            raise CorruptArchive(f"{name} in {archive_path} does not hash to its name")
    needed = [BUNDLE, REMOTES] + [f"tables/{database}/{table}.jsonl"
                                  for database, tables in manifest["tables"].items()
                                  for table in tables]
    absent = [name for name in needed if name not in found]
    if absent or set(manifest["tables"]) - set(manifest["schema"]):
        raise CorruptArchive(f"{archive_path} lacks {', '.join(absent) or 'a schema'}, "
                             "which a backup always has: it is damaged")


# ---- small helpers --------------------------------------------------------------------
def _git(args: list[str], *, git_dir: str | None = None, stdin: bytes | None = None,
         stdout: IO[bytes] | None = None, ok: tuple[int, ...] = (0,)) -> str:
    command = ["git", *(["--git-dir", git_dir] if git_dir else []), *args]
    try:
        done = subprocess.run(command, input=stdin, stdout=stdout or subprocess.PIPE,
                              stderr=subprocess.PIPE)
    except OSError as exc:
        raise BackupError(f"could not run git: {exc}") from None
    if done.returncode not in ok:
        error = done.stderr.decode(errors="replace").strip().splitlines()
        raise BackupError(f"git {args[0] if args[0] != '-c' else args[2]} failed: "
                          f"{' '.join(error[-3:]) or f'exit status {done.returncode}'}")
    return done.stdout.decode() if stdout is None else ""


def _refs(git_dir: str) -> dict[str, str]:
    out = _git(["for-each-ref", "--format=%(objectname) %(refname)"], git_dir=git_dir)
    return {ref: sha for sha, ref in (line.split(" ", 1) for line in out.splitlines())}


def _json(data: str | bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise CorruptArchive(f"{what} in the archive is not valid JSON") from None


def _sqlite_url(path: str) -> str:
    return "sqlite:///" + os.path.abspath(path)


def _sqlite_file(url: str) -> str | None:
    """The file a SQLite URL names (None for other databases and in-memory SQLite)."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise BackupError("the database URL given is not a SQLAlchemy URL (e.g. "
                          "sqlite:////path/db.sqlite, postgresql+psycopg://…)") from None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return os.path.abspath(parsed.database)


def _relocated(url: str, final: str, building: str) -> str:
    """A SQLite URL inside the target folder, pointed into the folder being built."""
    file = _sqlite_file(url)
    if file is None or not _within(file, final):
        return url
    moved = os.path.join(building, os.path.relpath(file, final))
    return sa.engine.make_url(url).set(database=moved).render_as_string(hide_password=False)


def _within(file: str, folder: str) -> bool:
    return os.path.commonpath([file, folder]) == folder


def _shown(url: str) -> str:
    """A database URL fit for a message: without its password."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(an invalid URL)"


@contextmanager
def _db_errors(what: str) -> Iterator[None]:
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise BackupError(f"{what}: {reason[0] if reason else type(exc).__name__}") from None


@contextmanager
def _os_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise BackupError(f"{what}: {exc.strerror or exc}{where}") from None


def _remove_stale(folder: str, prefix: str, suffix: str) -> None:
    """Remove what killed backups or restores left beside a target (their lock is free)."""
    for name in os.listdir(folder):
        if not (name.startswith(prefix) and name.endswith(suffix)):
            continue
        full = os.path.join(folder, name)
        is_dir = os.path.isdir(full)
        try:
            fd = os.open(os.path.join(full, ".lock") if is_dir else full, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # still in use: BlockingIOError
            shutil.rmtree(full) if is_dir else os.unlink(full)
        except OSError:
            continue
        finally:
            os.close(fd)


def _lock_folder(folder: str) -> int:
    fd = os.open(os.path.join(folder, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")
