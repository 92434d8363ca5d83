"""The LLM-as-judge scorer: a versioned judge prompt scores each answer.

The judge prompt is resolved to an exact version when the run starts; its declared JSON
output (e.g. ``{"score": 4, "reason": "..."}``) is validated like any prompt output, with
the same bounded retries, in one batch for all items.

With ``choices`` (``[{choice: "yes", score: 1}, {choice: "no", score: 0}]``, as GitHub
Models' LLM evaluators write them) the judge answers in words instead: its answer, trimmed
and lower-cased, is scored by the first choice it contains, and 0 when it contains none
(:func:`choice_score`, what ``gh models eval`` does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..errors import InvalidRequest
from ..runner.execute import check_output, output_schema, retry_message
from .scorers import (
    _NO_EXPECTED,
    Score,
    ScoreInput,
    Scorer,
    ScorerContext,
    _is_number,
    _options,
    _text,
    scorer,
)

# ---- LLM as judge ---------------------------------------------------------------------

# Where a judge prompt's variables come from, by their usual names (the `vars` option
# overrides; an input-like name that is also a case variable takes the case's value).
_ROLES = {"answer": "output", "output": "output", "response": "output", "candidate": "output",
          "completion": "output", "reference": "expected", "expected": "expected",
          "gold": "expected", "ideal": "expected", "target": "expected",
          "question": "input", "input": "input", "query": "input", "prompt": "input"}


def _source(name: str, case_vars: Mapping[str, Any]) -> str | None:
    """The answer and the reference always come from the item; others from the case first."""
    role = _ROLES.get(name)
    if role in ("output", "expected"):
        return role
    return f"vars.{name}" if name in case_vars else role


def judge_score(parsed: Any, scale: tuple[float, float] | None = (1, 5),
                key: str = "score") -> Score:
    """A judge's JSON answer as a score: ``parsed[key]`` mapped from ``scale`` onto 0..1.

    Without a scale the judge's number is kept as is. A missing, non-numeric or
    out-of-scale score gives ``Score(None, why)``; the judge's ``reason`` is the detail.
    """
    if not isinstance(parsed, dict):
        return Score(None, "the judge's answer is not a JSON object")
    raw = parsed.get(key)
    if not _is_number(raw):
        return Score(None, f"the judge's answer has no numeric {key!r} (got {raw!r})")
    reason = str(parsed.get("reason") or parsed.get("explanation") or "")[:500]
    if scale is None:
        return Score(float(raw), reason)
    low, high = scale
    if not low <= raw <= high:
        return Score(None, f"the judge's {key} {raw:g} is outside its scale {low:g}..{high:g}")
    detail = f"{raw:g} of {low:g}..{high:g}" + (f": {reason}" if reason else "")
    return Score((raw - low) / (high - low), detail)


def choice_score(answer: str, choices: list[tuple[str, float]]) -> Score:
    """A judge's answer in words, scored by the first choice it contains (ignoring case);
    0 when it contains none."""
    said = answer.strip().lower()
    for choice, value in choices:
        if choice.lower() in said:
            return Score(value, f"the judge's answer matched choice {choice!r}")
    shown = said if len(said) <= 200 else said[:200] + "…"
    return Score(0.0, f"the judge's answer {shown!r} matched none of the choices "
                      f"({', '.join(repr(c) for c, _ in choices)})")


def case_text(variables: Mapping[str, Any]) -> str:
    """A case's variables as text for a judge: the value alone, or ``name: value`` lines."""
    if len(variables) == 1:
        return _text(next(iter(variables.values())))
    return "\n".join(f"{name}: {_text(value)}" for name, value in variables.items())


