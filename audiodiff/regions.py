"""Time regions and the audio side of edits: times in seconds or mm:ss.s, the command line's
START:END / LO:HI / alpha lists (ValueErrors naming the value), splicing kept samples back with an
equal-power crossfade, and the loop metrics (audiodiff.editing and audiodiff.edit use them)."""
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


def parse_region(value: str) -> tuple[str | None, str | None]:
    """--region START:END, each side seconds (1.5, -0.5), mm:ss.s (0:01.5) or empty (the clip's edge).
    The colon inside mm:ss is told from the separator by counting: 0:01:0:02 -> (0:01, 0:02)."""
    parts = value.split(":")
    if len(parts) == 2:
        a, b = parts
    elif len(parts) == 4:
        a, b = ":".join(parts[:2]), ":".join(parts[2:])
    elif len(parts) == 3:  # one side is mm:ss
        a, b = ":".join(parts[:2]), parts[2]
        if not _is_time(a):
            a, b = parts[0], ":".join(parts[1:])
    else:
        raise ValueError(f"--region {value!r} is not START:END (seconds or mm:ss.s, e.g. 0.3:0.5 or -0:00.2:)")
    for side in (a, b):
        if side and not _is_time(side):
            raise ValueError(f"--region {value!r}: {side!r} is not seconds or mm:ss.s")
    return a or None, b or None


def _is_time(text: str) -> bool:
    try:
        parse_time(text, 0.0)
        return True
    except ValueError:
        return False


def parse_bins(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    lo, sep, hi = value.partition(":")
    try:
        return int(lo), int(hi)
    except ValueError:
        raise ValueError(f"--bins {value!r} is not LO:HI (whole mel-bin numbers, e.g. 0:20)") from None


def parse_alphas(value: str) -> list[float]:
    try:
        alphas = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--alphas {value!r} is not a comma-separated list of numbers") from None
    if not alphas or not all(0 <= v <= 1 for v in alphas):
        raise ValueError(f"--alphas {value!r} must be numbers from 0 (A) to 1 (B)")
    return alphas
