"""The model: what promptrev's artifacts are, independent of where they are stored.

Names and references, the prompt format (Prompty), datasets, labels, diffs, validation and
the registry of artifact kinds. It imports nothing of promptrev but :mod:`promptrev.errors`
(and, until the adapter cards move here, :mod:`promptrev.adapters`): storage, the porcelain
and the edges all build on it.
"""
