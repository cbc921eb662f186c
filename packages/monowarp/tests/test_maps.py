"""Tests of the group elements: MonotoneScale, its exact inverse, lazy inverse/composition, validation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monowarp import InverseScaling, MonotoneScale, ScalingChain, ScalingMap, sample_monotone_scale
from monowarp._utils import knots_from_logits


def _tol(dtype: torch.dtype) -> float:
    return 1e-10 if dtype == torch.float64 else 1e-5


def _random(batch, grid, device, dtype, scale_range=(0.5, 2.0), seed=0) -> MonotoneScale:
    gen = torch.Generator().manual_seed(seed)
    return sample_monotone_scale(batch, grid, scale_range, generator=gen, dtype=dtype).to(device)


def _naive_forward(kx: torch.Tensor, ky: torch.Tensor, x: float, y: float) -> tuple[float, float]:
    """Eqs. A27-A29 literally, one point of one element: knots_x `(M+1, N+1)`, knots_y `(N+1, M+1)`."""
    m, n = kx.shape[0] - 1, kx.shape[1] - 1

    def piece(t: float, k: int) -> tuple[int, float]:
        i = min(int(t * k), k - 1)
        return i, t * k - i

    i, u = piece(x, n)
    j, v = piece(y, m)
    row = [float(kx[jj, i] + (kx[jj, i + 1] - kx[jj, i]) * u) for jj in (j, j + 1)]  # l_{y_j}(x), eq. A27
    col = [float(ky[ii, j] + (ky[ii, j + 1] - ky[ii, j]) * v) for ii in (i, i + 1)]  # l_{x_i}(y), eq. A28
    return row[0] + (row[1] - row[0]) * v, col[0] + (col[1] - col[0]) * u  # eq. A29 and its twin


def _fold() -> MonotoneScale:
    """Strictly increasing row and column functions whose blend folds over (``from_knots`` refuses it)."""
    kx = torch.tensor([[[0.0, 0.5, 1.0], [0.0, 0.95, 1.0], [0.0, 0.5, 1.0]]])
    ky = torch.tensor([[[0.0, 0.5, 1.0], [0.0, 0.05, 1.0], [0.0, 0.5, 1.0]]])
    return MonotoneScale(kx, ky, validate=False)


# ----------------------------------------------------------------------------------------------------- smoke
def test_smoke(device, dtype):
    g = MonotoneScale.identity(2, (4, 3), device=device, dtype=dtype)
    assert isinstance(g, ScalingMap)
    assert g.grid == (4, 3) and g.batch_size == 2 and len(g) == 2
    assert g.knots_x.shape == (2, 4, 5) and g.knots_y.shape == (2, 5, 4)
    assert g.device.type == device.type and g.dtype == dtype
    assert "MonotoneScale" in repr(g)
    p = torch.rand(2, 7, 2, device=device, dtype=dtype)
    torch.testing.assert_close(g.forward_map(p), p)
    torch.testing.assert_close(g.inverse_map(p), p)
    torch.testing.assert_close(g(p), p)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("grid", [(1, 1), (2, 5), (4, 4), (6, 3)])
def test_cardinality(batch, grid, device, dtype):
    n, m = grid
    g = _random(batch, grid, device, dtype)
    assert g.knots_x.shape == (batch, m + 1, n + 1)
    assert g.knots_y.shape == (batch, n + 1, m + 1)
    p = torch.rand(batch, 11, 2, device=device, dtype=dtype)
    assert g.forward_map(p).shape == (batch, 11, 2)
    assert g.inverse_map(p).shape == (batch, 11, 2)
    assert g.local_scale(p).shape == (batch, 11, 2, 2)
    assert g.is_invertible().shape == (batch,)
    assert g.dense_map((5, 9)).shape == (batch, 5, 9, 2)
    assert g.dense_inverse_map((5, 9)).shape == (batch, 5, 9, 2)
    assert g.to_params().shape == (batch, MonotoneScale.num_params(grid))
    assert g.mesh().shape == (batch, m + 1, n + 1, 2)


# ------------------------------------------------------------------------------------------------ exceptions
def test_from_knots_errors():
    kx = torch.linspace(0, 1, 5).expand(2, 4, 5).clone()
    ky = torch.linspace(0, 1, 4).expand(2, 5, 4).clone()
    MonotoneScale.from_knots(kx, ky)  # valid
    with pytest.raises(TypeError, match=r"knots_x must be a torch\.Tensor, got list"):
        MonotoneScale.from_knots(kx.tolist(), ky)
    with pytest.raises(TypeError, match="knots_x must have a floating point dtype"):
        MonotoneScale.from_knots(kx.long(), ky)
    with pytest.raises(ValueError, match=r"knots_x must have shape \(B, M\+1, N\+1\), got \(4, 5\)"):
        MonotoneScale.from_knots(kx[0], ky)
    with pytest.raises(ValueError, match=r"knots_y must have shape \(B, N\+1, M\+1\) = \(2, 5, 4\)"):
        MonotoneScale.from_knots(kx, ky[:, :4])
    with pytest.raises(ValueError, match=r"knots_y must have shape \(B, N\+1, M\+1\) = \(2, 5, 4\)"):
        MonotoneScale.from_knots(kx, ky[:1])
    bad = kx.clone()
    bad[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="knots_x contains NaN or infinite values"):
        MonotoneScale.from_knots(bad, ky)
    bad = ky.clone()
    bad[1, 2, 1] = 0.9
    with pytest.raises(ValueError, match="knots_y must be strictly increasing"):
        MonotoneScale.from_knots(kx, bad)
    with pytest.raises(ValueError, match="knots_x must start at 0 and end at 1"):
        MonotoneScale.from_knots(kx * 0.9, ky)
    with pytest.raises(TypeError, match="same dtype"):
        MonotoneScale.from_knots(kx, ky.double())
    with pytest.raises(ValueError, match=r"M, N >= 1"):
        MonotoneScale.from_knots(kx[:, :1], ky[:, :, :1])


def test_from_params_errors():
    with pytest.raises(ValueError, match=r"D = \(M\+1\)\*N \+ \(N\+1\)\*M = 40"):
        MonotoneScale.from_params(torch.zeros(2, 41), grid=(4, 4))
    with pytest.raises(ValueError, match="does not fit a square grid"):
        MonotoneScale.from_params(torch.zeros(2, 41))
    with pytest.raises(ValueError, match=r"params must have shape \(B, D\)"):
        MonotoneScale.from_params(torch.zeros(40))
    with pytest.raises(ValueError, match="params contains NaN or infinite values"):
        MonotoneScale.from_params(torch.full((1, 40), float("inf")))
    with pytest.raises(TypeError, match="params must have a floating point dtype"):
        MonotoneScale.from_params(torch.zeros(1, 40, dtype=torch.long))
    with pytest.raises(ValueError, match=r"grid must be a pair of positive ints \(N, M\)"):
        MonotoneScale.num_params((0, 3))
    with pytest.raises(ValueError, match="grid must be a pair"):
        MonotoneScale.identity(1, grid=4)


def test_points_errors():
    g = MonotoneScale.identity(2)
    with pytest.raises(ValueError, match=r"points must have shape \(2, P, 2\), got \(3, 4, 2\)"):
        g.forward_map(torch.rand(3, 4, 2))
    with pytest.raises(ValueError, match=r"points must have shape \(2, P, 2\)"):
        g.inverse_map(torch.rand(2, 4, 3))
    with pytest.raises(TypeError, match=r"points must have dtype torch\.float32"):
        g.inverse_map(torch.rand(2, 4, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"points must be a torch\.Tensor"):
        g.local_scale([[0.5, 0.5]])
    with pytest.raises(ValueError, match=r"size must be a pair of positive ints \(H, W\)"):
        g.dense_map((0, 4))


def test_compose_errors():
    a = MonotoneScale.identity(2)
    with pytest.raises(ValueError, match="other must have batch size 2, got 3"):
        a.compose(MonotoneScale.identity(3))
    with pytest.raises(TypeError, match="other must be a ScalingMap"):
        a.compose(torch.zeros(2))
    with pytest.raises(TypeError, match=r"other must have dtype torch\.float32"):
        a.compose(MonotoneScale.identity(2, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------- parameters
def test_identity_params(device, dtype):
    g = MonotoneScale.from_params(torch.zeros(3, 24, device=device, dtype=dtype), grid=(3, 3))
    ident = MonotoneScale.identity(3, (3, 3), device=device, dtype=dtype)
    torch.testing.assert_close(g.knots_x, ident.knots_x)
    torch.testing.assert_close(g.knots_y, ident.knots_y)
    assert g.grid == (3, 3)  # inferred for a square grid: D = 2 N (N + 1)


def test_params_layout(device, dtype):
    """First (M+1)*N entries are the row logits (M+1, N), then the column logits (N+1, M)."""
    n, m = 3, 2
    params = torch.zeros(1, MonotoneScale.num_params((n, m)), device=device, dtype=dtype)
    # Logits small enough for the blend to satisfy the invertibility condition: from_params keeps the knots.
    params[0, 1 * n + 0] = 0.5  # row function j=1, interval 0 grows
    params[0, (m + 1) * n + 2 * m + 1] = -0.5  # column function i=2, interval 1 shrinks
    g = MonotoneScale.from_params(params, grid=(n, m))
    assert float(g.shrink_to_invertible(0.0).knots_x.sub(g.knots_x).abs().max()) == 0.0
    inc_x = g.knots_x.diff(dim=-1)[0]
    inc_y = g.knots_y.diff(dim=-1)[0]
    assert inc_x[1, 0] > inc_x[1, 1] and torch.allclose(inc_x[0], inc_x[0, :1].expand(n))
    assert inc_y[2, 1] < inc_y[2, 0] and torch.allclose(inc_y[1], inc_y[1, :1].expand(m))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=24, max_size=24),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_from_params_any_real_is_valid(values, dtype):
    params = torch.tensor(values, dtype=dtype).reshape(1, 24)
    g = MonotoneScale.from_params(params, grid=(3, 3))
    for k in (g.knots_x, g.knots_y):
        assert bool((k.diff(dim=-1) > 0).all())
        assert bool((k[..., 0] == 0).all()) and bool((k[..., -1] == 1).all())
    MonotoneScale.from_knots(g.knots_x, g.knots_y)  # passes validation


@pytest.mark.parametrize("grid", [(4, 4), (3, 5)])
def test_to_params_round_trip(grid, device, dtype):
    params = torch.randn(4, MonotoneScale.num_params(grid), device=device, dtype=dtype)
    g = MonotoneScale.from_params(params, grid=grid)
    back = g.to_params()
    torch.testing.assert_close(back.reshape(-1).mean(), back.new_zeros(()), atol=1e-5, rtol=0)
    h = MonotoneScale.from_params(back, grid=grid)
    torch.testing.assert_close(h.knots_x, g.knots_x, atol=_tol(dtype), rtol=0)
    torch.testing.assert_close(h.knots_y, g.knots_y, atol=_tol(dtype), rtol=0)


# --------------------------------------------------------------------------------------------- forward map
def test_forward_map_matches_equations(device, dtype):
    g = _random(2, (4, 3), device, dtype, scale_range=(0.3, 3.0))
    p = torch.rand(2, 25, 2, device=device, dtype=dtype)
    p[:, 0] = 0.0
    p[:, 1] = 1.0
    p[:, 2] = torch.tensor([0.5, 1 / 3])  # on knot lines
    out = g.forward_map(p).cpu()
    kx, ky, pc = g.knots_x.cpu(), g.knots_y.cpu(), p.cpu()
    for b in range(2):
        for k in range(25):
            ref = _naive_forward(kx[b], ky[b], float(pc[b, k, 0]), float(pc[b, k, 1]))
            torch.testing.assert_close(out[b, k], torch.tensor(ref, dtype=dtype), atol=_tol(dtype), rtol=0)


def test_forward_map_interpolates_knots(device, dtype):
    g = _random(2, (4, 3), device, dtype)
    mesh = g.mesh()
    lin = lambda k: torch.linspace(0, 1, k, device=device, dtype=dtype)  # noqa: E731
    grid_pts = torch.stack(torch.meshgrid(lin(5), lin(4), indexing="xy"), dim=-1)
    out = g.forward_map(grid_pts.reshape(1, -1, 2).expand(2, -1, 2)).reshape(2, 4, 5, 2)
    torch.testing.assert_close(out, mesh, atol=_tol(dtype), rtol=0)


@pytest.mark.parametrize("align_corners", [True, False])
def test_dense_map_matches_forward_map(align_corners, device, dtype):
    g = _random(3, (4, 2), device, dtype)
    dense = g.dense_map((7, 10), align_corners)
    from monowarp import pixel_grid

    pts = pixel_grid((7, 10), align_corners=align_corners, device=device, dtype=dtype)
    ref = g.forward_map(pts.reshape(1, -1, 2).expand(3, -1, 2)).reshape(3, 7, 10, 2)
    torch.testing.assert_close(dense, ref, atol=_tol(dtype), rtol=0)


def test_local_scale_matches_autograd(device, dtype):
    g = _random(2, (3, 4), device, dtype)
    p = torch.rand(2, 6, 2, device=device, dtype=dtype)
    jac = g.local_scale(p)
    for k in range(6):
        ref = torch.autograd.functional.jacobian(lambda q, k=k: g.forward_map(q)[:, k], p)  # (2, 2, 2, 6, 2)
        for b in range(2):
            torch.testing.assert_close(jac[b, k], ref[b, :, b, k], atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------------- inverse
@pytest.mark.parametrize("scale_range", [(0.5, 2.0), (0.25, 4.0), (0.1, 10.0)])
@pytest.mark.parametrize("grid", [(4, 4), (6, 3)])
def test_inverse_map_is_exact(scale_range, grid, device, dtype):
    g = _random(64, grid, device, dtype, scale_range=scale_range, seed=1)
    assert bool(g.is_invertible().all())
    p = torch.rand(64, 500, 2, device=device, dtype=dtype)
    p[:, :4] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])  # corners
    q = g.inverse_map(p)
    assert float((g.forward_map(q) - p).abs().max()) < _tol(dtype)
    assert float(q.min()) >= -_tol(dtype) and float(q.max()) <= 1 + _tol(dtype)
    # and the other way round
    torch.testing.assert_close(g.inverse_map(g.forward_map(p)), p, atol=10 * _tol(dtype), rtol=0)


@pytest.mark.parametrize("align_corners", [True, False])
def test_dense_inverse_map_is_exact(align_corners, device, dtype):
    g = _random(8, (4, 4), device, dtype, scale_range=(0.25, 4.0), seed=2)
    h, w = 33, 47
    d = g.dense_inverse_map((h, w), align_corners)
    from monowarp import pixel_grid

    pts = pixel_grid((h, w), align_corners=align_corners, device=device, dtype=dtype).reshape(1, -1, 2)
    back = g.forward_map(d.reshape(8, -1, 2))
    assert float((back - pts).abs().max()) < _tol(dtype)
    torch.testing.assert_close(
        d.reshape(8, -1, 2), g.inverse_map(pts.expand(8, -1, 2)), atol=_tol(dtype), rtol=0
    )


def test_inverse_map_on_cell_lines(device, dtype):
    """Targets exactly on the images of grid lines (the cell search's ties)."""
    g = _random(4, (4, 4), device, dtype, scale_range=(0.25, 4.0), seed=3)
    mesh = g.mesh().reshape(4, -1, 2)
    mids = 0.5 * (g.mesh()[:, 1:, :-1] + g.mesh()[:, :-1, :-1]).reshape(4, -1, 2)  # on vertical edges
    targets = torch.cat([g.forward_map(g.mesh().reshape(4, -1, 2)), mesh, mids], dim=1).clamp(0, 1)
    q = g.inverse_map(targets)
    assert float((g.forward_map(q) - targets).abs().max()) < _tol(dtype)


def test_inverse_map_gradcheck():
    g = _random(2, (2, 3), "cpu", torch.float64, scale_range=(0.5, 2.0), seed=4)
    params = g.to_params().requires_grad_(True)
    pts = (torch.rand(2, 5, 2, dtype=torch.float64) * 0.9 + 0.05).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda prm, p: MonotoneScale.from_params(prm, grid=(2, 3)).inverse_map(p), (params, pts)
    )
    kx = g.knots_x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda k: MonotoneScale(k, g.knots_y, validate=False).inverse_map(pts.detach()), (kx,)
    )


