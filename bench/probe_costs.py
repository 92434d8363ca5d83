"""Micro-measurements behind the findings in docs/performance.md ("where the time goes").

    python3 bench/probe_costs.py            # 10,000 prompts, hot prompt with 1,000 versions
    python3 bench/probe_costs.py --quick

Not a benchmark with goals: it times the pieces of a save, of a bulk-imported version and of
``history()`` in isolation (p50 of many calls), each next to a cheaper alternative that
does the same work, so a reader can see which part of the core costs what. The history
data is written straight through GitStore (fast) and then indexed by ``reg.sync()``.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BENCH_AUTHOR,
    base_parser,
    build_registry,
    percentile,
    print_header,
    prompt_name,
    prompt_path,
    prompt_text,
    scaled,
    workdir,
)


def p50(fn, n: int, warmup: int = 3) -> float:
    """Median seconds of ``n`` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return percentile(out, 50)


def show(label: str, seconds: float, unit: str = "us") -> None:
    scale = 1e6 if unit == "us" else 1e3
    print(f"  {label:<68} {seconds * scale:10.1f} {unit}", flush=True)


def try_show(label: str, measure, unit: str = "us") -> None:
    """``show(label, measure())``; if the core's internals changed shape, say so instead."""
    try:
        show(label, measure(), unit)
    except Exception as exc:  # probes use internals that may be refactored
        print(f"  {label:<68} n/a ({type(exc).__name__}: {exc})"[:160], flush=True)


def probe_parse(texts: list[str]) -> None:
    import jinja2.meta
    import yaml

    from promptrev.model import prompty

    loader = getattr(prompty, "_YAML_LOADER", yaml.SafeLoader)
    fms = [prompty.split_front_matter(t) for t in texts]
    it = iter(range(10**9))

    def each(fn):
        return lambda: fn(next(it) % len(texts))

    print("validation of one prompt on save (parse_prompt), p50:")
    show("parse_prompt(text)  [whole]", p50(each(lambda i: prompty.parse_prompt(texts[i])), 500))
    show(f"yaml.compose(front matter, {loader.__name__})",
         p50(each(lambda i: yaml.compose(fms[i][0], Loader=loader)), 500))
    show("  for comparison: yaml.compose with pure-Python SafeLoader",
         p50(each(lambda i: yaml.compose(fms[i][0], Loader=yaml.SafeLoader)), 300))
    nodes = [yaml.compose(fm, Loader=loader) for fm, _b, _l in fms[:50]]
    show("yaml.SafeLoader('').construct_document(node)  [pure Python]",
         p50(each(lambda i: yaml.SafeLoader("").construct_document(nodes[i % 50])), 500))
    show("  for comparison: yaml.load(front matter, CSafeLoader)  [whole load, C]",
         p50(each(lambda i: yaml.load(fms[i][0], Loader=yaml.CSafeLoader)), 500))
    env = prompty._ENV
    show("jinja2 env.parse(body)", p50(each(lambda i: env.parse(fms[i][1])), 500))
    show("jinja2 parse + meta.find_undeclared_variables",
         p50(each(lambda i: jinja2.meta.find_undeclared_variables(env.parse(fms[i][1]))), 500))
    show("jinja2 parse + env.from_string(ast)  [code generation + compile()]",
         p50(each(lambda i: env.from_string(env.parse(fms[i][1]))), 500))


def pruned_changes(repo, old_tree, new_tree) -> list[tuple[str, str | None, str | None]]:
    """Tree diff that skips subtrees whose ids are equal (what the index needs)."""
    import pygit2

    out: list[tuple[str, str | None, str | None]] = []
    tree_mode = pygit2.enums.FileMode.TREE

    def walk(a, b, prefix):
        if a is not None and b is not None and a.id == b.id:
            return
        names = {e.name for e in a or ()} | {e.name for e in b or ()}
        for name in sorted(names):
            ea = a[name] if a is not None and name in a else None
            eb = b[name] if b is not None and name in b else None
            if ea is not None and eb is not None and ea.id == eb.id:
                continue
            if (ea is not None and ea.filemode == tree_mode) or (
                    eb is not None and eb.filemode == tree_mode):
                walk(repo[ea.id] if ea is not None else None,
                     repo[eb.id] if eb is not None else None, prefix + name + "/")
            else:
                out.append((prefix + name, ea and str(ea.id), eb and str(eb.id)))

    walk(old_tree, new_tree, "")
    return out


