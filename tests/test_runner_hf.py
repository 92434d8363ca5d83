"""The hf backend on a tiny random Llama (built locally, tests/tiny_models.py), on CPU.

References are computed with plain transformers/PEFT on separate model copies, so the
backend's batching, padding, adapter switching and stopping are checked against what the
libraries answer for one row alone.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import shutil  # noqa: E402
import threading  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from promptrev.errors import InvalidRequest  # noqa: E402
from promptrev.runner import (  # noqa: E402
    AdapterSource,
    GenerationRequest,
    ModelSpec,
    get_backend,
)
from tests import tiny_models  # noqa: E402

QUESTIONS = [
    "How do I reset my password?",
    "Hello there!",
    "Summarize the article in at most fifty words, plainly and without jargon.",
    "a",
    "Teams review prompt diffs the way they review code.",
    "What is 42?",
]


# ---- fixtures ---------------------------------------------------------------------------
CPU = {"device": "cpu"}  # the references run on CPU in float32, whatever the machine has


@pytest.fixture(scope="session")
def hf(tiny):
    return get_backend(ModelSpec("hf", str(tiny.model), options=CPU))


@pytest.fixture(scope="session")
def references(tiny):
    """Independent models (plain transformers / PEFT), one per adapter, for reference runs."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    def fresh():
        return AutoModelForCausalLM.from_pretrained(tiny.model, dtype=torch.float32).eval()

    models = {None: fresh(), "pt": PeftModel.from_pretrained(fresh(), tiny.prompt_tuning)}
    for i, path in enumerate(tiny.lora):
        models[f"lora{i}"] = PeftModel.from_pretrained(fresh(), path).eval()
    return models


