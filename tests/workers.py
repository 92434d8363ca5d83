"""Writer processes for the concurrency and crash tests (run as ``python -m tests.workers``).

Each acknowledged write is printed as one JSON line *after* ``save`` returned, so the
parent knows exactly which writes the registry promised to keep.
"""

from __future__ import annotations

import json
import random
import sys

from promptrev import Registry
from promptrev.errors import Conflict

from .conftest import PROMPT


def text_for(token: str) -> str:
    return PROMPT.replace("You are friendly.", f"You are friendly. [{token}]")


def contend(path: str, writer: int, updates: int, names: list[str],
            index_url: str | None = None) -> None:
    """Read-modify-write with bases; report accepted writes and conflicts."""
    rng = random.Random(writer)
    reg = Registry.open(path, index_url=index_url)
    for i in range(updates):
        name = rng.choice(names)
        token = f"w{writer}-{i}"
        base = reg.resolve(name).number
        if i % 10 == 9:
            base = 1  # deliberately stale: must be refused
        try:
            version = reg.save(name, text_for(token), base=base, message=token,
                               author=f"writer{writer} <w{writer}@test>")
        except Conflict:
            print(json.dumps({"conflict": token, "stale": i % 10 == 9}), flush=True)
            continue
        print(json.dumps({"name": name, "version": version.number, "token": token,
                          "base": base}), flush=True)
    reg.close()


def forever(path: str, names: list[str]) -> None:
    """Write and move labels until killed."""
    reg = Registry.open(path)
    i = 0
    while True:
        name = names[i % len(names)]
        token = f"k{i}"
        if i % 5 == 4:
            version = reg.resolve(name).number
            reg.set_label(name, "production", version, message=token)
            print(json.dumps({"label": name, "version": version}), flush=True)
        else:
            with reg.transaction(message=token) as tx:
                tx.save(name, text_for(token))
                tx.save(f"{name}-twin", text_for(token))
            version = tx.result_for("prompt", name).number
            print(json.dumps({"name": name, "version": version, "token": token}), flush=True)
        i += 1


if __name__ == "__main__":
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "contend":
        contend(path, int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].split(","))
    elif mode == "contend-url":
        contend(path, int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].split(","), sys.argv[6])
    else:
        forever(path, sys.argv[3].split(","))
