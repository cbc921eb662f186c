"""The spatial transformer canonicalizer: the DEC's H applied once, the ablation of the equilibrium."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

import deqcanon
from deqcanon import (
    DEQCanonicalizer,
    GlobalScaleGroup,
    MonotoneScaleGroup,
    ParamNet,
    SolveConfig,
    SpatialTransformerCanonicalizer,
    canonicalizer_factory,
    create_canonicalizer,
    stn_canonicalize,
)


def _moved(net: ParamNet, scale: float = 0.3, seed: int = 0) -> ParamNet:
    """`net` with its head off the identity initialisation, so that H predicts a real warp."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.head.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return net


# --------------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("channels", [1, 5])
def test_output_shapes_and_statistics(channels, device, dtype):
    group = MonotoneScaleGroup(grid=(3, 4))
    stn = SpatialTransformerCanonicalizer(group, ParamNet(group, channels, widths=(4, 8), view_size=16))
    stn = stn.to(device, dtype)
    x = torch.rand(3, channels, 40, 24, device=device, dtype=dtype)
    result = stn(x)
    assert result.params.shape == (3, *group.param_shape) and result.canonical.shape == x.shape
    info = result.info
    assert info.solver == "single_step" and info.iterations == 1
    for name in ("abs_residual", "rel_residual", "converged", "finite", "param_distance", "log_slope_max"):
        assert getattr(info, name).shape == (3,), name
    assert result.residual is None and result.jacobian_loss is None
    assert set(info.summary()) >= {"iterations", "residual_mean", "log_slope_mean", "log_slope_max"}


def test_params_are_h_of_the_input_exactly(smooth):
    group = MonotoneScaleGroup(grid=(4, 4))
    net = _moved(ParamNet(group, 1, widths=(4, 8), view_size=16))
    stn = SpatialTransformerCanonicalizer(group, net)
    x = smooth(2, 1, 32, 24)
    result = stn(x)
    expected = net(net.view(x))
    assert torch.equal(result.params, expected)
    assert torch.equal(result.canonical, group.act_inverse(x, expected))
    assert float(result.info.log_slope_max.min()) > 0  # a real warp, not the identity


def test_one_evaluation_of_the_dec_map_from_the_identity(tiny_net, smooth):
    """H(I) = f(e), the first step of the DEC's solver; the residual is that of f at the prediction."""
    group, net = GlobalScaleGroup(), tiny_net(1, gain=0.5)
    x = smooth(2, 1, 16, 16)
    result = SpatialTransformerCanonicalizer(group, net)(x)
    f = deqcanon.functional.deq_map(net, group, x)
    torch.testing.assert_close(result.params, f(group.identity_params(2)))
    phi = result.params.detach()
    residual = (f(phi) - phi).norm(dim=1)
    torch.testing.assert_close(result.info.abs_residual, residual)
    torch.testing.assert_close(result.info.rel_residual, residual / f(phi).norm(dim=1))
    assert bool((result.info.abs_residual > 1e-4).all())  # one step does not land on the equilibrium
    assert not result.info.converged.any()
    # the DEC with the same H reaches it: its residual is far smaller
    dec = DEQCanonicalizer(group, net, solve=SolveConfig(solver="anderson", max_iter=30, tol=1e-6))
    assert bool((dec(x).info.abs_residual < 0.1 * result.info.abs_residual).all())


def test_identity_init_h_gives_the_identity(smooth, device, dtype):
    group = MonotoneScaleGroup(grid=(4, 4))
    stn = SpatialTransformerCanonicalizer(group, ParamNet(group, 3, widths=(4, 8))).to(device, dtype)
    x = smooth(2, 3, 24, 20, dtype=dtype).to(device)
    result = stn(x)
    assert torch.equal(result.params.detach(), group.identity_params(2, device=device, dtype=dtype))
    torch.testing.assert_close(result.canonical, x, atol=1e-5, rtol=0)
    assert result.info.all_converged and float(result.info.abs_residual.max()) == 0.0
    assert float(result.info.log_slope_max.max()) == 0.0 and stn.prior_loss(result).item() == 0.0


