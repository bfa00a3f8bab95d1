"""Raw networks: the diffusion U-Net (1D or 2D) and its shared blocks."""

from .unet import PRESET_INPUTS, PRESETS, UNet, flop_counter, forward_flops, from_preset

__all__ = ["PRESETS", "PRESET_INPUTS", "UNet", "flop_counter", "forward_flops", "from_preset"]
