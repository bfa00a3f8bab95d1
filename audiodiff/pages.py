"""The listening pages and spectrogram images that generate and edit write (open them straight from
disk: every link is relative, so a copied folder keeps working)."""
from __future__ import annotations

import html
from pathlib import Path


def save_mel_png(path: Path, mel, normalization: str = "minmax", shade=None) -> None:
    """A small spectrogram image (low frequencies at the bottom), without pyplot's global state;
    shade: frame spans [(start, end)] drawn as a translucent band (an edit's regenerated region)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2, 1.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    limits: dict = {"vmin": -1.0, "vmax": 1.0} if normalization == "minmax" else {}
    ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", interpolation="nearest", **limits)
    for a, b in shade or []:
        ax.axvspan(a - 0.5, b - 0.5, color="cyan", alpha=0.25, lw=0)
    ax.set_axis_off()
    fig.savefig(path, format="png")


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
