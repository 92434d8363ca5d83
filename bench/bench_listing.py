"""The artifact list page on a flat library of 10,000 prompts: a page at a time.

    python3 bench/bench_listing.py             # 10,000 prompts in one folder, 7 rounds
    python3 bench/bench_listing.py --quick     # 2,000 prompts, 3 rounds

Both sides run in this process on the same registry, alternating, through Flask's test
client with a logged-in session:
  target   GET /            (Registry.browse: names of the whole folder, 100 artifacts read
                             in full, one page of HTML)
  baseline the whole folder rendered as the page did before pagination: Registry.list of
           every artifact and index.html with all of them as rows
Printed: median time and HTML size of each, and baseline / target.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from flask import render_template  # noqa: E402

from promptrev import Registry  # noqa: E402
from promptrev.server import Settings, create_app, prepare  # noqa: E402

TEXT = "---\nname: p{i}\ndescription: prompt {i}\n---\nsystem:\nYou answer question {i}.\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dir", default=None, help="where to build the registry")
    args = parser.parse_args()
    count, rounds = (2000, 3) if args.quick else (10_000, 7)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = os.path.join(tmp, "reg")
        reg = Registry.init(path)
        with reg.transaction(message="library") as tx:
            for i in range(count):
                tx.save(f"p{i:05d}", TEXT.format(i=i))
        reg.close()
        settings = Settings(registry=path)
        prepare(settings, admin_password="bench-pw")
        app = create_app(settings)
        client = app.test_client()
        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        client.post("/login", data={"name": "admin", "password": "bench-pw",
                                    "csrf_token": token})

        def target() -> int:
            response = client.get("/")
            assert response.status_code == 200
            return len(response.get_data())

        opened = Registry.open(path)

        def baseline() -> int:
            with app.test_request_context("/"):
                rows = opened.list(None)
                html = render_template("index.html", user=None, rows=rows, folders=[],
                                       prefix="", query="", kind=None, crumbs=[],
                                       total=len(rows), listing=None)
            return len(html.encode())

        target(), baseline()  # warm both (caches, templates)
        times: dict[str, list[float]] = {"target": [], "baseline": []}
        sizes = {}
        for _ in range(rounds):
            for name, fn in (("baseline", baseline), ("target", target)):
                start = time.perf_counter()
                sizes[name] = fn()
                times[name].append(time.perf_counter() - start)
        base, new = statistics.median(times["baseline"]), statistics.median(times["target"])
        print(f"{count:,} prompts in one folder, median of {rounds} rounds")
        print(f"  baseline (every artifact on one page): {base * 1000:8.1f} ms  "
              f"{sizes['baseline'] / 1024:8.0f} KiB")
        print(f"  target   (GET /, 100 a page)         : {new * 1000:8.1f} ms  "
              f"{sizes['target'] / 1024:8.0f} KiB")
        print(f"  ratio baseline / target: {base / new:.1f}x faster, "
              f"{sizes['baseline'] / sizes['target']:.0f}x smaller")


if __name__ == "__main__":
    main()
