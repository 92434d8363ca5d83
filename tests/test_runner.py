"""Running prompt versions: front matter picks the backend, adapters from the registry,
output validation with bounded retries, fine-tuning into new adapter versions."""

from __future__ import annotations

import json

import pytest

from promptrev.errors import InvalidRequest, ValidationFailed
from promptrev.runner.execute import Runner, check_output, output_schema
from promptrev.runner.finetune import FinetuneConfig, finetune
from promptrev.runner.trust import Trust

from .conftest import hf_prompt

LOCAL = Trust.local()  # a user's own machine: the prompt's own model and ${env:}

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_run_uses_the_model_named_in_the_front_matter(registry, tiny):
    registry.save("tiny", hf_prompt(tiny.model))
    runner = Runner(registry, trust=LOCAL)
    result = runner.run("tiny", {"topic": "git"})
    assert result.ref == "tiny@1" and result.text
    backend = runner.backend(runner.model_spec(registry.prompt("tiny")))
    prompt_ids = backend.prompt_ids(runner.prepare("tiny", {"topic": "git"})[1])
    assert result.usage["prompt_tokens"] == len(prompt_ids)
    assert 0 < result.usage["completion_tokens"] <= 8
    batch = runner.run_many("tiny", [{"topic": t} for t in ("git", "sql", "flask", "git")])
    assert batch[0].text == result.text and batch[3].text == result.text
    alone = [runner.run("tiny", {"topic": t}).text for t in ("sql", "flask")]
    assert [b.text for b in batch[1:3]] == alone


def test_run_on_an_adapter_version(registry, tiny):
    registry.save("tiny", hf_prompt(tiny.model, max_tokens=6))
    registry.push_adapter("tone", str(tiny.lora[0]))
    registry.push_adapter("tone", str(tiny.lora[1]), base=1)
    registry.set_label("tone", "production", 1)
    runner = Runner(registry, trust=LOCAL)
    base = runner.run("tiny", {"topic": "x"}).text
    one = runner.run("tiny", {"topic": "x"}, adapter="tone@production")
    two = runner.run("tiny", {"topic": "x"}, adapter="tone@2")
    assert one.generation.adapter == "tone@1" and two.generation.adapter == "tone@2"
    assert len({base, one.text, two.text}) == 3
    registry.set_label("tone", "production", 2)  # a label move changes what runs
    assert runner.run("tiny", {"topic": "x"}, adapter="tone@production").text == two.text


def test_env_and_unknown_backends(registry, tiny):
    text = hf_prompt("${env:TINY_MODEL}")
    registry.save("envy", text)
    runner = Runner(registry, trust=LOCAL, env={"TINY_MODEL": str(tiny.model)})
    assert runner.model_spec(registry.prompt("envy")).name == str(tiny.model)
    registry.save("odd", hf_prompt(tiny.model).replace("type: hf", "type: teleport"))
    with pytest.raises(InvalidRequest, match="unknown backend 'teleport'"):
        Runner(registry, trust=LOCAL).run("odd", {"topic": "x"})
    registry.save("bare", "user:\nhi\n")
    with pytest.raises(InvalidRequest, match="no 'type'"):
        Runner(registry, trust=LOCAL).run("bare")
    with pytest.raises(InvalidRequest, match="unknown model 'nope'"):
        Runner(registry, trust=LOCAL).run("bare", model="nope")


def test_output_schema_and_checks():
    from promptrev.model.prompty import parse_prompt

    prompt = parse_prompt("---\noutputs:\n  score:\n    type: number\n  why:\n    type: string\n"
                          "---\nuser:\nrate\n")
    schema = output_schema(prompt)
    assert schema["required"] == ["score", "why"]
    assert check_output('{"score": 3, "why": "ok"}', schema) == (None, {"score": 3, "why": "ok"})
    assert check_output('```json\n{"score": 1, "why": ""}\n```', schema)[0] is None
    assert "not JSON" in check_output("three", schema)[0]
    assert "score" in check_output('{"score": "high", "why": "x"}', schema)[0]
    assert "'why' is a required property" in check_output('{"score": 1}', schema)[0]
    assert output_schema(parse_prompt("user:\nhi\n")) is None


def test_invalid_output_is_retried_then_reported(registry, tiny):
    extra = "outputs:\n  answer:\n    type: string\n"
    registry.save("json", hf_prompt(tiny.model, max_tokens=4, extra=extra))
    runner = Runner(registry, trust=LOCAL, output_retries=2)
    backend = runner.backend(runner.model_spec(registry.prompt("json")))
    calls = []
    original = backend.generate
    backend.generate = lambda requests: calls.append(requests) or original(requests)
    with pytest.raises(ValidationFailed, match="after 3 attempts") as err:
        runner.run("json", {"topic": "x"})
    assert len(calls) == 3  # the answer, then two retries
    retry = calls[1][0].messages
    assert retry[-2]["role"] == "assistant" and "not valid" in retry[-1]["content"]
    assert len(calls[2][0].messages) == len(retry) + 2  # each retry sees the last error
    assert err.value.problems[0]["answer"] is not None


