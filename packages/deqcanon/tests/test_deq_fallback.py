"""The DEC's non-finite fallback with every group, and the warp size it records for logging."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from deqcanon import (
    DEQCanonicalizer,
    GlobalScaleGroup,
    MonotoneScaleGroup,
    OptimCanonicalizer,
    ParamNet,
    SolveConfig,
    warp_stats,
)


class NaNForOne(nn.Module):
    """A `ParamNet` whose output is NaN for sample `bad` of every batch."""

    def __init__(self, group, bad: int = 1) -> None:
        super().__init__()
        self.inner = ParamNet(group, 1, widths=(4, 8), head="bounded")
        self.bad = bad

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.view(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        mask = torch.zeros(out.shape[0], 1, dtype=torch.bool)
        mask[self.bad] = True
        return torch.where(mask, torch.full_like(out, float("nan")), out)


@pytest.mark.parametrize("group", [MonotoneScaleGroup(grid=(3, 3)), GlobalScaleGroup()], ids=repr)
@pytest.mark.parametrize("solver", ["anderson", "fixed_point"])
def test_non_finite_falls_back_to_the_identity_with_every_group(group, solver, caplog):
    torch.manual_seed(0)
    dec = DEQCanonicalizer(group, NaNForOne(group), solve=SolveConfig(solver=solver, max_iter=6))
    x = torch.rand(3, 1, 24, 24, requires_grad=True)
    with caplog.at_level(logging.WARNING, logger="deqcanon.deq"):
        result = dec(x)
    assert "samples [1]" in caplog.text
    assert result.info.finite.tolist() == [True, False, True]
    assert result.info.converged.tolist()[1] is False and result.info.summary()["finite"] == pytest.approx(
        2 / 3
    )
    torch.testing.assert_close(result.params[1], group.identity_params(1)[0])
    assert torch.isfinite(result.params).all() and torch.isfinite(result.canonical).all()
    # The other samples were solved: the same parameters as a DEC on them alone.
    alone = DEQCanonicalizer(group, dec.param_net.inner, solve=SolveConfig(solver=solver, max_iter=6))(
        x[[0, 2]].detach()
    )
    torch.testing.assert_close(result.params[[0, 2]], alone.params.detach(), atol=1e-4, rtol=0)
    result.canonical.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_non_finite_raises_floating_point_error_with_the_monotone_group():
    group = MonotoneScaleGroup(grid=(3, 3))
    dec = DEQCanonicalizer(
        group, NaNForOne(group, bad=0), solve=SolveConfig(max_iter=4), on_nonfinite="raise"
    )
    with pytest.raises(FloatingPointError, match=r"samples \[0\]"):
        dec(torch.rand(2, 1, 24, 24))


# ------------------------------------------------------------------------------------------ warp size
def test_identity_dec_records_a_zero_warp():
    group = MonotoneScaleGroup(grid=(3, 3))
    dec = DEQCanonicalizer(group, ParamNet(group, 1, widths=(4, 8)), solve=SolveConfig(max_iter=4))
    info = dec(torch.rand(2, 1, 24, 24)).info
    assert info.param_distance.tolist() == [0.0, 0.0] and (info.log_slope_max < 1e-6).all()  # rounding
    summary = info.summary()
    assert summary["param_distance"] == 0.0 and summary["log_slope_mean"] < 1e-6


def test_moving_dec_records_its_warp():
    torch.manual_seed(0)
    group = MonotoneScaleGroup(grid=(3, 3))
    dec = DEQCanonicalizer(
        group,
        ParamNet(group, 1, widths=(4, 8), head="bounded", init_scale=0.5),
        solve=SolveConfig(max_iter=6),
    )
    result = dec(torch.rand(4, 1, 24, 24))
    info, params = result.info, result.params.detach()
    assert (info.log_slope_max > 0).all() and (info.log_slope_mean <= info.log_slope_max).all()
    torch.testing.assert_close(info.param_distance, params.abs().mean(dim=1))
    # log_slope_max is the largest |log| local scale factor along the axes (the Jacobian's diagonal)
    pts = torch.rand(4, 4096, 2)
    jac = group.element(params).local_scale(pts)
    diag = torch.stack([jac[..., 0, 0], jac[..., 1, 1]], -1).log().abs().flatten(1).amax(1)
    assert (diag <= info.log_slope_max + 1e-5).all() and (diag > 0.5 * info.log_slope_max).all()
    summary = info.summary()
    assert summary["log_slope_max"] == pytest.approx(float(info.log_slope_max.max()))
    assert summary["param_distance"] == pytest.approx(float(info.param_distance.mean()))


def test_warp_stats_of_the_global_group_and_non_finite_rows():
    stats = warp_stats(GlobalScaleGroup(), torch.tensor([[0.5], [-0.25], [float("nan")]]))
    assert stats["log_slope_max"][:2].tolist() == [0.5, 0.25] and stats["log_slope_max"][2].isnan()
    assert stats["param_distance"][:2].tolist() == [0.5, 0.25]


def test_optim_records_its_warp():
    optim = OptimCanonicalizer(GlobalScaleGroup(), in_channels=1, steps=2)
    info = optim(torch.rand(2, 1, 16, 16)).info
    assert info.param_distance is not None and info.log_slope_max.shape == (2,)


def test_warp_stats_are_cheap_and_detached():
    group = MonotoneScaleGroup(grid=(4, 4))
    params = torch.randn(8, *group.param_shape, requires_grad=True)
    stats = warp_stats(group, params)
    assert all(not v.requires_grad and v.shape == (8,) for v in stats.values())
    assert set(stats) == {"param_distance", "log_slope_mean", "log_slope_max"}
