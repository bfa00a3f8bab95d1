"""The listening pages and spectrogram images that generate and edit write (open them straight from
disk: every link is relative, so a copied folder keeps working)."""
from __future__ import annotations

import html
import math
from pathlib import Path

from .audio import AudioConfig


def mel_figure(mel, audio_config: AudioConfig, shade=None, title: str | None = None):
    """A matplotlib Figure of a normalised log-mel [n_mels, F] (numpy or tensor), without pyplot's global
    state: time in seconds, frequency in Hz on the mel scale (ticks at the filters' centres), and a colour
    bar of the level in dB (20 log10 of the mel magnitude); shade: frame spans [(start, end)] drawn as
    translucent bands (an edit's regenerated region)."""
    import librosa
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    c = audio_config
    mel = np.asarray(mel, dtype=np.float64)
    log_min = math.log(c.log_floor)
    log_mel = mel if c.normalization == "none" else (mel + 1.0) * 0.5 * (c.log_max - log_min) + log_min
    db = 20.0 / math.log(10.0) * log_mel  # 20 log10(magnitude)
    seconds = mel.shape[-1] * c.hop_length / c.sample_rate
    fig = Figure(figsize=(4.8, 2.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                      extent=(0.0, seconds, -0.5, c.n_mels - 0.5),
                      vmin=20.0 / math.log(10.0) * log_min, vmax=20.0 / math.log(10.0) * c.log_max)
    centres = librosa.mel_frequencies(n_mels=c.n_mels + 2, fmin=c.fmin, fmax=c.fmax)[1:-1]
    ticks = [f for f in (100, 500, 1000, 2000, 4000, 8000, 16000) if centres[0] <= f <= centres[-1]]
    ax.set_yticks(np.interp(ticks, centres, np.arange(c.n_mels)))
    ax.set_yticklabels([f"{f / 1000:g}k" if f >= 1000 else str(f) for f in ticks])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz, mel scale)")
    frame = c.hop_length / c.sample_rate
    for a, b in shade or []:
        ax.axvspan(a * frame, b * frame, color="cyan", alpha=0.25, lw=0)
    if title:
        ax.set_title(title, fontsize=9)
    bar = fig.colorbar(image, ax=ax, pad=0.02)
    bar.set_label("level (dB)")
    fig.tight_layout()
    return fig


def save_mel_png(path: Path, mel, audio_config: AudioConfig, shade=None, title: str | None = None) -> None:
    """mel_figure as a PNG file."""
    mel_figure(mel, audio_config, shade, title).savefig(path, format="png")


def html_page(path: Path, title: str, facts: dict, columns: list[str], rows: list[str], footer: str,
              note: str = "") -> None:
    """A page: the run's facts as a list, then a table of `rows` (ready <tr> markup) under `columns`."""
    esc = html.escape
    items = "\n".join(f"<li><b>{esc(k)}</b>: <code>{esc(str(v))}</code></li>" for k, v in facts.items())
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "\n".join(rows)
    path.write_text(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:middle}} img{{display:block}}</style></head>
<body><h1>{esc(title)}</h1>
<ul>
{items}
</ul>
{note}
<table>
<tr>{head}</tr>
{body}
</table>
<p>{footer}</p>
</body></html>
""")