def test_dense_inverse_map_gradcheck():
    g = _random(2, (3, 2), "cpu", torch.float64, seed=5)
    params = g.to_params().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda prm: MonotoneScale.from_params(prm, grid=(3, 2)).dense_inverse_map((4, 5)), (params,)
    )


def test_inverse_map_double_backward():
    """Second derivatives exist (those of the Newton step with the solution and the Jacobian held fixed)."""
    g = _random(2, (2, 2), "cpu", torch.float64, seed=6)
    params = g.to_params().requires_grad_(True)
    out = MonotoneScale.from_params(params, grid=(2, 2)).dense_inverse_map((5, 6))
    (grad,) = torch.autograd.grad((out**2).sum(), params, create_graph=True)
    (hess_row,) = torch.autograd.grad(grad[0, 0], params)
    assert torch.isfinite(hess_row).all() and hess_row.abs().sum() > 0


def test_inverse_map_without_grad_is_detached():
    g = _random(1, (4, 4), "cpu", torch.float32)
    params = g.to_params().requires_grad_(True)
    with torch.no_grad():
        q = MonotoneScale.from_params(params).inverse_map(torch.rand(1, 3, 2))
    assert not q.requires_grad


# -------------------------------------------------------------------------------------------- invertibility
def test_is_invertible(device, dtype):
    g = _random(32, (4, 4), device, dtype, scale_range=(0.25, 4.0))
    assert bool(g.is_invertible().all())
    fold = _fold().to(device=device, dtype=dtype)
    assert fold.is_invertible().tolist() == [False]
    # a fold has a negative Jacobian determinant somewhere
    pts = torch.rand(1, 2000, 2, device=device, dtype=dtype)
    assert float(torch.linalg.det(fold.local_scale(pts)).min()) < 0
    g2 = _random(1, (2, 2), device, dtype)
    both = MonotoneScale(
        torch.cat([g2.knots_x, fold.knots_x]), torch.cat([g2.knots_y, fold.knots_y]), validate=False
    )
    with pytest.raises(ValueError, match=r"folds over .* batch items \[1\]"):
        MonotoneScale.from_knots(both.knots_x, both.knots_y)
    assert both.is_invertible().tolist() == [True, False]
    assert both.inverse().is_invertible().tolist() == [True, False]
    assert both.compose(both).is_invertible().tolist() == [True, False]


