"""The official ``openai`` client against a real ``promptrev serve`` on loopback, and the
``openai`` backend running prompts through that server."""

from __future__ import annotations

import httpx
import pytest

from promptrev import Registry
from promptrev.runner.base import ModelSpec
from promptrev.runner.execute import Runner
from promptrev.runner.trust import Trust

from .conftest import hf_prompt
from .live import start_server

LOCAL = Trust.local()  # a user's own machine: the prompt's own model and ${env:}

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny):
    tmp = tmp_path_factory.mktemp("openai")
    models = tmp / "models.yaml"
    models.write_text(f"tiny:\n  backend: hf\n  path: {tiny.model}\n")
    server = start_server(tmp, workers=2, env={"PROMPTREV_MODELS": str(models)})
    token = server.token()
    api = httpx.Client(base_url=server.url + "/api/v1",
                       headers={"Authorization": f"Bearer {token}"})
    # On a server a prompt names a configured model ("tiny"), never a local path.
    for text in (hf_prompt("tiny", max_tokens=6),
                 hf_prompt("tiny", "user:\nTell me about {{ topic }} now.\n", 6)):
        base = api.get("/artifact", params={"ref": "greet"})
        headers = {"If-Match": str(base.json()["version"])} if base.status_code == 200 else {}
        api.put("/artifact", params={"name": "greet"}, headers=headers,
                json={"text": text}).raise_for_status()
    api.put("/labels", params={"name": "greet", "label": "production"},
            json={"version": 1}).raise_for_status()
    with Registry.open(server.registry) as reg:
        reg.push_adapter("tone", str(tiny.lora[0]))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0)
    yield server, client, api, token
    api.close()
    server.stop()


def _models(tiny) -> dict:
    return {"tiny": ModelSpec("hf", str(tiny.model))}


def _direct(server, tiny, ref, variables, **kwargs):
    with Registry.open(server.registry) as reg:
        return Runner(reg, models=_models(tiny)).run(ref, variables, **kwargs)


def test_models_lists_prompts_adapters_and_base_models(served):
    _, client, _, _ = served
    ids = {m.id for m in client.models.list()}
    assert {"tiny", "prompt:greet", "prompt:greet@production", "adapter:tone",
            "prompt:summarize"} <= ids


def test_prompt_reference_as_model(served, tiny):
    server, client, api, _ = served
    answer = client.chat.completions.create(
        model="prompt:greet@production", messages=[],
        extra_body={"variables": {"topic": "git"}})
    direct = _direct(server, tiny, "greet@1", {"topic": "git"})
    assert answer.choices[0].message.content == direct.text
    assert answer.usage.prompt_tokens == direct.usage["prompt_tokens"]
    assert answer.usage.completion_tokens == direct.usage["completion_tokens"]
    assert answer.usage.total_tokens == direct.usage["total_tokens"]
    # Moving the label changes what the application gets, with no deploy.
    api.put("/labels", params={"name": "greet", "label": "production"},
            json={"version": 2}).raise_for_status()
    moved = client.chat.completions.create(
        model="prompt:greet@production", messages=[],
        extra_body={"variables": {"topic": "git"}})
    assert moved.choices[0].message.content == _direct(server, tiny, "greet@2",
                                                       {"topic": "git"}).text
    api.put("/labels", params={"name": "greet", "label": "production"},
            json={"version": 1}).raise_for_status()


def test_request_messages_are_appended_after_the_rendered_ones(served, tiny):
    server, client, _, _ = served
    extra = [{"role": "assistant", "content": "Sure."}, {"role": "user", "content": "More!"}]
    answer = client.chat.completions.create(model="prompt:greet@1", messages=extra,
                                            extra_body={"variables": {"topic": "sql"}})
    with Registry.open(server.registry) as reg:
        runner = Runner(reg, models=_models(tiny))
        prompt, request, _ = runner.prepare("greet@1", {"topic": "sql"}, extra_messages=extra)
        assert [m["content"] for m in request.messages][-2:] == ["Sure.", "More!"]
        direct = runner.complete(request, runner.model_spec(prompt), "greet@1")
    assert answer.choices[0].message.content == direct.text


def test_streaming_matches_and_counts_usage(served):
    _, client, _, _ = served
    kwargs = {"model": "prompt:greet@1", "messages": [],
              "extra_body": {"variables": {"topic": "flask"}}}
    whole = client.chat.completions.create(**kwargs)
    pieces, usage = [], None
    for chunk in client.chat.completions.create(stream=True,
                                                stream_options={"include_usage": True},
                                                **kwargs):
        usage = chunk.usage or usage
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == whole.choices[0].message.content
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_base_model_and_adapter_references(served, tiny):
    server, client, _, _ = served
    messages = [{"role": "user", "content": "Hello there!"}]
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6)
    tuned = client.chat.completions.create(model="adapter:tone@1", messages=messages,
                                           max_tokens=6)
    same = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6,
                                          extra_body={"adapter": "tone@1"})
    assert tuned.choices[0].message.content == same.choices[0].message.content
    assert tuned.choices[0].message.content != plain.choices[0].message.content
    assert plain.usage.completion_tokens <= 6


def test_errors_and_auth(served):
    server, client, _, _ = served
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="prompt:nope", messages=[])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="unknown-model",
                                       messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[{"role": "bot", "content": 1}])
    stranger = openai.OpenAI(base_url=server.url + "/v1", api_key="prv_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()
    body = httpx.post(server.url + "/v1/chat/completions", json={"model": "tiny"},
                      headers={"Authorization": "Bearer prv_wrong"}).json()
    assert set(body["error"]) == {"code", "message", "details"}


def test_openai_backend_runs_prompts_through_an_openai_compatible_server(served, tiny,
                                                                         tmp_path):
    server, _, _, token = served
    reg = Registry.init(tmp_path / "client-registry")
    text = ("---\nmodel:\n  api: chat\n  configuration:\n    type: openai\n"
            f"    base_url: {server.url}/v1\n    name: tiny\n"
            "    api_key: ${env:PROMPTREV_TOKEN}\n  parameters:\n    max_tokens: 6\n"
            "---\nuser:\nHello there!\n")
    reg.save("remote", text)
    result = Runner(reg, trust=LOCAL, env={"PROMPTREV_TOKEN": token}).run("remote")
    direct = _direct(server, tiny, "greet@1", {"topic": "x"})  # warm, for token counts
    assert result.text and result.usage["completion_tokens"] <= 6 and direct.text
    many = Runner(reg, trust=LOCAL, env={"PROMPTREV_TOKEN": token}).run_many("remote", [{}] * 4)
    assert {r.text for r in many} == {result.text}
    reg.close()


def test_user_field_follows_a_label_split(served):
    _, client, api, _ = served
    api.put("/labels", params={"name": "greet", "label": "canary"},
            json={"version": 1}).raise_for_status()
    api.put("/splits", params={"name": "greet", "label": "canary"},
            json={"arms": {"1": 50, "2": 50}}).raise_for_status()
    seen = {}
    for user in ("ann", "bo", "cy", "di", "ed", "flo", "gus", "hal"):
        first = client.chat.completions.create(model="prompt:greet@canary", messages=[],
                                               user=user, max_tokens=2,
                                               extra_body={"variables": {"topic": "x"}})
        again = client.chat.completions.create(model="prompt:greet@canary", messages=[],
                                               user=user, max_tokens=2,
                                               extra_body={"variables": {"topic": "x"}})
        assert first.model == again.model  # sticky per user
        seen[user] = first.model
    assert set(seen.values()) == {"prompt:greet@1", "prompt:greet@2"}
