"""The model: what promptrev's artifacts are, independent of where they are stored.

Names and references, the prompt format (Prompty), datasets, adapter cards, the Git LFS
pointer format, labels, diffs, validation and the registry of artifact kinds. It imports
nothing of promptrev but :mod:`promptrev.errors`: storage, the porcelain and the edges all
build on it.
"""

# Template engines beyond prompty.py's own register themselves on import, before any prompt
# is parsed (validation helper processes included).
from . import handlebars  # noqa: E402,F401
