"""Tiny, randomly initialised models and PEFT adapters, built locally in seconds.

Helpers, not tests: no file here is downloaded. A byte-level BPE tokenizer is trained with
the ``tokenizers`` library on :data:`CORPUS`; a small ``LlamaForCausalLM`` with random
weights uses it; LoRA adapters are trained for a few optimizer steps so that their weights
are non-zero and differ by seed; a prompt-tuning adapter has random virtual tokens.
Everything is seeded, so the same call builds the same files.

Tests cache the folders per session through :func:`tiny_models` in a session-scoped
fixture; the benchmarks call :func:`build_model` with larger sizes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CORPUS = """\
The registry keeps every prompt as a versioned file in one Git repository.
A label such as production or staging points at one version of a prompt.
Rolling back a bad prompt moves the label to an older version in seconds.
Teams review prompt diffs the way they review code, line by line.
Summarize the article in at most fifty words, plainly and without jargon.
Answer the customer politely and never invent account details.
If the question is about billing, say so and suggest the right channel.
How do I reset my password? Open the settings page and choose reset.
The quick brown fox jumps over the lazy dog while the cat sleeps.
Adapters are small weight deltas trained on top of a frozen base model.
A soft prompt is a handful of learned vectors put in front of the input.
Evaluation runs every input of a dataset through the model and scores the answers.
system: You are a helpful assistant. user: Hello there! assistant: Hi, how can I help?
Numbers like 1, 2, 3, 42 and 2024 appear in dates, versions and counts.
"""

# Short texts the LoRA adapters are fitted on: different text per seed, so that different
# seeds give adapters that answer differently.
LORA_TEXTS = [
    "yes yes yes yes yes yes yes yes yes yes yes yes yes yes",
    "no no no no no no no no no no no no no no no no no no no",
    "the fox the fox the fox the fox the fox the fox the fox",
    "42 42 42 42 42 42 42 42 42 42 42 42 42 42 42 42 42 42 42",
]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]


@dataclass(frozen=True)
class TinyModels:
    """Folders of one tiny model and its adapters."""

    model: Path
    lora: tuple[Path, ...]  # LoRA adapters, one per seed, all different
    prompt_tuning: Path  # a prompt-tuning (soft prompt) adapter


def build_tokenizer(vocab_size: int = 400):
    """A byte-level BPE tokenizer trained on :data:`CORPUS`, as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    raw.train_from_iterator(CORPUS.splitlines() * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(path: str | os.PathLike, *, layers: int = 2, hidden: int = 64, heads: int = 4,
                seed: int = 0, chat_template: bool = True) -> Path:
    """Save a random ``LlamaForCausalLM`` and its tokenizer into ``path``; return it.

    ``initializer_range`` is larger than Llama's default so that logits are spread out and
    greedy decoding is not decided by rounding noise.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = build_tokenizer()
    if not chat_template:
        tokenizer.chat_template = None
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=1024, initializer_range=0.2, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_lora(model_dir: str | os.PathLike, path: str | os.PathLike, *, seed: int = 0,
               steps: int = 8, lr: float = 0.05) -> Path:
    """Fit a LoRA adapter (q_proj, v_proj, r=4) on a short text for a few steps; save it."""
    from peft import LoraConfig

    text = LORA_TEXTS[seed % len(LORA_TEXTS)]
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                        lora_dropout=0.0, task_type="CAUSAL_LM")
    return _fit_and_save(model_dir, path, config, text, seed=seed, steps=steps, lr=lr)


def build_prompt_tuning(model_dir: str | os.PathLike, path: str | os.PathLike, *,
                        seed: int = 0, steps: int = 4, lr: float = 0.05) -> Path:
    """Fit a prompt-tuning adapter (4 virtual tokens) for a few steps; save it."""
    from peft import PromptTuningConfig, PromptTuningInit

    text = LORA_TEXTS[(seed + 1) % len(LORA_TEXTS)]
    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4,
                                prompt_tuning_init=PromptTuningInit.RANDOM)
    return _fit_and_save(model_dir, path, config, text, seed=seed, steps=steps, lr=lr)


def _fit_and_save(model_dir, path, config, text: str, *, seed: int, steps: int,
                  lr: float) -> Path:
    """Train ``config``'s adapter on ``text`` (causal LM loss) and save it to ``path``."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, config)
    ids = tokenizer(text, return_tensors="pt").input_ids
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(path)
    return Path(path)


def build_all(root: str | os.PathLike, *, loras: int = 2) -> TinyModels:
    """Build the tiny model, ``loras`` LoRA adapters and a prompt-tuning adapter in ``root``."""
    root = Path(root)
    model = build_model(root / "model")
    lora = tuple(build_lora(model, root / f"lora{i}", seed=i) for i in range(loras))
    prompt = build_prompt_tuning(model, root / "prompt-tuning", seed=0)
    return TinyModels(model=model, lora=lora, prompt_tuning=prompt)


def tiny_models(tmp_path_factory) -> TinyModels:
    """Build the tiny models once in a pytest session's temp folder (for session fixtures)."""
    return build_all(tmp_path_factory.mktemp("tiny-models"))


def tiny_model_dir(tmp_path_factory) -> Path:
    """Only the tiny model's folder (see :func:`tiny_models`)."""
    return build_model(tmp_path_factory.mktemp("tiny-model") / "model")
