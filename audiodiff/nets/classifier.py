"""A small ResNeXt-style 2D CNN that classifies normalised log-mels [B, n_mels, F].

It plays the part of the SC09 classifier in DiffWave (Kong et al. 2021, Table 2) and SaShiMi
(Goel et al. 2022): its softmax gives IS, mIS and AM, its penultimate embedding gives FID and
NDB/K (audiodiff.evaluate). Trained by audiodiff.train_classifier.

    net = MelClassifier(n_mels=80, num_classes=10)
    logits = net(mel)            # [B, num_classes]
    emb = net.features(mel)      # [B, net.embed_dim], what FID is computed on

Layout: input BatchNorm, a stride-2 3x3 stem, then `len(blocks)` stages of aggregated-residual
blocks (ResNeXt, Xie et al. 2017: 1x1 -> grouped 3x3 -> 1x1, plus the identity), each stage after
the first halving both axes and doubling the channels, then global average pooling over mel and
time (so any number of frames works) and a linear head. The default (width 32, 4 stages) has
279k parameters and a 256-dim embedding.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn

CLASSIFIER_FORMAT = "audiodiff-classifier"
CLASSIFIER_FORMAT_VERSION = 1


class ResNeXtBlock(nn.Module):
    """Aggregated residual block (Xie et al. 2017, Fig. 3c): 1x1, grouped 3x3, 1x1, plus shortcut."""

    def __init__(self, channels_in: int, channels_out: int, stride: int, cardinality: int) -> None:
        super().__init__()
        groups = cardinality if channels_out % cardinality == 0 else 1
        self.body = nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 1, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels_out, channels_out, 3, stride=stride, padding=1, groups=groups, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels_out, channels_out, 1, bias=False),
            nn.BatchNorm2d(channels_out),
        )
        # Zero-init the last BN scale: each block starts as the identity (Goyal et al. 2017, sec. 5.1).
        nn.init.zeros_(cast(torch.Tensor, self.body[-1].weight))
        if stride != 1 or channels_in != channels_out:
            self.shortcut: nn.Module = nn.Sequential(nn.Conv2d(channels_in, channels_out, 1, stride=stride, bias=False),
                                                     nn.BatchNorm2d(channels_out))
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class MelClassifier(nn.Module):
    """Normalised log-mel [B, n_mels, F] -> class logits [B, num_classes].

    Args:
        n_mels: mel bins of the input.
        num_classes: output classes.
        width: channels of the stem and first stage; stage s has width * 2**s.
        blocks: ResNeXt blocks per stage (each stage starts with a stride-2 block).
        cardinality: groups of the 3x3 convolutions.
        dropout: before the linear head.
    """

    def __init__(self, n_mels: int = 80, num_classes: int = 10, width: int = 32, blocks=(1, 1, 1, 1),
                 cardinality: int = 8, dropout: float = 0.2) -> None:
        super().__init__()
        for name, value in (("n_mels", n_mels), ("num_classes", num_classes), ("width", width),
                            ("cardinality", cardinality)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MelClassifier: {name}={value!r} must be an integer >= 1")
        blocks = tuple(int(b) for b in blocks)
        if not blocks or any(b < 1 for b in blocks):
            raise ValueError(f"MelClassifier: blocks={blocks!r} must be a non-empty list of integers >= 1")
        if not 0 <= dropout < 1:
            raise ValueError(f"MelClassifier: dropout={dropout!r} must be in [0, 1)")
        self.config = {"n_mels": n_mels, "num_classes": num_classes, "width": width, "blocks": list(blocks),
                       "cardinality": cardinality, "dropout": float(dropout)}
        self.n_mels, self.num_classes = n_mels, num_classes
        # Input BatchNorm: the same net works for minmax ([-1, 1]) and unnormalised (log) mels.
        self.input_norm = nn.BatchNorm2d(1)
        # A stride-2 stem: at full resolution every activation is n_mels x F x width floats, and on a CPU
        # the first stage would cost more in memory traffic than the rest of the net in arithmetic.
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        layers, channels = [], width
        for stage, count in enumerate(blocks):
            out = width * 2 ** stage
            for i in range(count):
                stride = 2 if i == 0 and stage > 0 else 1  # the stem already halved both axes
                layers.append(ResNeXtBlock(channels, out, stride=stride, cardinality=cardinality))
                channels = out
        self.stages = nn.Sequential(*layers)
        self.embed_dim = channels
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_classes)

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding [B, embed_dim]: the globally average-pooled last stage (post-ReLU)."""
        if mel.dim() != 3 or mel.shape[1] != self.n_mels:
            raise ValueError(f"MelClassifier expects a mel [B, {self.n_mels}, F], got shape {tuple(mel.shape)}")
        x = self.input_norm(mel.unsqueeze(1).float())  # [B, 1, n_mels, F]
        x = self.stages(self.stem(x))  # [B, C, n_mels / 2**S, F / 2**S]
        return x.mean(dim=(2, 3))  # [B, C]

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(mel)))  # [B, num_classes]
