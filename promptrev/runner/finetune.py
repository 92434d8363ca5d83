"""Fine-tuning: train a LoRA or a soft prompt on a dataset version, store it as an adapter.

Training uses transformers' ``Trainer`` with a PEFT model. Each case of the dataset
becomes one example: the prompt (the case's ``vars`` rendered through a prompt version
when one is given, else the vars as a user message) in the tokenizer's chat template,
followed by the case's ``expected`` answer; the loss is taken on the answer only. A
seeded split holds out validation cases. The adapter card records the lineage (dataset,
prompt and base model versions), the hyperparameters, the loss curve, the validation
loss and the training time, so the trade-off against prompt engineering can be costed.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from promptrev.model.datasets import parse_dataset

from ..errors import InvalidRequest, ValidationFailed

METHODS = ("lora", "prompt_tuning")


@dataclass
class FinetuneConfig:
    """Hyperparameters of a fine-tuning run (all recorded in the adapter card)."""

    method: str = "lora"
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] | None = None  # default: PEFT's choice for the architecture
    num_virtual_tokens: int = 8
    epochs: float = 3.0
    max_steps: int = -1
    learning_rate: float = 2e-4
    batch_size: int = 8
    validation_split: float = 0.2
    max_length: int = 512
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def finetune(registry, *, dataset: str, model_path: str, name: str,
             config: FinetuneConfig | None = None, prompt: str | None = None,
             author: str = "promptrev <promptrev@localhost>", message: str | None = None,
             progress: bool = True, env: dict | None = None,
             before_push: Callable[[], None] | None = None):
    """Train an adapter on ``dataset`` (a reference) and push it as a version of ``name``.

    ``before_push`` (a queue worker's lease check) may raise to keep the result unpushed.
    """
    config = config or FinetuneConfig()
    if config.method not in METHODS:
        raise InvalidRequest(f"unknown method {config.method!r} (methods: {', '.join(METHODS)})")
    data_version = registry.resolve(dataset, "dataset")
    cases = parse_dataset(registry.get(data_version.ref, "dataset").text,
                          f"datasets/{data_version.name}.jsonl")
    prompt_version = registry.resolve(prompt, "prompt") if prompt else None
    examples = [_example(registry, prompt_version, c) for c in cases]
    examples = [e for e in examples if e is not None]
    if len(examples) < 2:
        raise ValidationFailed(f"dataset {data_version.ref} has {len(examples)} case(s) with an "
                               "'expected' answer; fine-tuning needs at least 2")
    train, valid = _split(examples, config.validation_split, config.seed)
    with tempfile.TemporaryDirectory(prefix="promptrev-finetune-") as out:
        report = _train(model_path, train, valid, config, out, progress)
        if before_push:
            before_push()
        lineage = {"dataset": data_version.ref, "dataset_commit": data_version.commit,
                   "prompt": prompt_version.ref if prompt_version else None,
                   "base_model": model_path, "method": config.method}
        version = registry.push_adapter(
            name, out, author=author, lineage=lineage, training=report,
            metrics={"validation_loss": report["validation_loss"]},
            message=message or f"finetune {name} ({config.method}) on {data_version.ref}",
            description=f"{config.method} on {data_version.ref}")
    return version


def _example(registry, prompt_version, case) -> tuple[list[dict], str] | None:
    expected = case.expected
    if expected is None:
        return None
    target = expected if isinstance(expected, str) else json.dumps(expected)
    variables = case.vars or {}
    if prompt_version is not None:
        prompt = registry.prompt(prompt_version.ref)
        messages = [m.to_dict() for m in prompt.render({**prompt.defaults(), **variables})]
    else:
        text = "\n".join(f"{k}: {v}" for k, v in variables.items())
        messages = [{"role": "user", "content": text}]
    return messages, target


def _split(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = max(1, round(len(examples) * fraction)) if fraction > 0 else 0
    held = min(held, len(examples) - 1)
    valid = [examples[i] for i in order[:held]]
    train = [examples[i] for i in order[held:]]
    return train, valid


def _train(model_path: str, train: list, valid: list, config: FinetuneConfig, out: str,
           progress: bool) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from .hf import render_prompt

    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path)
    if config.method == "lora":
        peft_config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=config.rank,
                                 lora_alpha=config.alpha, lora_dropout=config.dropout,
                                 target_modules=config.target_modules)
    else:
        peft_config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM,
                                         num_virtual_tokens=config.num_virtual_tokens)
    model = get_peft_model(model, peft_config)
    encode = _encoder(tokenizer, render_prompt, config.max_length)
    train_rows, valid_rows = [encode(e) for e in train], [encode(e) for e in valid]
    args = TrainingArguments(
        output_dir=out + "/trainer", per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, num_train_epochs=config.epochs,
        max_steps=config.max_steps, learning_rate=config.learning_rate, logging_steps=1,
        logging_strategy="steps", eval_strategy="epoch" if valid_rows else "no",
        save_strategy="no", report_to=[], disable_tqdm=not progress, seed=config.seed,
        use_cpu=not torch.cuda.is_available(), remove_unused_columns=False,
        dataloader_pin_memory=False)
    trainer = Trainer(model=model, args=args, train_dataset=train_rows,
                      eval_dataset=valid_rows or None, data_collator=_collator(tokenizer))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    valid_loss = trainer.evaluate()["eval_loss"] if valid_rows else None
    model.save_pretrained(out)
    curve = [{"step": e["step"], "loss": round(float(e["loss"]), 6)}
             for e in trainer.state.log_history if "loss" in e]
    hyper = {k: v for k, v in asdict(config).items() if k != "extra"} | config.extra
    return {"hyperparameters": hyper, "loss_curve": curve,
            "validation_loss": None if valid_loss is None else round(float(valid_loss), 6),
            "train_cases": len(train_rows), "validation_cases": len(valid_rows),
            "train_tokens": sum(len(r["input_ids"]) for r in train_rows) * max(
                1, int(config.epochs)), "train_seconds": round(seconds, 3),
            "steps": trainer.state.global_step,
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


def _encoder(tokenizer, render_prompt, max_length: int):
    eos = tokenizer.eos_token or ""

    def encode(example):
        messages, target = example
        prompt_ids = render_prompt(tokenizer, messages)
        target_ids = tokenizer(target + eos, add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + target_ids)[-max_length:]
        labels = ([-100] * len(prompt_ids) + target_ids)[-max_length:]
        return {"input_ids": ids, "labels": labels}

    return encode


def _collator(tokenizer):
    import torch

    pad = tokenizer.pad_token_id

    def collate(rows):
        width = max(len(r["input_ids"]) for r in rows)
        ids = [r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in rows]
        labels = [r["labels"] + [-100] * (width - len(r["labels"])) for r in rows]
        mask = [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                "attention_mask": torch.tensor(mask)}

    return collate
