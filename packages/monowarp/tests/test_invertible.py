"""Invertibility by construction: every finite parameter tensor gives an invertible `MonotoneScale`.

`MonotoneScale.from_params` shrinks the rows and columns toward their mean functions until every cell corner
satisfies $X_v Y_u \\le (1 - \\rho) X_u Y_v$; these tests check the promise over wide logit ranges (standard
deviations up to 5, entries of +-50 and +-1e6), the exactness of the inverse of the elements it builds, the
warps, the gradients, and that elements which already satisfy the condition are left alone.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monowarp import MonotoneScale, pixel_grid, sample_monotone_scale, unwarp, warp
from monowarp._utils import knots_from_logits
from monowarp.monotone2d import INVERTIBILITY_MARGIN

GRIDS = [(1, 1), (2, 2), (3, 3), (4, 4), (2, 5), (6, 3), (8, 8)]


def _logits(seed: int, batch: int, grid: tuple[int, int], std: float, extreme: float, dtype) -> torch.Tensor:
    """Gaussian logits of standard deviation ``std``; a third of the entries set to +-``extreme`` if > 0."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, MonotoneScale.num_params(grid), generator=gen, dtype=torch.float64) * std
    if extreme > 0:
        mask = torch.rand(z.shape, generator=gen, dtype=torch.float64) < 1 / 3
        sign = torch.where(torch.rand(z.shape, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0)
        z = torch.where(mask, extreme * sign, z)
    return z.to(dtype)


def _raw(params: torch.Tensor, grid: tuple[int, int]) -> MonotoneScale:
    """The knots of the logits without the shrinking of `from_params` (may fold)."""
    n, m = grid
    b = params.shape[0]
    kx = knots_from_logits(params[:, : (m + 1) * n].reshape(b, m + 1, n))
    ky = knots_from_logits(params[:, (m + 1) * n :].reshape(b, n + 1, m))
    return MonotoneScale(kx, ky, validate=False)


def _cell_points(grid: tuple[int, int], per_cell: int = 4) -> torch.Tensor:
    """`(1, P, 2)` float64 points on every cell, up to just inside its four corners."""
    n, m = grid
    off = torch.cat([torch.linspace(0, 1, per_cell, dtype=torch.float64)[:-1], torch.tensor([1 - 1e-9])])
    xs = ((torch.arange(n, dtype=torch.float64)[:, None] + off) / n).flatten()
    ys = ((torch.arange(m, dtype=torch.float64)[:, None] + off) / m).flatten()
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(1, -1, 2)


def _corner_terms(g: MonotoneScale) -> tuple[torch.Tensor, ...]:
    """``X_u, Y_v, X_v, Y_u`` at every corner of every cell, `(B, 2, 2, M, N)` each (float64)."""
    kx, ky = g.knots_x.double(), g.knots_y.double()
    ax, cy, bx, dy = kx.diff(dim=-1), ky.diff(dim=-1), kx.diff(dim=1), ky.diff(dim=1)
    xu = torch.stack([ax[:, :-1], ax[:, 1:]], dim=1)[:, :, None]
    yv = torch.stack([cy[:, :-1], cy[:, 1:]], dim=1).transpose(-1, -2)[:, None]
    xv = torch.stack([bx[..., :-1], bx[..., 1:]], dim=1)[:, None]
    yu = torch.stack([dy[..., :-1], dy[..., 1:]], dim=1).transpose(-1, -2)[:, :, None]
    shape = torch.broadcast_shapes(xu.shape, yv.shape)
    return tuple(t.expand(shape) for t in (xu, yv, xv, yu))


# ------------------------------------------------------------------------------------ valid for any input
@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    grid=st.sampled_from(GRIDS),
    std=st.floats(0.01, 5.0),
    extreme=st.sampled_from([0.0, 50.0, 1e6]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_from_params_is_invertible_for_wide_logits(seed, grid, std, extreme, dtype):
    params = _logits(seed, 6, grid, std, extreme, dtype)
    g = MonotoneScale.from_params(params, grid)
    assert bool(g.is_invertible().all())
    MonotoneScale.from_knots(g.knots_x, g.knots_y)  # validation accepts it: monotone, end points, no fold
    # The Jacobian determinant is positive on every cell, evaluated in float64 on the element's own knots.
    g64 = g.to(torch.float64)
    jac = g64.local_scale(_cell_points(grid).expand(6, -1, 2))
    assert float(torch.linalg.det(jac).min()) > 0


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    grid=st.sampled_from(GRIDS[1:]),
    std=st.floats(0.05, 2.0),
)
def test_from_params_keeps_the_margin(seed, grid, std):
    """At every corner $X_v Y_u \\le (1 - \\rho) X_u Y_v$ (the shrinking factor is exact, not a guess)."""
    g = MonotoneScale.from_params(_logits(seed, 8, grid, std, 0.0, torch.float64), grid)
    xu, yv, xv, yu = _corner_terms(g)
    slack = (1 - INVERTIBILITY_MARGIN) * xu * yv - xv * yu
    assert float((slack / (xu * yv)).min()) >= -1e-9
    # ... and the shrink is the largest one: some corner of every shrunk element is on the boundary.
    raw = _raw(_logits(seed, 8, grid, std, 0.0, torch.float64), grid)
    shrunk = (g.knots_x - raw.knots_x).abs().flatten(1).amax(dim=1) > 0
    tight = (slack / (xu * yv)).flatten(1).amin(dim=1) < 1e-9
    assert bool((tight | ~shrunk).all())


def test_typical_logits_used_to_fold():
    """The reason for the shrinking: the plain blend of ordinary logits (std 0.5) folds in most draws."""
    params = _logits(0, 500, (4, 4), 0.5, 0.0, torch.float64)
    assert float(_raw(params, (4, 4)).is_invertible().double().mean()) < 0.5
    assert bool(MonotoneScale.from_params(params, (4, 4)).is_invertible().all())


def test_identity_and_separable_elements_are_unchanged():
    grid = (4, 3)
    zeros = torch.zeros(2, MonotoneScale.num_params(grid))
    g = MonotoneScale.from_params(zeros + torch.tensor([[0.0], [7.5]]), grid)  # equal logits
    e = MonotoneScale.identity(2, grid)
    torch.testing.assert_close(g.knots_x, e.knots_x, atol=1e-6, rtol=0)
    torch.testing.assert_close(g.knots_y, e.knots_y, atol=1e-6, rtol=0)
    # Equal row functions (and equal column functions) blend into a separable map: never shrunk.
    n, m = grid
    row = torch.tensor([3.0, -2.0, 0.5, 1.0])[:n]
    col = torch.tensor([-4.0, 2.0, 0.0])[:m]
    params = torch.cat([row.repeat(m + 1), col.repeat(n + 1)])[None]
    g = MonotoneScale.from_params(params, grid)
    raw = _raw(params, grid)
    assert torch.equal(g.knots_x, raw.knots_x) and torch.equal(g.knots_y, raw.knots_y)


def test_elements_satisfying_the_condition_are_left_alone(dtype):
    """Knots and gradients of elements within the condition are those of the plain blend."""
    params = _logits(1, 64, (4, 4), 0.35, 0.0, dtype)
    raw = _raw(params, (4, 4))
    xu, yv, xv, yu = _corner_terms(raw)
    inside = (((1 - INVERTIBILITY_MARGIN) * xu * yv - xv * yu) > 0).flatten(1).all(dim=1)
    assert 0 < int(inside.sum()) < 64  # both kinds present
    p = params.clone().requires_grad_(True)
    g = MonotoneScale.from_params(p, (4, 4))
    assert torch.equal(g.knots_x[inside], raw.knots_x[inside])
    assert torch.equal(g.knots_y[inside], raw.knots_y[inside])
    assert (g.knots_x[~inside] != raw.knots_x[~inside]).flatten(1).any(dim=1).all()
    weights = torch.randn(g.knots_x.shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    (grad,) = torch.autograd.grad((g.knots_x * weights).sum(), p)
    p_raw = params.clone().requires_grad_(True)
    (grad_raw,) = torch.autograd.grad((_raw(p_raw, (4, 4)).knots_x * weights).sum(), p_raw)
    assert torch.equal(grad[inside], grad_raw[inside])


def test_shrinking_keeps_the_mean_functions_and_the_slope_range():
    """Rows and columns move toward their means: the means stay, slopes stay within the rows' own range."""
    params = _logits(2, 64, (4, 4), 1.0, 0.0, torch.float64)
    g, raw = MonotoneScale.from_params(params, (4, 4)), _raw(params, (4, 4))
    for k, r in ((g.knots_x, raw.knots_x), (g.knots_y, raw.knots_y)):
        torch.testing.assert_close(k.mean(dim=1), r.mean(dim=1), atol=1e-12, rtol=0)
        s, sr = k.diff(dim=-1), r.diff(dim=-1)
        assert bool((s.amin(dim=(1, 2)) >= sr.amin(dim=(1, 2)) - 1e-12).all())
        assert bool((s.amax(dim=(1, 2)) <= sr.amax(dim=(1, 2)) + 1e-12).all())


def test_shrinking_is_continuous_in_the_logits():
    """No jumps: scaling the logits a little moves the knots a little, across the onset of shrinking."""
    params = _logits(3, 16, (4, 4), 0.5, 0.0, torch.float64)
    scales = torch.linspace(0.2, 3.0, 561, dtype=torch.float64)
    knots = torch.stack([MonotoneScale.from_params(s * params, (4, 4)).knots_x for s in scales])
    steps = knots.diff(dim=0).abs().flatten(2).amax(dim=2)  # (S - 1, B)
    assert float(steps.max()) < 0.02


def test_to_params_round_trip_is_idempotent():
    params = _logits(4, 32, (3, 5), 2.0, 0.0, torch.float64)
    g = MonotoneScale.from_params(params, (3, 5))
    h = MonotoneScale.from_params(g.to_params(), (3, 5))
    torch.testing.assert_close(h.knots_x, g.knots_x, atol=1e-10, rtol=0)
    torch.testing.assert_close(h.knots_y, g.knots_y, atol=1e-10, rtol=0)


def test_sampled_elements_keep_their_scale_range_through_params():
    lo, hi = 0.5, 2.0
    g = sample_monotone_scale(256, (4, 4), (lo, hi), generator=torch.Generator().manual_seed(0))
    h = MonotoneScale.from_params(g.to_params(), (4, 4))
    assert bool(h.is_invertible().all())
    for k in (h.knots_x, h.knots_y):
        s = k.diff(dim=-1) * 4
        assert float(s.min()) >= lo * (1 - 2e-5) and float(s.max()) <= hi * (1 + 2e-5)
    # Most sampled elements satisfy the condition and come back unchanged; the others move a little.
    change = (h.knots_x - g.knots_x).abs().flatten(1).amax(dim=1)
    assert float((change < 1e-5).double().mean()) > 0.8 and float(change.max()) < 0.05


# --------------------------------------------------------------------------------------- shrink_to_invertible
def test_shrink_to_invertible_of_a_fold():
    kx = torch.tensor([[[0.0, 0.5, 1.0], [0.0, 0.95, 1.0], [0.0, 0.5, 1.0]]])
    ky = torch.tensor([[[0.0, 0.5, 1.0], [0.0, 0.05, 1.0], [0.0, 0.5, 1.0]]])
    fold = MonotoneScale(kx, ky, validate=False)
    with pytest.raises(ValueError, match="folds over"):
        MonotoneScale.from_knots(kx, ky)
    for margin in (0.0, 0.1, 0.5, 0.9):
        g = fold.shrink_to_invertible(margin)
        assert g.is_invertible().tolist() == [True]
        xu, yv, xv, yu = _corner_terms(g)
        assert float(((1 - margin) * xu * yv - xv * yu).min()) >= -1e-6
    strong, weak = fold.shrink_to_invertible(0.9), fold.shrink_to_invertible(0.1)
    dev = lambda h: (h.knots_x - h.knots_x.mean(dim=1, keepdim=True)).abs().max()  # noqa: E731
    assert 0 < dev(strong) < dev(weak) < dev(fold)
    g = fold.shrink_to_invertible()
    assert g.shrink_to_invertible().knots_x.sub(g.knots_x).abs().max() < 1e-6  # idempotent


@pytest.mark.parametrize("margin", [-0.1, 1.0, 2, True, "0.1", float("nan")])
def test_shrink_to_invertible_errors(margin):
    with pytest.raises(ValueError, match="margin must be a number in"):
        MonotoneScale.identity(1).shrink_to_invertible(margin)


# ------------------------------------------------------------------------------------------- exact inverse
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    grid=st.sampled_from(GRIDS),
    std=st.floats(0.01, 5.0),
    extreme=st.sampled_from([0.0, 50.0]),
)
def test_inverse_is_exact_float64(seed, grid, std, extreme):
    """$l^{-1}(l(p)) = p$ up to rounding times the local conditioning $1 / \\sigma_{min}(J_l(p))$."""
    g = MonotoneScale.from_params(_logits(seed, 4, grid, std, extreme, torch.float64), grid)
    p = torch.rand(4, 300, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    err = (g.inverse_map(g.forward_map(p)) - p).norm(dim=-1)
    smin = torch.linalg.svdvals(g.local_scale(p))[..., -1]
    assert float((err * smin).max()) < 1e-7
    if extreme == 0 and std <= 2:  # well-conditioned elements: exact to a few ulps in absolute terms too
        assert float(err.max()) < 1e-9
        assert float((g.forward_map(g.inverse_map(p)) - p).abs().max()) < 1e-12


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), grid=st.sampled_from(GRIDS), std=st.floats(0.01, 1.5))
def test_inverse_is_exact_float32(seed, grid, std):
    """In float32, for logits in the range of the DEC's bounded head (temperature 3: within +-1.5)."""
    params = _logits(seed, 8, grid, std, 0.0, torch.float32).clamp(-1.5, 1.5)
    g = MonotoneScale.from_params(params, grid)
    p = torch.rand(8, 300, 2, generator=torch.Generator().manual_seed(seed))
    assert float((g.inverse_map(g.forward_map(p)) - p).abs().max()) < 5e-5
    assert float((g.forward_map(g.inverse_map(p)) - p).abs().max()) < 2e-6


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), grid=st.sampled_from(GRIDS[1:6]), std=st.floats(0.1, 3.0))
def test_warp_then_unwarp_returns_the_image(seed, grid, std):
    """On the coordinate image (which bilinear sampling reproduces exactly), ``warp`` reads every pixel from
    its true preimage and ``unwarp(warp(.))`` returns the image up to the interpolation error, which is at
    most one pixel diagonal times the Lipschitz constant of $l^{-1}$."""
    h, w = 40, 48
    params = _logits(seed, 3, grid, std, 0.0, torch.float64)
    g = MonotoneScale.from_params(params, grid)
    err, bound = _round_trip_error(g, h, w, seed)
    assert bool((err <= bound).all()), (err, bound)


