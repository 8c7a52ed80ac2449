"""Errors a user can act on: the CLI prints them as one line, never a traceback."""
from __future__ import annotations


class UserError(Exception):
    """Bad input or state the user can fix. The message says what was wrong and what to do."""
