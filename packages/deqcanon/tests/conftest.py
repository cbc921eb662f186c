"""Fixtures shared by the deqcanon tests: toy templates and a tiny parameter network."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn


class TinyNet(nn.Module):
    """A small smooth parameter network for a one-parameter group: pooled input -> tanh -> `(B, 1)`."""

    def __init__(self, in_channels: int = 1, gain: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.linear = nn.Linear(16 * in_channels, 1)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(self.linear.weight.shape, generator=gen))
            self.linear.bias.copy_(0.1 * torch.randn(1, generator=gen))
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return self.gain * torch.tanh(self.linear(feats))


def make_templates(size: int = 24) -> torch.Tensor:
    """Three distinct centred shapes on a black background, `(3, 1, size, size)`."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    r = (xx**2 + yy**2).sqrt()
    disc = (r < 0.5).float()
    ring = ((r > 0.25) & (r < 0.55)).float()
    square = ((xx.abs() < 0.45) & (yy.abs() < 0.45)).float() * 0.8 + (r < 0.15).float() * 0.2
    return torch.stack([disc, ring, square])[:, None]


def smooth_image(
    batch: int, channels: int, h: int, w: int, *, seed: int = 0, dtype=torch.float32
) -> torch.Tensor:
    """Smooth random images (sums of a few sinusoids), so that warps are well resolved."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    out = torch.zeros(batch, channels, h, w)
    for _ in range(3):
        fx, fy, ph = (
            torch.rand(3, batch, channels, 1, 1, generator=gen)
            * torch.tensor([3.0, 3.0, 6.3])[:, None, None, None, None]
        )
        out = out + torch.sin(2 * math.pi * (fx * xx + fy * yy) + ph)
    return (out / 3).to(dtype)


@pytest.fixture
def tiny_net():
    return TinyNet


@pytest.fixture
def templates():
    return make_templates


@pytest.fixture
def smooth():
    return smooth_image
