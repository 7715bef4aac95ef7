"""`python -m attnflow`: the `attnflow` command line."""

from .cli import _entry

_entry()
