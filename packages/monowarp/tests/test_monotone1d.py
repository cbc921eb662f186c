"""Tests of the 1-D monotone scalings (eq. 12): exact inverse and exact composition."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monowarp import Monotone1d


def _random(batch, k, device, dtype, seed=0, spread=1.0) -> Monotone1d:
    gen = torch.Generator().manual_seed(seed)
    return Monotone1d.from_params(torch.randn(batch, k, generator=gen, dtype=dtype).to(device) * spread)


def _tol(dtype):
    return 1e-12 if dtype == torch.float64 else 1e-6


def test_smoke(device, dtype):
    f = Monotone1d.identity(3, 4, device=device, dtype=dtype)
    assert f.batch_size == 3 and len(f) == 3 and f.num_knots == 5
    assert f.device.type == device.type and f.dtype == dtype and "Monotone1d" in repr(f)
    t = torch.rand(3, 10, device=device, dtype=dtype)
    torch.testing.assert_close(f(t), t)
    torch.testing.assert_close(f.inverse_map(t), t)


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("k", [1, 3, 8])
def test_cardinality(batch, k, device, dtype):
    f = _random(batch, k, device, dtype)
    g = _random(batch, 5, device, dtype, seed=1)
    assert f.num_knots == k + 1
    t = torch.rand(batch, 7, device=device, dtype=dtype)
    assert f.forward_map(t).shape == (batch, 7) and f.inverse_map(t).shape == (batch, 7)
    assert f.compose(g).num_knots == k + 1 + 6
    assert f.slopes().shape == (batch, k) and f.local_scale(t).shape == (batch, 7)
    assert f.to_params().shape == (batch, k)
    assert f[0].batch_size == 1 and f[-1].batch_size == 1


def test_errors():
    with pytest.raises(ValueError, match=r"knots must have shape \(B, K\) with K >= 2"):
        Monotone1d.from_knots(torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"knots must have shape \(B, K\), got \(3,\)"):
        Monotone1d.from_knots(torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="must be non-decreasing"):
        Monotone1d.from_knots(torch.tensor([[0.0, 0.6, 0.4, 1.0]]))
    with pytest.raises(ValueError, match="positive rise"):
        Monotone1d.from_knots(torch.tensor([[0.0, 0.5, 0.5, 1.0]]))
    with pytest.raises(ValueError, match="ys must start at 0 and end at 1"):
        Monotone1d.from_knots(torch.tensor([[0.1, 0.5, 1.0]]))
    with pytest.raises(ValueError, match="knots contains NaN or infinite values"):
        Monotone1d.from_knots(torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="params contains NaN or infinite values"):
        Monotone1d.from_params(torch.tensor([[0.0, float("inf")]]))
    with pytest.raises(ValueError, match=r"t must have shape \(2, P\)"):
        Monotone1d.identity(2).forward_map(torch.rand(3, 4))
    with pytest.raises(ValueError, match="other must have batch size 2"):
        Monotone1d.identity(2).compose(Monotone1d.identity(3))
    with pytest.raises(TypeError, match="other must be a Monotone1d"):
        Monotone1d.identity(2).compose(torch.zeros(2))
    with pytest.raises(ValueError, match="to_params needs uniform breakpoints"):
        _random(1, 3, "cpu", torch.float32).compose(_random(1, 3, "cpu", torch.float32, seed=2)).to_params()
    with pytest.raises(ValueError, match="grid must be a positive int"):
        Monotone1d.identity(1, 0)


def test_forward_map_values(device, dtype):
    f = Monotone1d.from_knots(torch.tensor([[0.0, 0.7, 1.0]], device=device, dtype=dtype))
    t = torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0]], device=device, dtype=dtype)
    ref = torch.tensor([[0.0, 0.35, 0.7, 0.85, 1.0]], device=device, dtype=dtype)
    torch.testing.assert_close(f(t), ref)
    torch.testing.assert_close(f.slopes(), torch.tensor([[1.4, 0.6]], device=device, dtype=dtype))
    torch.testing.assert_close(
        f.local_scale(t), torch.tensor([[1.4, 1.4, 0.6, 0.6, 0.6]], device=device, dtype=dtype)
    )


def test_inverse_is_exact(device, dtype):
    f = _random(8, 6, device, dtype, spread=2.0)
    t = torch.rand(8, 300, device=device, dtype=dtype)
    torch.testing.assert_close(f.forward_map(f.inverse_map(t)), t, atol=_tol(dtype), rtol=0)
    # the other way round the rounding is amplified by the inverse slope
    tol = _tol(dtype) / float(f.slopes().min())
    torch.testing.assert_close(f.inverse().forward_map(f.forward_map(t)), t, atol=tol, rtol=0)
    torch.testing.assert_close(f.inverse().inverse().ys, f.ys)


def test_composition_is_exact(device, dtype):
    f, g, h = (_random(5, k, device, dtype, seed=s, spread=1.5) for s, k in ((0, 4), (1, 7), (2, 3)))
    t = torch.rand(5, 300, device=device, dtype=dtype)
    tol = 10 * _tol(dtype)
    torch.testing.assert_close(f.compose(g).forward_map(t), f(g(t)), atol=tol, rtol=0)
    torch.testing.assert_close(f.compose(g).inverse_map(t), g.inverse_map(f.inverse_map(t)), atol=tol, rtol=0)
    # group laws
    torch.testing.assert_close(f.compose(g).compose(h)(t), f.compose(g.compose(h))(t), atol=tol, rtol=0)
    torch.testing.assert_close(f.compose(f.inverse())(t), t, atol=tol, rtol=0)
    torch.testing.assert_close(f.inverse().compose(f)(t), t, atol=tol, rtol=0)
    e = Monotone1d.identity(5, 2, device=device, dtype=dtype)
    torch.testing.assert_close(e.compose(f)(t), f(t), atol=tol, rtol=0)
    # the composition is again piecewise linear: a valid element
    fg = f.compose(g)
    Monotone1d(fg.xs, fg.ys)
    # slopes multiply (chain rule) away from breakpoints
    torch.testing.assert_close(
        fg.local_scale(t), f.local_scale(g(t)) * g.local_scale(t), atol=1e-4, rtol=1e-4
    )


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=2, max_size=12))
def test_from_params_any_real_is_valid(values):
    f = Monotone1d.from_params(torch.tensor([values]))
    assert bool((f.ys.diff(dim=-1) > 0).all())
    assert float(f.ys[0, 0]) == 0.0 and float(f.ys[0, -1]) == 1.0
    Monotone1d(f.xs, f.ys)  # passes validation


def test_params_round_trip(device, dtype):
    f = _random(4, 5, device, dtype, spread=1.0)
    g = Monotone1d.from_params(f.to_params())
    torch.testing.assert_close(g.ys, f.ys, atol=_tol(dtype) * 10, rtol=0)
    torch.testing.assert_close(Monotone1d.from_params(torch.zeros(2, 4)).ys, Monotone1d.identity(2, 4).ys)


def test_gradients(device):
    params = torch.randn(2, 4, device=device, dtype=torch.float64, requires_grad=True)
    t = torch.rand(2, 6, device=device, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: Monotone1d.from_params(p).inverse_map(t), (params,))
    g = Monotone1d.from_params(torch.randn(2, 3, device=device, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda p: Monotone1d.from_params(p).compose(g)(t), (params,))


def test_plumbing():
    f = Monotone1d.from_params(torch.randn(3, 4, requires_grad=True))
    assert f.ys.requires_grad and not f.detach().ys.requires_grad
    assert f.to(torch.float64).dtype == torch.float64
    torch.testing.assert_close(f[1:].ys, f.ys[1:])
