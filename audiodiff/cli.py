"""What every command line shares: the user-mistake error and the one-line argument parser.

A face (python -m audiodiff.<command>) prints a UsageError as one line and exits 2; the library
raises it (or a ValueError subclass of its own) for a value a user gave. run_face is every face's
exit-status ladder. Standard library and install.InstallError only.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from .install import InstallError


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


def run_face(prog: str, body: Callable[[], object], not_written: str = "") -> int:
    """Call body() (a face's work; it returns its exit status, or None for 0) and turn what a user can cause
    into one line on stderr ("PROG: error: ...", as argparse words it): a UsageError exits 2; an InstallError
    (torch cannot load) and an OSError (a full disk, a read-only folder, a port taken) exit 1; Ctrl-C exits
    130. not_written ends the OSError and Ctrl-C lines (e.g. "--out was not written": what the user is told
    of their output)."""
    tail = f"; {not_written}" if not_written else ""
    try:
        status = body()
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except InstallError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted{tail}", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"{prog}: {one_line(e)}{tail}", file=sys.stderr)
        return 1
    return 0 if status is None else int(status)  # type: ignore[call-overload]
