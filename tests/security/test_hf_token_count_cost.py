"""Token counts of a diff on a server with a configured ``hf`` model, by stored content.

Each rendered message's hf count templated every prefix of the conversation: n messages
cost n²/2 message renders and tokenizations. A stored prompt of a few thousand short
messages that names the configured model (all an editor needs) held a server thread for
a minute or more per reader of its diff; tens of thousands, for hours.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import make_server_env

MESSAGES = 2500


@pytest.fixture
def tokenizer_folder(tmp_path):
    """A local hf tokenizer with a chat template (no weights, no downloads)."""
    pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "x": 1, "y": 2, "user": 3, "system": 4, ":": 5, "<s>": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                                bos_token="<s>")
    fast.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n"
                          "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
    folder = tmp_path / "tiny-tokenizer"
    fast.save_pretrained(folder)
    return folder


def test_many_messages_are_counted_in_linear_time(tmp_path, tokenizer_folder) -> None:
    env = make_server_env(tmp_path, models={"tiny": {"backend": "hf",
                                                     "path": str(tokenizer_folder)}})
    try:
        text = ("---\nname: many\nmodel:\n  configuration:\n    name: tiny\n---\n"
                + "user:\nx\n\n" * MESSAGES)
        for base, body in enumerate((text, text.replace("user:\nx", "user:\ny", 1))):
            r = env.api("PUT", "/artifact?name=many", role="editor",
                        json={"text": body, "base": base})
            assert r.status_code in (200, 201), r.get_data(as_text=True)[:300]
        start = time.monotonic()
        r = env.api("GET", "/diff?a=many@1&b=many@2", role="viewer")
        elapsed = time.monotonic() - start
        assert r.status_code == 200, r.get_data(as_text=True)[:300]
        tokens = r.get_json()["tokens"]
        assert tokens["tokenizer"] == f"hf {tokenizer_folder}" and tokens["exact"]
        assert len(tokens["messages"]) == MESSAGES
        assert tokens["total"]["old"] == tokens["total"]["new"]  # x and y: one token each
        assert elapsed < 10, f"the diff took {elapsed:.0f} s"
    finally:
        env.app.extensions["promptrev"].close()
