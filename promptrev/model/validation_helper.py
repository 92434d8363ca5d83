"""Entry point of a validation helper process (``python -m promptrev.model.validation_helper``).

A module of its own because ``promptrev`` itself imports :mod:`promptrev.validation`,
and running an already-imported module with ``-m`` is what runpy warns about.
"""

from promptrev.model.validation import serve

if __name__ == "__main__":
    serve()
