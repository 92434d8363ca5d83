"""promptrev: a prompt registry and version-control server on Git."""

from .artifacts import LabelEvent, Snapshot, Version
from .errors import PromptrevError
from .prompty import Message, Prompt, parse_prompt
from .references import Reference, parse_reference
from .registry import ArtifactSummary, Registry, Transaction

__all__ = [
    "ArtifactSummary", "LabelEvent", "Message", "Prompt", "PromptrevError", "Reference",
    "Registry", "Snapshot", "Transaction", "Version", "parse_prompt", "parse_reference",
]
__version__ = "0.1.0"
