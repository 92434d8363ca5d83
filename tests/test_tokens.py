"""Token counts and costs of a diff: exact offline tiktoken, hf tokenizers, estimates, prices.

Expected token ids are the published ones (tiktoken's README and OpenAI's cookbook "How
to count tokens with tiktoken"); the shipped tables are checked against the sha256 that
tiktoken's own source expects for OpenAI's files.
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest

from promptrev.config import Settings
from promptrev.errors import InvalidRequest
from promptrev.evaluation.prices import load_price_table, price_table_from
from promptrev.evaluation.tokens import format_money, token_delta, version_token_delta
from promptrev.runner.base import ModelSpec
from promptrev.runner.execute import Runner
from promptrev.runner.tokenizers import DATA, SHIPPED, counter_for, encoding
from promptrev.runner.trust import Trust

from .conftest import hf_prompt

ROOT = Path(__file__).resolve().parent.parent

# Published ids: tiktoken README / OpenAI cookbook (cl100k_base and o200k_base examples).
PUBLISHED = {
    "cl100k_base": {
        "hello world": [15339, 1917],
        "tiktoken is great!": [83, 1609, 5963, 374, 2294, 0],
        "antidisestablishmentarianism": [519, 85342, 34500, 479, 8997, 2191],
        "China is great!": [23078, 374, 2294, 0],  # a cookbook reader's printed output
    },
    "o200k_base": {
        "hello world": [24912, 2375],
        "tiktoken is great!": [83, 8251, 2488, 382, 2212, 0],
        "antidisestablishmentarianism": [493, 129901, 376, 160388, 21203, 2367],
    },
}


def chat(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


def table(tmp_path: Path, text: str) -> str:
    path = tmp_path / "prices.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


# ---- exact OpenAI counts, offline -------------------------------------------------------
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_tables_are_byte_for_byte_the_files_tiktoken_expects(name):
    """tiktoken's own constructor names the file and its sha256; the shipped copy has it."""
    from tiktoken_ext import openai_public

    asked = []
    with mock.patch.object(openai_public, "load_tiktoken_bpe",
                           lambda url, expected_hash=None: asked.append((url, expected_hash))
                           or {}):
        openai_public.ENCODING_CONSTRUCTORS[name]()
    ((url, expected),) = asked
    assert url.endswith(f"/{name}.tiktoken") and len(expected) == 64
    data = gzip.decompress((Path(DATA) / f"{name}.tiktoken.gz").read_bytes())
    assert hashlib.sha256(data).hexdigest() == expected


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_token_ids_are_the_published_ones(name):
    enc = encoding(name)
    for text, ids in PUBLISHED[name].items():
        assert enc.encode(text) == ids, text
        assert enc.decode(ids) == text


