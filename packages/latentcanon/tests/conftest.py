"""Test doubles for latentcanon: a tiny group and a canonicalizer with a fixed or learned element.

`ColumnScale` is the one-parameter group acting on `(B, C, H, W)` by a gain that grows across the columns,
$S(x; p)[..., w] = x[..., w] \\cdot e^{p u_w}$ with $u_w$ = w / (W - 1): a group (parameters add), not an
involution (so $S$ and $S^{-1}$ cannot be swapped unnoticed), not a token permutation (so ViT blocks are not
equivariant to it), direction-dependent (so H and W cannot be swapped unnoticed), differentiable, defined at
every resolution, and exactly the identity at p = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn


class ColumnScale:
    """x[..., w] * exp(p * w / (W - 1)); params `(B, 1)`."""

    param_shape = (1,)

    def identity_params(self, batch: int, *, device=None, dtype=None) -> torch.Tensor:
        return torch.zeros(batch, 1, device=device, dtype=dtype)

    @staticmethod
    def _gain(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(0, 1, x.shape[-1], device=x.device, dtype=x.dtype)
        return torch.exp(params.reshape(-1, 1, 1, 1) * ramp)

    def act(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return x * self._gain(x, params)

    def act_inverse(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return x * self._gain(x, -params)

    def element(self, params: torch.Tensor) -> torch.Tensor:
        return params


@dataclass
class Result:
    params: torch.Tensor
    element: torch.Tensor
    canonical: torch.Tensor


class LinearCanonicalizer(nn.Module):
    """params = offset + Linear(mean over H, W of x): the identity with the default zero initialisation."""

    def __init__(self, in_channels: int, offset: float = 0.0, init_std: float = 0.0) -> None:
        super().__init__()
        self.group = ColumnScale()
        self.head = nn.Linear(in_channels, 1)
        nn.init.normal_(self.head.weight, std=init_std) if init_std else nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.offset = offset
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> Result:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} channels, got {tuple(x.shape)}")
        params = self.head(x.mean(dim=(2, 3))) + self.offset
        return Result(params=params, element=params, canonical=self.group.act_inverse(x, params))


def factory(offset: float = 0.0, init_std: float = 0.0):
    return lambda in_channels: LinearCanonicalizer(in_channels, offset=offset, init_std=init_std)


@pytest.fixture
def canon_factory():
    """`canon_factory(offset=0.0, init_std=0.0)` -> a factory in_channels -> LinearCanonicalizer."""
    return factory


@pytest.fixture
def column_scale():
    return ColumnScale()
