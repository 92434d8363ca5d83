"""``promptrev run`` and ``promptrev finetune``: execute and train from a terminal."""

from __future__ import annotations

import sys

import click

from .main import Context, emit_json, main, parse_vars, pass_ctx


def runner_for(ctx: Context, reg):
    """A runner on ``reg`` with the configured models (PROMPTREV_MODELS).

    This is the user's own machine: a prompt's own ``base_url``, ``api_key`` and local
    model path are used, and ``${env:NAME}`` reads the user's environment (only the names
    in PROMPTREV_ALLOW_ENV when that is set).
    """
    from promptrev.runner.base import model_specs
    from promptrev.runner.execute import Runner
    from promptrev.runner.trust import Trust

    settings = ctx.settings
    models = model_specs(settings.configured_models(), settings.env)
    return Runner(reg, env=settings.env, models=models,
                  trust=Trust.local(settings.allow_env))


@main.command()
@click.argument("ref")
@click.option("--var", "pairs", multiple=True, help="KEY=VALUE, or KEY=@FILE.")
@click.option("--vars", "vars_file", type=click.Path(exists=True), help="JSON object file.")
@click.option("--sample", is_flag=True, help="Use the prompt's sample values as defaults.")
@click.option("--adapter", default=None, help="Adapter reference, e.g. support/tone@production.")
@click.option("--model", default=None, help="A configured model (PROMPTREV_MODELS) to use "
              "instead of the one in the prompt's front matter.")
@click.option("--max-tokens", type=int, default=None)
@click.option("--temperature", type=float, default=None)
@click.option("--stream", is_flag=True, help="Print the answer as it is generated.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def run(ctx: Context, ref: str, pairs: tuple[str, ...], vars_file: str | None, sample: bool,
        adapter: str | None, model: str | None, max_tokens: int | None,
        temperature: float | None, stream: bool, as_json: bool) -> None:
    """Run a prompt version with the model its front matter names and print the answer."""
    params = {"max_tokens": max_tokens, "temperature": temperature}
    with ctx.open() as reg:
        values = parse_vars(pairs, vars_file)
        if sample:
            values = {**reg.prompt(ref).sample(), **values}
        runner = runner_for(ctx, reg)
        if stream and not as_json:
            prompt, request, _ = runner.prepare(ref, values, adapter=adapter, params=params)
            for piece in runner.stream(request, runner.model_spec(prompt, model)):
                if not isinstance(piece, str):  # a piece of a tool call
                    piece = (f"\n[tool call {piece.name}] " if piece.name is not None
                             else "") + piece.arguments
                click.echo(piece, nl=False)
            click.echo()
            return
        result = runner.run(ref, values, adapter=adapter, model=model, params=params)
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(result.text)
    usage = result.usage
    click.secho(f"[{result.ref}  {usage['prompt_tokens']} in / {usage['completion_tokens']} "
                f"out tokens  {result.generation.latency_s:.2f}s]", fg="bright_black", err=True)


@main.command()
@click.option("--dataset", required=True, help="Dataset reference, e.g. sentiment@2.")
@click.option("--model", "model_path", required=True,
              help="Base model: a local transformers folder, or a configured model name.")
@click.option("--name", required=True, help="Adapter name to push the result to.")
@click.option("--method", type=click.Choice(["lora", "prompt_tuning"]), default="lora",
              show_default=True)
@click.option("--prompt", default=None, help="Prompt reference that formats each case.")
@click.option("--rank", type=int, default=8, show_default=True)
@click.option("--alpha", type=int, default=16, show_default=True)
@click.option("--virtual-tokens", type=int, default=8, show_default=True)
@click.option("--epochs", type=float, default=3.0, show_default=True)
@click.option("--max-steps", type=int, default=-1)
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--validation-split", type=float, default=0.2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-m", "--message", default=None)
@pass_ctx
def finetune(ctx: Context, dataset: str, model_path: str, name: str, method: str,
             prompt: str | None, rank: int, alpha: int, virtual_tokens: int, epochs: float,
             max_steps: int, lr: float, batch_size: int, validation_split: float, seed: int,
             message: str | None) -> None:
    """Train a LoRA or soft prompt on a dataset version; push it as a new adapter version."""
    from promptrev.runner.finetune import FinetuneConfig
    from promptrev.runner.finetune import finetune as train

    config = FinetuneConfig(method=method, rank=rank, alpha=alpha,
                            num_virtual_tokens=virtual_tokens, epochs=epochs,
                            max_steps=max_steps, learning_rate=lr, batch_size=batch_size,
                            validation_split=validation_split, seed=seed)
    with ctx.open() as reg:
        runner = runner_for(ctx, reg)
        path = runner.models[model_path].name if model_path in runner.models else model_path
        version = train(reg, dataset=dataset, model_path=path, name=name, config=config,
                        prompt=prompt, author=ctx.author, message=message,
                        progress=sys.stderr.isatty())
        card = reg.adapter(version.ref).card
    training = card["training"]
    click.echo(f"{version.ref}: {training['steps']} steps in {training['train_seconds']}s, "
               f"validation loss {training['validation_loss']}")


@main.command("models")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def models_command(ctx: Context, as_json: bool) -> None:
    """List the configured models (PROMPTREV_MODELS) and whether each can answer.

    Exits 1 when none is configured or none answers.
    """
    import os

    from promptrev.runner.base import model_specs
    from promptrev.runner.probe import probe

    settings = ctx.settings
    specs = model_specs(settings.configured_models(), settings.env)
    found = [probe(name, spec) for name, spec in sorted(specs.items())]
    key = bool(settings.env.get("OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY"))
    if as_json:
        emit_json({"models": found, "models_file": settings.models_file,
                   "openai_api_key": key})
    else:
        if not found:
            click.echo("no models configured: write a models file and set PROMPTREV_MODELS "
                       "to its path (README: 'Your first run on a model')")
        for item in found:
            mark = click.style("ok  ", fg="green") if item["ok"] else click.style(
                "FAIL", fg="red", bold=True)
            click.echo(f"{mark} {item['name']:<16} {item['backend']:<7} {item['model']}"
                       f"  ({item['where']})\n     {item['status']}")
        click.echo(f"OPENAI_API_KEY is {'set' if key else 'not set'}: prompts whose model "
                   "runs on OpenAI's API (type: openai, no base_url) "
                   f"{'use it' if key else 'cannot run'}")
    if not any(item["ok"] for item in found):
        sys.exit(1)
