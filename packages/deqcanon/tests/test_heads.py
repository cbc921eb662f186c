"""ParamNet's output heads: the exact-identity head and the authors' bounded head."""

from __future__ import annotations

import math

import pytest
import torch

from deqcanon import (
    DEQCanonicalizer,
    GlobalScaleGroup,
    MonotoneScaleGroup,
    ParamNet,
    SolveConfig,
    bounded_slope_range,
    create_canonicalizer,
    warp_stats,
)


def randomized(net: ParamNet, seed: int, std: float = 1.0) -> ParamNet:
    """Every weight redrawn from N(0, std^2): a network far from its initialisation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(std * torch.randn(p.shape, generator=gen))
    return net


def diagonal_scales(group: MonotoneScaleGroup, params: torch.Tensor, points: int = 256) -> torch.Tensor:
    """`(B, P, 2)` local scale factors along x and y (the Jacobian's diagonal) at random points."""
    pts = torch.rand(params.shape[0], points, 2, generator=torch.Generator().manual_seed(0))
    jac = group.element(params).local_scale(pts)
    return torch.stack([jac[..., 0, 0], jac[..., 1, 1]], dim=-1)


# ------------------------------------------------------------------------------------------ bounded
@pytest.mark.parametrize("temperature", [1.0, 3.0, 6.0])
@pytest.mark.parametrize("grid", [(4, 4), (3, 5)])
@pytest.mark.parametrize("seed", [0, 1])
def test_bounded_local_scales_stay_in_range(temperature, grid, seed):
    group = MonotoneScaleGroup(grid=grid)
    net = randomized(ParamNet(group, 2, widths=(4, 8), head="bounded", temperature=temperature), seed, 3.0)
    x = 4 * torch.randn(16, 2, 24, 24, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        params = net(x)
        scales = diagonal_scales(group, params)
    assert params.abs().max() <= temperature / 2  # (-T/2, T/2), closed in floating point
    for axis, intervals in enumerate(grid):
        lo, hi = bounded_slope_range(temperature, intervals)
        s = scales[..., axis]
        assert s.min() >= lo * (1 - 1e-4) and s.max() <= hi * (1 + 1e-4)
    # The random weights do warp: the bounds are not met trivially by an identity.
    assert (scales - 1).abs().max() > 0.05


def test_identity_head_is_unbounded_under_the_same_weights():
    group = MonotoneScaleGroup(grid=(4, 4))
    net = randomized(ParamNet(group, 2, widths=(4, 8)), 0, 3.0)
    with torch.no_grad():
        scales = diagonal_scales(group, net(4 * torch.randn(16, 2, 24, 24)))
    lo, hi = bounded_slope_range(3.0, 4)
    assert scales.min() < lo or scales.max() > hi


def test_temperature_scales_the_logits():
    group = MonotoneScaleGroup(grid=(4, 4))
    nets = {t: ParamNet(group, 1, widths=(4, 8), head="bounded", temperature=t) for t in (1.0, 4.0)}
    randomized(nets[1.0], 3)
    nets[4.0].load_state_dict(nets[1.0].state_dict())
    x = torch.rand(8, 1, 24, 24)
    with torch.no_grad():
        p1, p4 = nets[1.0](x), nets[4.0](x)
    torch.testing.assert_close(p4, 4 * p1)  # logits = T (sigmoid - 1/2)
    s1, s4 = warp_stats(group, p1), warp_stats(group, p4)
    assert (s4["log_slope_max"] > s1["log_slope_max"]).all()
    assert s1["log_slope_max"].max() < math.log(bounded_slope_range(1.0, 4)[1])


def test_equal_sigmoid_outputs_give_the_identity():
    group = MonotoneScaleGroup(grid=(4, 3))
    net = randomized(ParamNet(group, 1, widths=(4, 8), head="bounded"), 0)
    with torch.no_grad():
        net.head_norm.weight.zero_()  # every pre-sigmoid value is the channel's bias
        params = net(torch.rand(3, 1, 24, 24))
    assert params.abs().min() > 0  # non-zero logits ...
    eye = torch.eye(2).expand(3, 256, 2, 2)
    pts = torch.rand(3, 256, 2)
    torch.testing.assert_close(group.element(params).local_scale(pts), eye)  # ... but the identity element


def test_bounded_head_on_a_global_group_depends_on_the_input():
    net = randomized(ParamNet(GlobalScaleGroup(), 1, widths=(4, 8), head="bounded", temperature=2.0), 0, 0.3)
    with torch.no_grad():
        a, b = net(torch.rand(2, 1, 24, 24) * torch.tensor([1.0, 5.0]).view(2, 1, 1, 1))
    assert not torch.allclose(a, b) and max(a.abs().item(), b.abs().item()) <= 1.0


def test_bounded_default_starts_near_but_not_at_the_identity():
    group = MonotoneScaleGroup(grid=(4, 4))
    net = ParamNet(group, 1, widths=(4, 8), head="bounded")
    assert net.init_scale == 0.01 and net.temperature == 3.0
    with torch.no_grad():
        stats = warp_stats(group, net(torch.rand(4, 1, 32, 32)))
    assert (stats["log_slope_max"] > 0).all() and (stats["log_slope_max"] < 0.05).all()


# ------------------------------------------------------------------------------------- step-0 gradient
def body_gradient(head: str, init_scale: float | None) -> float:
    torch.manual_seed(0)
    group = MonotoneScaleGroup(grid=(3, 3))
    net = ParamNet(group, 1, widths=(4, 8), head=head, init_scale=init_scale)
    dec = DEQCanonicalizer(group, net, solve=SolveConfig(max_iter=4))
    x = torch.rand(4, 1, 24, 24)
    target = torch.rand(4, 1, 24, 24)
    (dec(x).canonical - target).pow(2).mean().backward()
    return float(net.body[0].conv1.weight.grad.abs().sum())


def test_identity_init_gives_no_gradient_to_the_body_at_step_0():
    assert body_gradient("identity_init", None) == 0.0


@pytest.mark.parametrize(
    ("head", "init_scale"), [("bounded", None), ("bounded", 0.1), ("identity_init", 0.01)]
)
def test_non_identity_init_gives_gradient_to_the_first_conv(head, init_scale):
    assert body_gradient(head, init_scale) > 0


def test_identity_init_with_a_scale_is_not_the_identity():
    net = ParamNet(GlobalScaleGroup(), 1, widths=(4, 8), init_scale=0.05)
    assert net(torch.rand(2, 1, 16, 16)).abs().min() > 0
    assert float(net.head.weight.detach().std()) == pytest.approx(0.05, rel=0.5)


@pytest.mark.parametrize("head", ["identity_init", "bounded"])
def test_weight_norm_with_either_head(head):
    group = MonotoneScaleGroup(grid=(3, 3))
    net = ParamNet(group, 1, widths=(4, 8), head=head, weight_norm=True)
    dec = DEQCanonicalizer(group, net, solve=SolveConfig(max_iter=4))
    params = dec(torch.rand(2, 1, 24, 24)).params
    assert torch.isfinite(params).all() and ((params.abs().max() > 0) == (head == "bounded"))


# -------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"head": "sigmoid"}, ValueError, "head"),
        ({"temperature": 3.0}, ValueError, "temperature applies to head='bounded'"),
        ({"head": "bounded", "temperature": 0.0}, ValueError, "temperature"),
        ({"head": "bounded", "temperature": "3"}, TypeError, "temperature"),
        ({"init_scale": -0.1}, ValueError, "init_scale"),
        ({"head": "bounded", "init_scale": float("inf")}, ValueError, "init_scale"),
    ],
)
def test_bad_head_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        ParamNet(GlobalScaleGroup(), 1, widths=(4,), **kwargs)