def probe_write(reg, n: int, tmp: str) -> None:
    import sqlalchemy as sa
    from sqlalchemy import event

    from promptrev.storage.index import T_ARTIFACT, T_STATE

    store = reg.store
    print(f"\na single save on {n:,} prompts, p50:")
    statements: list[str] = []

    def count(conn, cursor, statement, params, context, executemany):
        statements.append(statement.split(None, 1)[0])

    event.listen(reg.engine, "before_cursor_execute", count)
    k = iter(range(10**9))
    show("reg.save(name, text)  [whole]",
         p50(lambda: (lambda i: reg.save(prompt_name(i), prompt_text(i, 20 + i % 3),
                                         author=BENCH_AUTHOR))((next(k) * 7919) % n), 60))
    statements.clear()
    reg.save(prompt_name(3), prompt_text(3, 77), author=BENCH_AUTHOR)
    event.remove(reg.engine, "before_cursor_execute", count)
    print(f"  SQL statements executed by one reg.save: {len(statements)} "
          f"({', '.join(f'{s} x{statements.count(s)}' for s in sorted(set(statements)))})")

    def trivial():
        with reg.engine.connect() as conn:
            conn.execute(sa.select(T_STATE.c.head)).scalar()

    show("one trivial SELECT through engine.connect() (pool + BEGIN + ROLLBACK)",
         p50(trivial, 300))
    head = store.head()
    commit = store.repo[head]
    try_show("GitStore.changes(head)  [the core's tree diff, as installed]",
             lambda: p50(lambda: store.changes(head), 100))
    show("  same result by this probe's walk of subtrees whose ids differ",
         p50(lambda: pruned_changes(store.repo, commit.parents[0].tree, commit.tree), 100))

    names = [prompt_name(i) for i in range(min(n, 1000))]
    try_show(f"artifact rows, one SELECT per name: reg.index.artifact() x {len(names)}",
             lambda: p50(lambda: [reg.index.artifact("prompt", nm) for nm in names], 5, 1),
             "ms")

    def one_query():
        with reg.engine.connect() as conn:
            return conn.execute(sa.select(T_ARTIFACT).where(
                T_ARTIFACT.c.kind == "prompt", T_ARTIFACT.c.name.in_(names))).all()

    show(f"  same rows with one IN query for {len(names)} names", p50(one_query, 5, 1), "ms")

    print("\nloose-object writes (every blob/tree/commit is a file), create_blob p50:")
    import pygit2
    for where in (tmp, "/dev/shm"):
        if not os.path.isdir(where):
            continue
        folder = tempfile.mkdtemp(dir=where)
        try:
            repo = pygit2.init_repository(folder, bare=True)
            j = iter(range(10**9))
            show(f"create_blob in {where}",
                 p50(lambda repo=repo, j=j: repo.create_blob(prompt_text(next(j), 9).encode()),
                     500))
        finally:
            import shutil
            shutil.rmtree(folder, ignore_errors=True)


