"""Parameter count and forward FLOPs of each U-Net preset at its natural input size.

    python benchmarks/net_report.py [--json PATH]

Prints a markdown table. Nets are built on the meta device (shapes only), so the
report takes seconds and needs neither a GPU nor the weights' memory. When
``diffusers`` is installed (``pip install -e .[bench]``) the peer it is sized
against, the audio-diffusion UNet2DModel, is counted the same way in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from audiodiff.nets.unet import PRESET_INPUTS, PRESETS, flop_counter, forward_flops, from_preset

PEER_NAME = "diffusers UNet2DModel (teticio/audio-diffusion-256)"


def preset_rows() -> list[dict]:
    rows = []
    for name, kwargs in PRESETS.items():
        n_mels, n_frames = PRESET_INPUTS[name]
        with torch.device("meta"):
            net = from_preset(name)
        rows.append(
            dict(
                name=name, dims=kwargs["dims"], n_mels=n_mels, n_frames=n_frames,
                params=net.num_parameters(), flops=forward_flops(net, n_frames, n_mels=n_mels),
                kwargs={k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
            )
        )
    return rows


def recipe_rows() -> list[dict]:
    """Each shipped recipes/net/*.yaml as an experiment composes it (80 mels, 10 classes, 87 frames)."""
    from omegaconf import OmegaConf

    from audiodiff.config import RECIPES, compose_config, instantiate

    rows = []
    for path in sorted((RECIPES / "net").glob("*.yaml")):
        cfg = compose_config([f"net={path.stem}", "data.dir=unused", "data.num_classes=10"])
        kwargs = OmegaConf.to_container(cfg.net)
        with torch.device("meta"):
            net = instantiate(cfg.net)
        n_frames = cfg.data.segment_frames
        rows.append(dict(
            name=f"recipes/net/{path.stem}", dims=kwargs["dims"], n_mels=kwargs["n_mels"], n_frames=n_frames,
            params=net.num_parameters(), flops=forward_flops(net, n_frames, n_mels=kwargs["n_mels"]),
            kwargs={k: v for k, v in kwargs.items() if k != "_target_"}))
    return rows


def peer_row() -> dict | None:
    """The diffusers audio-diffusion-256 U-Net (its published config), or None without diffusers."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        return None
    config = dict(
        sample_size=256, in_channels=1, out_channels=1, layers_per_block=2,
        block_out_channels=(128, 128, 256, 256, 512, 512),
        down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
    )
    with torch.device("meta"):
        net = UNet2DModel(**config)
        x, t = torch.zeros(1, 1, 256, 256), torch.zeros(1)
    with torch.no_grad(), flop_counter() as counter:
        net(x, t)
    return dict(
        name=PEER_NAME, dims=2, n_mels=256, n_frames=256,
        params=sum(p.numel() for p in net.parameters()), flops=counter.get_total_flops(),
        kwargs={k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
    )


def markdown(rows: list[dict]) -> str:
    lines = [
        "| net | dims | input (mels x frames) | channels | blocks/level | attention levels | params (M) "
        "| GFLOPs/forward/sample |",
        "|---|---|---|---|---|---|---:|---:|",
    ]
    for r in rows:
        k = r["kwargs"]
        if "base_channels" in k:
            widths = ", ".join(str(k["base_channels"] * m) for m in k["channel_mults"])
            blocks, attention = k["num_res_blocks"], ", ".join(map(str, k["attention_levels"])) or "-"
        else:  # the diffusers peer
            widths = ", ".join(map(str, k["block_out_channels"]))
            blocks, attention = k["layers_per_block"], "4"
        lines.append(
            f"| {r['name']} | {r['dims']} | {r['n_mels']} x {r['n_frames']} | {widths} | {blocks} | "
            f"{attention} | {r['params'] / 1e6:.2f} | {r['flops'] / 1e9:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this path")
    args = parser.parse_args(argv)

    rows = preset_rows() + recipe_rows()
    peer = peer_row()
    if peer is not None:
        rows.append(peer)
    print(markdown(rows))
    print()
    print("FLOPs count a multiply-add as 2 (torch.utils.flop_counter; norms and activations excluded).")
    print("Every net also has attention in its middle block.")
    if peer is None:
        print(f"{PEER_NAME}: not counted (pip install diffusers to include it).")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(torch=torch.__version__, rows=rows), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
