"""Time regions and the audio side of edits: times in seconds or mm:ss.s, splicing kept samples back
with an equal-power crossfade, and the loop metrics (audiodiff.editing uses them)."""
from __future__ import annotations

import math
import re

import torch

from .diffusion.editing import seam_ratio

_TIME = re.compile(r"^(-)?(?:(\d+):)?(\d+(?:\.\d*)?|\.\d+)$")


def parse_time(value, total: float) -> float:
    """Seconds from a number or "mm:ss.s" text; negative counts from the end (total seconds)."""
    if isinstance(value, str):
        m = _TIME.match(value.strip())
        if not m:
            raise ValueError(f"time {value!r} is not seconds or mm:ss.s (e.g. 1.5, 0:01.5, -0:00.5)")
        seconds = int(m.group(2) or 0) * 60 + float(m.group(3))
        seconds = -seconds if m.group(1) else seconds
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"time {value!r} is not a number of seconds")
    else:
        seconds = float(value)
    return total + seconds if seconds < 0 or (isinstance(value, str) and value.strip().startswith("-")) else seconds


def crossfade_splice(kept: torch.Tensor, new: torch.Tensor, spans: list[tuple[int, int]], fade: int) -> torch.Tensor:
    """kept outside the sample spans, new inside them, with an equal-power crossfade of `fade` samples
    just outside each span (so kept samples farther than `fade` from a span are bit-exact). [B, T] each."""
    out = kept.clone()
    length = kept.shape[-1]
    inside = torch.zeros(length, dtype=torch.bool)
    for a, b in spans:
        inside[max(0, a):min(length, b)] = True
    out[:, inside] = new[:, inside]
    if fade <= 0:
        return out
    ramp = torch.sin(0.5 * math.pi * (torch.arange(1, fade + 1, dtype=torch.float32) / (fade + 1)))  # 0 -> 1
    for a, b in spans:
        for lo, hi, up in ((a - fade, a, True), (b, b + fade, False)):  # fade in before, out after
            lo_c, hi_c = max(0, lo), min(length, hi)
            if lo_c >= hi_c:
                continue
            w = (ramp if up else ramp.flip(0))[lo_c - lo:hi_c - lo]
            seg = slice(lo_c, hi_c)
            mix = torch.sqrt(1 - w ** 2) * kept[:, seg] + w * new[:, seg]
            out[:, seg] = torch.where(inside[seg], out[:, seg], mix)
    return out


def loop_metrics(mel: torch.Tensor, audio: torch.Tensor) -> dict:
    """loop_seam_ratio: the mel step from the last frame to the first over the median step inside (1: seamless);
    wrap_click: |x[0] - x[-1]| over the 99th percentile of |x[i+1] - x[i]| (<= 1: no click), worst clip."""
    d = audio.diff(dim=-1).abs()
    click = (audio[:, 0] - audio[:, -1]).abs() / torch.quantile(d, 0.99, dim=-1).clamp(min=1e-9)
    return {"loop_seam_ratio": seam_ratio(mel, [], wrap=True), "wrap_click": float(click.max())}
