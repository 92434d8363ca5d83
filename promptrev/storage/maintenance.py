"""Consistency checks and repairs of a registry (``promptrev fsck [--repair]``,
``promptrev reindex``), and the stand-in index used while the real one cannot be written.

Uses GitPython to run real ``git fsck``: object-level checking is where Git's own
behaviour matters, and this is not a hot path.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
from typing import Any

import git
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from promptrev.model.adapter_cards import CONFIG, WEIGHTS, check_sidecars, parse_card
from promptrev.model.artifacts import KINDS, placement_problem

from ..errors import Damaged, PromptrevError, ValidationFailed
from . import migrations
from .gitstore import REPAIR, GitStore
from .index import DERIVED, IndexDatabase, IndexReader, create_index_engine
from .indexer import catch_up
from .objects import ObjectStore
from .sql import DATABASE_ERRORS, MEMORY, create_engine, translated

log = logging.getLogger("promptrev.storage")
REINDEX = "promptrev reindex"


def check(store: GitStore, database: IndexDatabase, *, repair: bool = False,
          rewind: bool = False) -> dict[str, Any]:
    """Report on a registry: Git's objects and ``main``, lock files, Git's collector, the
    index's integrity and its rows against a rebuild from Git, artifact validity.

    Every problem says what repairs it. With ``repair``, what can be repaired here is
    (``main`` restored from its reflog or the index, stale locks removed, a damaged index
    rebuilt) and the registry checked again; ``repaired`` lists what was done.
    """
    repaired: list[str] = []
    if repair:
        repaired = _repair(store, database, rewind)
    problems: list[str] = []
    for lock in store.stale_locks():
        problems.append(f"stale lock file {lock} (left by a killed writer; '{REPAIR}' "
                        "removes it)")
    for ref in store.leftover_fast_import_refs():
        problems.append(f"{ref} was left by a bulk write that was killed before main named "
                        f"its commit; '{REPAIR}' removes it")
    problems += _git_problems(store)
    head, main_problem = _main(store, database)
    if main_problem:
        problems.append(main_problem)
    index_problem = _index_damage(database)
    if index_problem:
        problems.append(index_problem)
    rows: dict[str, int] = {}
    if main_problem is None and index_problem is None:
        try:
            rows = _compare_with_rebuild(store, database, problems)
        except PromptrevError as exc:
            problems.append(exc.message)
        try:
            problems += _invalid_artifacts(store, head)
        except Exception as exc:  # noqa: BLE001 - a checker reports, never crashes
            problems.append(f"the artifacts of {head[:12] if head else 'main'} cannot be "
                            f"read ({exc}); see git fsck's report")
    report: dict[str, Any] = {"ok": not problems, "problems": problems, "head": head,
                              "rows": rows}
    if repair:
        report["repaired"] = repaired
    return report


def _repair(store: GitStore, database: IndexDatabase, rewind: bool) -> list[str]:
    done = []
    for lock in store.stale_locks():
        if store.clear_stale_lock(os.path.join(store.path, lock)):
            done.append(f"removed stale lock {lock}")
    done += [f"removed {ref}" for ref in store.drop_leftover_fast_import_refs()]
    head, problem = _main(store, database)
    if problem is not None:
        candidates = [c for c in store.main_reflog() + [_indexed_head(database)] if c]
        newest = candidates[0] if candidates else None
        if newest is not None and not store.has_commit(newest) and not rewind:
            raise Damaged(
                f"refs/heads/main last pointed at {newest[:12]}, and that commit is missing "
                "from the repository: restoring main to an older commit would drop the "
                "versions made since. Copy the commits back from a clone (in the registry: "
                "'git fetch CLONE main', then 'promptrev fsck --repair') or restore a backup "
                "('promptrev restore'); or accept the loss with 'promptrev fsck --repair "
                "--rewind'", details={"missing": newest})
        indexed = _indexed_head(database)
        if newest is not None and indexed and newest != indexed and store.has_commit(newest) \
                and store.has_commit(indexed) and not store.is_ancestor(indexed, newest):
            raise Damaged(
                f"refs/heads/main is damaged, and its reflog ({newest[:12]}) and the index "
                f"({indexed[:12]}) disagree on where it was: restore the registry from a "
                "backup ('promptrev restore') or a clone rather than guess",
                details={"reflog": newest, "index": indexed})
        chosen = store.restore_main(candidates, "promptrev: fsck --repair")
        if chosen is None:
            raise Damaged(f"{problem.split(':')[0]}; no intact commit to restore it to was "
                          "found in its reflog or the index. Restore the registry from a "
                          "backup ('promptrev restore') or a clone")
        if chosen != newest:
            store.drop_broken_reflog_entries()
        done.append(f"restored refs/heads/main to {chosen[:12]}" + (
            f" (rewound from the lost {newest[:12]})" if chosen != newest and newest else ""))
    orphans = store.remove_orphan_temp_files()
    if orphans:
        done.append(f"removed {orphans} temporary object files left by killed writers")
    said = store.clear_gc_log()
    if said is not None:
        done.append("pruned old unreachable objects so that git gc runs again")
    if _index_damage(database) is None and database.broken is None:
        try:
            catch_up(store, database.engine)  # a lagging index records its missed events
            differs: list[str] = []
            _compare_with_rebuild(store, database, differs)
            if not differs:
                return done
        except PromptrevError as exc:
            log.warning("the index cannot be caught up (%s); rebuilding it", exc.message)
    lost = rebuild(store, database)
    done.append("rebuilt the index from Git" + (
        f" (lost the unreadable tables {', '.join(lost)})" if lost else ""))
    return done


def _main(store: GitStore, database: IndexDatabase) -> tuple[str | None, str | None]:
    """Where ``main`` points, and what is wrong with it (None when nothing is)."""
    try:
        head = store.head()
    except Damaged as exc:
        return None, exc.message
    if head is None:
        damage = store.missing_main_damage()
        indexed = _indexed_head(database)
        if damage is None and indexed:
            damage = (f"refs/heads/main is missing, but the index reflects commit "
                      f"{indexed[:12]}: the registry is damaged, not empty. Run '{REPAIR}' "
                      "to restore it")
        return None, damage
    if not store.has_commit(head):
        return head, (f"refs/heads/main points at {head[:12]}, which is missing or "
                      f"unreadable: run '{REPAIR}' to restore it from its reflog or the index")
    return head, None


def _indexed_head(database: IndexDatabase) -> str | None:
    try:
        return IndexReader(database.engine).head()
    except PromptrevError:
        return None


def _git_problems(store: GitStore) -> list[str]:
    problems = []
    said = _git_fsck(store)
    if said is not None:
        # A collection running alongside (``git gc --auto`` after a save works in the
        # background) packs and deletes loose objects that fsck had listed, which it then
        # reports missing. Only what is still wrong once no collection runs is damage.
        store.wait_for_collector()
        said = _git_fsck(store)
    if said is not None:
        problems.append(said)
    try:
        with open(os.path.join(store.path, "gc.log"), encoding="utf-8",
                  errors="replace") as fh:
            said = fh.read().strip()
        last = said.splitlines()[-1] if said else "gc.log"
        problems.append(f"git gc has stopped collecting ({last}); '{REPAIR}' prunes old "
                        "unreachable objects")
    except OSError:
        pass
    return problems


def _git_fsck(store: GitStore) -> str | None:
    """What ``git fsck`` finds wrong with the object store, once no collection runs."""
    busy = "" if store.wait_for_collector() else (
        " (a git gc was still running after two minutes, which may explain it)")
    try:
        git.Repo(store.path).git.fsck("--full", "--no-dangling", "--no-progress")
    except git.GitCommandError as exc:
        said = [str(part).strip().removeprefix("stderr:").removeprefix("stdout:").strip(" '\n")
                for part in (exc.stderr, exc.stdout) if part]
        text = "; ".join(p for p in said if p) or f"exit status {exc.status}"
        return (f"git fsck: {text}{busy} (restore lost objects from a clone or a backup "
                "with 'promptrev restore')")
    except OSError as exc:
        return f"git fsck could not run: {exc}"
    return None


def _index_damage(database: IndexDatabase) -> str | None:
    """What SQLite's integrity check finds wrong with the index file (None: nothing)."""
    if database.file is None:
        return None
    try:
        conn = sqlite3.connect(f"file:{database.file}?mode=ro", uri=True, timeout=60)
        try:
            found = [row[0] for row in conn.execute("PRAGMA integrity_check(20)")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        found = [str(exc)]
    if found == ["ok"]:
        return None
    return (f"the index database {database.file} is damaged ({'; '.join(found[:3])}): run "
            f"'{REINDEX}' to rebuild it from Git")


def _compare_with_rebuild(store: GitStore, database: IndexDatabase,
                          problems: list[str]) -> dict[str, int]:
    catch_up(store, database.engine)
    current = IndexReader(database.engine).dump()
    with tempfile.TemporaryDirectory() as tmp:
        fresh_engine = create_index_engine("sqlite:///" + os.path.join(tmp, "rebuild.sqlite"))
        try:
            catch_up(store, fresh_engine, rebuild=True)
            rebuilt = IndexReader(fresh_engine).dump()
        finally:
            fresh_engine.dispose()
    for table in rebuilt:
        if rebuilt[table] != current.get(table):
            problems.append(f"index table '{table}' differs from a rebuild from Git "
                            f"(run '{REINDEX}')")
    return {t: len(r) for t, r in current.items()}


# ---- the index: rebuilt beside, swapped in; a stand-in in memory ---------------------
def rebuild(store: GitStore, database: IndexDatabase) -> list[str]:
    """Rebuild the index from Git into a new file, then swap it in; return lost tables.

    Holds the writer lock throughout, so no save lands between the rebuild and the swap.
    The swap replaces only the rows derived from Git, in one transaction on the live file
    (the rebuilt file attached): other processes' connections see the old rows or the new
    ones, and the rows that are not derived from Git (reviews, webhooks, evaluations, the
    event log, accounts kept in the same file) are not touched. A file too damaged for
    that is replaced by the rebuilt one, into which the readable kept tables are copied
    first; a table the old file no longer lets us read is named in the result, and other
    processes reopen the file when they notice. On PostgreSQL the derived rows are
    replaced in one transaction.
    """
    with store.writer_lock(timeout=60):
        if database.file is None:
            with translated("rebuilding the index"):
                catch_up(store, database.engine, rebuild=True)
            return []
        fresh_file = database.file + ".rebuild"
        _remove_database(fresh_file)
        fresh = create_index_engine("sqlite:///" + fresh_file)
        try:
            catch_up(store, fresh, rebuild=True)
            with translated("writing the rebuilt index"), fresh.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            try:
                _swap_derived(fresh_file, database.file)
                lost: list[str] = []
            except sqlite3.DatabaseError as exc:
                log.warning("the old index %s cannot be rewritten (%s); replacing the file",
                            database.file, exc)
                lost = _copy_kept(database.file, fresh)
                fresh.dispose()
                database.dispose()
                _remove_database(database.file, keep_main=True)
                os.replace(fresh_file, database.file)
        finally:
            fresh.dispose()
        _remove_database(fresh_file)
        database.reopen(quiet=True)
        return lost


def _swap_derived(fresh_file: str, live_file: str) -> None:
    """Replace the live file's derived rows with the rebuilt file's, in one transaction."""
    tables = [model.__tablename__ for model in DERIVED] + ["index_state"]  # deletion order
    conn = sqlite3.connect(live_file, timeout=60, isolation_level=None)
    try:
        conn.execute("ATTACH DATABASE ? AS fresh", (fresh_file,))
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table in tables:
                conn.execute(f'DELETE FROM main."{table}"')
            for table in reversed(tables):
                columns = ", ".join(f'"{row[1]}"' for row in
                                    conn.execute(f'PRAGMA fresh.table_info("{table}")'))
                conn.execute(f'INSERT INTO main."{table}" ({columns}) '
                             f'SELECT {columns} FROM fresh."{table}"')
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        found = [row[0] for row in conn.execute("PRAGMA main.quick_check(5)")]
        if found != ["ok"]:  # damage outside the derived tables
            raise sqlite3.DatabaseError("; ".join(found))
    finally:
        conn.close()


def _copy_kept(old_file: str, fresh: Engine) -> list[str]:
    """Copy the rows of the tables not derived from Git (and the event log); return the
    tables that were unreadable."""
    meta = sa.MetaData()
    meta.reflect(fresh)
    kept = set(migrations.kept_tables("registry", list(meta.tables))) | (
        migrations.TRANSIENT_TABLES & set(meta.tables))  # the event log stays readable
    lost = []
    try:
        old = sqlite3.connect(f"file:{old_file}?mode=ro", uri=True, timeout=60)
    except sqlite3.Error:
        return sorted(kept)
    try:
        with fresh.begin() as conn:
            for table in meta.sorted_tables:
                if table.name not in kept:
                    continue
                try:
                    cursor = old.execute(f'SELECT * FROM "{table.name}"')
                    names = [d[0] for d in cursor.description]
                    rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
                except sqlite3.Error as exc:
                    log.warning("could not read table %s of the old index: %s", table.name,
                                exc)
                    lost.append(table.name)
                    continue
                columns = set(table.columns.keys())
                rows = [{k: v for k, v in row.items() if k in columns} for row in rows]
                if rows:
                    conn.execute(table.insert(), rows)
    finally:
        old.close()
    return lost


def _remove_database(file: str, *, keep_main: bool = False) -> None:
    for suffix in ("-wal", "-shm", "-journal") if keep_main else ("", "-wal", "-shm",
                                                                    "-journal"):
        try:
            os.unlink(file + suffix)
        except FileNotFoundError:
            pass


def standin_index(database: IndexDatabase) -> Engine:
    """An index in memory, copied from the real one where it can be read, else empty.

    The caller catches it up from Git; it answers reads while the real one cannot be
    written (a full disk) and is dropped once it can.
    """
    if database.file is not None:
        engine = create_engine(MEMORY, migrate=False)
        try:
            source = sqlite3.connect(f"file:{database.file}?mode=ro", uri=True, timeout=5)
            try:
                raw = engine.raw_connection()
                try:
                    source.backup(raw.driver_connection)
                finally:
                    raw.close()
            finally:
                source.close()
            with engine.connect() as conn:  # an empty file copies as an empty database
                if sa.inspect(conn).has_table("index_state"):
                    conn.exec_driver_sql("SELECT head FROM index_state").all()
                    return engine
            engine.dispose()
        except DATABASE_ERRORS as exc:  # unreadable (truncated, damaged): build from Git
            log.warning("could not copy the index (%s); rebuilding it in memory", exc)
            engine.dispose()
    return create_index_engine(MEMORY)


def _invalid_artifacts(store: GitStore, head: str | None) -> list[str]:
    if head is None:
        return []
    out = [f"{problem} ('{REPAIR}' moves it)" for problem in map(
        placement_problem, (entry.path for entry in store.files(head))) if problem]
    tree = store.repo[head].tree
    for kind in KINDS.values():
        if kind.folder not in tree:
            continue
        for path, blob in _walk(store, tree[kind.folder], kind.folder):
            name = kind.artifact_of(path)
            if name is None:
                continue
            try:
                text = store.blob(blob).decode("utf-8")
                kind.validate(text, path)
                if kind.sidecars:
                    _check_sidecars(store, head, path.rsplit("/", 1)[0], text)
            except UnicodeDecodeError:
                out.append(f"{path}: not UTF-8")
            except PromptrevError as exc:
                out.append(exc.message)
            except (KeyError, OSError) as exc:  # a tree or blob Git fsck also reports
                out.append(f"{path}: cannot be read ({exc})")
    return out


def _check_sidecars(store: GitStore, head: str, folder: str, card_text: str) -> None:
    """An adapter's config and weights must be the ones its card pins, and intact."""
    blobs = {}
    for name in (CONFIG, WEIGHTS):
        blob = store.blob_at(head, f"{folder}/{name}")
        if blob is None:
            raise PromptrevError(f"{folder}/{name} is missing")
        blobs[name] = store.blob(blob)
    pointer = check_sidecars(parse_card(card_text), blobs[CONFIG],
                             blobs[WEIGHTS].decode("utf-8", "replace"), folder)
    try:
        ObjectStore(os.path.join(store.path, "lfs", "objects")).verify(pointer)
    except ValidationFailed as exc:  # the pointer is wrong, not the (shared) object
        raise ValidationFailed(f"{folder}/{WEIGHTS}: {exc.message}") from None


def _walk(store: GitStore, entry, prefix: str):
    obj = store.repo[entry.id]
    if obj.type_str != "tree":
        yield prefix, str(entry.id)
        return
    for child in obj:
        yield from _walk(store, child, f"{prefix}/{child.name}")