@pytest.mark.parametrize(("model", "name"), [
    ("gpt-4o", "o200k_base"), ("gpt-4o-mini-2024-07-18", "o200k_base"),
    ("gpt-4.1", "o200k_base"), ("o3-mini", "o200k_base"), ("gpt-5", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base")])
def test_openai_models_use_their_encoding_exactly(model, name):
    counter = counter_for(model)
    assert counter.exact and counter.tokenizer == f"tiktoken {name}"
    counts = counter.count(chat(("user", "hello world")))
    # OpenAI's cookbook framing: 3 per message + role ('user': 1) + content, 3 to prime
    assert counts.messages == (3 + 1 + 2,) and counts.total == 3 + 1 + 2 + 3


def test_special_token_text_in_a_prompt_counts_as_text():
    counts = counter_for("gpt-4o").count(chat(("user", "<|endoftext|>")))
    assert counts.messages[0] > 3 + 1 + 1  # several ordinary tokens, and no error


OFFLINE = """
import os, socket, sys
def refuse(*args, **kwargs):
    raise OSError("network blocked by the test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
import tiktoken
if sys.argv[1] == "plain":  # the control: tiktoken alone must fetch, so it fails here
    try:
        tiktoken.get_encoding("o200k_base")
    except Exception as exc:
        print("FAILED", type(exc).__name__)
    sys.exit(0)
from promptrev.evaluation.tokens import token_delta
from promptrev.runner.tokenizers import encoding
result = token_delta([{"role": "user", "content": "hi"}],
                     [{"role": "user", "content": "hello world"}], "gpt-4o")
assert result["exact"], result
print("OK", encoding("o200k_base").encode("hello world"),
      encoding("cl100k_base").encode("hello world"), result["summary"])
"""


@pytest.mark.parametrize("mode", ["promptrev", "plain"])
def test_counting_never_touches_the_network(tmp_path, mode):
    """With sockets refused and an empty tiktoken cache, promptrev still counts exactly.

    The control (``plain``) proves the sandbox bites: tiktoken alone fails to fetch.
    """
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TIKTOKEN_CACHE_DIR": str(cache),
           "DATA_GYM_CACHE_DIR": str(cache), "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", OFFLINE, mode], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    if mode == "plain":
        assert done.stdout.startswith("FAILED"), done.stdout
    else:
        assert done.stdout.startswith("OK [24912, 2375] [15339, 1917]"), done.stdout
    assert list(cache.iterdir()) == []  # nothing fetched, nothing cached


# ---- hf models ----------------------------------------------------------------------------
def test_hf_counts_are_what_the_hf_backend_sends(tiny, registry):
    """The total equals the prompt tokens the hf backend reports when it runs the prompt."""
    registry.save("tiny", hf_prompt(tiny.model, body="system:\nBe brief.\n\nuser:\n"
                                    "Say something about {{ topic }}.\n", max_tokens=1))
    runner = Runner(registry, trust=Trust.local())
    result = runner.run("tiny", {"topic": "prompts"})
    counter = counter_for(ModelSpec("hf", str(tiny.model)))
    counts = counter.count(result.messages)
    assert counter.exact and counter.tokenizer == f"hf {tiny.model}"
    assert counts.total == result.generation.prompt_tokens
    assert len(counts.messages) == 2 and all(n > 0 for n in counts.messages)


def test_hf_counts_use_the_chat_template_without_loading_weights(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    messages = chat(("system", "Be brief."), ("user", "Hello there!"))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny.model))
    templated = tokenizer.apply_chat_template(messages, tokenize=False,
                                              add_generation_prompt=True)
    expected = len(tokenizer(templated, add_special_tokens=False).input_ids)
    without = tokenizer.apply_chat_template(messages, tokenize=False,
                                            add_generation_prompt=False)
    first = tokenizer.apply_chat_template(messages[:1], tokenize=False,
                                          add_generation_prompt=False)
    with mock.patch.object(AutoModelForCausalLM, "from_pretrained",
                           side_effect=AssertionError("weights loaded")):
        counts = counter_for(ModelSpec("hf", str(tiny.model))).count(messages)
    assert counts.total == expected
    # the overhead is the generation prompt; the first message carries BOS
    assert counts.overhead == expected - len(tokenizer(without,
                                                       add_special_tokens=False).input_ids)
    assert counts.overhead > 0
    assert counts.messages[0] == len(tokenizer(first, add_special_tokens=False).input_ids)
    assert counter_for(ModelSpec("hf", str(tiny.model))).count([]).total == 0


# ---- estimates ----------------------------------------------------------------------------
@pytest.mark.parametrize(("model", "why"), [
    ("llama3", "no tokenizer is known for model 'llama3'"),
    (ModelSpec("openai", "my-azure-deployment"), "my-azure-deployment"),
    (ModelSpec("hf", "/nowhere/model"), "model folder '/nowhere/model' not found"),
    ("text-davinci-003", "p50k_base tables")])
def test_a_model_without_its_tokenizer_gets_a_labelled_estimate(model, why):
    counter = counter_for(model)
    assert not counter.exact and counter.reason and why in counter.reason
    result = token_delta(chat(("user", "hi")), chat(("user", "hello world")), model)
    assert result["estimate"] is True and result["exact"] is False
    assert why in result["estimate_reason"]
    assert result["summary"].endswith(f"(estimate: {result['estimate_reason']})")


def test_exact_counts_are_not_labelled_estimates():
    result = token_delta(chat(("user", "hi")), chat(("user", "hello world")), "gpt-4o")
    assert result["exact"] is True and result["estimate"] is False
    assert result["estimate_reason"] is None and "estimate" not in result["summary"]


# ---- the line, the messages, the costs ----------------------------------------------------
def test_the_line_reads_as_the_issue_writes_it(tmp_path):
    """677 → 889 repetitions of 'hello': +212 tokens of 684, at $0.15 per 1M input tokens."""
    enc = encoding("o200k_base")
    assert len(enc.encode(" ".join(["hello"] * 677))) == 677
    prices = load_price_table(table(tmp_path, """
        version: test-1
        prices:
          gpt-4o-mini: {input_per_1m: 0.15, output_per_1m: 0.60}
        """))
    old = chat(("user", " ".join(["hello"] * 677)))
    new = chat(("user", " ".join(["hello"] * 889)))
    result = token_delta(old, new, "gpt-4o-mini", prices)
    assert result["total"]["old"] == 3 + 1 + 677 + 3  # cookbook framing
    assert result["summary"] == "+212 tokens (+31 %), +$0.032 per 1,000 calls"
    assert result["cost"]["prices"] == {"version": "test-1", "as_of": None,
                                        "source": str(tmp_path / "prices.yaml")}
    assert "input tokens only" in result["cost"]["basis"]
    back = token_delta(new, old, "gpt-4o-mini", prices)
    assert back["summary"] == "-212 tokens (-24 %), -$0.032 per 1,000 calls"


def test_costs_are_tokens_times_the_input_price(tmp_path):
    prices = load_price_table(table(tmp_path, """
        version: v9
        as_of: 2026-12-01
        prices:
          gpt-4o: {input_per_1k: 0.01, output_per_1k: 0.03, currency: EUR}
        """))
    result = token_delta(chat(("user", "hi")), chat(("user", "hello world, how are you?")),
                         "gpt-4o", prices)
    old, new = result["total"]["old"], result["total"]["new"]
    cost = result["cost"]
    assert cost["currency"] == "EUR" and cost["prices"]["as_of"] == "2026-12-01"
    assert cost["old"] == pytest.approx(old * 0.01)  # per 1,000 calls = tokens × per 1k
    assert cost["new"] == pytest.approx(new * 0.01)
    assert cost["delta"] == pytest.approx((new - old) * 0.01)
    with_output = token_delta(chat(("user", "hi")), chat(("user", "hi")), "gpt-4o", prices,
                              expected_output_tokens=100)
    assert with_output["cost"]["old"] == pytest.approx(with_output["total"]["old"] * 0.01
                                                       + 100 * 0.03)
    assert "100 expected output tokens" in with_output["summary"]


def test_added_removed_and_changed_messages_are_paired_as_a_diff_pairs_them():
    old = chat(("system", "You are terse."), ("user", "Question: {q}"),
               ("assistant", "An old example answer."))
    new = chat(("system", "You are terse and exact."), ("user", "An example."),
               ("assistant", "Its answer."), ("user", "Question: {q}"))
    result = token_delta(old, new, "gpt-4o")
    rows = [(r["role"], r["change"], r["old_index"], r["new_index"]) for r in result["messages"]]
    assert rows == [("system", "changed", 0, 0), ("user", "added", None, 1),
                    ("assistant", "added", None, 2), ("user", "same", 1, 3),
                    ("assistant", "removed", 2, None)]
    enc = encoding("o200k_base")

    def size(message):
        return 3 + len(enc.encode(message["role"])) + len(enc.encode(message["content"]))

    removed = result["messages"][-1]
    assert removed["old"] == size(old[2]) and removed["new"] is None
    assert removed["delta"] == -size(old[2])
    added = result["messages"][1]
    assert added["old"] is None and added["delta"] == added["new"] == size(new[1])
    assert sum(r["delta"] for r in result["messages"]) == result["total"]["delta"]
    assert result["total"]["new"] == sum(size(m) for m in new) + 3


def test_an_empty_side_counts_only_the_framing():
    result = token_delta([], chat(("user", "hello world")), "gpt-4o")
    assert result["total"] == {"old": 3, "new": 3 + 6, "delta": 6, "percent": 200.0}
    result = token_delta([], [], "gpt-4o")
    assert result["summary"] == "+0 tokens (+0 %), +$0.000 per 1,000 calls"


def test_a_model_without_a_price_says_so():
    result = token_delta(chat(("user", "a")), chat(("user", "b c")), "gpt-4-0613",
                         price_table_from({"version": "x", "prices": {}}, "test"))
    assert result["cost"]["delta"] is None
    assert "no price for model 'gpt-4-0613' in price table x" in result["summary"]


@pytest.mark.parametrize(("amount", "text"), [
    (0.032, "+$0.032"), (-0.0318, "-$0.032"), (0.0625, "+$0.063"), (0.00015, "+$0.00015"),
    (1234.5, "+$1,234.500"), (0.0, "+$0.000")])
def test_money_is_written_for_a_reader(amount, text):
    assert format_money(amount, "USD", sign=True) == text


# ---- price tables -------------------------------------------------------------------------
def test_the_default_table_is_versioned_and_prices_openai_models():
    prices = load_price_table()
    assert prices.source == "default" and prices.version and prices.as_of
    text = (ROOT / "promptrev/data/prices.yaml").read_text()
    assert "CHECK CURRENT PRICES" in text
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5", "o3", "gpt-4", "gpt-3.5-turbo"):
        assert prices.price(model) is not None, model
    assert prices.price("gpt-4o-2024-08-06")[0] == "gpt-4o"  # a dated snapshot
    assert prices.price("my-local-model") is None


def test_the_operator_table_replaces_the_default(tmp_path):
    path = table(tmp_path, """
        version: acme-7
        as_of: 2026-11-30
        prices:
          gpt-4o: {input_per_1m: 5.0, output_per_1m: 15.0}
          default: {input_per_1m: 1.0}
        """)
    settings = Settings.from_env({"PROMPTREV_PRICES": path})
    prices = load_price_table(settings.prices_file)
    assert prices.version == "acme-7" and prices.price("gpt-4o")[1].input_per_1k == 0.005
    assert prices.price("gpt-4o-mini")[0] == "default"  # not the shipped table's entry
    result = token_delta(chat(("user", "a")), chat(("user", "a b")), "gpt-4o", prices)
    assert result["cost"]["prices"]["version"] == "acme-7"
    assert Settings.from_env({}).prices_file is None


def test_an_unversioned_table_is_named_by_its_prices(tmp_path):
    first = load_price_table(table(tmp_path, "gpt-4o: {input_per_1m: 1}\n"))
    again = load_price_table(table(tmp_path, "gpt-4o: {input_per_1m: 1}\n"))
    other = load_price_table(table(tmp_path, "gpt-4o: {input_per_1m: 2}\n"))
    assert first.version.startswith("unversioned-") and first.version == again.version
    assert other.version != first.version


@pytest.mark.parametrize("text", ["gpt-4o: {input_per_1m: -1}\n", "prices: [1, 2]\n",
                                  "gpt-4o: {price: 1}\n", "{: [\n"])
def test_a_broken_operator_table_is_refused_with_a_message(tmp_path, text):
    with pytest.raises(InvalidRequest):
        load_price_table(table(tmp_path, text))


def test_a_missing_operator_table_is_named(tmp_path):
    with pytest.raises(InvalidRequest, match="PROMPTREV_PRICES: cannot read"):
        load_price_table(str(tmp_path / "absent.yaml"))


# ---- two versions in a registry -----------------------------------------------------------
OPENAI_PROMPT = """---
name: reply
model:
  api: chat
  configuration:
    type: openai
    name: {model}
inputs:
  question:
    type: string
sample:
  question: How do I reset my password?
---
system:
{system}

user:
{{{{ question }}}}
"""


def test_two_versions_are_rendered_with_their_samples_and_counted(registry):
    registry.save("reply", OPENAI_PROMPT.format(model="gpt-4o", system="Be brief."))
    registry.save("reply", OPENAI_PROMPT.format(
        model="gpt-4o", system="Be brief. Never invent account details."))
    result = version_token_delta(registry, "reply@1", "reply@2")
    assert result["refs"] == ["reply@1", "reply@2"]
    assert result["exact"] and result["tokenizer"] == "tiktoken o200k_base"
    assert "3 tokens per message" in result["framing"]
    enc = encoding("o200k_base")
    extra = len(enc.encode("Be brief. Never invent account details.")) - \
        len(enc.encode("Be brief."))
    assert [r["change"] for r in result["messages"]] == ["changed", "same"]
    assert result["total"]["delta"] == extra
    question = enc.encode("How do I reset my password?")
    assert result["messages"][1]["old"] == 3 + 1 + len(question)  # rendered from the sample
    assert result["cost"]["price_entry"]["new"] == "gpt-4o"


def test_a_model_change_counts_each_side_with_its_own_tokenizer(registry):
    registry.save("reply", OPENAI_PROMPT.format(model="gpt-4", system="Be brief."))
    registry.save("reply", OPENAI_PROMPT.format(model="gpt-4o", system="Be brief."))
    result = version_token_delta(registry, "reply@1", "reply@2")
    assert result["old_tokenizer"] == "tiktoken cl100k_base"
    assert result["tokenizer"] == "tiktoken o200k_base"
    assert result["old_model"] == "gpt-4" and result["model"] == "gpt-4o"
    assert result["cost"]["old"] > result["cost"]["new"]  # gpt-4 costs more per token


def test_a_deleted_version_has_no_messages(registry):
    registry.save("reply", OPENAI_PROMPT.format(model="gpt-4o", system="Be brief."))
    registry.delete("reply")
    result = version_token_delta(registry, "reply@1", "reply@2")
    assert [r["change"] for r in result["messages"]] == ["removed", "removed"]
    assert result["total"]["new"] == 3 and result["total"]["delta"] < 0
    both = version_token_delta(registry, "reply@2", "reply@2")
    assert both["unavailable"] == "both versions are deleted"


def test_a_server_counts_an_unconfigured_openai_model_but_reads_no_local_path(registry, tiny):
    """Server rules: a named OpenAI model is still counted exactly; an hf path is not read."""
    registry.save("reply", OPENAI_PROMPT.format(model="gpt-4o", system="Be brief."))
    registry.save("tiny", hf_prompt(tiny.model))
    registry.save("tiny", hf_prompt(tiny.model, body="user:\nTell me about {{ topic }}.\n"))
    server = Runner(registry, trust=Trust.server())
    assert version_token_delta(registry, "reply@1", "reply@1", runner=server)["exact"]
    hf = version_token_delta(registry, "tiny@1", "tiny@2", runner=server)
    assert hf["estimate"] and "not a configured model" in hf["estimate_reason"]
    local = version_token_delta(registry, "tiny@1", "tiny@2",
                                runner=Runner(registry, trust=Trust.local()))
    assert local["exact"] and local["tokenizer"] == f"hf {tiny.model}"
    assert local["framing"] == "the model's chat template"


def test_a_configured_model_is_priced_under_its_configured_name(registry, tiny):
    registry.save("tiny", hf_prompt(tiny.model))
    registry.save("tiny", hf_prompt(tiny.model, body="user:\nTell me about {{ topic }}.\n"))
    runner = Runner(registry, models={"tiny": ModelSpec("hf", str(tiny.model))})
    text = hf_prompt(tiny.model).replace(f"name: {tiny.model}", "name: tiny")
    registry.save("named", text)
    registry.save("named", text.replace("Say something", "Tell me"))
    prices = price_table_from({"version": "t", "tiny": {"input_per_1k": 1.0}}, "test")
    result = version_token_delta(registry, "named@1", "named@2", runner=runner, prices=prices)
    assert result["exact"] and result["model"] == "tiny"
    assert result["cost"]["delta"] == pytest.approx(result["total"]["delta"] * 1.0)


def test_a_version_that_does_not_render_gives_no_counts(registry):
    registry.save("reply", OPENAI_PROMPT.format(model="gpt-4o", system="Be brief."))
    result = version_token_delta(registry, "reply@1", "reply@1",
                                 variables={"question": "x" * 10})
    assert result["total"]["delta"] == 0
    registry.save("reply", OPENAI_PROMPT.format(model="gpt-4o", system="{{ 1 / 0 }}"))
    broken = version_token_delta(registry, "reply@1", "reply@2")
    assert "does not render" in broken["unavailable"]
    assert broken["summary"].startswith("token counts unavailable: the new version (reply@2)")
