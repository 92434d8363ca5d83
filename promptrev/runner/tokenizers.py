"""Token counts of rendered messages with a model's own tokenizer, offline.

- OpenAI models: tiktoken, with the BPE tables promptrev ships (``promptrev/data/tiktoken``,
  gzip). tiktoken itself downloads them on first use, which fails on an offline machine.
  The model-to-encoding map and each encoding's pattern and special tokens stay
  tiktoken's own (its ``tiktoken_ext.openai_public`` constructors run with their table
  loader pointed at the shipped files), and every table is checked against the sha256
  tiktoken expects before use, so a count is exactly what OpenAI's tokenizer gives.
- ``hf`` models: the model folder's own tokenizer (no weights are loaded) with its chat
  template, which is exactly what the ``hf`` backend feeds the model (:func:`render_prompt`).
- Anything else: an estimate with o200k_base, labelled as one, with the reason.

Tables and tokenizers are loaded once per process and shared.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gzip
import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InvalidRequest, PromptrevError
from .base import ALIASES, ModelSpec

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                    "tiktoken")
SHIPPED = ("o200k_base", "cl100k_base")  # the tables in DATA; the others are not shipped
ESTIMATE_ENCODING = "o200k_base"  # what a model with no known tokenizer is counted with
# OpenAI's chat framing, as its cookbook counts it ("How to count tokens with tiktoken"):
# each message costs 3 tokens besides its role and content, a name 1 more, and every
# reply is primed with 3 (<|start|>assistant<|message|>).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
OPENAI_FRAMING = ("OpenAI's chat framing as its cookbook counts it: 3 tokens per message "
                  "besides role and content, 3 to prime the reply")
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Counts:
    """Tokens of one conversation: one count per message, plus what belongs to none.

    ``overhead`` is framing outside any message (a BOS token, the reply's priming), so
    ``total`` is what the model is sent.
    """

    messages: tuple[int, ...]
    overhead: int

    @property
    def total(self) -> int:
        """Every token of the prompt."""
        return sum(self.messages) + self.overhead


@dataclass(frozen=True)
class TokenCounter:
    """Counts a model's prompt tokens; ``exact`` False means only an estimate (``reason``)."""

    tokenizer: str  # e.g. "tiktoken o200k_base", "hf /models/tiny"
    exact: bool
    count: Callable[[list[dict[str, str]]], Counts]
    reason: str | None = None  # why only an estimate
    framing: str = OPENAI_FRAMING  # how messages are wrapped around their content

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict."""
        return {"tokenizer": self.tokenizer, "exact": self.exact, "estimate": not self.exact,
                "estimate_reason": self.reason, "framing": self.framing}


def counter_for(model: ModelSpec | str) -> TokenCounter:
    """The token counter of ``model`` (a spec, or an OpenAI model id); never downloads.

    An ``hf`` model's tokenizer is read from its local folder; an OpenAI model uses the
    shipped tables. A model whose tokenizer is not available gets an estimate that says why.
    """
    spec = model if isinstance(model, ModelSpec) else ModelSpec("openai", str(model))
    backend = ALIASES.get(spec.backend, spec.backend)
    if backend == "hf":
        return _hf_counter(spec)
    encoding = encoding_name(spec.name)
    if encoding is None:
        return estimate_counter(f"no tokenizer is known for model {spec.name!r}")
    if encoding not in SHIPPED and not _base_of_shipped(encoding):
        return estimate_counter(f"the {encoding} tables of model {spec.name!r} are not "
                                f"shipped (shipped: {', '.join(SHIPPED)})")
    return TokenCounter(f"tiktoken {encoding}", True,
                        functools.partial(_openai_counts, encoding))


def estimate_counter(reason: str) -> TokenCounter:
    """An estimate: o200k_base with OpenAI's framing, for a model with no known tokenizer."""
    return TokenCounter(f"tiktoken {ESTIMATE_ENCODING} (estimate)", False,
                        functools.partial(_openai_counts, ESTIMATE_ENCODING), reason)


def encoding_name(model: str) -> str | None:
    """tiktoken's encoding for an OpenAI model id (None for a model it does not know)."""
    import tiktoken.model

    try:
        return tiktoken.model.encoding_name_for_model(model)
    except KeyError:
        return None


def encoding(name: str):
    """The ``tiktoken.Encoding`` ``name`` from the shipped tables (loaded once per process)."""
    with _LOCK:
        return _encoding(name)


@functools.cache
def _encoding(name: str):
    import tiktoken
    from tiktoken_ext import openai_public

    constructor = openai_public.ENCODING_CONSTRUCTORS.get(name)
    if constructor is None:
        raise InvalidRequest(f"unknown tiktoken encoding {name!r}")
    with shipped_tables(openai_public):
        return tiktoken.Encoding(**constructor())


@contextlib.contextmanager
def shipped_tables(module):
    """Within it, ``module``'s tiktoken constructors read the shipped tables, not the web.

    tiktoken keeps each encoding's pattern and special tokens inside the constructor that
    downloads its table, so the constructor runs with its loader swapped for
    :func:`load_shipped_table` (callers hold ``_LOCK``: the swap is module state).
    """
    original = module.load_tiktoken_bpe
    module.load_tiktoken_bpe = load_shipped_table
    try:
        yield
    finally:
        module.load_tiktoken_bpe = original


def load_shipped_table(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """The ranks of the table tiktoken would fetch from ``url``, read from the shipped copy.

    The decompressed file must have ``expected_hash`` (tiktoken's sha256 of OpenAI's file):
    the shipped table is byte for byte the published one or it is not used.
    """
    filename = url.rsplit("/", 1)[-1]
    path = os.path.join(DATA, filename + ".gz")
    if not os.path.isfile(path):
        raise InvalidRequest(f"the tiktoken table {filename} is not shipped with promptrev "
                             f"(shipped: {', '.join(SHIPPED)})")
    with open(path, "rb") as fh:
        data = gzip.decompress(fh.read())
    if expected_hash and hashlib.sha256(data).hexdigest() != expected_hash:
        raise InvalidRequest(f"the shipped tiktoken table {filename} does not match "
                             f"tiktoken's sha256 {expected_hash}: reinstall promptrev")
    fields = data.split()  # "<base64 token> <rank>" per line, as tiktoken's own loader
    return dict(zip(map(base64.b64decode, fields[0::2]), map(int, fields[1::2]),
                    strict=True))


def _base_of_shipped(encoding: str) -> bool:
    """Encodings built on a shipped table (o200k_harmony on o200k_base)."""
    return encoding.startswith("o200k_")


def _openai_counts(encoding_name: str, messages: list[dict[str, str]]) -> Counts:
    enc = encoding(encoding_name)
    per_message = []
    for message in messages:
        tokens = TOKENS_PER_MESSAGE + len(enc.encode_ordinary(str(message.get("role", ""))))
        tokens += len(enc.encode_ordinary(str(message.get("content", ""))))
        if message.get("name"):
            tokens += TOKENS_PER_NAME + len(enc.encode_ordinary(str(message["name"])))
        per_message.append(tokens)
    return Counts(tuple(per_message), REPLY_PRIMING)


# ---- hf models --------------------------------------------------------------------------
def _hf_counter(spec: ModelSpec) -> TokenCounter:
    try:
        tokenizer = hf_tokenizer(spec.name, spec.revision)
    except PromptrevError as exc:
        return estimate_counter(exc.message)
    framing = ("the model's chat template" if getattr(tokenizer, "chat_template", None)
               else "'role: content' lines (the tokenizer has no chat template)")
    return TokenCounter(f"hf {spec.name}", True, functools.partial(_hf_counts, tokenizer),
                        framing=framing)


def hf_tokenizer(path: str, revision: str | None = None):
    """The tokenizer of a local transformers model folder (cached; no weights loaded)."""
    with _LOCK:
        return _hf_tokenizer(path, revision)


@functools.lru_cache(maxsize=16)
def _hf_tokenizer(path: str, revision: str | None):
    if not os.path.isdir(path):
        raise InvalidRequest(f"model folder {path!r} not found, so its tokenizer could "
                             "not be read")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise InvalidRequest("transformers is not installed (pip install "
                             "'promptrev[hf]'), so hf tokenizers cannot be read") from None
    try:
        return AutoTokenizer.from_pretrained(path, revision=revision, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"the tokenizer of model folder {path!r} could not be read: "
                             f"{str(exc)[:200]}") from None


def render_prompt(tokenizer, messages: list[dict[str, str]],
                  add_generation_prompt: bool = True) -> list[int]:
    """Token ids of ``messages`` with the tokenizer's chat template and generation prompt.

    A tokenizer without a template gets ``role: content`` lines and ``assistant:``.
    """
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
        return tokenizer(text, add_special_tokens=False).input_ids
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return tokenizer("\n".join([*lines, "assistant:"] if add_generation_prompt else lines),
                     add_special_tokens=True).input_ids


# Past this many messages, each message's count is its content alone (the rest of the
# exact total being overhead): templating every prefix of n messages costs n²/2 message
# renders, and a stored prompt of 6,000 messages held a server thread for minutes.
HF_PREFIX_MESSAGES = 64


class _TooManyMessages(Exception):
    """Too many messages to template every prefix."""


def _hf_counts(tokenizer, messages: list[dict[str, str]]) -> Counts:
    """Exact total (what the hf backend sends); each message is what it adds to the prompt.

    Message ``i`` counts the tokens that templating the first ``i + 1`` messages adds to
    templating the first ``i`` (the first message carries the template's preamble, such
    as BOS); the overhead is the generation prompt. The counts add up to the exact total.
    A template that refuses a shorter conversation gets each message's content counted
    alone instead, the rest of the exact total being overhead.
    """
    if not messages:
        return Counts((), 0)
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    total = len(render_prompt(tokenizer, messages))
    try:
        if len(messages) > HF_PREFIX_MESSAGES:  # templating every prefix is quadratic
            raise _TooManyMessages
        prefixes = [len(render_prompt(tokenizer, messages[:i], add_generation_prompt=False))
                    for i in range(1, len(messages) + 1)]
    except Exception:  # noqa: BLE001 - a chat template may raise anything on a short chat
        alone = tuple(len(tokenizer(m["content"], add_special_tokens=False).input_ids)
                      for m in messages)
        return Counts(alone, total - sum(alone))
    steps = [b - a for a, b in zip([0, *prefixes[:-1]], prefixes, strict=True)]
    return Counts(tuple(steps), total - prefixes[-1])
