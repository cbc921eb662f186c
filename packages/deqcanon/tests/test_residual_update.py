"""The residual DEC update (eq. 16: H predicts a step): its fixed point canonicalizes where the absolute form
cannot (eq. 5), the monotone group's gauge is fixed, options are checked."""

from __future__ import annotations

import math

import pytest
import torch

import monowarp
from deqcanon import DEQCanonicalizer, GlobalScaleGroup, MonotoneScaleGroup, ParamNet, SolveConfig
from deqcanon.functional import deq_canonicalize, deq_map

TARGET = 6.0  # the blob size (std in pixels) H asks for


def _blobs(stds: list[float], size: int = 64) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    d2 = r[None, :, None] ** 2 + r[None, None, :] ** 2
    s = torch.tensor(stds, dtype=torch.float64)[:, None, None]
    return torch.exp(-d2 / (2 * s**2))[:, None]


def _log_size_error(x: torch.Tensor) -> torch.Tensor:
    """H: log(std of the blob / TARGET), (B, 1); a step that shrinks a blob larger than the target."""
    size = x.shape[-1]
    r = torch.arange(size, dtype=x.dtype) - (size - 1) / 2
    d2 = r[None, :, None] ** 2 + r[None, None, :] ** 2
    w = x[:, 0] / x[:, 0].sum((1, 2), keepdim=True)
    std = ((w * d2).sum((1, 2)) / 2).sqrt()
    return (std / TARGET).log()[:, None]


def test_residual_fixed_point_canonicalizes_and_is_equivariant_where_absolute_is_not():
    group = GlobalScaleGroup()
    x = _blobs([4.0, 8.0])  # the same blob, and the blob scaled by 2
    solve = SolveConfig(solver="anderson", max_iter=40, tol=1e-8, stop_mode="abs")
    res = deq_canonicalize(x, _log_size_error, group, solve=solve, update="residual", build_graph=False)
    canon_std = _log_size_error(res.canonical).exp() * TARGET
    assert canon_std[:, 0].tolist() == pytest.approx([TARGET, TARGET], rel=0.02)  # one canonical form
    # eq. 5: h(S(I; l)) = l . h(I), here log-scale parameters that differ by log 2
    assert float(res.params[1, 0] - res.params[0, 0]) == pytest.approx(math.log(2.0), abs=0.02)
    absolute = deq_canonicalize(x, _log_size_error, group, solve=solve, update="absolute", build_graph=False)
    stds = (_log_size_error(absolute.canonical).exp() * TARGET)[:, 0]
    assert float(stds[1] / stds[0]) == pytest.approx(math.sqrt(2.0), rel=0.05)  # not canonical


def test_residual_map_is_the_state_plus_the_centred_step():
    group = MonotoneScaleGroup(grid=(3, 2))
    d = group.param_shape[0]
    step = torch.linspace(-1, 1, d)[None].repeat(2, 1)
    f = deq_map(lambda v: step[: v.shape[0]], group, torch.rand(2, 1, 16, 24), update="residual")
    z = group.center_params(torch.randn(2, d) * 0.3)
    assert torch.allclose(f(z), z + group.center_params(step), atol=1e-6)
    g = deq_map(lambda v: step[: v.shape[0]], group, torch.rand(2, 1, 16, 24))
    assert torch.allclose(g(z), step)
    with pytest.raises(ValueError, match="update"):
        deq_map(lambda v: v, group, torch.rand(1, 1, 8, 8), update="relative")


def test_center_params_fixes_the_gauge_and_keeps_the_element():
    group = MonotoneScaleGroup(grid=(4, 3))
    params = torch.randn(3, group.param_shape[0])
    centred = group.center_params(params)
    assert torch.allclose(group.center_params(centred), centred, atol=1e-6)
    pts = torch.rand(3, 20, 2)
    assert torch.allclose(
        group.element(centred).forward_map(pts), group.element(params).forward_map(pts), atol=1e-5
    )
    n, m = group.grid
    fx = centred[:, : (m + 1) * n].reshape(3, m + 1, n)
    fy = centred[:, (m + 1) * n :].reshape(3, n + 1, m)
    assert fx.mean(-1).abs().max() < 1e-6 and fy.mean(-1).abs().max() < 1e-6


def test_a_fresh_residual_dec_is_the_identity_and_trains_with_the_phantom_gradient():
    group = MonotoneScaleGroup(grid=(3, 3))
    dec = DEQCanonicalizer(
        group, ParamNet(group, 1, widths=(4, 8), init_scale=0.01), update="residual", backward="phantom"
    )
    assert "update='residual'" in repr(dec)
    x = torch.rand(2, 1, 32, 32)
    l = monowarp.sample_monotone_scale(2, (3, 3), (0.5, 2.0), generator=torch.Generator().manual_seed(0))
    res = dec(torch.cat([x, monowarp.warp(x, l)]))
    assert bool(torch.isfinite(res.params).all())
    (res.params * torch.randn_like(res.params)).sum().backward()
    grads = [p.grad for p in dec.param_net.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    fresh = DEQCanonicalizer(group, ParamNet(group, 1, widths=(4, 8)), update="residual")
    out = fresh(x)
    assert torch.allclose(out.params, torch.zeros_like(out.params))
    assert torch.allclose(out.canonical, x, atol=1e-5)
    with pytest.raises(ValueError, match="update"):
        DEQCanonicalizer(group, in_channels=1, update="step")