def probe_history(reg, bare: str, n: int, commits: int, per_commit: int) -> None:
    from promptrev import registry as registry_mod
    from promptrev.storage import index as index_mod
    from promptrev.storage.gitstore import Signature

    store = reg.store
    hot = min(n - 1, n // 2 + 1)
    others = [i for i in range(n) if i != hot]
    pos = 0
    start = time.perf_counter()
    for c in range(commits):
        batch = [hot] + [others[(pos + j) % len(others)] for j in range(per_commit - 1)]
        pos += per_commit - 1
        head = store.head()
        changes = {prompt_path(i): store.write_blob(prompt_text(i, 1000 + c).encode())
                   for i in batch}
        sha = store.commit(head, changes, f"history {c}", Signature.parse(BENCH_AUTHOR))
        store.move_main(head, sha, "probe")
    built = time.perf_counter() - start
    start = time.perf_counter()
    reg.sync()
    print(f"\nhistory: {commits} commits x {per_commit} versions written via GitStore in "
          f"{built:.1f} s, indexed by reg.sync() in {time.perf_counter() - start:.1f} s")
    name = prompt_name(hot)
    art = reg.index.artifact("prompt", name)
    rows = reg.index.history(art.id)
    print(f"history() of a prompt with {len(rows)} versions, p50:")
    show("reg.history(name)  [whole]", p50(lambda: reg.history(name), 30), "ms")
    try_show("IndexReader.history(id)  [SQLAlchemy Core query + rows]",
             lambda: p50(lambda: reg.index.history(art.id), 30), "ms")
    try_show(f"registry._version(row) for the {len(rows)} rows  [Version objects]",
             lambda: p50(lambda: [registry_mod._version(r) for r in rows], 30), "ms")
    try_show(f"  11 named attribute reads per Row x {len(rows)}",
             lambda: p50(lambda: [(r.kind, r.name, r.number, r.sha, r.blob, r.deleted,
                                   r.author, r.email, r.message, r.time, r.seq)
                                  for r in rows], 30), "ms")
    try_show(f"  tuple(row) x {len(rows)}", lambda: p50(lambda: [tuple(r) for r in rows], 30),
             "ms")
    raw = sqlite3.connect(os.path.join(bare, "promptrev-index.sqlite"))
    sql = None
    try:
        import sqlalchemy as sa

        stmt = (sa.select(*index_mod._VERSION_COLUMNS).select_from(index_mod._VERSION_JOIN)
                .where(index_mod.T_VERSION.c.artifact_id == art.id)
                .order_by(index_mod.T_VERSION.c.number.desc()))
        sql = str(stmt.compile(dialect=reg.engine.dialect,
                               compile_kwargs={"literal_binds": True}))
    except Exception as exc:
        print(f"  (the history SQL could not be rebuilt from the core: {exc!r})"[:160])
    if sql is not None:
        with reg.engine.connect() as conn:
            show("the same SQL via exec_driver_sql (no type processing)",
                 p50(lambda: conn.exec_driver_sql(sql).fetchall(), 30), "ms")
        show("the same SQL in raw sqlite3 (default 2 MB page cache)",
             p50(lambda: raw.execute(sql).fetchall(), 30), "ms")
        pages = raw.execute("PRAGMA page_count").fetchone()[0]
        raw.execute("PRAGMA cache_size=-262144")
        show(f"  raw sqlite3, 256 MB page cache (index DB is {pages * 4096 / 1e6:.0f} MB)",
             p50(lambda: raw.execute(sql).fetchall(), 30), "ms")
    try_show("  raw sqlite3: version rows only (artifact_id index, no join)",
             lambda: p50(lambda: raw.execute(
                 f"SELECT number, commit_seq, blob FROM version WHERE artifact_id={art.id}"
             ).fetchall(), 30), "ms")
    raw.close()


def main(argv=None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--history-commits", type=int, default=None)
    parser.add_argument("--per-commit", type=int, default=100)
    args = parser.parse_args(argv)
    args.prompts = scaled(args.prompts, 10_000, args.quick)
    args.history_commits = scaled(args.history_commits, 1000, args.quick)
    print_header("promptrev cost probes", args)
    n = args.prompts
    with workdir(args, "promptrev-probe-") as tmp:
        probe_parse([prompt_text(i, 1) for i in range(1000)])
        bare = os.path.join(tmp, "registry")
        reg, _secs = build_registry(bare, n)
        probe_write(reg, n, tmp)
        probe_history(reg, bare, n, args.history_commits, min(args.per_commit, n))
        reg.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
