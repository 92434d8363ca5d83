"""The ``promptrev`` command line: parse, call the core, print."""
