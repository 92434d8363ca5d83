"""The ``hf`` backend: a local transformers causal LM, with PEFT adapters, on this machine.

Imported only when the backend is used (``promptrev.runner.base._LAZY``): torch,
transformers and peft are imported here and nowhere else in promptrev.

- The base model is loaded once per process and shared by every :class:`HFBackend` on the
  same (folder, revision, device, dtype): see :func:`load_model`.
- CUDA with bfloat16 (float16 where bf16 is unsupported) when a GPU is present, else CPU
  with float32; ``spec.options`` ``device`` / ``dtype`` override.
- Requests are templated with the tokenizer's chat template (a plain ``role: content``
  join when it has none), grouped by sampling parameters and run in left-padded batches
  of at most ``spec.options["batch_size"]`` (default 32). Each row keeps its own
  ``max_tokens`` and ``stop`` strings; greedy decoding when ``temperature == 0``.
- Adapters are cached by :attr:`AdapterSource.key` on the shared model (LRU, at most
  ``max_adapters``, default 16). A batch on one LoRA adapter activates it with
  ``set_adapter``; a batch mixing LoRA adapters (and rows without one, ``"__base__"``)
  runs in one pass with PEFT's ``adapter_names``.
- Prompt-tuning (soft prompt) adapters: PEFT's ``adapter_names`` only mixes LoRA-like
  adapters, and PEFT's own prompt-tuning ``generate`` ignores position ids, so a
  left-padded batch would shift the positions of the shorter rows and answer differently
  than one row alone. With transformers >= 5.24 (peft <= 0.21.2) it is wrong even for one
  row: it looks for the KV cache under the old ``past_key_values`` key (now ``cache``),
  so it puts the virtual tokens in front of every generated token again. This backend
  therefore neither uses it nor splits such batches into per-adapter passes: it puts
  each row's virtual tokens (the adapter's saved ``prompt_embeddings``) in front of that
  row's input embeddings, left-pads the rows and lets transformers derive positions from
  the attention mask. Every row sees exactly what PEFT's forward pass would show it
  alone, and a batch mixing base, LoRA and prompt-tuning rows still runs in one pass.
  P-tuning adapters are run the same way; other adapter types are refused.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftConfig, PeftModel
from peft.utils import load_peft_weights
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from promptrev.model.adapter_cards import AdapterSource

from ..errors import InvalidRequest
from .base import Generation, GenerationRequest, ModelSpec, backend, text_messages
from .tokenizers import render_prompt

DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_ADAPTERS = 16
BASE = "__base__"  # PEFT's adapter name for "no adapter" in a mixed batch
LORA_TYPES = {"LORA"}
SOFT_PROMPT_TYPES = {"PROMPT_TUNING", "P_TUNING"}


# ---- the shared base model --------------------------------------------------------------
@dataclass
class _Adapter:
    """One loaded adapter: a LoRA inside the shared PeftModel, or soft-prompt vectors."""

    key: str
    name: str  # its name inside PEFT
    kind: str  # "lora" or "soft"
    embeddings: Any = None  # soft prompts: (virtual tokens, hidden) tensor


class LoadedModel:
    """A base model and tokenizer shared by every backend on them, with their adapters.

    ``lock`` serialises generation and adapter changes: the active adapter is state of the
    shared model.
    """

    def __init__(self, path: str, tokenizer, model, device: str, dtype, max_adapters: int):
        self.path = path
        self.tokenizer = tokenizer
        self.model = model
        self.device = device
        self.dtype = dtype
        self.lock = threading.RLock()
        self.peft: PeftModel | None = None  # created with the first LoRA adapter
        self.adapters: OrderedDict[str, _Adapter] = OrderedDict()  # least recently used first
        self.max_adapters = max_adapters
        self.adapter_loads = 0
        self.eos_ids = _eos_ids(tokenizer, model)

    def adapter(self, source: AdapterSource, keep: set[str] = frozenset()) -> _Adapter:
        """The loaded adapter for ``source``; loads it on first use (caller holds ``lock``).

        ``keep``: keys that must not be evicted to make room (the current batch's).
        """
        found = self.adapters.get(source.key)
        if found is not None:
            self.adapters.move_to_end(source.key)
            return found
        self._make_room(keep | {source.key})
        loaded = self._load_adapter(source)
        self.adapters[source.key] = loaded
        self.adapter_loads += 1
        return loaded

    def _load_adapter(self, source: AdapterSource) -> _Adapter:
        """Read the adapter folder and attach it to the model."""
        if not os.path.isdir(source.path):
            raise InvalidRequest(f"adapter folder {source.path!r} not found",
                                 details={"adapter": source.ref or source.key})
        config = PeftConfig.from_pretrained(source.path)
        peft_type = str(getattr(config.peft_type, "value", config.peft_type))
        name = "a" + hashlib.sha1(source.key.encode()).hexdigest()[:16]
        if peft_type in LORA_TYPES:
            self._load_lora(source.path, name)
            return _Adapter(source.key, name, "lora")
        if peft_type in SOFT_PROMPT_TYPES:
            return _Adapter(source.key, name, "soft", self._soft_prompt(source))
        raise InvalidRequest(
            f"adapter {source.ref or source.key!r} is {peft_type}; the hf backend runs LoRA "
            f"and prompt-tuning adapters", details={"peft_type": peft_type})

    def _load_lora(self, path: str, name: str) -> None:
        """Inject a LoRA adapter into the shared model (wrapping it on first use)."""
        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.model, path, adapter_name=name,
                                                  is_trainable=False)
            self.peft.eval()
        else:
            self.peft.load_adapter(path, adapter_name=name, is_trainable=False)

    def _soft_prompt(self, source: AdapterSource):
        """The virtual-token embeddings of a prompt-tuning adapter, on the model's device."""
        weights = load_peft_weights(source.path, device="cpu")
        vectors = weights.get("prompt_embeddings")
        hidden = self.model.get_input_embeddings().weight.shape[1]
        if vectors is None or vectors.ndim != 2 or vectors.shape[1] != hidden:
            raise InvalidRequest(
                f"adapter {source.ref or source.key!r} does not fit this model "
                f"(hidden size {hidden})", details={"path": source.path})
        return vectors.to(self.device, self.dtype)

    def _make_room(self, keep: set[str]) -> None:
        """Unload least recently used adapters until one more fits."""
        for key in list(self.adapters):
            if len(self.adapters) < self.max_adapters:
                return
            if key not in keep:
                self._unload(self.adapters.pop(key))

    def _unload(self, adapter: _Adapter) -> None:
        if adapter.kind == "lora" and self.peft is not None:
            self.peft.delete_adapter(adapter.name)


_MODELS: dict[tuple, LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def choose_device_dtype(options: dict[str, Any]) -> tuple[str, Any]:
    """CUDA with bf16 (fp16 if bf16 is unsupported) when present, else CPU with float32.

    ``options["device"]`` and ``options["dtype"]`` (e.g. ``"float16"``) override.
    """
    device = options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    if options.get("dtype"):
        dtype = getattr(torch, str(options["dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise InvalidRequest(f"unknown dtype {options['dtype']!r} (e.g. float32, bfloat16)")
    elif str(device).startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    return str(device), dtype


def load_model(path: str, revision: str | None = None, device: str = "cpu",
               dtype=None, max_adapters: int = DEFAULT_MAX_ADAPTERS) -> LoadedModel:
    """The process-wide :class:`LoadedModel` for this folder, revision, device and dtype.

    Loaded on the first call, then shared (thread-safe).
    """
    dtype = dtype or torch.float32
    key = (os.path.realpath(path), revision, device, str(dtype))
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = _load(path, revision, device, dtype, max_adapters)
        return _MODELS[key]


def _load(path: str, revision, device: str, dtype, max_adapters: int) -> LoadedModel:
    if not os.path.isdir(path):
        raise InvalidRequest(f"model folder {path!r} not found (the hf backend runs a local "
                             f"transformers model folder)")
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=dtype)
    model.to(device).eval()
    return LoadedModel(path, tokenizer, model, device, dtype, max_adapters)


def _eos_ids(tokenizer, model) -> list[int]:
    """The tokenizer's EOS plus any end tokens of the model's generation config."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


# ---- prompts ----------------------------------------------------------------------------
def _check(request: GenerationRequest) -> None:
    if request.tools:
        raise InvalidRequest("the hf backend does not pass tools to a local model; run a "
                             "prompt with tools on an OpenAI-compatible model")
    text_messages(request.messages, "hf")  # refuses image, audio and file parts
    if request.max_tokens < 1:
        raise InvalidRequest(f"max_tokens must be at least 1 (got {request.max_tokens})")
    if request.temperature < 0 or not 0 < request.top_p <= 1:
        raise InvalidRequest("temperature must be >= 0 and top_p in (0, 1]")


def _sampling_key(request: GenerationRequest) -> tuple:
    """Requests with equal keys can share a batch (max_tokens and stop are per row)."""
    if request.temperature == 0:
        return ("greedy",)
    return ("sample", request.temperature, request.top_p, request.seed)


def _batches(requests: list[GenerationRequest], prompts: list[list[int]],
             size: int) -> list[list[int]]:
    """Indices of ``requests`` grouped by sampling key, sorted by length, in chunks."""
    groups: dict[tuple, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(_sampling_key(request), []).append(i)
    out = []
    for indices in groups.values():
        indices.sort(key=lambda i: -len(prompts[i]))
        out.extend(indices[k:k + size] for k in range(0, len(indices), size))
    return out


# ---- stopping ---------------------------------------------------------------------------
class _RowStops(StoppingCriteria):
    """Stops each row at its own ``max_tokens`` or when its text contains a stop string."""

    def __init__(self, tokenizer, offset: int, requests: list[GenerationRequest],
                 cancel: threading.Event | None = None):
        self.tokenizer = tokenizer
        self.offset = offset  # generated tokens start here in ``input_ids``
        self.limits = [r.max_tokens for r in requests]
        self.stops = [r.stop or [] for r in requests]
        self.done = [False] * len(requests)
        self.cancel = cancel  # set: stop every row (an abandoned stream)

    def __call__(self, input_ids, scores, **kwargs):
        generated = input_ids.shape[1] - self.offset
        cancelled = self.cancel is not None and self.cancel.is_set()
        for row in range(len(self.done)):
            if not self.done[row]:
                self.done[row] = cancelled or self._row_done(input_ids[row], generated, row)
        return torch.tensor(self.done, device=input_ids.device)

    def _row_done(self, ids, generated: int, row: int) -> bool:
        if generated >= self.limits[row]:
            return True
        if not self.stops[row]:
            return False
        text = self.tokenizer.decode(ids[self.offset:], skip_special_tokens=True)
        return _first_stop(text, self.stops[row]) is not None


def _first_stop(text: str, stops: list[str]) -> int | None:
    """Index where the earliest stop string starts in ``text``, or None."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def _finish_row(tokenizer, ids: list[int], request: GenerationRequest,
                eos_ids: list[int]) -> tuple[str, int, str]:
    """(text, completion tokens, finish reason) of one row's generated ids."""
    ids = ids[:request.max_tokens]
    reason, body = "length", ids
    end = next((k for k, t in enumerate(ids) if t in eos_ids), None)
    if end is not None:
        reason, ids, body = "stop", ids[:end + 1], ids[:end]
    text = tokenizer.decode(body, skip_special_tokens=True)
    cut = _first_stop(text, request.stop or [])
    if cut is None:
        return text, len(ids), reason
    return text[:cut], _tokens_until_stop(tokenizer, body, request.stop), "stop"


def _tokens_until_stop(tokenizer, ids: list[int], stops: list[str]) -> int:
    """How many of ``ids`` were generated up to the one that completed a stop string."""
    for k in range(1, len(ids) + 1):
        if _first_stop(tokenizer.decode(ids[:k], skip_special_tokens=True), stops) is not None:
            return k
    return len(ids)


# ---- the backend ------------------------------------------------------------------------
@backend("hf")
class HFBackend:
    """Runs a local transformers model folder (``spec.name``) with PEFT adapters."""

    name = "hf"

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        options = spec.options or {}
        device, dtype = choose_device_dtype(options)
        self.batch_size = int(options.get("batch_size", DEFAULT_BATCH_SIZE))
        self.loaded = load_model(spec.name, spec.revision, device, dtype,
                                 int(options.get("max_adapters", DEFAULT_MAX_ADAPTERS)))

    @property
    def model(self):
        """The shared base transformers model."""
        return self.loaded.model

    @property
    def tokenizer(self):
        """The shared tokenizer (left padding, pad token set)."""
        return self.loaded.tokenizer

    @property
    def adapter_loads(self) -> int:
        """How many times an adapter was read from disk into the shared model."""
        return self.loaded.adapter_loads

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """Token ids of the templated prompt of ``request``."""
        return render_prompt(self.tokenizer, text_messages(request.messages, "hf"))

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Answer every request, in order, batching those with equal sampling parameters."""
        for request in requests:
            _check(request)
        prompts = [self.prompt_ids(r) for r in requests]
        results: list[Generation | None] = [None] * len(requests)
        for batch in _batches(requests, prompts, self.batch_size):
            answers = self._generate_batch([requests[i] for i in batch],
                                           [prompts[i] for i in batch])
            for i, answer in zip(batch, answers, strict=True):
                results[i] = answer
        return results  # type: ignore[return-value]

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Yield the answer's text in pieces (generation runs in a thread).

        The generator's return value is the finished :class:`Generation`, with the same
        token counts :meth:`generate` reports (None when the consumer stopped early).
        """
        _check(request)
        prompt = self.prompt_ids(request)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True,
                                        skip_special_tokens=True)
        failure: list[BaseException] = []
        produced: list[list[int]] = []
        cancel = threading.Event()
        start = time.perf_counter()

        def work():
            try:
                produced.extend(self._run([request], [prompt], streamer=streamer,
                                          cancel=cancel))
            except BaseException as exc:  # re-raised in the caller's thread
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=work, name="promptrev-hf-stream", daemon=True)
        thread.start()
        try:
            yield from _until_stop(streamer, request.stop or [])
        finally:
            cancel.set()  # the consumer may stop early: end the generation too
            thread.join()
        if failure:
            raise failure[0]
        text, used, reason = _finish_row(self.tokenizer, produced[0], request,
                                         self.loaded.eos_ids)
        adapter = (request.adapter.ref or request.adapter.key) if request.adapter else None
        return Generation(text=text, prompt_tokens=len(prompt), completion_tokens=used,
                          finish_reason=reason, latency_s=time.perf_counter() - start,
                          model=self.spec.name, adapter=adapter)

    def _generate_batch(self, requests: list[GenerationRequest],
                        prompts: list[list[int]]) -> list[Generation]:
        """One batch: generate, then cut each row at EOS, max_tokens or a stop string."""
        start = time.perf_counter()
        generated = self._run(requests, prompts)
        latency = time.perf_counter() - start
        # One wall time for the whole batch: every row carries it, marked as shared.
        shared = uuid.uuid4().hex[:16] if len(requests) > 1 else None
        out = []
        for request, prompt, ids in zip(requests, prompts, generated, strict=True):
            text, used, reason = _finish_row(self.tokenizer, ids, request, self.loaded.eos_ids)
            adapter = (request.adapter.ref or request.adapter.key) if request.adapter else None
            out.append(Generation(text=text, prompt_tokens=len(prompt), completion_tokens=used,
                                  finish_reason=reason, latency_s=latency,
                                  model=self.spec.name, adapter=adapter,
                                  latency_batch=shared))
        return out

    def _run(self, requests: list[GenerationRequest], prompts: list[list[int]], *,
             streamer=None, cancel: threading.Event | None = None) -> list[list[int]]:
        """Generate for one batch under the model lock; return each row's new token ids."""
        loaded = self.loaded
        with loaded.lock:
            keep = {r.adapter.key for r in requests if r.adapter}
            adapters = [loaded.adapter(r.adapter, keep) if r.adapter else None
                        for r in requests]
            inputs, offset = _batch_inputs(loaded, prompts, adapters)
            stops = StoppingCriteriaList([_RowStops(loaded.tokenizer, offset, requests, cancel)])
            if requests[0].temperature > 0 and requests[0].seed is not None:
                torch.manual_seed(requests[0].seed)  # process-wide: seeds the whole batch
            with _adapters_active(loaded, adapters) as (model, extra), torch.inference_mode():
                output = model.generate(**inputs, **extra, stopping_criteria=stops,
                                        generation_config=_generation_config(loaded, requests),
                                        streamer=streamer)
        return [row[offset:].tolist() for row in output]


def _until_stop(pieces: Iterator[str], stops: list[str]) -> Iterator[str]:
    """Pass text pieces through, ending before the first stop string.

    The last ``len(longest stop) - 1`` characters are held back until it is clear they do
    not start a stop string.
    """
    hold = max((len(s) for s in stops), default=1) - 1
    buffer = ""
    for piece in pieces:
        buffer += piece
        cut = _first_stop(buffer, stops)
        if cut is not None:
            if cut:
                yield buffer[:cut]
            return
        if len(buffer) > hold:
            ready, buffer = buffer[:len(buffer) - hold], buffer[len(buffer) - hold:]
            yield ready
    if buffer:
        yield buffer


# ---- one batch's tensors and adapters ---------------------------------------------------
def _batch_inputs(loaded: LoadedModel, prompts: list[list[int]],
                  adapters: list[_Adapter | None]) -> tuple[dict[str, Any], int]:
    """Left-padded ``generate`` inputs and where the new tokens start in its output.

    With soft prompts, rows are passed as embeddings (virtual tokens first): the output
    then holds only new tokens.
    """
    if any(a is not None and a.kind == "soft" for a in adapters):
        return _embedding_inputs(loaded, prompts, adapters), 0
    width = max(len(p) for p in prompts)
    pad = loaded.tokenizer.pad_token_id
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    device = loaded.device
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}, width


