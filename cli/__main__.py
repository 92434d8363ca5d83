"""``python -m cli``: the same as the ``promptrev`` command."""

from cli.main import main

main()
