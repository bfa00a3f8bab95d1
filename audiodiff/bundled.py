"""Models that ship inside the package, so a fresh install generates with no network and no training.

Each is package data under audiodiff/models/<name>/: a model directory (config.yaml and
model.safetensors, float16) with its card (MODEL_CARD.md: the command that made it, the data, the
metrics, the sha256 of the weights, the licences) and, for class-conditional models, the evaluation
classifier it was scored with (classifier.pt). `AudioDiffusionPipeline.from_pretrained("digits")`
and `python -m audiodiff.generate` (when no trained run is in reach) load them by name. A model's
config.yaml may hold `generate:`, the settings its card measured (num, labels, sampler, steps,
guidance, guidance_interval, vocoder), which generate uses for every flag not given.
Standard library only.
"""
from __future__ import annotations

import re
from pathlib import Path

from .atomic import file_sha256

MODELS = Path(__file__).resolve().parent / "models"
CARD = "MODEL_CARD.md"
WEIGHTS = "model.safetensors"


def bundled_names() -> list[str]:
    """The names of the bundled models, sorted."""
    if not MODELS.is_dir():
        return []
    return sorted(p.name for p in MODELS.iterdir() if (p / "config.yaml").is_file() and (p / WEIGHTS).is_file())


def bundled_path(name: str) -> Path | None:
    """The model directory of a bundled model, or None when `name` is not one."""
    return MODELS / name if name in bundled_names() else None


def card_sha256(name: str) -> str | None:
    """The sha256 of model.safetensors that the model's card states (a line `sha256: <64 hex digits>`)."""
    path = MODELS / name / CARD
    if not path.is_file():
        return None
    m = re.search(r"sha256[^0-9a-f]*([0-9a-f]{64})", path.read_text())
    return m.group(1) if m else None


def weights_sha256(name: str) -> str:
    """The sha256 of the bundled model's weights file, as it is on disk now."""
    return file_sha256(MODELS / name / WEIGHTS)
