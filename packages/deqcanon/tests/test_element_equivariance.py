"""The element-equivariance error of eq. 5: zero for an equivariant canonicalizer, one for one that ignores
the transformation, gradients into both predictions, clear errors."""

from __future__ import annotations

import pytest
import torch

import monowarp
from deqcanon import DEQCanonicalizer, MonotoneScaleGroup, ParamNet, element_equivariance_error


def _sample(n: int, seed: int, scale_range=(0.5, 2.0), grid=(4, 4)) -> monowarp.MonotoneScale:
    return monowarp.sample_monotone_scale(n, grid, scale_range, generator=torch.Generator().manual_seed(seed))


def test_equivariant_predictions_have_zero_error_and_constant_ones_one():
    h, l = _sample(5, 0), _sample(5, 1)
    assert float(element_equivariance_error(h, l.compose(h), l)) == pytest.approx(0.0, abs=1e-12)
    assert float(element_equivariance_error(h, h, l)) == pytest.approx(1.0, rel=1e-5)
    ident = monowarp.MonotoneScale.identity(5, grid=(4, 4))
    assert float(element_equivariance_error(ident, ident, l)) == pytest.approx(1.0, rel=1e-5)
    # the wrong order of the product is not equivariant
    assert float(element_equivariance_error(h, h.compose(l), l)) > 0.05


def test_unnormalised_error_is_the_mean_squared_distance_of_the_maps():
    h, l, other = _sample(3, 2), _sample(3, 3), _sample(3, 4)
    t = torch.linspace(0.05, 0.95, 5)
    p = torch.stack(torch.meshgrid(t, t, indexing="xy"), dim=-1).reshape(1, -1, 2).expand(3, -1, -1)
    expected = (other.forward_map(p) - l.forward_map(h.forward_map(p))).square().sum(-1).mean()
    got = element_equivariance_error(h, other, l, points=5, normalize=False)
    assert float(got) == pytest.approx(float(expected), rel=1e-6)
    scale = (l.forward_map(h.forward_map(p)) - h.forward_map(p)).square().sum(-1).mean()
    assert float(element_equivariance_error(h, other, l, points=5)) == pytest.approx(float(expected / scale))


def test_the_error_of_a_canonicalizer_backpropagates_into_it():
    group = MonotoneScaleGroup(grid=(3, 3))
    dec = DEQCanonicalizer(group, ParamNet(group, 1, widths=(4, 8), head="bounded"))
    x = torch.rand(2, 1, 32, 32)
    l = _sample(2, 5, grid=(3, 3))
    res = dec(torch.cat([x, monowarp.warp(x, l)]))
    error = element_equivariance_error(res.element[:2], res.element[2:], l)
    assert error.ndim == 0 and torch.isfinite(error)
    error.backward()
    grads = [p.grad for p in dec.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_bad_arguments_are_named():
    h = _sample(2, 0)
    with pytest.raises(TypeError, match="phi_transformed"):
        element_equivariance_error(h, torch.zeros(2, 40), h)
    with pytest.raises(ValueError, match="points"):
        element_equivariance_error(h, h, h, points=1)
    with pytest.raises(ValueError, match="batch size"):
        element_equivariance_error(h, h, _sample(3, 1))
