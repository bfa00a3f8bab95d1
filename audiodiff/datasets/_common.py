"""What the dataset manifest builders (sc09, ljspeech, nsynth, folder) share: the error type,
atomic writes of jsonl/json, the integer check and the one-line-error argument parser.

Standard library only: building manifests reads file trees and headers, never loads torch.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


class DatasetError(Exception):
    """A one-line, user-facing reason the manifests cannot be made (CLI: exit 2)."""


def is_count(value, low: int = 0) -> bool:
    """True for a plain int >= low (a bool is not a count, although Python says it is an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def write_atomic(path: Path, text: str) -> None:
    """Write text (UTF-8) so that a reader sees the old file or the whole new one, never a part."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_jsonl(path: Path, rows) -> None:
    """One JSON object a line (non-ASCII kept as is), written atomically."""
    write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_json(path: Path, obj) -> None:
    """An indented JSON file (labels.json, info.json), written atomically."""
    write_atomic(path, json.dumps(obj, indent=1) + "\n")


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit 2 (argparse prints the whole usage first).

    `parser.error(str(e))` is also how main reports a DatasetError: the same line, the same status.
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")
