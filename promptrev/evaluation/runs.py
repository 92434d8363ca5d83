"""Evaluation runs: variants × a dataset version, scored, stored case by case, compared.

A spec (``ab.yaml``) names the variants (a prompt reference, optionally an adapter, a
model and parameters), the dataset, the scorers and the prices. Starting a run resolves
every reference to an exact version (``sentiment/few-shot@5``), so the run, its resume
and its report always speak of the same versions, whatever labels do meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from promptrev.model import safe_yaml
from promptrev.model.datasets import Case, parse_dataset

from ..errors import InvalidRequest, ValidationFailed
from .costs import cost, price_table
from .reporting import build_report
from .scorers import ScoreInput, ScorerContext, build_scorers
from .store import EvalStore, LeaseLost

DEFAULT_BATCH = 16
_VARIANT_KEYS = {"name", "prompt", "adapter", "model", "params"}
_SPEC_KEYS = {"name", "dataset", "variants", "scorers", "model", "params", "baseline",
              "batch_size", "prices", "training_prices", "alpha", "limit"}


@dataclass
class Variant:
    """One arm of the comparison, with exact versions once resolved."""

    name: str
    prompt: str
    adapter: str | None = None
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"name": self.name, "prompt": self.prompt, "adapter": self.adapter,
                "model": self.model, "params": self.params}


def load_spec(text: str, filename: str = "ab.yaml") -> dict[str, Any]:
    """Parse and check an evaluation spec; errors name the file and the problem."""
    return check_spec(safe_yaml.load(text, filename), filename)


def check_spec(spec: Any, filename: str = "ab.yaml") -> dict[str, Any]:
    """Check an already-parsed evaluation spec (see :func:`load_spec`); return it."""
    if not isinstance(spec, dict):
        raise ValidationFailed(f"{filename}: an evaluation spec is a YAML mapping")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ValidationFailed(f"{filename}: unknown key(s) {', '.join(sorted(unknown))} "
                               f"(known: {', '.join(sorted(_SPEC_KEYS))})")
    if not isinstance(spec.get("dataset"), str):
        raise ValidationFailed(f"{filename}: 'dataset' must name a dataset, e.g. sentiment@1")
    variants = spec.get("variants")
    if not isinstance(variants, list) or len(variants) < 2:
        raise ValidationFailed(f"{filename}: 'variants' must list at least two variants")
    names = set()
    for i, v in enumerate(variants):
        if not isinstance(v, dict) or not isinstance(v.get("prompt"), str):
            raise ValidationFailed(f"{filename}: variants[{i}] needs a 'prompt' reference")
        if set(v) - _VARIANT_KEYS:
            raise ValidationFailed(f"{filename}: variants[{i}] has unknown key(s) "
                                   f"{', '.join(sorted(set(v) - _VARIANT_KEYS))}")
        name = str(v.get("name") or f"v{i + 1}")
        if name in names:
            raise ValidationFailed(f"{filename}: two variants are named '{name}'")
        names.add(name)
    if spec.get("baseline") is not None and spec["baseline"] not in names:
        raise ValidationFailed(f"{filename}: baseline '{spec['baseline']}' is not a variant "
                               f"({', '.join(sorted(names))})")
    if not spec.get("scorers"):
        raise ValidationFailed(f"{filename}: 'scorers' must list at least one scorer")
    return spec


class Evaluator:
    """Starts, executes and reports evaluation runs on one registry."""

    def __init__(self, registry, runner, *, env: dict | None = None):
        self.registry = registry
        self.runner = runner
        self.store = EvalStore(registry)
        self.env = env or {}

    # ---- starting ----------------------------------------------------------------------
    def start(self, spec: dict[str, Any], *, author: str) -> int:
        """Resolve every reference to an exact version and record the run; return its id."""
        resolved, cases = self.resolve(spec)
        return self.store.create(name=str(spec.get("name") or "evaluation"), author=author,
                                 dataset=resolved["dataset"], cases=cases, spec=resolved)

    def resolve(self, spec: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """The spec with every reference resolved to an exact version (as a run records
        it), and its number of cases; raises on a spec that cannot run."""
        context = ScorerContext(self.runner, self.env, price_table(spec.get("prices") or {}))
        scorers = build_scorers(spec["scorers"], context)  # fail early on a bad spec
        reg = self.registry
        dataset = reg.resolve(spec["dataset"], "dataset")
        cases = self._cases(dataset.ref, spec.get("limit"))
        variants = []
        for i, raw in enumerate(spec["variants"]):
            prompt = reg.resolve(raw["prompt"], "prompt")
            adapter = reg.resolve(raw["adapter"], "adapter") if raw.get("adapter") else None
            model = raw.get("model") or spec.get("model")
            # Which model runs is decided now, under the runner's rules (a server's: a
            # configured model only), so a refused prompt fails the start, not the run.
            self.runner.model_spec(reg.prompt(prompt.ref), model)
            variants.append(Variant(
                str(raw.get("name") or f"v{i + 1}"), prompt.ref,
                adapter.ref if adapter else None, model,
                {**(spec.get("params") or {}), **(raw.get("params") or {})}).to_dict())
        resolved = {**spec, "variants": variants, "dataset": dataset.ref,
                    "dataset_commit": dataset.commit,
                    "scorers": [_pinned(raw, s) for raw, s in zip(spec["scorers"], scorers,
                                                                     strict=True)]}
        return resolved, len(cases)

    # ---- executing ---------------------------------------------------------------------
    def execute(self, run_id: int, progress: Callable[[int], None] | None = None, *,
                lease: Callable[[], None] | None = None) -> dict[str, Any]:
        """Run every case not yet scored (so this also resumes), then write the report.

        ``lease`` (a queue worker's) is called before each batch; it raises
        :class:`~promptrev.evaluation.store.LeaseLost` when another worker took the run
        over, which stops this execution without marking the run failed.
        """
        run = self.store.run(run_id)
        spec = run["spec"]
        self.store.set_status(run_id, "running")
        try:
            cases = self._cases(spec["dataset"], spec.get("limit"))
            prices = price_table(spec.get("prices") or {})
            scorers = build_scorers(spec["scorers"],
                                    ScorerContext(self.runner, self.env, prices))
            batch = int(spec.get("batch_size") or DEFAULT_BATCH)
            for raw in spec["variants"]:
                variant = Variant(**raw)
                source = (self.registry.adapter_source(variant.adapter)  # once per variant
                          if variant.adapter else None)
                done = self.store.done_cases(run_id, variant.name)
                todo = [(i, c) for i, c in enumerate(cases) if c.id not in done]
                if progress and len(done):
                    progress(len(done))
                for start in range(0, len(todo), batch):
                    if lease:
                        lease()
                    chunk = todo[start:start + batch]
                    rows = self._run_chunk(run_id, variant, source, chunk, scorers, prices)
                    self.store.add_results(rows)  # stored as soon as scored
                    if progress:
                        progress(len(chunk))
            report = self.report(run_id)
        except LeaseLost:
            raise
        except Exception as exc:
            self.store.set_status(run_id, "failed", error=str(exc)[:2000])
            raise
        self.store.set_status(run_id, "done", report=report)
        return report

    def _run_chunk(self, run_id, variant: Variant, source, chunk, scorers, prices
                   ) -> list[dict[str, Any]]:
        results = self.runner.run_many(variant.prompt, [c.vars for _, c in chunk],
                                       adapter=source, model=variant.model,
                                       params=variant.params, on_invalid="record")
        inputs = [ScoreInput(c, r.text, r.generation) for (_, c), r in zip(
            chunk, results, strict=True)]
        scored = {s.name: s.score(inputs) for s in scorers}
        prompt = self.registry.prompt(variant.prompt)
        spec = self.runner.model_spec(prompt, variant.model)
        rows = []
        for k, ((index, case), result) in enumerate(zip(chunk, results, strict=True)):
            gen = result.generation
            rows.append({
                "run_id": run_id, "variant": variant.name, "case_id": case.id,
                "case_index": index, "output": result.text,
                "scores": {name: s[k].value for name, s in scored.items()},
                "details": {name: s[k].detail for name, s in scored.items() if s[k].detail},
                "prompt": variant.prompt, "adapter": variant.adapter,
                "backend": spec.backend, "model": spec.name,
                "prompt_tokens": result.usage.get("prompt_tokens", gen.prompt_tokens),
                "completion_tokens": result.usage.get("completion_tokens",
                                                      gen.completion_tokens),
                "latency_s": gen.latency_s, "latency_batch": gen.latency_batch,
                "cost": cost(gen, prices, variant.model),
                "error": result.error})
        return rows

    # ---- reporting ---------------------------------------------------------------------
    def report(self, run_id: int) -> dict[str, Any]:
        """Per-variant intervals, paired comparisons, verdicts, cost and break-even."""
        run = self.store.run(run_id)
        prices = price_table(run["spec"].get("prices") or {})
        scorers = build_scorers(run["spec"]["scorers"],
                                ScorerContext(self.runner, self.env, prices))
        meta = {s.name: {"binary": s.binary, "higher_is_better": s.higher_is_better,
                         "batch_shared": getattr(s, "batch_shared", False)}
                for s in scorers}
        return build_report(self.registry, run, self.store.results(run_id), meta)

    def _cases(self, dataset_ref: str, limit: int | None) -> list[Case]:
        text = self.registry.get(dataset_ref, "dataset").text
        cases = parse_dataset(text, f"datasets/{dataset_ref}.jsonl")
        if limit is not None:
            if not isinstance(limit, int) or limit < 1:
                raise InvalidRequest("'limit' must be a positive number of cases")
            cases = cases[:limit]
        return cases


def _pinned(raw: Any, built) -> Any:
    """A scorer spec with its judge prompt pinned to the exact version resolved now."""
    ref = getattr(built, "ref", None)
    if ref and isinstance(raw, dict) and isinstance(raw.get("judge"), dict):
        return {"judge": {**raw["judge"], "prompt": ref}}
    return raw

