"""``python -m cli``: the same as the ``promptrev`` command."""

from promptrev.cli.main import main

main()
