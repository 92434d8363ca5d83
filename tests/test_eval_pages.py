"""Evaluation pages through Flask's test client: start a run on the tiny local model from
the form, follow it to the end, and read its charts, comparisons, costs and cases."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import pytest
import yaml
from markupsafe import escape

from promptrev import Registry
from promptrev.evaluation.runs import Evaluator
from promptrev.evaluation.store import EvalStore
from promptrev.jobs import Worker
from promptrev.runner.base import model_specs
from promptrev.runner.execute import Runner
from promptrev.runner.trust import Trust

from .conftest import csrf_token, make_server_env

LOCAL = Trust.local()  # a user's own machine: the prompt's own model and ${env:}
MODELS: dict = {}  # the server's configured models, for runs started in the test itself

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
WAIT_S = 60


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny):
    models = {"tiny": {"backend": "hf", "path": str(tiny.model)},
              # configured, but its weights are missing: a run on it fails while running
              "zz-broken": {"backend": "hf", "path": str(tiny.model) + "-missing"}}
    server_env = make_server_env(tmp_path_factory.mktemp("eval-pages"), models=models)
    MODELS.update(model_specs(models, {}))
    worker = Worker(server_env.settings)  # what `promptrev serve` runs beside the app
    worker.start()
    yield server_env
    worker.stop()
    server_env.app.extensions["promptrev"].close()


@pytest.fixture(scope="module")
def reg(env):
    registry = Registry.open(env.settings.registry)
    yield registry
    registry.close()


def _page(response, status: int = 200) -> str:
    text = response.get_data(as_text=True)
    assert response.status_code == status, text[:1000]
    return text


def _spec(**extra) -> str:
    spec = {"name": "pages: zero-shot vs few-shot", "dataset": "sentiment@1", "model": "tiny",
            "params": {"max_tokens": 3}, "limit": 6, "batch_size": 4,
            "variants": [{"name": "zero-shot", "prompt": "sentiment/zero-shot@1"},
                         {"name": "few-shot", "prompt": "sentiment/few-shot@1"},
                         {"name": "zero-again", "prompt": "sentiment/zero-shot@1"}],
            "scorers": ["exact", {"contains": {"ignore_case": True}}, "latency"],
            "baseline": "zero-shot",
            "prices": {"tiny": {"input_per_1k": 0.5, "output_per_1k": 1.5}}, **extra}
    return yaml.safe_dump(spec, sort_keys=False)


def _post_spec(client, text: str):
    form = _page(client.get("/eval/new"))
    return client.post("/eval/new", data={"spec": text, "csrf_token": csrf_token(form)})


def _wait(reg, run_id: int, until=("done", "failed")) -> dict:
    store = EvalStore(reg.engine)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        run = store.run(run_id)
        if run["status"] in until:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still {run['status']} after {WAIT_S} s")


def _run_id(response) -> int:
    assert response.status_code == 302, response.get_data(as_text=True)[:1000]
    match = re.fullmatch(r"/eval/(\d+)", response.headers["Location"])
    assert match, response.headers["Location"]
    return int(match.group(1))


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr data-case="([^"]+)"', page)


def _svg_rows(page: str, metric: str) -> dict[str, dict[str, str]]:
    svg = re.search(rf'<svg class="interval-chart" id="chart-{metric}".*?</svg>', page, re.S)
    assert svg, f"no chart for {metric}"
    rows = {}
    for attrs in re.findall(r'<g class="row[^"]*" ([^>]*)>', svg.group(0)):
        values = dict(re.findall(r'data-([a-z]+)="([^"]*)"', attrs))
        rows[values.pop("variant")] = values
    assert svg.group(0).count("<circle") == len(rows)
    return rows


def test_start_a_run_from_the_form_and_read_its_page(env, reg):
    client = env.login("editor")
    form = _page(client.get("/eval/new"))
    textarea = html.unescape(re.search(r'<textarea name="spec"[^>]*>(.*?)</textarea>', form,
                                       re.S).group(1))
    example = yaml.safe_load(textarea)  # the example is for the starter dataset
    assert example["dataset"] == "sentiment" and example["model"] == "tiny"
    assert [v["prompt"] for v in example["variants"]] == ["sentiment/zero-shot",
                                                          "sentiment/few-shot"]
    run_id = _run_id(_post_spec(client, _spec()))
    run = _wait(reg, run_id)
    assert run["status"] == "done", run["error"]
    report = run["report"]
    results = EvalStore(reg.engine).results(run_id)
    assert len(results) == 18

    page = _page(client.get(f"/eval/{run_id}"))
    assert 'id="status">done<' in page and 'http-equiv="refresh"' not in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
    verdict = page[page.index('id="verdict"'):page.index('id="metrics"')]
    for line in report["verdict"]:
        assert escape(line) in verdict
    for metric in report["metrics"]:
        name = metric["metric"]
        rows = _svg_rows(page, name)
        assert list(rows) == ["zero-shot", "few-shot", "zero-again"]
        for variant, iv in metric["variants"].items():
            assert float(rows[variant]["mean"]) == pytest.approx(iv["mean"], rel=1e-5)
            assert float(rows[variant]["low"]) <= float(rows[variant]["mean"]) <= float(
                rows[variant]["high"])
            # a batch's cases share one latency measurement: n counts measurements
            assert rows[variant]["n"] == str(metric.get("measured", {}).get("units", 6))
        if "measured" in metric:
            assert escape(metric["measured"]["note"]) in page
        table = page[page.index(f'id="comparisons-{name}"'):]
        table = table[:table.index("</table>")]
        assert table.count("<tr class=") == 2  # both against the baseline
        assert 'data-a="zero-shot" data-b="few-shot"' in table
        assert escape(metric["correction"]) in page
    exact = _svg_rows(page, "exact")
    ticks = re.search(r'id="chart-exact".*?</svg>', page, re.S).group(0)
    assert '>0.5</text>' in ticks and '>1</text>' in ticks  # pass/fail: axis 0..1

    costs = page[page.index('id="costs"'):]
    costs = costs[:costs.index("</table>")]
    per_1k = report["costs"]["per_1k"]
    assert per_1k["few-shot"] > per_1k["zero-shot"] > 0  # the few-shot prompt is longer
    for variant in ("zero-shot", "few-shot"):
        assert f"{per_1k[variant]:.4g}" in costs
    assert exact["zero-shot"] == exact["zero-again"]  # same prompt, same answers

    assert _rows(page) == [f"s00{i}" for i in range(1, 7)]
    by_case: dict[str, dict[str, str]] = {}
    for r in results:
        by_case.setdefault(r["case_id"], {})[r["variant"]] = r["output"].strip()
    disagree = [c for c, outputs in by_case.items() if len(set(outputs.values())) > 1]
    filtered = _page(client.get(f"/eval/{run_id}?disagree=1"))
    assert _rows(filtered) == disagree
    assert 'id="filter-all"' in filtered
    # variants' outputs side by side, with the prompts' diff (different prompt names)
    assert page.count('<td class="result" data-variant=') == 18
    assert 'href="/a/sentiment/few-shot?kind=prompt&amp;v=1"' in page
    assert 'id="side-by-side"' in page and "few-shot" in page

    listing = _page(client.get("/eval/"))
    row = re.search(rf'<tr data-run="{run_id}">(.*?)</tr>', listing, re.S).group(1)
    for text in ("pages: zero-shot vs few-shot", "sentiment@1", "done", ">6<", "editor"):
        assert text in row, text


def _crafted_run(reg, cases: int = 60, adapter: str | None = None,
                 costs: tuple[float | None, float | None] = (None, None)) -> int:
    """A finished run with made-up outputs: B differs from A on every third case."""
    spec = yaml.safe_load(_spec(limit=cases, variants=[
        {"name": "A", "prompt": "sentiment/zero-shot@1"},
        {"name": "B", "prompt": "sentiment/zero-shot@1", "adapter": adapter}], baseline="A",
        scorers=["exact", "latency"]))
    evaluator = Evaluator(reg, Runner(reg, models=MODELS, trust=LOCAL))
    run_id = evaluator.start(spec, author="Tester <t@example.org>")
    rows = []
    for i in range(cases):
        for variant, cost in zip(("A", "B"), costs, strict=True):
            output = "positive" if variant == "A" or i % 3 else "negative"
            if variant == "B" and i % 3 == 1:
                output = " positive\n"  # surrounding white space is no disagreement
            rows.append({
                "run_id": run_id, "variant": variant, "case_id": f"s{i + 1:03d}",
                "case_index": i, "output": output,
                "scores": {"exact": float(output.strip() == "positive"),
                           "latency": 0.01 * (i + 1) + (variant == "B")},
                "details": {}, "prompt": "sentiment/zero-shot@1", "adapter": None,
                "backend": "hf", "model": "tiny", "prompt_tokens": 10,
                "completion_tokens": 1, "latency_s": 0.1, "cost": cost, "error": None})
    evaluator.store.add_results(rows)
    evaluator.store.set_status(run_id, "done", report=evaluator.report(run_id))
    return run_id


def test_disagreement_filter_and_paging(env, reg):
    run_id = _crafted_run(reg)
    client = env.login("viewer")
    first = _page(client.get(f"/eval/{run_id}"))
    assert _rows(first) == [f"s{i:03d}" for i in range(1, 51)]
    assert "page 1 of 2" in first and 'id="next-page"' in first
    assert 'id="prev-page"' not in first
    second = _page(client.get(f"/eval/{run_id}?page=2"))
    assert _rows(second) == [f"s{i:03d}" for i in range(51, 61)]
    assert 'id="prev-page"' in second and 'id="next-page"' not in second
    assert _rows(_page(client.get(f"/eval/{run_id}?page=99"))) == _rows(second)
    assert _rows(_page(client.get(f"/eval/{run_id}?page=x"))) == _rows(first)
    assert "60 with results · 20 where the variants disagree" in first
    filtered = _page(client.get(f"/eval/{run_id}?disagree=1"))
    assert _rows(filtered) == [f"s{i + 1:03d}" for i in range(0, 60, 3)]
    assert 'id="pager"' not in filtered
    assert all('class="disagree"' in part for part in filtered.split('<tr data-case=')[1:])
    assert "no price" in first  # no cost recorded for made-up results
    # the same prompt version on both sides: said so, no diff
    assert "use the same prompt version" in first and 'id="side-by-side"' not in first


def test_adapter_variant_shows_training_cost_and_break_even(env, reg, tiny):
    reg.push_adapter("sentiment-lora", str(tiny.lora[0]), author="Tester <t@example.org>",
                     training={"cost": 2.0})
    run_id = _crafted_run(reg, cases=6, adapter="sentiment-lora@1", costs=(0.004, 0.002))
    page = _page(env.login("viewer").get(f"/eval/{run_id}"))
    costs = page[page.index('id="costs"'):page.index("</table>", page.index('id="costs"'))]
    a_row, b_row = costs.split('<tr data-variant="A">')[1].split('<tr data-variant="B">')
    assert '<td class="per-1k">4</td>' in a_row and '<td class="per-1k">2</td>' in b_row
    assert "<td>2</td>" in b_row  # what training the adapter cost
    assert "B is cheaper in total after 1,000 requests" in page
    assert 'href="/a/sentiment-lora?kind=adapter&amp;v=1"' in page


def test_prompt_versions_of_one_prompt_link_to_the_diff_page(env, reg):
    text = reg.get("sentiment/zero-shot@1", "prompt").text
    reg.save("sentiment/zero-shot", text.replace("Do not add punctuation",
                                                 "Never add punctuation"),
             message="stricter", author="Tester <t@example.org>")
    spec = yaml.safe_load(_spec(variants=[
        {"name": "v1", "prompt": "sentiment/zero-shot@1"},
        {"name": "v2", "prompt": "sentiment/zero-shot@2"},
        {"name": "few", "prompt": "sentiment/few-shot@1"}], baseline="v1"))
    run_id = Evaluator(reg, Runner(reg, models=MODELS, trust=LOCAL)).start(
        spec, author="Tester <t@example.org>")
    client = env.login("viewer")
    page = _page(client.get(f"/eval/{run_id}"))
    link = re.search(r'id="diff-link" href="([^"]+)"', page).group(1)
    assert html.unescape(link) in ("/diff?name=sentiment/zero-shot&a=1&b=2",
                                   "/diff?name=sentiment%2Fzero-shot&a=1&b=2")
    assert re.search(r"<mark[^>]*>(Do|Never)</mark>", page)  # the changed word, marked
    assert 'href="/a/sentiment/zero-shot?kind=prompt&amp;v=2"' in page
    assert "<details id=\"prompt-diff-details\">" in page  # folded unless asked for
    other = _page(client.get(f"/eval/{run_id}?pa=v2&pb=few"))
    assert 'id="diff-link"' not in other  # two prompts: both versions, no single diff page
    assert "<details id=\"prompt-diff-details\" open>" in other
    assert "sentiment/zero-shot@2</a> → few: " in other

    # Still running (nothing executed it): progress and a reload without JavaScript.
    assert 'id="status">running<' in page
    assert '<meta http-equiv="refresh" content="3">' in page
    assert "0 / 18 results" in page and f"promptrev eval resume {run_id}" in page

    # Run again: the form comes back with the pinned spec, which starts as it is.
    editor = env.login("editor")
    form = _page(editor.get(f"/eval/new?from={run_id}"))
    again = yaml.safe_load(html.unescape(re.search(
        r'<textarea name="spec"[^>]*>(.*?)</textarea>', form, re.S).group(1)))
    assert [v["prompt"] for v in again["variants"]] == [
        "sentiment/zero-shot@1", "sentiment/zero-shot@2", "sentiment/few-shot@1"]
    assert "dataset_commit" not in again and again["dataset"] == "sentiment@1"


def test_an_unknown_model_is_refused_on_the_form(env, reg):
    client = env.login("editor")
    before = len(EvalStore(reg.engine).runs())
    page = _page(_post_spec(client, _spec(model="nope", limit=2)), 400)
    assert "unknown model &#39;nope&#39;" in page and "tiny" in page
    assert len(EvalStore(reg.engine).runs()) == before


def test_a_failing_run_shows_its_error(env, reg):
    client = env.login("editor")
    run_id = _run_id(_post_spec(client, _spec(model="zz-broken", limit=2)))
    run = _wait(reg, run_id)
    assert run["status"] == "failed"
    page = _page(client.get(f"/eval/{run_id}"))
    assert 'id="status">failed<' in page and 'id="run-error"' in page
    assert "-missing" in page
    assert f"promptrev eval resume {run_id}" in page
    assert 'http-equiv="refresh"' not in page


@pytest.mark.parametrize("text, status, message", [
    ("name: [unclosed", 422, "invalid YAML"),
    ("dataset: sentiment\nvariants: [{prompt: a}]\nscorers: [exact]\n", 422,
     "at least two variants"),
    (_spec(colour="blue"), 422, "unknown key(s) colour"),
    (_spec(dataset="no-such-dataset"), 404, "no-such-dataset"),
    (_spec(scorers=["telepathy"]), 400, "unknown scorer &#39;telepathy&#39;"),
])
def test_bad_specs_are_shown_on_the_form_and_start_nothing(env, reg, text, status, message):
    client = env.login("editor")
    before = len(EvalStore(reg.engine).runs())
    page = _page(_post_spec(client, text), status)
    error = page[page.index('id="spec-error"'):page.index('id="eval-form"')]
    assert message in error
    assert escape(text) in page  # the text is kept for fixing
    assert len(EvalStore(reg.engine).runs()) == before


def test_who_may_read_and_who_may_start(env, reg, tmp_path: Path):
    anonymous = env.app.test_client()
    for url in ("/eval/", "/eval/new"):
        response = anonymous.get(url)
        assert response.status_code == 302 and "/login" in response.headers["Location"]
    viewer = env.login("viewer")
    listing = _page(viewer.get("/eval/"))
    assert 'id="new-eval"' not in listing and 'id="nav-eval"' in listing
    assert "<script" not in listing
    _page(viewer.get("/eval/new"), 403)
    before = len(EvalStore(reg.engine).runs())
    token = csrf_token(_page(viewer.get("/eval/")))  # the logout form's token
    _page(viewer.post("/eval/new", data={"spec": _spec(), "csrf_token": token}), 403)
    editor = env.login("editor")
    refused = _page(editor.post("/eval/new", data={"spec": _spec()}), 400)
    assert "csrf" in refused.lower()
    assert len(EvalStore(reg.engine).runs()) == before
    _page(viewer.get("/eval/424242"), 404)
