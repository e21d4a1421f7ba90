"""User-facing errors: one clear line that names the fix, exit code 2."""

from __future__ import annotations

import contextlib
import sys


class UserError(Exception):
    """Bad input from the user (unknown model, missing file, malformed config, ...).

    The message is one line that says what is wrong and how to fix it. Command-line entry
    points catch it, print ``error: <message>`` to stderr and exit with code 2.
    """


@contextlib.contextmanager
def cli_errors():
    """Turn a :class:`UserError` raised inside the block into a one-line message and exit 2."""
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