def _round_trip_error(g: MonotoneScale, h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest error of ``unwarp(warp(coords))`` per element and its bound (valid for invertible ones)."""
    b = g.batch_size
    coords = pixel_grid((h, w), dtype=torch.float64).permute(2, 0, 1)[None].expand(b, 2, h, w)
    warped = warp(coords, g)
    if bool(g.is_invertible().all()):
        torch.testing.assert_close(
            warped.permute(0, 2, 3, 1), g.dense_inverse_map((h, w)), atol=1e-12, rtol=0
        )
    err = (unwarp(warped, g) - coords).norm(dim=1).flatten(1).amax(dim=1)
    pts = torch.rand(b, 4000, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    lip = torch.linalg.svdvals(g.local_scale(pts))[..., -1].abs().amin(dim=1).reciprocal()  # of l^-1
    diag = (1 / (h - 1) ** 2 + 1 / (w - 1) ** 2) ** 0.5
    return err, 1.5 * lip * diag + 1e-9


def test_a_fold_returns_a_wrong_image_and_its_shrunk_element_the_right_one():
    kx = torch.tensor([[[0.0, 0.5, 1.0], [0.0, 0.95, 1.0], [0.0, 0.5, 1.0]]], dtype=torch.float64)
    ky = torch.tensor([[[0.0, 0.5, 1.0], [0.0, 0.05, 1.0], [0.0, 0.5, 1.0]]], dtype=torch.float64)
    fold = MonotoneScale(kx, ky, validate=False)
    err_fold, _ = _round_trip_error(fold, 40, 48, 0)
    assert float(err_fold.max()) > 0.1  # silently wrong content where the map folds
    err, bound = _round_trip_error(fold.shrink_to_invertible(), 40, 48, 0)
    assert float(err.max()) <= float(bound.max()) and float(err.max()) < 0.2 * float(err_fold.max())


# ----------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("grid", [(2, 2), (3, 2)])
def test_gradcheck_through_the_shrinking(grid):
    """Gradients of the knots and of the exact inverse with respect to logits that need shrinking."""
    params = _logits(5, 3, grid, 3.0, 0.0, torch.float64)
    raw = _raw(params, grid)
    g = MonotoneScale.from_params(params, grid)
    shrunk = (g.knots_x != raw.knots_x).flatten(1).any(dim=1) | (g.knots_y != raw.knots_y).flatten(1).any(
        dim=1
    )
    assert int(shrunk.sum()) >= 2  # the gradients of the shrinking are checked
    params.requires_grad_(True)

    def knots(prm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = MonotoneScale.from_params(prm, grid)
        return h.knots_x, h.knots_y

    assert torch.autograd.gradcheck(knots, (params,))
    pts = torch.rand(3, 6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.9 + 0.05
    assert torch.autograd.gradcheck(
        lambda prm: MonotoneScale.from_params(prm, grid).inverse_map(pts), (params,)
    )
    x = torch.rand(3, 1, 6, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda prm: unwarp(x, MonotoneScale.from_params(prm, grid)), (params,))


def test_gradients_stay_finite_for_extreme_logits():
    params = _logits(6, 16, (4, 4), 5.0, 50.0, torch.float32).requires_grad_(True)
    x = torch.rand(16, 1, 12, 12)
    warp(x, MonotoneScale.from_params(params, (4, 4))).square().sum().backward()
    assert params.grad is not None and bool(torch.isfinite(params.grad).all())


@pytest.mark.parametrize("scale", [0.0, 1e-3, 0.5, 2.0])
def test_second_order_gradients_are_finite(scale):
    # unrolled optimisation (Optim) differentiates the gradient itself; at the identity the shrink's
    # discriminant is 0, where a clamped square root has an infinite second derivative
    torch.manual_seed(0)
    p = (torch.randn(3, MonotoneScale.num_params((4, 4))) * scale).requires_grad_()
    g = MonotoneScale.from_params(p, grid=(4, 4))
    energy = (g.knots_x.diff(dim=-1) ** 2).sum() + (g.knots_y.diff(dim=-1) ** 3).sum()
    (grad,) = torch.autograd.grad(energy, p, create_graph=True)
    (second,) = torch.autograd.grad(grad.square().sum(), p)
    assert torch.isfinite(grad).all() and torch.isfinite(second).all()
