"""What a change costs in tokens and money: per rendered message, in total, per 1,000 calls.

A diff of two prompt versions shows, for each rendered message and in total, the token
count of each side with the prompt's own model tokenizer
(:mod:`promptrev.runner.tokenizers`: exact for OpenAI and ``hf`` models, an estimate
labelled as one otherwise), and the input cost per 1,000 calls from a versioned price
table (:mod:`promptrev.evaluation.prices`)::

    +212 tokens (+31 %), +$0.032 per 1,000 calls

Output tokens are unknown before a run, so costs count the prompt (input) tokens only,
unless an expected output length is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from promptrev.model.diffing import opcodes, rendered_diff
from promptrev.model.prompty import Prompt, parse_prompt

from ..errors import PromptrevError
from ..runner.base import ALIASES, ModelSpec
from ..runner.execute import model_configuration
from ..runner.tokenizers import Counts, TokenCounter, counter_for, estimate_counter
from .costs import Price
from .prices import PriceTable, load_price_table

CALLS = 1000  # costs are per this many calls
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}


@dataclass(frozen=True)
class PricedModel:
    """A model as a diff counts it: its price-table name and its token counter."""

    name: str  # looked up in the price table (a configured name, or the model id)
    counter: TokenCounter

    @classmethod
    def of(cls, model: ModelSpec | str | PricedModel) -> PricedModel:
        """``model`` itself, or a spec / OpenAI model id priced under its own name."""
        if isinstance(model, PricedModel):
            return model
        name = model.name if isinstance(model, ModelSpec) else str(model)
        return cls(name, counter_for(model))


def token_delta(old_messages: list[dict[str, str]], new_messages: list[dict[str, str]],
                model: ModelSpec | str | PricedModel, prices: PriceTable | None = None, *,
                old_model: ModelSpec | str | PricedModel | None = None,
                expected_output_tokens: int | None = None) -> dict[str, Any]:
    """Tokens and cost per 1,000 calls of two renderings of a prompt, and the change.

    ``model`` counts and prices the new side, ``old_model`` the old one (default: the
    same). ``prices`` defaults to the shipped table. Messages are paired as a diff pairs
    them (an inserted message is ``added``, a dropped one ``removed``).
    """
    new = PricedModel.of(model)
    old = new if old_model is None else PricedModel.of(old_model)
    table = prices if prices is not None else load_price_table()
    old_counts, new_counts = old.counter.count(old_messages), new.counter.count(new_messages)
    rows = [_row(old_messages, new_messages, old_counts, new_counts, i, j)
            for i, j in _pairs(old_messages, new_messages)]
    total = _change(old_counts.total, new_counts.total)
    total["percent"] = _percent(old_counts.total, new_counts.total)
    cost = _cost(old, new, old_counts.total, new_counts.total, table, expected_output_tokens)
    exact = old.counter.exact and new.counter.exact
    reasons = dict.fromkeys(c.reason for c in (old.counter, new.counter) if c.reason)
    out = {"model": new.name, "old_model": old.name, "tokenizer": new.counter.tokenizer,
           "old_tokenizer": old.counter.tokenizer, "framing": new.counter.framing,
           "exact": exact, "estimate": not exact,
           "estimate_reason": "; ".join(reasons) or None, "messages": rows,
           "overhead": _change(old_counts.overhead, new_counts.overhead), "total": total,
           "cost": cost}
    out["summary"] = summary_line(out)
    return out


def version_token_delta(registry, ref_a: str, ref_b: str, *, runner=None,
                        prices: PriceTable | None = None,
                        variables: dict[str, Any] | None = None,
                        expected_output_tokens: int | None = None) -> dict[str, Any]:
    """:func:`token_delta` of two prompt versions, rendered as their diff renders them.

    Both sides get the same values (their samples, then ``variables``); a deleted version
    has no messages. Each side is counted with its own model, resolved by ``runner`` as a
    run would resolve it (:func:`prompt_model`). A side that does not render gives no
    counts: the result then says why in ``unavailable`` and ``summary``.
    """
    a, b = registry.resolve(ref_a, "prompt"), registry.resolve(ref_b, "prompt")
    old = None if a.deleted else registry.prompt(a.ref)
    new = None if b.deleted else registry.prompt(b.ref)
    return prompts_token_delta(old, new, a.ref, b.ref, runner=runner, prices=prices,
                               variables=variables,
                               expected_output_tokens=expected_output_tokens)


def text_token_delta(old_text: str | None, new_text: str | None, old_ref: str, new_ref: str,
                     *, runner=None, prices: PriceTable | None = None,
                     variables: dict[str, Any] | None = None,
                     includes: Callable[[str], Prompt] | None = None) -> dict[str, Any]:
    """:func:`version_token_delta` of two prompt texts (a change request's file before and
    after); None or an empty text is a side that does not exist. ``includes`` resolves
    their ``{% include %}`` parts (a change request's: as its head has them); without it a
    text with parts does not render."""
    sides = []
    for text, ref in ((old_text, old_ref), (new_text, new_ref)):
        if not text:
            sides.append(None)
            continue
        try:
            side = parse_prompt(text, ref)
            side.includes = includes
            sides.append(side)
        except PromptrevError as exc:
            reason = f"{ref} does not parse: {exc.message}"
            return {"refs": [old_ref, new_ref], "unavailable": reason,
                    "summary": f"token counts unavailable: {reason}"}
    return prompts_token_delta(sides[0], sides[1], old_ref, new_ref, runner=runner,
                               prices=prices, variables=variables)


def prompts_token_delta(old: Prompt | None, new: Prompt | None, old_ref: str, new_ref: str,
                        *, runner=None, prices: PriceTable | None = None,
                        variables: dict[str, Any] | None = None,
                        expected_output_tokens: int | None = None) -> dict[str, Any]:
    """:func:`token_delta` of two prompts (None: a side that does not exist), rendered as
    their diff renders them."""
    rendered = rendered_diff(old, new, variables, old_ref, new_ref)
    errors = [f"{side} ({ref}) does not render: {error}" for side, ref, error in (
        ("the old version", old_ref, rendered.left_error),
        ("the new version", new_ref, rendered.right_error)) if error]
    if old is None and new is None:
        errors.append("both versions are deleted")
    if errors:
        reason = "; ".join(errors)
        return {"refs": [old_ref, new_ref], "unavailable": reason,
                "summary": f"token counts unavailable: {reason}"}
    new_model = prompt_model(runner, new or old)
    old_model = prompt_model(runner, old) if old is not None else new_model
    out = token_delta(rendered.left, rendered.right, new_model, prices, old_model=old_model,
                      expected_output_tokens=expected_output_tokens)
    return {"refs": [old_ref, new_ref], "variables": rendered.variables, **out}


def prompt_model(runner, prompt: Prompt) -> PricedModel:
    """The model a prompt runs on, as a token counter and price-table name.

    ``runner.model_spec`` decides (a server's configured models, or the prompt's own on a
    user's machine). Where it refuses, an OpenAI model id the prompt names literally is
    still counted with its tokenizer (naming a tokenizer reads no secret and reaches no
    host); anything else gets an estimate that says why.
    """
    if runner is None:
        return _unresolved(prompt, "no runner was given to resolve it")
    try:
        spec = runner.model_spec(prompt)
    except PromptrevError as exc:
        return _unresolved(prompt, exc.message)
    configured = next((name for name, known in runner.models.items() if known == spec), None)
    return PricedModel(configured or spec.name, counter_for(spec))


def _unresolved(prompt: Prompt, why: str) -> PricedModel:
    conf, _ = model_configuration(prompt)  # Prompty v1 configuration or v2 id/provider
    name = next((conf[k] for k in ("name", "model", "azure_deployment") if conf.get(k)), None)
    kind = str(conf.get("type") or "openai").lower()
    if isinstance(name, str) and "${" not in name and ALIASES.get(kind, kind) == "openai":
        return PricedModel(name, counter_for(name))
    return PricedModel(name if isinstance(name, str) and "${" not in name else "default",
                       estimate_counter(f"the prompt's model is not available here: {why}"))


# ---- counting ---------------------------------------------------------------------------
def _pairs(old: list[dict[str, str]], new: list[dict[str, str]]
           ) -> list[tuple[int | None, int | None]]:
    """Old and new message indices paired as a diff pairs them (None: no counterpart).

    Equal messages pair first; between them, messages of the same role pair in order
    (a changed message), the others are removed or added.
    """
    key = [(m["role"], m["content"]) for m in old], [(m["role"], m["content"]) for m in new]
    pairs: list[tuple[int | None, int | None]] = []
    for op, i1, i2, j1, j2 in _opcodes(*key):
        if op == "equal":
            pairs += [(i1 + k, j1 + k) for k in range(i2 - i1)]
            continue
        roles = [r for r, _ in key[0][i1:i2]], [r for r, _ in key[1][j1:j2]]
        for rop, a1, a2, b1, b2 in _opcodes(*roles):
            if rop == "equal":
                pairs += [(i1 + a1 + k, j1 + b1 + k) for k in range(a2 - a1)]
                continue
            pairs += [(i1 + k, None) for k in range(a1, a2)]
            pairs += [(None, j1 + k) for k in range(b1, b2)]
    return pairs


def _opcodes(a: list, b: list) -> list[tuple[str, int, int, int, int]]:
    return opcodes(a, b)  # bounded: difflib alone is quadratic on repeated messages


def _row(old: list[dict[str, str]], new: list[dict[str, str]], old_counts: Counts,
         new_counts: Counts, i: int | None, j: int | None) -> dict[str, Any]:
    before = None if i is None else old_counts.messages[i]
    after = None if j is None else new_counts.messages[j]
    change = ("added" if i is None else "removed" if j is None
              else "same" if old[i]["content"] == new[j]["content"] else "changed")
    role = (new[j] if j is not None else old[i])["role"]
    return {"role": role, "change": change, "old_index": i, "new_index": j,
            **_change(before, after)}


def _change(before: int | None, after: int | None) -> dict[str, int | None]:
    return {"old": before, "new": after, "delta": (after or 0) - (before or 0)}


def _percent(before: int, after: int) -> float | None:
    return None if before == 0 else (after - before) / before * 100


# ---- money ------------------------------------------------------------------------------
def _cost(old: PricedModel, new: PricedModel, old_tokens: int, new_tokens: int,
          table: PriceTable, output_tokens: int | None) -> dict[str, Any]:
    """Cost of each side per 1,000 calls (input tokens, plus output when expected)."""
    found = {"old": table.price(old.name), "new": table.price(new.name)}
    basis = ("input tokens only (output tokens are unknown before a run)"
             if output_tokens is None else
             f"input tokens plus {output_tokens} expected output tokens per call")
    out: dict[str, Any] = {"calls": CALLS, "basis": basis, "prices": table.to_dict(),
                           "currency": None, "old": None, "new": None, "delta": None,
                           "price_entry": {side: f and f[0] for side, f in found.items()}}
    missing = [name for name, f in ((old.name, found["old"]), (new.name, found["new"]))
               if f is None]
    if missing:
        out["unavailable"] = (f"no price for model {missing[0]!r} in price table "
                              f"{table.version}")
        return out
    (_, old_price), (_, new_price) = found["old"], found["new"]
    if old_price.currency != new_price.currency:
        out["unavailable"] = (f"the two models are priced in different currencies "
                              f"({old_price.currency}, {new_price.currency})")
        return out
    out["currency"] = new_price.currency
    out["old"] = _per_calls(old_tokens, output_tokens, old_price)
    out["new"] = _per_calls(new_tokens, output_tokens, new_price)
    out["delta"] = out["new"] - out["old"]
    return out


def _per_calls(input_tokens: int, output_tokens: int | None, price: Price) -> float:
    """Cost of :data:`CALLS` calls: tokens × price per 1,000 tokens × calls / 1,000."""
    per_call = (input_tokens * price.input_per_1k
                + (output_tokens or 0) * price.output_per_1k) / 1000
    return per_call * CALLS


# ---- the line a reader sees -------------------------------------------------------------
def summary_line(delta: Mapping[str, Any]) -> str:
    """``+212 tokens (+31 %), +$0.032 per 1,000 calls`` for a :func:`token_delta` result.

    ``(new)`` when the old side had no tokens; the cost part says why when there is no
    price; ``(estimate: ...)`` ends the line when a count is only an estimate.
    """
    total, cost = delta["total"], delta["cost"]
    line = f"{total['delta']:+,d} tokens ({_format_percent(total['percent'])})"
    if cost.get("delta") is None:
        line += f", {cost.get('unavailable', 'no cost')}"
    else:
        line += f", {format_money(cost['delta'], cost['currency'], sign=True)} per " \
                f"{CALLS:,d} calls"
        if "plus" in cost["basis"]:
            line += f" ({cost['basis']})"
    if delta.get("estimate"):
        line += f" (estimate: {delta.get('estimate_reason')})"
    return line


def _format_percent(percent: float | None) -> str:
    """``+31 %``; one decimal below 0.5 % so that a small change does not read as none."""
    if percent is None:
        return "new"
    if percent == 0 or abs(percent) >= 0.5:
        return f"{percent:+.0f} %"
    return f"{percent:+.1f} %" if abs(percent) >= 0.05 else f"{percent:+.2f} %"


def format_money(amount: float, currency: str = "USD", *, sign: bool = False) -> str:
    """``$0.032``, ``+$0.032``, ``-0.5 CHF``: at least 3 decimals, 2 significant digits."""
    size = abs(amount)
    decimals = 3 if size == 0 or size >= 0.001 else 1 - math.floor(math.log10(size))
    # half up, as a reader rounds (0.0625 -> 0.063), from the shortest repr of the float
    rounded = Decimal(repr(size)).quantize(Decimal(1).scaleb(-decimals), ROUND_HALF_UP)
    number = f"{rounded:,.{decimals}f}"
    mark = ("-" if amount < 0 else "+") if sign else ("-" if amount < 0 else "")
    symbol = _SYMBOLS.get(currency)
    return f"{mark}{symbol}{number}" if symbol else f"{mark}{number} {currency}"
