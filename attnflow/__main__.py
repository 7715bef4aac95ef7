"""`python -m attnflow`: the `attnflow` command line."""

from .cli import entry

entry()