def test_source_predicts_for_another_tensor(tiny_net, smooth):
    group, net = GlobalScaleGroup(), tiny_net(1, gain=0.3)
    stn = SpatialTransformerCanonicalizer(group, net)
    image, latent = smooth(2, 1, 16, 16), torch.rand(2, 5, 8, 10)
    result = stn(latent, source=image)
    torch.testing.assert_close(result.params, net(image))
    torch.testing.assert_close(result.canonical, group.act_inverse(latent, result.params))
    with pytest.raises(ValueError, match="batch size"):
        stn(latent, source=image[:1])


def test_without_the_residual_h_runs_once():
    group = MonotoneScaleGroup(grid=(3, 3))
    net = ParamNet(group, 1, widths=(4,), view_size=16)
    calls = []
    net.register_forward_pre_hook(lambda m, args: calls.append(1))
    x = torch.rand(2, 1, 16, 16)
    SpatialTransformerCanonicalizer(group, net)(x)
    assert len(calls) == 2  # the prediction and the residual check
    calls.clear()
    result = SpatialTransformerCanonicalizer(group, net, measure_residual=False)(x)
    assert len(calls) == 1
    assert bool(result.info.abs_residual.isnan().all()) and not result.info.converged.any()
    assert result.info.finite.all() and result.info.log_slope_max is not None