def chat(question: str, system: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": question}]


def adapter(path, name: str, peft_type: str = "LORA") -> AdapterSource:
    """A fresh cache key per call site, so tests do not depend on each other's loads."""
    return AdapterSource(key=f"{name}-{uuid.uuid4().hex}", path=str(path), peft_type=peft_type,
                         ref=f"{name}@1")


def reference(hf, model, messages, max_tokens: int, *,
              use_cache: bool = True) -> tuple[str, int, str]:
    """(text, completion tokens, finish reason) from ``model.generate`` on one row.

    ``use_cache=False`` recomputes the whole sequence at every step. Prompt-tuning
    references need it: PEFT 0.21's ``prepare_inputs_for_generation`` looks for the KV
    cache under ``past_key_values``, a key transformers 5.24 renamed to ``cache``, so with
    a cache PEFT believes every step is the first and puts the virtual tokens in front of
    each new token again (the cache grows by 1 + virtual tokens per step). Without a cache
    PEFT prepends them once to the full sequence at every step, which is exactly the model.
    """
    tok = hf.tokenizer
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=max_tokens, do_sample=False, use_cache=use_cache,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    new = out[0, ids.shape[1]:].tolist()
    if tok.eos_token_id in new:
        end = new.index(tok.eos_token_id)
        return tok.decode(new[:end], skip_special_tokens=True), end + 1, "stop"
    return tok.decode(new, skip_special_tokens=True), len(new), "length"


def texts(generations) -> list[str]:
    return [g.text for g in generations]


def one_at_a_time(hf, requests) -> list[str]:
    return [hf.generate([r])[0].text for r in requests]


# ---- base model -------------------------------------------------------------------------
def test_single_generation_matches_transformers(hf, tiny, references):
    request = GenerationRequest(chat(QUESTIONS[0]), max_tokens=12)
    [answer] = hf.generate([request])
    assert (answer.text, answer.completion_tokens, answer.finish_reason) == reference(
        hf, references[None], request.messages, 12)
    assert answer.model == str(tiny.model) and answer.adapter is None
    assert answer.latency_s > 0 and answer.text


def test_alias_names_the_same_backend(tiny, hf):
    other = get_backend(ModelSpec("huggingface", str(tiny.model), options=CPU))
    assert type(other) is type(hf) and other.loaded is hf.loaded


def test_batched_equals_one_at_a_time_greedy(hf):
    requests = [GenerationRequest(chat(q), max_tokens=10) for q in QUESTIONS]
    assert texts(hf.generate(requests)) == one_at_a_time(hf, requests)


def test_token_counts_are_real(hf, references):
    for question in QUESTIONS[:3]:
        request = GenerationRequest(chat(question, system="Be brief."), max_tokens=16)
        [answer] = hf.generate([request])
        templated = hf.tokenizer.apply_chat_template(request.messages, tokenize=False,
                                                     add_generation_prompt=True)
        assert answer.prompt_tokens == len(hf.tokenizer(templated,
                                                        add_special_tokens=False).input_ids)
        _, completion, reason = reference(hf, references[None], request.messages, 16)
        assert (answer.completion_tokens, answer.finish_reason) == (completion, reason)


def test_max_tokens_gives_length(hf):
    answers = hf.generate([GenerationRequest(chat(q), max_tokens=3) for q in QUESTIONS[:3]])
    assert [(a.completion_tokens, a.finish_reason) for a in answers] == [(3, "length")] * 3


def test_rows_keep_their_own_max_tokens_in_a_batch(hf):
    requests = [GenerationRequest(chat(QUESTIONS[0]), max_tokens=n) for n in (2, 9, 5)]
    answers = hf.generate(requests)
    assert [a.completion_tokens for a in answers] == [2, 9, 5]
    assert texts(answers) == one_at_a_time(hf, requests)


def pick_stop(text: str) -> str:
    """Two ASCII characters from the middle of ``text``."""
    for k in range(3, len(text) - 1):
        if text[k:k + 2].isascii() and text[k:k + 2].isprintable():
            return text[k:k + 2]
    pytest.skip(f"no ASCII pair in {text!r}")


def test_stop_strings_cut_the_text(hf):
    request = GenerationRequest(chat(QUESTIONS[0]), max_tokens=24)
    [full] = hf.generate([request])
    stop = pick_stop(full.text)
    [cut] = hf.generate([GenerationRequest(chat(QUESTIONS[0]), max_tokens=24,
                                           stop=["\u2603never", stop])])
    assert cut.text == full.text[:full.text.find(stop)]
    assert cut.finish_reason == "stop"
    assert 0 < cut.completion_tokens < full.completion_tokens


def test_stop_strings_per_row_in_a_batch(hf):
    plain = [hf.generate([GenerationRequest(chat(q), max_tokens=20)])[0] for q in QUESTIONS[:3]]
    requests = [GenerationRequest(chat(q), max_tokens=20, stop=[pick_stop(p.text)])
                for q, p in zip(QUESTIONS[:3], plain, strict=True)]
    answers = hf.generate(requests)
    assert texts(answers) == one_at_a_time(hf, requests)
    assert all(a.finish_reason == "stop" for a in answers)


def test_chat_template_is_applied(hf):
    request = GenerationRequest(chat("Hi", system="Be brief."))
    shown = hf.tokenizer.decode(hf.prompt_ids(request))
    assert shown == "<s><|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n"


def test_without_chat_template_roles_are_joined(tmp_path):
    folder = tiny_models.build_model(tmp_path / "plain", chat_template=False)
    plain = get_backend(ModelSpec("hf", str(folder)))
    request = GenerationRequest(chat("Hi", system="Be brief."), max_tokens=4)
    shown = plain.tokenizer.decode(plain.prompt_ids(request))
    assert shown == "system: Be brief.\nuser: Hi\nassistant:"
    [answer] = plain.generate([request])
    assert answer.prompt_tokens == len(plain.prompt_ids(request))


def test_sampling_is_seeded_and_grouped_apart_from_greedy(hf):
    greedy = GenerationRequest(chat(QUESTIONS[0]), max_tokens=8)
    hot = GenerationRequest(chat(QUESTIONS[0]), max_tokens=8, temperature=1.5, seed=7)
    first = hf.generate([hot, greedy, hot])
    again = hf.generate([hot, greedy, hot])
    assert texts(first) == texts(again)
    assert first[1].text == hf.generate([greedy])[0].text


# ---- adapters ---------------------------------------------------------------------------
def test_lora_changes_logits_and_text(hf, tiny, references):
    lora0, lora1 = adapter(tiny.lora[0], "lora0"), adapter(tiny.lora[1], "lora1")
    question = chat(QUESTIONS[0])
    base, one, two = hf.generate([GenerationRequest(question, max_tokens=12, adapter=a)
                                  for a in (None, lora0, lora1)])
    assert len({base.text, one.text, two.text}) == 3
    assert one.adapter == "lora0@1"
    assert (one.text, one.completion_tokens) == reference(
        hf, references["lora0"], question, 12)[:2]
    ids = torch.tensor([hf.prompt_ids(GenerationRequest(question))])
    peft_model = hf.loaded.peft
    with torch.inference_mode():
        with peft_model.disable_adapter():
            plain = peft_model(input_ids=ids).logits
        adapted = peft_model(input_ids=ids, adapter_names=[hf.loaded.adapters[lora0.key].name]
                             ).logits
    assert not torch.allclose(plain, adapted, atol=1e-4)


def test_switching_loaded_adapters_does_not_reload(hf, tiny):
    lora0, lora1 = adapter(tiny.lora[0], "lora0"), adapter(tiny.lora[1], "lora1")
    before = hf.adapter_loads
    runs = [hf.generate([GenerationRequest(chat(QUESTIONS[1]), max_tokens=6, adapter=a)])[0]
            for a in (lora0, lora1, lora0, lora1, None, lora0)]
    assert hf.adapter_loads - before == 2
    assert runs[0].text == runs[2].text == runs[5].text and runs[1].text == runs[3].text
    assert runs[0].text != runs[1].text


def test_mixed_lora_batch_equals_each_row_alone(hf, tiny):
    lora0, lora1 = adapter(tiny.lora[0], "lora0"), adapter(tiny.lora[1], "lora1")
    requests = [GenerationRequest(chat(q), max_tokens=10, adapter=a)
                for q, a in zip(QUESTIONS, [None, lora0, lora1, lora0], strict=False)]
    assert texts(hf.generate(requests)) == one_at_a_time(hf, requests)
    same_question = [GenerationRequest(chat(QUESTIONS[0]), max_tokens=10, adapter=a)
                     for a in (None, lora0, lora1, lora0)]
    mixed = texts(hf.generate(same_question))
    assert mixed == one_at_a_time(hf, same_question)
    assert mixed[1] == mixed[3] and len({mixed[0], mixed[1], mixed[2]}) == 3


@pytest.mark.filterwarnings("ignore:Position ids are not supported")  # PEFT, reference run
def test_prompt_tuning_alone_matches_peft(hf, tiny, references):
    soft = adapter(tiny.prompt_tuning, "soft", "PROMPT_TUNING")
    question = chat(QUESTIONS[0])
    [answer] = hf.generate([GenerationRequest(question, max_tokens=12, adapter=soft)])
    assert (answer.text, answer.completion_tokens) == reference(
        hf, references["pt"], question, 12, use_cache=False)[:2]
    assert answer.text != hf.generate([GenerationRequest(question, max_tokens=12)])[0].text


def test_prompt_tuning_inside_a_mixed_batch(hf, tiny):
    soft = adapter(tiny.prompt_tuning, "soft", "PROMPT_TUNING")
    lora0 = adapter(tiny.lora[0], "lora0")
    requests = [GenerationRequest(chat(q), max_tokens=10, adapter=a)
                for q, a in zip(QUESTIONS, [None, soft, lora0, soft, None, lora0], strict=True)]
    assert texts(hf.generate(requests)) == one_at_a_time(hf, requests)


def test_adapters_beyond_max_adapters_are_evicted(tmp_path, tiny):
    shutil.copytree(tiny.model, tmp_path / "model")
    small = get_backend(ModelSpec("hf", str(tmp_path / "model"), options={"max_adapters": 1}))
    lora0, lora1 = adapter(tiny.lora[0], "lora0"), adapter(tiny.lora[1], "lora1")
    request = lambda a: GenerationRequest(chat(QUESTIONS[0]), max_tokens=6, adapter=a)  # noqa: E731
    first = small.generate([request(lora0)])[0].text
    small.generate([request(lora1)])
    assert list(small.loaded.adapters) == [lora1.key]
    assert small.generate([request(lora0)])[0].text == first
    assert small.adapter_loads == 3


def test_unusable_adapters_and_requests_are_refused(hf, tmp_path):
    with pytest.raises(InvalidRequest, match="not found"):
        hf.generate([GenerationRequest(chat("x"), adapter=adapter(tmp_path / "nope", "nope"))])
    with pytest.raises(InvalidRequest, match="max_tokens"):
        hf.generate([GenerationRequest(chat("x"), max_tokens=0)])
    with pytest.raises(InvalidRequest, match="model folder"):
        get_backend(ModelSpec("hf", str(tmp_path / "no-model")))


# ---- streaming and sharing --------------------------------------------------------------
def test_stream_concatenates_to_generate(hf, tiny):
    soft = adapter(tiny.prompt_tuning, "soft", "PROMPT_TUNING")
    lora1 = adapter(tiny.lora[1], "lora1")
    for a in (None, lora1, soft):
        request = GenerationRequest(chat(QUESTIONS[2]), max_tokens=24, adapter=a)
        pieces = list(hf.stream(request))
        assert pieces and "".join(pieces) == hf.generate([request])[0].text


def test_stream_stops_at_stop_string(hf):
    [full] = hf.generate([GenerationRequest(chat(QUESTIONS[0]), max_tokens=24)])
    request = GenerationRequest(chat(QUESTIONS[0]), max_tokens=24, stop=[pick_stop(full.text)])
    assert "".join(hf.stream(request)) == hf.generate([request])[0].text


def test_stream_raises_errors_of_the_generation_thread(hf, tmp_path):
    request = GenerationRequest(chat("x"), adapter=adapter(tmp_path / "nope", "nope"))
    with pytest.raises(InvalidRequest, match="not found"):
        list(hf.stream(request))


def test_abandoned_stream_releases_the_model(hf):
    stream = hf.stream(GenerationRequest(chat(QUESTIONS[2]), max_tokens=200))
    next(stream)
    stream.close()
    assert hf.loaded.lock.acquire(timeout=10)
    hf.loaded.lock.release()


def test_concurrent_callers_get_what_they_get_alone(hf, tiny):
    lora0, lora1 = adapter(tiny.lora[0], "lora0"), adapter(tiny.lora[1], "lora1")
    soft = adapter(tiny.prompt_tuning, "soft", "PROMPT_TUNING")
    requests = [GenerationRequest(chat(QUESTIONS[i % 3]), max_tokens=8, adapter=a)
                for i, a in enumerate([lora0, lora1, None, soft, lora0, lora1])]
    expected = one_at_a_time(hf, requests)
    got: dict[int, str] = {}

    def call(i):
        if i % 2:
            got[i] = "".join(hf.stream(requests[i]))
        else:
            got[i] = hf.generate([requests[i]])[0].text

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [got[i] for i in range(len(requests))] == expected


def test_base_model_is_loaded_once_per_process(tmp_path, tiny, monkeypatch):
    from promptrev.runner import hf as hf_module

    shutil.copytree(tiny.model, tmp_path / "model")
    loads = []
    real = hf_module.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(hf_module.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: loads.append(a) or real(*a, **k))
    spec = ModelSpec("hf", str(tmp_path / "model"))
    backends = []
    threads = [threading.Thread(target=lambda: backends.append(get_backend(spec)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1 and len(backends) == 4
    assert all(b.model is backends[0].model for b in backends)


@pytest.mark.gpu
def test_generation_on_cuda(tiny):
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    gpu = get_backend(ModelSpec("hf", str(tiny.model)))
    assert gpu.loaded.device == "cuda" and gpu.loaded.dtype in (torch.bfloat16, torch.float16)
    lora0 = adapter(tiny.lora[0], "lora0")
    soft = adapter(tiny.prompt_tuning, "soft", "PROMPT_TUNING")
    requests = [GenerationRequest(chat(q), max_tokens=8, adapter=a)
                for q, a in zip(QUESTIONS, [None, lora0, soft], strict=False)]
    answers = gpu.generate(requests)
    assert [a.completion_tokens <= 8 for a in answers] == [True] * 3
    assert next(gpu.model.parameters()).is_cuda
