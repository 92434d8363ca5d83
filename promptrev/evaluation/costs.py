"""Money from measured tokens: per-call cost, cost per 1,000 requests, training, break-even.

The runner records each answer's tokens and latency (:class:`~promptrev.runner.base.Generation`);
this module only turns them into money with a price table from configuration::

    prices:
      gpt-4o-mini: {input_per_1m: 0.15, output_per_1m: 0.60}
      tiny:        {input_per_1k: 0.0005, output_per_1k: 0.0015, currency: EUR}
      default:     {input_per_1k: 0.0, output_per_1k: 0.0}    # any other model
      training:    {gpu_hour: 2.5, cpu_hour: 0.05}           # fine-tuning compute

A few-shot prompt pays for its examples on every call; an adapter pays for its training
once. :func:`break_even` says after how many requests the adapter variant is cheaper.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequest
from ..runner.base import Generation

_PRICE_KEYS = {"input_per_1k", "output_per_1k", "input_per_1m", "output_per_1m", "currency"}


@dataclass(frozen=True)
class Price:
    """What one model charges per 1,000 input (prompt) and output (completion) tokens."""

    input_per_1k: float
    output_per_1k: float
    currency: str = "USD"


def price_table(config: Mapping[str, Any] | None) -> dict[str, Price]:
    """Prices by model name from configuration (the mapping itself or its ``prices`` key).

    Each entry gives ``input_per_1k``/``output_per_1k`` or ``input_per_1m``/``output_per_1m``
    (a missing side costs 0) and an optional ``currency``; ``default`` prices any model not
    listed, and the ``training`` entry (compute rates, see :func:`training_cost`) is skipped.
    """
    table = _section(config, "prices")
    prices = {}
    for name, entry in table.items():
        if name == "training":
            continue
        if not isinstance(entry, Mapping) or not entry:
            raise InvalidRequest(f"price of {name!r}: expected a mapping such as "
                                 "{input_per_1k: 0.0005, output_per_1k: 0.0015}")
        unknown = set(entry) - _PRICE_KEYS
        if unknown or set(entry) <= {"currency"}:
            raise InvalidRequest(f"price of {name!r}: unknown or missing keys "
                                 f"({', '.join(sorted(unknown)) or 'no price given'}); "
                                 f"use {', '.join(sorted(_PRICE_KEYS))}")
        prices[str(name)] = Price(_per_1k(name, entry, "input"), _per_1k(name, entry, "output"),
                                  str(entry.get("currency", "USD")))
    return prices


def cost(generation: Generation | None, prices: Mapping[str, Price],
         model: str | None = None) -> float | None:
    """The price of one answer: tokens × the model's price (``model`` overrides the name).

    The model is looked up as ``model`` (e.g. the configured name of a local model whose
    generation only records its folder), else ``generation.model``, else ``default``.
    None when there is no generation or no price for it.
    """
    if generation is None:
        return None
    price = prices.get(model or generation.model) or prices.get("default")
    if price is None:
        return None
    return (generation.prompt_tokens * price.input_per_1k
            + generation.completion_tokens * price.output_per_1k) / 1000


def per_thousand(costs: list[float | None]) -> float | None:
    """Cost per 1,000 requests: the mean of the known per-call costs × 1000 (None if none)."""
    known = [c for c in costs if c is not None]
    if not known:
        return None
    return sum(known) / len(known) * 1000


def training_cost(card: Mapping[str, Any], rates: Mapping[str, Any]) -> float | None:
    """What training an adapter cost, from its card's ``training`` section.

    A ``training.cost`` recorded in the card (e.g. a hosted fine-tuning bill) is used as
    is. Otherwise ``train_seconds / 3600 × hourly rate`` for ``training.device``: the rate
    ``<device>_hour`` if given (e.g. ``cuda_hour``), else ``gpu_hour`` for cuda/mps/gpu
    devices and ``cpu_hour`` for cpu. ``rates`` is that mapping, or a configuration holding
    it under ``training`` (or ``prices.training``). None when seconds or rate are unknown.
    """
    training = card.get("training") if isinstance(card.get("training"), Mapping) else card
    recorded = training.get("cost")
    if _is_number(recorded):
        return float(recorded)
    seconds = training.get("train_seconds")
    rate = _hourly_rate(str(training.get("device") or "cpu"), _training_rates(rates))
    if not _is_number(seconds) or rate is None:
        return None
    return float(seconds) / 3600 * rate


def break_even(adapter_cost_per_1k: float | None, prompt_cost_per_1k: float | None,
               training_cost: float | None) -> int | None:
    """Requests after which the adapter variant is cheaper in total than a prompt-only one.

    Totals after ``n`` requests: ``training_cost + n × adapter/1000`` against
    ``n × prompt/1000``. Returns the smallest ``n`` where the adapter's total is no higher
    (``ceil(training × 1000 / (prompt - adapter))``; from there on it is cheaper); 0 when
    training was free; None when the adapter never catches up (its calls cost as much or
    more) or a number is unknown.
    """
    if None in (adapter_cost_per_1k, prompt_cost_per_1k, training_cost):
        return None
    saving = prompt_cost_per_1k - adapter_cost_per_1k
    if saving <= 0:
        return None
    requests = training_cost * 1000 / saving
    nearest = round(requests)
    if math.isclose(requests, nearest, rel_tol=1e-9, abs_tol=1e-9):
        return max(0, int(nearest))  # 4999.999999 is 5000: float noise, not a real request
    return max(0, math.ceil(requests))


def break_even_table(per_1k: Mapping[str, float | None],
                     training: Mapping[str, float | None]) -> dict[str, dict[str, int | None]]:
    """Break-even of each adapter variant against each prompt-only variant.

    ``per_1k``: cost per 1,000 requests by variant name; ``training``: training cost by the
    names of the variants that run on an adapter (the others are prompt-only).
    """
    prompt_only = [name for name in per_1k if name not in training]
    return {name: {other: break_even(per_1k.get(name), per_1k[other], training[name])
                   for other in prompt_only}
            for name in training}


def _section(config: Mapping[str, Any] | None, key: str) -> Mapping[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise InvalidRequest(f"{key}: expected a mapping, got {type(config).__name__}")
    inner = config.get(key)
    return inner if isinstance(inner, Mapping) else config


def _per_1k(name: str, entry: Mapping[str, Any], side: str) -> float:
    for key, factor in ((f"{side}_per_1k", 1.0), (f"{side}_per_1m", 1 / 1000)):
        if key in entry:
            value = entry[key]
            if not _is_number(value) or value < 0:
                raise InvalidRequest(f"price of {name!r}: {key} must be a number >= 0, "
                                     f"got {value!r}")
            return float(value) * factor
    return 0.0


def _training_rates(config: Mapping[str, Any]) -> Mapping[str, Any]:
    rates = _section(_section(config, "prices"), "training")
    for key, value in rates.items():
        if key.endswith("_hour") and (not _is_number(value) or value < 0):
            raise InvalidRequest(f"training rate {key}: must be a number >= 0, got {value!r}")
    return rates


def _hourly_rate(device: str, rates: Mapping[str, Any]) -> float | None:
    kind = device.split(":")[0].lower()
    general = "cpu_hour" if kind == "cpu" else "gpu_hour"
    for key in (f"{kind}_hour", general):
        if _is_number(rates.get(key)):
            return float(rates[key])
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
