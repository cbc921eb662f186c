"""The equivariant form's S with the exact inverse or the paper's approximation (``inverse=``)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import timm
import torch
from torch import nn

import deqcanon
import latentcanon
import monowarp


@dataclass
class _Result:
    params: torch.Tensor
    element: object
    canonical: torch.Tensor


class _FixedScale(nn.Module):
    """A canonicalizer that always returns the same monotone scaling (zeros: the identity)."""

    def __init__(self, in_channels: int, params: torch.Tensor) -> None:
        super().__init__()
        self.group = deqcanon.MonotoneScaleGroup(grid=(4, 4))
        self.register_buffer("fixed", params)

    def forward(self, x: torch.Tensor) -> _Result:
        p = self.fixed.expand(x.shape[0], -1)
        return _Result(params=p, element=self.group.element(p), canonical=self.group.act_inverse(x, p))


def _adapted(params: torch.Tensor, inverse: str) -> latentcanon.LatentCanonicalizedModel:
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=0).eval()
    return latentcanon.adapt(
        model,
        layers=[1],
        mode="equivariant",
        canonicalizer=lambda c: _FixedScale(c, params),
        input_size=(3, 64, 64),
        inverse=inverse,
    )


def test_identity_params_give_the_same_output():
    x = torch.rand(2, 3, 64, 64)
    zeros = torch.zeros(1, 40)
    with torch.no_grad():
        exact = _adapted(zeros, "exact")(x)
        approx = _adapted(zeros, "approximate")(x)
    assert torch.allclose(exact, approx, atol=1e-5)


def test_approximate_inverse_changes_a_warped_output_and_is_switchable():
    x = torch.rand(2, 3, 64, 64)
    params = 1.5 * torch.randn(1, 40, generator=torch.Generator().manual_seed(1))
    adapted = _adapted(params, "exact")
    with torch.no_grad():
        exact = adapted.forward_features(x)
        adapted.inverse = "approximate"
        approx = adapted.forward_features(x)
    assert adapted.inverse == "approximate"
    assert not torch.allclose(exact, approx, atol=1e-4)
    with pytest.raises(ValueError, match="inverse"):
        adapted.inverse = "newton"


def test_warp_feature_approximate_matches_monowarp():
    group = deqcanon.MonotoneScaleGroup(grid=(4, 4))
    params = torch.randn(2, 40, generator=torch.Generator().manual_seed(2))
    fmap = torch.rand(2, 5, 16, 12)
    layout = latentcanon.Layout("nchw")
    out = latentcanon.warp_feature(fmap, group, params, layout, inverse="approximate")
    assert torch.allclose(out, monowarp.approximate_warp(fmap, group.element(params)), atol=1e-6)
    with pytest.raises(ValueError, match="inverse"):
        latentcanon.warp_feature(fmap, group, params, layout, inverse="bogus")