def _embedding_inputs(loaded: LoadedModel, prompts: list[list[int]],
                      adapters: list[_Adapter | None]) -> dict[str, Any]:
    """``inputs_embeds`` with each row's virtual tokens in front, left-padded."""
    embed = loaded.model.get_input_embeddings()
    rows = []
    with torch.inference_mode():
        for prompt, adapter in zip(prompts, adapters, strict=True):
            vectors = embed(torch.tensor(prompt, device=loaded.device))
            if adapter is not None and adapter.kind == "soft":
                vectors = torch.cat([adapter.embeddings.to(vectors.dtype), vectors])
            rows.append(vectors)
    width = max(len(r) for r in rows)
    embeds = rows[0].new_zeros((len(rows), width, rows[0].shape[1]))
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=loaded.device)
    for row, vectors in enumerate(rows):
        embeds[row, width - len(vectors):] = vectors
        mask[row, width - len(vectors):] = 1
    return {"inputs_embeds": embeds, "attention_mask": mask}


@contextmanager
def _adapters_active(loaded: LoadedModel, adapters: list[_Adapter | None]):
    """Yield (model to call, extra generate kwargs) with the batch's LoRA adapters on.

    No LoRA row: LoRA layers disabled. One LoRA adapter on every row: ``set_adapter``.
    Otherwise PEFT's ``adapter_names``, one name per row (``__base__`` for the others).
    """
    peft = loaded.peft
    loras = [a.name if a is not None and a.kind == "lora" else BASE for a in adapters]
    if peft is None:
        yield loaded.model, {}
    elif set(loras) == {BASE}:
        with peft.disable_adapter():
            yield peft, {}
    elif len(set(loras)) == 1:
        peft.set_adapter(loras[0], inference_mode=True)
        yield peft, {}
    else:
        yield peft, {"adapter_names": loras}


def _generation_config(loaded: LoadedModel, requests: list[GenerationRequest]):
    """Sampling settings shared by the batch; the longest ``max_tokens`` bounds it.

    Settings left unset here come from the model's ``generation_config`` (e.g. a
    repetition penalty its authors chose); sampling uses temperature and top_p only.
    """
    first = requests[0]
    settings: dict[str, Any] = {"do_sample": False, "temperature": 1.0, "top_p": 1.0}
    if first.temperature > 0:
        settings = {"do_sample": True, "temperature": first.temperature, "top_p": first.top_p,
                    "top_k": 0}
    return GenerationConfig(max_new_tokens=max(r.max_tokens for r in requests),
                            pad_token_id=loaded.tokenizer.pad_token_id,
                            eos_token_id=loaded.eos_ids, **settings)