@pytest.mark.slow
def test_finetune_lora_into_a_new_adapter_version_that_answers_valid_json(registry, tiny):
    answer = json.dumps({"answer": "yes"})
    cases = "".join(json.dumps({"id": f"c{i}", "vars": {"topic": f"t{i}"},
                                "expected": answer}) + "\n" for i in range(12))
    registry.save("yes-data", cases, kind="dataset")
    extra = "outputs:\n  answer:\n    type: string\n"
    registry.save("json", hf_prompt(tiny.model, max_tokens=24, extra=extra))
    config = FinetuneConfig(method="lora", rank=8, alpha=16, max_steps=60, learning_rate=5e-3,
                            batch_size=4, validation_split=0.25, seed=0,
                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    version = finetune(registry, dataset="yes-data", model_path=str(tiny.model),
                       name="yes-lora", config=config, prompt="json", progress=False)
    card = registry.adapter(version.ref).card
    assert card["lineage"]["dataset"] == "yes-data@1" and card["lineage"]["prompt"] == "json@1"
    training = card["training"]
    assert training["train_cases"] == 9 and training["validation_cases"] == 3
    assert training["steps"] == 60 and len(training["loss_curve"]) == 60
    assert training["loss_curve"][-1]["loss"] < training["loss_curve"][0]["loss"]
    assert training["validation_loss"] is not None and training["hyperparameters"]["rank"] == 8
    # An unseen case of the same form (a random tiny model does not generalise further).
    result = Runner(registry, trust=LOCAL).run("json", {"topic": "t42"}, adapter=version.ref)
    assert result.parsed == {"answer": "yes"} and result.attempts == 1


@pytest.mark.slow
def test_finetune_prompt_tuning(registry, tiny):
    cases = "".join(json.dumps({"id": f"c{i}", "vars": {"topic": f"t{i}"},
                                "expected": "yes"}) + "\n" for i in range(6))
    registry.save("d", cases, kind="dataset")
    version = finetune(registry, dataset="d", model_path=str(tiny.model), name="soft",
                       config=FinetuneConfig(method="prompt_tuning", num_virtual_tokens=4,
                                             max_steps=5, batch_size=2), progress=False)
    card = registry.adapter(version.ref).card
    assert card["peft_type"] == "PROMPT_TUNING" and card["num_virtual_tokens"] == 4
    registry.save("tiny", hf_prompt(tiny.model, max_tokens=4))
    soft = Runner(registry, trust=LOCAL).run("tiny", {"topic": "x"}, adapter="soft")
    assert soft.text is not None
    with pytest.raises(ValidationFailed, match="at least 2"):
        registry.save("empty", '{"id": "a", "vars": {}}\n', kind="dataset")
        finetune(registry, dataset="empty", model_path=str(tiny.model), name="x",
                 progress=False)


def test_run_and_finetune_from_the_cli(tmp_path, monkeypatch, tiny):
    from click.testing import CliRunner

    from promptrev.cli.main import main

    monkeypatch.setenv("PROMPTREV_REGISTRY", str(tmp_path / "reg"))
    monkeypatch.setenv("PROMPTREV_AUTHOR", "Tester <t@example.org>")
    models = tmp_path / "models.yaml"
    models.write_text(f"tiny:\n  backend: hf\n  path: {tiny.model}\n")
    monkeypatch.setenv("PROMPTREV_MODELS", str(models))
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout  # transformers reports loading progress on stderr

    run("init")
    prompt = tmp_path / "tiny.prompty"
    prompt.write_text(hf_prompt(tiny.model, max_tokens=5))
    run("save", prompt, "-m", "tiny prompt")
    answer = json.loads(run("run", "tiny", "--var", "topic=git", "--json"))
    assert answer["ref"] == "tiny@1" and answer["usage"]["completion_tokens"] <= 5
    streamed = run("run", "tiny", "--var", "topic=git", "--stream")
    assert streamed.strip() == answer["text"].strip()
    assert run("run", "tiny", "--sample", "--model", "tiny").strip()
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": f"c{i}", "vars": {"topic": f"t{i}"},
                                        "expected": "yes"}) + "\n" for i in range(4)))
    run("save", data, "-m", "data")
    out = run("finetune", "--dataset", "d", "--model", "tiny", "--name", "cli-lora",
              "--max-steps", "3", "--batch-size", "2", "--rank", "4")
    assert "cli-lora@1: 3 steps" in out
    card = json.loads(run("adapter", "show", "cli-lora", "--json"))["card"]
    assert card["base_model"]["name"] == str(tiny.model) and card["rank"] == 4
    tuned = json.loads(run("run", "tiny", "--var", "topic=git", "--adapter", "cli-lora",
                           "--json"))
    assert tuned["generation"]["adapter"] == "cli-lora@1"


def test_registry_adapters_mixed_in_one_batch(registry, tiny, tmp_path):
    """Real PEFT adapters pushed, pulled (sha256-verified) and run mixed in one pass."""
    registry.save("tiny", hf_prompt(tiny.model, max_tokens=6))
    registry.push_adapter("a", str(tiny.lora[0]))
    registry.push_adapter("b", str(tiny.lora[1]))
    registry.push_adapter("soft", str(tiny.prompt_tuning))
    runner = Runner(registry, trust=LOCAL)
    sources = [None, registry.adapter_source("a"), registry.adapter_source("b"),
               registry.adapter_source("soft"), registry.adapter_source("a@1")]
    assert sources[1].path == sources[4].path  # same version, same cached folder
    requests = []
    for source in sources:
        _, request, _ = runner.prepare("tiny", {"topic": "git"}, adapter=source)
        requests.append(request)
    backend = runner.backend(runner.model_spec(registry.prompt("tiny")))
    mixed = backend.generate(requests)
    alone = [backend.generate([r])[0] for r in requests]
    assert [g.text for g in mixed] == [g.text for g in alone]
    assert [g.adapter for g in mixed] == [None, "a@1", "b@1", "soft@1", "a@1"]
    assert len({g.text for g in mixed[:4]}) >= 3  # the adapters really change the answer
