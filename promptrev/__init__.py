"""promptrev: a prompt registry and version-control server on Git."""

from promptrev.model.artifacts import LabelEvent, Snapshot, Version
from promptrev.model.prompty import Message, Prompt, parse_prompt
from promptrev.model.references import Reference, parse_reference

# Storage records events in its outbox without knowing who listens; the features that
# listen subscribe when imported. Importing them here, at the root every import of
# promptrev goes through, means any registry (API, CLI, server, a script) enqueues webhook
# deliveries, while storage and the porcelain import nothing above them.
from . import webhooks  # noqa: F401 (subscribes to the event outbox)
from .errors import PromptrevError
from .registry import ArtifactSummary, Registry, Transaction

__all__ = [
    "ArtifactSummary", "Client", "LabelEvent", "Message", "Prompt", "PromptrevError",
    "Reference", "Registry", "RemoteVersion", "Snapshot", "Transaction", "Version",
    "parse_prompt", "parse_reference",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The HTTP client (and httpx) load only when an application asks for them.
    if name in ("Client", "RemoteVersion"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'promptrev' has no attribute {name!r}")
