"""What the pipeline's calls return: AudioOutput (generation and every edit) and EncodeOutput (encode)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class AudioOutput:
    """What a pipeline call returns. audio: float32 [B, T] on the CPU, in [-1, 1] (roughly).

    mel is the sampled normalised log-mel [B, n_mels, F] (CPU, float32) when return_mel=True.
    seeds[i] (and labels[i], None when unconditional) regenerate clip i on its own.
    Edits (audiodiff.editing) also fill: mask, True where the mel was generated ([B, F] time or
    [B, n_mels, F] time-frequency); edit, a dict of the operation, its snapped regions, network
    evaluations and metrics; noise, the starting noise x_T that was used (sampler state units).
    """

    audio: torch.Tensor
    sample_rate: int
    seeds: list[int]
    labels: list[int] | None = None
    mel: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    edit: dict[str, Any] = field(default_factory=dict)
    noise: torch.Tensor | None = None

    @property
    def seconds(self) -> float:
        """Duration of one clip in seconds."""
        return self.audio.shape[-1] / self.sample_rate


@dataclass
class EncodeOutput:
    """What AudioDiffusionPipeline.encode returns: noise [B, n_mels, F] (sampler state units), whose
    deterministic DDIM decoding (same steps, labels, guidance) gives the input back to
    roundtrip_error[i] (relative L2 in the normalised mel), plus the settings that decode needs."""

    noise: torch.Tensor
    roundtrip_error: list[float]
    steps: int
    labels: list[int] | None = None
    guidance_scale: float = 1.0
    guidance_interval: tuple[float, float] | None = None
    refine: int = 3
