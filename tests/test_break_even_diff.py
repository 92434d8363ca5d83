"""An adapter against a long prompt: the break-even the evaluation computed appears where
the run page compares the two variants' configurations. A real run of the tiny local
model: the few-shot prompt (long) against the zero-shot prompt with a LoRA adapter whose
card records what its training cost.
"""

from __future__ import annotations

import html

import pytest
import yaml

from promptrev import Registry
from promptrev.evaluation.reporting import pair_break_even
from promptrev.evaluation.runs import Evaluator
from promptrev.runner.base import model_specs
from promptrev.runner.execute import Runner
from promptrev.runner.trust import Trust

from .conftest import make_server_env

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
AUTHOR = "Tester <t@example.org>"


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny):
    models = {"tiny": {"backend": "hf", "path": str(tiny.model)}}
    env = make_server_env(tmp_path_factory.mktemp("break-even"), models=models)
    reg = Registry.open(env.settings.registry)
    reg.push_adapter("sentiment-lora", str(tiny.lora[0]), author=AUTHOR,
                     training={"train_seconds": 3600, "device": "cpu"})
    spec = {"name": "few-shot vs LoRA", "dataset": "sentiment@1", "model": "tiny",
            "params": {"max_tokens": 3}, "limit": 6, "batch_size": 6, "scorers": ["exact"],
            "variants": [{"name": "few-shot", "prompt": "sentiment/few-shot@1"},
                         {"name": "lora", "prompt": "sentiment/zero-shot@1",
                          "adapter": "sentiment-lora@1"},
                         {"name": "zero-shot", "prompt": "sentiment/zero-shot@1"}],
            "baseline": "few-shot",
            "prices": {"tiny": {"input_per_1k": 0.5, "output_per_1k": 1.5}},
            "training_prices": {"cpu_hour": 0.25}}
    evaluator = Evaluator(reg, Runner(reg, models=model_specs(models, {}),
                                      trust=Trust.local()))
    run_id = evaluator.start(yaml.safe_load(yaml.safe_dump(spec)), author=AUTHOR)
    report = evaluator.execute(run_id)
    yield env, run_id, report
    reg.close()
    env.app.extensions["promptrev"].close()


def test_the_configuration_diff_of_an_adapter_and_a_long_prompt_shows_the_break_even(run):
    env, run_id, report = run
    tokens = report["operations"]["prompt_tokens"]["variants"]
    assert tokens["few-shot"]["mean"] > tokens["lora"]["mean"]  # the long prompt
    computed = next(b for b in report["costs"]["break_even"]
                    if (b["adapter_variant"], b["prompt_variant"]) == ("lora", "few-shot"))
    assert computed["requests"] and computed["requests"] > 0
    client = env.login("viewer")
    page = client.get(f"/eval/{run_id}?pa=few-shot&pb=lora").get_data(as_text=True)
    shown = html.unescape(page[page.index('id="pair-break-even"'):].split("</p>")[0])
    assert computed["text"] in shown
    assert f"{computed['requests']:,} requests" in shown
    assert f"few-shot sends {tokens['few-shot']['mean']:.4g} input tokens" in shown
    # Either order of the pair; two prompt-only variants have no break-even to show.
    page = client.get(f"/eval/{run_id}?pa=lora&pb=few-shot").get_data(as_text=True)
    assert computed["text"] in html.unescape(page)
    page = client.get(f"/eval/{run_id}?pa=few-shot&pb=zero-shot").get_data(as_text=True)
    assert 'id="pair-break-even"' not in page


def test_a_pair_without_a_training_cost_says_why(run):
    _, _, report = run
    variants = {v["name"]: v for v in report["variants"]}
    unpriced = {**report, "costs": {**report["costs"], "break_even": [],
                                    "training": {"lora": None}}}
    said = pair_break_even(unpriced, variants["lora"], variants["few-shot"])
    assert said["requests"] is None and "training cost is unknown" in said["text"]
    assert pair_break_even(report, variants["few-shot"], variants["zero-shot"]) is None
    assert pair_break_even(None, variants["lora"], variants["few-shot"]) is None
