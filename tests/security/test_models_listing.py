"""``promptrev models`` prints where each configured model is: never a key.

A base URL may carry credentials (``https://user:secret@host/v1``, an Azure
``?api-key=...``); the listing printed it whole, so a key ended up in terminals, CI logs
and support tickets that paste the command's output.
"""

from __future__ import annotations

import json

SECRET = "sk-live-hunter2-0123456789"


def test_models_does_not_print_credentials_of_a_base_url(tmp_path, monkeypatch, cli) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(
        "local:\n  backend: openai\n  name: m\n"
        f"  base_url: http://bob:{SECRET}@127.0.0.1:1/v1?api-key={SECRET}\n"
        f"  api_key: {SECRET}\n")
    monkeypatch.setenv("PROMPTREV_MODELS", str(models))
    monkeypatch.setenv("PROMPTREV_REGISTRY", str(tmp_path / "reg"))
    cli("init")
    text = cli("models", ok=False).output
    listed = cli("models", "--json", ok=False).output
    assert SECRET not in text and SECRET not in listed
    assert "http://127.0.0.1:1/v1" in text
    assert json.loads(listed)["models"][0]["where"] == "http://127.0.0.1:1/v1"
