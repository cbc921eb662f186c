"""The element-equivariance error of eq. 5: zero for an equivariant canonicalizer, one for one that ignores
the transformation, gradients into both predictions, clear errors."""

from __future__ import annotations

import pytest
import torch

import monowarp
from deqcanon import (
    DEQCanonicalizer,
    MonotoneScaleGroup,
    ParamNet,
    content_weight,
    element_equivariance_error,
)


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
    with pytest.raises(ValueError, match="weight"):
        element_equivariance_error(h, h, h, weight=torch.ones(2, 3, 8, 8))
    with pytest.raises(ValueError, match="weight"):
        element_equivariance_error(h, h, h, weight=torch.ones(3, 1, 8, 8))
    with pytest.raises(ValueError, match="non-negative"):
        element_equivariance_error(h, h, h, weight=-torch.ones(2, 1, 8, 8))
    with pytest.raises(ValueError, match="radius"):
        content_weight(torch.rand(1, 1, 8, 8), radius=-1)
    with pytest.raises(ValueError, match="images"):
        content_weight(torch.rand(8, 8))


def _grid(n: int, b: int) -> torch.Tensor:
    t = torch.linspace(0.05, 0.95, n)
    return torch.stack(torch.meshgrid(t, t, indexing="xy"), dim=-1).reshape(1, -1, 2).expand(b, -1, -1)


def test_a_weight_map_weighs_each_point_by_the_content_the_canonical_form_shows_there():
    h, l, other = _sample(3, 2), _sample(3, 3), _sample(3, 4)
    ones = torch.ones(3, 1, 12, 20)
    plain = element_equivariance_error(h, other, l, points=5)
    with_ones = element_equivariance_error(h, other, l, points=5, weight=ones)
    assert float(with_ones) == pytest.approx(float(plain))
    # a map that grows to the right: each point p counts with the weight at q = h(p), sampled bilinearly
    weight = torch.linspace(0, 1, 20).expand(3, 1, 12, 20).contiguous()
    p = _grid(5, 3)
    q = h.forward_map(p)
    w = q[..., 0]  # the map is x itself (align_corners=True)
    expected = l.forward_map(q)
    err = (other.forward_map(p) - expected).square().sum(-1)
    disp = (expected - q).square().sum(-1)
    got = element_equivariance_error(h, other, l, points=5, weight=weight)
    assert float(got) == pytest.approx(float((w * err).sum() / (w * disp).sum()), rel=1e-5)
    raw = element_equivariance_error(h, other, l, points=5, weight=weight, normalize=False)
    assert float(raw) == pytest.approx(float((w * err).sum() / w.sum()), rel=1e-5)
    # one value per image: each image's own sums
    each = element_equivariance_error(h, other, l, points=5, weight=weight, reduction="none")
    assert each.shape == (3,)
    assert float(each[1]) == pytest.approx(float((w * err)[1].sum() / (w * disp)[1].sum()), rel=1e-5)
    assert float(element_equivariance_error(h[1:2], other[1:2], l[1:2], points=5, weight=weight[1:2])) == (
        pytest.approx(float(each[1]), rel=1e-6)
    )
    with pytest.raises(ValueError, match="reduction"):
        element_equivariance_error(h, other, l, reduction="mean")
    # an image without content does not count
    blank = ones.clone()
    blank[1:] = 0
    alone = element_equivariance_error(h[:1], other[:1], l[:1], points=5)
    with_blank = element_equivariance_error(h, other, l, points=5, weight=blank)
    assert float(with_blank) == pytest.approx(float(alone))


def test_the_weight_is_read_without_gradient_through_the_compared_points():
    grid = (3, 3)
    l, other = _sample(2, 5, grid=grid), _sample(2, 6, grid=grid)
    params = (0.3 * torch.randn(2, monowarp.MonotoneScale.num_params(grid))).requires_grad_(True)
    weight = torch.linspace(0, 1, 20).expand(2, 1, 12, 20).contiguous().requires_grad_(True)
    h = monowarp.MonotoneScale.from_params(params, grid=grid)
    (grad,) = torch.autograd.grad(element_equivariance_error(h, other, l, points=4, weight=weight), params)
    # the same sum with the weights at q taken as constants
    h = monowarp.MonotoneScale.from_params(params, grid=grid)
    p = _grid(4, 2)
    q = h.forward_map(p)
    w = q[..., 0].detach()
    expected = l.forward_map(q)
    err = (other.forward_map(p) - expected).square().sum(-1)
    manual = (w * err).sum() / (w * (expected - q).square().sum(-1)).sum()
    (want,) = torch.autograd.grad(manual, params)
    assert float(grad.abs().sum()) > 0 and torch.allclose(grad, want, atol=1e-6)
    assert weight.grad is None


def test_content_weight_marks_the_edges_spread_by_the_radius():
    x = torch.zeros(2, 3, 16, 24)
    x[0, :, 6:10, 8:12] = 0.7
    w0 = content_weight(x, radius=0)
    w2 = content_weight(x, radius=2)
    assert w0.shape == (2, 1, 16, 24) and not w0.requires_grad
    assert float(w0[0].amax()) == pytest.approx(1.0) and float(w0[1].abs().sum()) == 0.0  # flat: no weight
    assert float(w0[0, 0, 0, 0]) == 0.0 and float(w0[0, 0, 7, 8]) > 0  # background, the block's edge
    assert float(w0[0, 0, 3, 9]) == 0.0 and float(w2[0, 0, 4, 9]) > 0  # two pixels above the edge
    assert float(w2[0, 0, 2, 9]) == 0.0
    assert bool((w2 >= w0).all()) and float(w2.amax()) <= 1.0
    # the same for any contrast and for the image and its negative
    assert torch.allclose(content_weight(3 * x), w2) and torch.allclose(content_weight(-x), w2)