class JudgeScorer:
    """Grades each answer with a judge prompt version run through the runner.

    All items run in one backend batch; answers that do not match the judge's declared
    outputs are retried together (the runner's ``output_retries`` times, with the error fed
    back as the runner does) and then give ``Score(None, error)`` instead of failing.
    """

    binary = False
    higher_is_better = True

    def __init__(self, runner, ref: str, *, model: str | None = None,
                 scale: tuple[float, float] | None = (1, 5), key: str = "score",
                 mapping: dict[str, str] | None = None,
                 choices: list[tuple[str, float]] | None = None):
        self.name = "judge"
        self.choices = choices
        # Judged by choices whose scores are all 0 or 1: a pass or a fail.
        self.binary = bool(choices) and all(v in (0, 1) for _, v in choices)
        self.runner = runner
        self.ref = ref  # resolved: one judge version for the whole evaluation
        self.model = model
        self.scale = scale
        self.key = key
        prompt = runner.registry.prompt(ref)
        self.schema = output_schema(prompt) or {
            "type": "object", "properties": {key: {"type": "number"}}, "required": [key]}
        self.variables = sorted(prompt.variables | set(prompt.inputs))
        self.mapping = dict(mapping or {})

    def score(self, items: list[ScoreInput]) -> list[Score]:
        """Judge every item that has what the judge prompt needs, in one batch."""
        scores: list[Score | None] = [None] * len(items)
        todo: list[tuple[int, dict[str, Any]]] = []
        for i, item in enumerate(items):
            values = self.judge_vars(item)
            if values is None:
                scores[i] = _NO_EXPECTED
            else:
                todo.append((i, values))
        if todo and self.choices is not None:
            texts = self._answers([values for _, values in todo])
            for (i, _), text in zip(todo, texts, strict=True):
                scores[i] = choice_score(text, self.choices)
        elif todo:
            outcomes = self._judge([values for _, values in todo])
            for (i, _), (error, parsed) in zip(todo, outcomes, strict=True):
                scores[i] = Score(None, f"{self.ref}: {error}") if error else \
                    judge_score(parsed, self.scale, self.key)
        return scores  # type: ignore[return-value]

    def judge_vars(self, item: ScoreInput) -> dict[str, Any] | None:
        """The judge prompt's variables for one item (None if it needs a missing expected)."""
        case_vars = item.case.vars
        values: dict[str, Any] = {}
        for name in sorted(set(self.variables) | set(self.mapping)):
            source = self.mapping.get(name) or _source(name, case_vars)
            if source is None:
                continue  # left to the prompt (a default, or a render error naming it)
            if source == "expected" and item.case.expected is None:
                return None
            values[name] = self._value(source, item)
        return values

    def _value(self, source: str, item: ScoreInput) -> Any:
        if source == "output":
            return item.output
        if source == "input":
            return case_text(item.case.vars)
        if source == "expected":
            return _text(item.case.expected)
        return item.case.vars.get(source[5:], "")

    def _answers(self, inputs: list[dict[str, Any]]) -> list[str]:
        """The judge's answers in words, in one batch (judging by choices)."""
        runner = self.runner
        prepared = [runner.prepare(self.ref, values) for values in inputs]
        backend = runner.backend(runner.model_spec(prepared[0][0], self.model))
        return [g.text for g in backend.generate([request for _, request, _ in prepared])]

    def _judge(self, inputs: list[dict[str, Any]]) -> list[tuple[str | None, Any]]:
        runner = self.runner
        prepared = [runner.prepare(self.ref, values) for values in inputs]
        backend = runner.backend(runner.model_spec(prepared[0][0], self.model))
        requests = [request for _, request, _ in prepared]
        texts = [g.text for g in backend.generate(requests)]
        outcomes = [check_output(text, self.schema) for text in texts]
        for _ in range(runner.output_retries):
            failed = [k for k, (error, _) in enumerate(outcomes) if error]
            if not failed:
                break
            for k in failed:
                requests[k] = replace(requests[k], messages=[
                    *requests[k].messages, {"role": "assistant", "content": texts[k]},
                    {"role": "user", "content": retry_message(outcomes[k][0], self.schema)}])
            answers = backend.generate([requests[k] for k in failed])
            for k, generation in zip(failed, answers, strict=True):
                texts[k] = generation.text
                outcomes[k] = check_output(generation.text, self.schema)
        return outcomes


@scorer("judge")
def _judge(options: dict[str, Any], context: ScorerContext) -> Scorer:
    opts = _options("judge", options, {"prompt": None, "model": None, "scale": [1, 5],
                                       "score_key": "score", "vars": {}, "choices": None})
    if context.runner is None:
        raise InvalidRequest("judge: needs a runner to run the judge prompt")
    if not opts["prompt"]:
        raise InvalidRequest("judge: needs 'prompt', the judge prompt version "
                             "(e.g. judge/answer-quality@1)")
    scale = opts["scale"]
    if scale is not None and not (isinstance(scale, (list, tuple)) and len(scale) == 2
                                  and all(_is_number(v) for v in scale) and scale[0] < scale[1]):
        raise InvalidRequest(f"judge: scale must be [low, high] with low < high, got {scale!r}")
    mapping = opts["vars"]
    sources = ("input", "output", "expected")
    if not isinstance(mapping, dict) or any(
            not isinstance(v, str) or not (v in sources or v.startswith("vars."))
            for v in mapping.values()):
        raise InvalidRequest("judge: vars maps judge variables to input, output, expected "
                             f"or vars.NAME, got {mapping!r}")
    choices = None if opts["choices"] is None else _choices(opts["choices"])
    if opts["model"] is not None:
        context.runner.named_model(opts["model"])  # an unknown name fails now, not mid-run
    ref = context.runner.registry.resolve(str(opts["prompt"]), "prompt").ref
    return JudgeScorer(context.runner, ref, model=opts["model"],
                       scale=None if scale is None else (scale[0], scale[1]),
                       key=str(opts["score_key"]), mapping=mapping, choices=choices)


def _choices(raw: Any) -> list[tuple[str, float]]:
    """``[{choice: "yes", score: 1}, …]`` checked: a non-empty list of texts with numbers."""
    if not isinstance(raw, list) or not raw or not all(
            isinstance(c, Mapping) and set(c) == {"choice", "score"}
            and isinstance(c["choice"], (str, int, float)) and not isinstance(c["choice"], bool)
            and str(c["choice"]) != "" and _is_number(c["score"]) for c in raw):
        raise InvalidRequest("judge: choices is a list of {choice: TEXT, score: NUMBER} "
                             f"(the first choice the judge's answer contains scores), got {raw!r}")
    return [(str(c["choice"]), float(c["score"])) for c in raw]