# ------------------------------------------------------------------------------------------- gradients
def test_gradient_reaches_every_parameter_of_h(smooth):
    group = MonotoneScaleGroup(grid=(4, 4))
    net = ParamNet(group, 1, widths=(4, 8), view_size=16, head="bounded", init_scale=0.5)
    stn = SpatialTransformerCanonicalizer(group, net)
    x = smooth(2, 1, 24, 24).requires_grad_(True)
    result = stn(x)
    assert result.params.requires_grad
    (result.canonical * torch.linspace(0, 1, 24)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_gradient_is_plain_backprop_through_h(tiny_net, smooth):
    """d params / d weights is that of H(I) alone: no implicit (I - J)^-1 factor."""
    group = GlobalScaleGroup()
    x = smooth(2, 1, 12, 12)
    stn_net, ref_net = tiny_net(1, gain=0.4), tiny_net(1, gain=0.4)
    SpatialTransformerCanonicalizer(group, stn_net)(x).params.sum().backward()
    ref_net(x).sum().backward()
    torch.testing.assert_close(stn_net.linear.weight.grad, ref_net.linear.weight.grad)


def test_no_graph_under_no_grad_or_detached_eval(tiny_net, smooth):
    x = smooth(2, 1, 12, 12)
    stn = SpatialTransformerCanonicalizer(GlobalScaleGroup(), tiny_net(1))
    with torch.no_grad():
        assert not stn(x).params.requires_grad
    stn.eval()
    assert stn(x).params.requires_grad  # eval_backward="same"
    detached = SpatialTransformerCanonicalizer(GlobalScaleGroup(), tiny_net(1), eval_backward="detach").eval()
    assert not detached(x).params.requires_grad


class NaNNet(nn.Module):
    """Finite for sample 0; NaN for sample 1."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bad = torch.tensor([0.0, float("nan")])[: x.shape[0], None, None, None]
        return self.scale * (x + bad).mean(dim=(1, 2, 3))[:, None]


def test_non_finite_parameters_fall_back_to_the_identity(smooth):
    x = smooth(2, 1, 12, 12).requires_grad_(True)
    stn = SpatialTransformerCanonicalizer(GlobalScaleGroup(), NaNNet())
    result = stn(x)
    assert result.info.finite.tolist() == [True, False] and result.params[1].item() == 0.0
    assert not result.params.requires_grad and torch.isfinite(result.canonical).all()
    result.canonical.sum().backward()
    assert torch.isfinite(x.grad).all() and stn.param_net.scale.grad is None
    with pytest.raises(FloatingPointError, match=r"samples \[1\]"):
        SpatialTransformerCanonicalizer(GlobalScaleGroup(), NaNNet(), on_nonfinite="raise")(x)


def test_functional_form_matches_the_module(tiny_net, smooth):
    group, net = GlobalScaleGroup(), tiny_net(1, gain=0.3)
    x = smooth(2, 1, 12, 12)
    a = stn_canonicalize(x, net, group, tol=0.5, stop_mode="abs")
    b = SpatialTransformerCanonicalizer(group, net, tol=0.5, stop_mode="abs")(x)
    torch.testing.assert_close(a.params, b.params)
    assert a.info.stop_mode == "abs" and a.info.converged.tolist() == b.info.converged.tolist()


def test_state_dict_and_pickle(smooth):
    group = MonotoneScaleGroup(grid=(3, 3))
    stn = SpatialTransformerCanonicalizer(group, _moved(ParamNet(group, 1, widths=(4,), weight_norm=True)))
    x = smooth(2, 1, 16, 16)
    with torch.no_grad():
        expected = stn(x).params
        restored = pickle.loads(pickle.dumps(stn))
        fresh = SpatialTransformerCanonicalizer(group, ParamNet(group, 1, widths=(4,), weight_norm=True))
        fresh.load_state_dict(stn.state_dict())
        for other in (restored, fresh):
            torch.testing.assert_close(other(x).params, expected)


# ------------------------------------------------------------------------------------ options, registry
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"tol": 0.0}, ValueError, "tol"),
        ({"stop_mode": "relative"}, ValueError, "stop_mode"),
        ({"measure_residual": 1}, TypeError, "measure_residual"),
        ({"eval_backward": "none"}, ValueError, "eval_backward"),
        ({"on_nonfinite": "ignore"}, ValueError, "on_nonfinite"),
        ({"max_iter": 3}, TypeError, "max_iter"),  # no solver: the DEC's solve settings do not apply
    ],
)
def test_option_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        SpatialTransformerCanonicalizer(GlobalScaleGroup(), in_channels=1, **kwargs)


def test_registry_builds_it_with_the_dec_param_net_options():
    options = dict(widths=(4, 8), view_size=24, head="bounded", temperature=2.0, init_scale=0.05)
    stn = create_canonicalizer("stn", MonotoneScaleGroup(grid=(3, 3)), 2, tol=1e-2, **options)
    dec = create_canonicalizer("dec", MonotoneScaleGroup(grid=(3, 3)), 2, **options)
    assert isinstance(stn, SpatialTransformerCanonicalizer) and stn.tol == 1e-2
    assert repr(stn.param_net) == repr(dec.param_net)  # the same H
    assert stn.param_net.view_size == 24 and stn.param_net.in_channels == 2
    assert "stn" in deqcanon.canonicalizer_names()
    assert deqcanon.get_canonicalizer("stn").options >= set(options)


@pytest.mark.parametrize("option", ["max_iter", "backward", "widthz"])
def test_registry_rejects_unknown_options(option):
    with pytest.raises(ValueError, match=rf"unknown option\(s\) \['{option}'\] for canonicalizer 'stn'"):
        canonicalizer_factory("stn", **{option: 3})
    with pytest.raises(ValueError, match=option):
        create_canonicalizer("stn", in_channels=1, **{option: 3})


@pytest.mark.parametrize("mode", ["invariant", "equivariant"])
def test_works_in_latentcanon_adapt(mode):
    timm = pytest.importorskip("timm")
    latentcanon = pytest.importorskip("latentcanon")
    torch.manual_seed(0)
    net = timm.create_model("resnet10t", num_classes=4).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        reference = net(x)
    factory = canonicalizer_factory("stn", widths=(4, 8), view_size=16)
    with latentcanon.adapt(
        net, layers=["input", 0], mode=mode, canonicalizer=factory, input_size=(3, 32, 32)
    ) as adapted:
        stns = list(adapted.canonicalizers.values())
        assert len(stns) == 2 and all(isinstance(m, SpatialTransformerCanonicalizer) for m in stns)
        with torch.no_grad():
            torch.testing.assert_close(adapted(x), reference, atol=1e-5, rtol=0)  # fresh H: the identity
        for m in stns:
            _moved(m.param_net, scale=0.2)
        out, results = adapted(x, return_results=True)
        assert len(results) == 2 and all(r.info.iterations == 1 for r in results.values())
        assert float(results["input"].info.log_slope_max.min()) > 0
        out.pow(2).sum().backward()
        assert all(m.param_net.head.weight.grad.abs().sum() > 0 for m in stns)