def test_is_invertible_matches_jacobian_sign():
    """Exactness of the corner test: positive corner determinants <=> positive determinant everywhere."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 24, generator=gen, dtype=torch.float64)
    # The knots of the logits without from_params' shrinking (which would make every element invertible).
    g = MonotoneScale(
        knots_from_logits(logits[:, :12].reshape(64, 4, 3)),
        knots_from_logits(logits[:, 12:].reshape(64, 4, 3)),
        validate=False,
    )
    ok = g.is_invertible()
    assert 0 < int(ok.sum()) < 64  # both kinds present
    pts = torch.rand(64, 4000, 2, generator=gen, dtype=torch.float64)
    det_min = torch.linalg.det(g.local_scale(pts)).amin(dim=1)
    assert bool((det_min[ok] > 0).all())
    # a non-invertible element has a non-positive corner; corners of the negative cell are sampled densely
    assert bool((det_min[~ok] < 0.05 * det_min[ok].min()).all())


# ----------------------------------------------------------------------------------------------- group laws
def test_group_laws(device, dtype):
    tol = 10 * _tol(dtype)
    a = _random(4, (4, 4), device, dtype, seed=10)
    b = _random(4, (3, 5), device, dtype, seed=11)
    c = _random(4, (4, 2), device, dtype, seed=12)
    e = MonotoneScale.identity(4, (2, 2), device=device, dtype=dtype)
    p = torch.rand(4, 200, 2, device=device, dtype=dtype)
    close = lambda x, y: torch.testing.assert_close(x, y, atol=tol, rtol=0)  # noqa: E731
    # identity
    close(e.compose(a).forward_map(p), a.forward_map(p))
    close(a.compose(e).forward_map(p), a.forward_map(p))
    # inverse both ways
    close(a.compose(a.inverse()).forward_map(p), p)
    close(a.inverse().compose(a).forward_map(p), p)
    close(a.compose(a.inverse()).inverse_map(p), p)
    # associativity, and compose = function composition (eq. 9)
    close(a.compose(b).compose(c).forward_map(p), a.compose(b.compose(c)).forward_map(p))
    close(a.compose(b).forward_map(p), a.forward_map(b.forward_map(p)))
    # inverse of a product
    close(a.compose(b).inverse().forward_map(p), b.inverse().compose(a.inverse()).forward_map(p))
    close(a.compose(b).inverse_map(a.compose(b).forward_map(p)), p)
    # double inverse
    assert a.inverse().inverse() is a


def test_lazy_elements(device, dtype):
    a = _random(3, (4, 4), device, dtype, seed=20)
    b = _random(3, (2, 3), device, dtype, seed=21)
    ab = a.compose(b)
    assert isinstance(ab, ScalingChain) and len(ab.maps) == 2
    assert isinstance(a.inverse(), InverseScaling)
    assert len(ab.compose(ab).maps) == 4  # flattened
    assert not hasattr(ab, "knots_x") and not hasattr(a.inverse(), "knots_x")
    assert ab.batch_size == 3 and ab.dtype == dtype and ab.device.type == device.type
    p = torch.rand(3, 50, 2, device=device, dtype=dtype)
    tol = 10 * _tol(dtype)
    # indexing propagates
    sub = ab[1:]
    assert sub.batch_size == 2
    torch.testing.assert_close(sub.forward_map(p[1:]), ab.forward_map(p)[1:], atol=tol, rtol=0)
    torch.testing.assert_close(a.inverse()[-1].forward_map(p[2:]), a.inverse_map(p)[2:], atol=tol, rtol=0)
    torch.testing.assert_close(ab[torch.tensor([2, 0])].forward_map(p[[2, 0]]), ab.forward_map(p)[[2, 0]])
    # .to propagates
    ab64 = ab.to(torch.float64)
    assert ab64.dtype == torch.float64 and all(mp.dtype == torch.float64 for mp in ab64.maps)
    # dense maps of lazy elements
    from monowarp import pixel_grid

    pts = pixel_grid((6, 9), device=device, dtype=dtype).reshape(1, -1, 2).expand(3, -1, 2)
    torch.testing.assert_close(ab.dense_map((6, 9)).reshape(3, -1, 2), ab.forward_map(pts), atol=tol, rtol=0)
    torch.testing.assert_close(
        ab.dense_inverse_map((6, 9)).reshape(3, -1, 2), ab.inverse_map(pts), atol=tol, rtol=0
    )
    inv = a.inverse()
    torch.testing.assert_close(inv.dense_map((6, 9)), a.dense_inverse_map((6, 9)))
    torch.testing.assert_close(inv.dense_inverse_map((6, 9)), a.dense_map((6, 9)))


def test_local_scale_chain_rule(device, dtype):
    a = _random(2, (4, 4), device, dtype, seed=30)
    b = _random(2, (3, 3), device, dtype, seed=31)
    p = torch.rand(2, 20, 2, device=device, dtype=dtype) * 0.9 + 0.05
    ab = a.compose(b)
    ref = a.local_scale(b.forward_map(p)) @ b.local_scale(p)
    torch.testing.assert_close(ab.local_scale(p), ref)
    inv = a.inverse()
    eye = torch.eye(2, device=device, dtype=dtype).expand(2, 20, 2, 2)
    torch.testing.assert_close(
        inv.local_scale(a.forward_map(p)) @ a.local_scale(p), eye, atol=1e-4, rtol=1e-4
    )


def test_detach_and_getitem():
    params = torch.randn(3, 40, requires_grad=True)
    g = MonotoneScale.from_params(params)
    assert g.knots_x.requires_grad and not g.detach().knots_x.requires_grad
    assert g[0].batch_size == 1 and g[-1].batch_size == 1
    torch.testing.assert_close(g[-1].knots_x, g.knots_x[2:])
    torch.testing.assert_close(g[torch.tensor([True, False, True])].knots_y, g.knots_y[[0, 2]])
