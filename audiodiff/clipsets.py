"""Sets of clips to score: normalised log-mels in one audio config, with their labels.

`read_prepared_split` loads a prepared folder's cached mels (evaluate's references and the
classifier's data); evaluate builds the others from audio folders and from a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio import AudioConfig
from .cli import UsageError, one_line
from .manifest import check_prepared_audio, read_prepared


@dataclass
class ClipSet:
    """Clips to score: normalised log-mels [n_mels, F] in one audio config, with labels (-1 unknown)."""

    name: str
    mels: list
    labels: np.ndarray
    audio_config: AudioConfig
    note: str = ""
    extra: dict = field(default_factory=dict)


def read_prepared_split(prepared_dir: str | os.PathLike, name: str, audio_config: AudioConfig | None = None) -> ClipSet:
    """The cached mels and labels of a folder written by audiodiff.prepare. When `audio_config` is
    given, the folder's must equal it (else UsageError naming both values)."""
    d = Path(prepared_dir)
    try:
        entries, cache = read_prepared(d)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(one_line(err)) from None
    if not entries:
        raise UsageError(f"{d}/manifest.jsonl lists no clips; see {d}/skipped.tsv")
    config = AudioConfig.from_dict(cache["audio_config"])
    if audio_config is not None:
        check_prepared_audio(d, config, audio_config, whose="the classifier's",
                             fix="prepare it with the classifier's audio config (python -m audiodiff.prepare "
                                 "--audio-config)")
    mels, labels = [], []
    for e in entries:
        try:
            arr = np.load(d / e["feats"])
        except (OSError, ValueError) as err:
            raise UsageError(f"{d / e['feats']}: cannot read cached features ({err}); re-run "
                                "python -m audiodiff.prepare") from None
        mels.append(torch.from_numpy(arr.astype(np.float32)).T.contiguous())  # [n_mels, F]
        label = e.get("label", -1)
        labels.append(int(label) if isinstance(label, int) else -1)
    return ClipSet(name, mels, np.array(labels, dtype=np.int64), config)
