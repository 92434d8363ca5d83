"""How ``registry.tar.gz`` beside this file was made: by release 0.1.0 (commit cd4197a).

Kept as the record of what the fixture holds, not run by the tests: it uses 0.1.0's own
modules, which later releases move. ``tests/test_migrations.py`` opens the tarball with
today's code and checks that every row written here survives the upgrade.

    python tests/data/release_0_1_0/make.py OUT_DIR   # at commit cd4197a
"""

import json
import os
import sys
import tarfile

from promptrev.accounts import Accounts, User
from promptrev.evaluation.online import Outcomes
from promptrev.evaluation.store import EvalStore
from promptrev.registry import Registry
from promptrev.reviews import Edit, Reviews
from promptrev.webhooks import Deliverer, Webhooks

GREET = """---
name: greet
description: Greets someone
inputs:
  who: {type: string, sample: Ann}
---
system:
Be kind.

user:
Hello {{who}}!
"""


def main(out: str) -> None:
    """Build the registry in ``out/registry`` and pack it as ``out/registry.tar.gz``."""
    path = os.path.join(out, "registry")
    reg = Registry.init(path)
    accounts = Accounts("sqlite:///" + os.path.join(path, "promptrev-accounts.sqlite"))
    admin = accounts.add_user("root", "admin", email="root@example.com", password="pw-root-1")
    alice = accounts.add_user("alice", "editor", email="alice@example.com", password="pw-al-12")
    accounts.add_user("vic", "viewer", email="vic@example.com", password="pw-vic-12")
    accounts.create_token("alice", "laptop")
    accounts.create_token("root", "ci")
    hooks = Webhooks(reg.engine)
    hooks.add("http://127.0.0.1:9/all", secret="s3cret")
    hooks.add("http://127.0.0.1:9/labels", events=["label.moved"], active=False)
    reg.save("greet", GREET, message="first greeting", author="Alice <alice@example.com>")
    reg.save("greet", GREET.replace("kind", "warm"), message="warmer")
    reg.set_label("greet", "production", 1)
    reg.save("cases", '{"id": "a", "vars": {"who": "Bo"}, "expected": "Hello Bo!"}\n',
             kind="dataset", message="cases")
    reviews = Reviews(reg)
    alice_user = User(alice.id, "alice", "alice@example.com", "editor")
    admin_user = User(admin.id, "root", "root@example.com", "admin")
    cr = reviews.open(alice_user, "Friendlier", [Edit("greet", GREET.replace("kind", "nice"))],
                      description="Make it nicer")
    reviews.comment(cr.number, admin_user, "Looks good")
    reviews.comment(cr.number, admin_user, "This line?", path="prompts/greet.prompty", line=7)
    reviews.approve(cr.number, admin_user)
    store = EvalStore(reg.engine)
    run = store.create(name="greet v1 vs v2", author="alice", dataset="cases@1", cases=1,
                       spec={"variants": {"A": "greet@1", "B": "greet@2"}})
    store.add_results([{"run_id": run, "variant": v, "case_id": "a", "case_index": 0,
                        "prompt": f"greet@{i}", "adapter": None, "backend": "openai",
                        "model": "gpt-4o-mini", "output": "Hello Bo!", "scores": {"exact": 1.0},
                        "details": {"exact": "match"}, "prompt_tokens": 5,
                        "completion_tokens": 3, "latency_s": 0.01, "cost": 0.0,
                        "error": None} for i, v in ((1, "A"), (2, "B"))])
    store.set_status(run, "done", report={"verdict": "no significant difference"})
    reg.set_split("greet", "production", {1: 50, 2: 50})
    outcomes = Outcomes(reg.engine)
    for i in range(4):
        outcomes.record(reg, "greet@production", f"user-{i}", i % 2 == 0, "converted")
    deliverer = Deliverer(reg.engine, timeout=2)  # port 9 refuses: attempts, retries
    deliverer.run_once()
    deliverer.close()
    reg.close()
    accounts.close()
    with tarfile.open(os.path.join(out, "registry.tar.gz"), "w:gz") as tar:
        tar.add(path, arcname="registry")
    print(json.dumps({"made": path}))


if __name__ == "__main__":
    main(sys.argv[1])
