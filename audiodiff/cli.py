"""What every command line shares: the user-mistake error and the one-line argument parser.

A face (python -m audiodiff.<command>) prints a UsageError as one line and exits 2; the library
raises it (or a ValueError subclass of its own) for a value a user gave. Standard library only.
"""

from __future__ import annotations

import argparse


class UsageError(ValueError):
    """A user's mistake in arguments, config or input paths: printed as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose mistakes raise UsageError("<message> (see --help)") instead of printing the
    usage block and exiting: the face prints one line and exits 2."""

    def error(self, message: str):
        raise UsageError(f"{message} (see --help)")


def one_line(text) -> str:
    """The first line of a message (or of an exception's text), or its type name when empty."""
    if isinstance(text, BaseException) and not str(text).strip():
        return type(text).__name__
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""
