"""The runner: execute a prompt version (optionally on an adapter) with a backend.

Backends are registered by name (``@backend("hf")``, ``@backend("openai")``) and imported
lazily, so nothing here loads torch, transformers or openai until a backend is used.
"""

from promptrev.model.adapter_cards import AdapterSource

from .base import (
    Backend,
    Generation,
    GenerationRequest,
    ModelSpec,
    backend,
    get_backend,
)
from .trust import Trust

__all__ = ["AdapterSource", "Backend", "Generation", "GenerationRequest", "ModelSpec",
           "Trust", "backend", "get_backend"]