def test_registry_passes_the_head_options():
    dec = create_canonicalizer(
        "dec", in_channels=1, widths=(4, 8), head="bounded", temperature=2.0, init_scale=0.05
    )
    net = dec.param_net
    assert (net.head_kind, net.temperature, net.init_scale) == ("bounded", 2.0, 0.05)
    assert torch.equal(net.head_norm.weight, torch.full_like(net.head_norm.weight, 0.05))
    default = create_canonicalizer("dec", in_channels=1, widths=(4,)).param_net
    assert (default.head_kind, default.temperature, default.init_scale) == ("identity_init", None, 0.0)
    with pytest.raises(ValueError, match="head"):
        create_canonicalizer("dec", widths=(4,), head="tanh")
    with pytest.raises(ValueError, match="temperature applies"):
        create_canonicalizer("dec", widths=(4,), temperature=3.0)


def test_bounded_slope_range():
    lo, hi = bounded_slope_range(3.0, 4)
    e = math.exp(3.0)
    assert lo == pytest.approx(4 / (1 + 3 * e)) and hi == pytest.approx(4 * e / (e + 3))
    assert bounded_slope_range(2.0, 1) == (1.0, 1.0)  # one interval: always the identity
    with pytest.raises(ValueError, match="temperature"):
        bounded_slope_range(-1.0, 4)
    with pytest.raises(ValueError, match="intervals"):
        bounded_slope_range(3.0, 0)
