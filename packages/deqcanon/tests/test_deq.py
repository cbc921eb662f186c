from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

from deqcanon import (
    BackwardConfig,
    CanonicalizationResult,
    DEQCanonicalizer,
    GlobalScaleGroup,
    MonotoneScaleGroup,
    ParamNet,
    SolveConfig,
    SolverInfo,
)

F64 = torch.float64


def exact_dec(
    net: nn.Module, *, solve: dict | None = None, backward: dict | None = None, **kwargs
) -> DEQCanonicalizer:
    return DEQCanonicalizer(
        GlobalScaleGroup(),
        net,
        solve=SolveConfig(
            **{"solver": "anderson", "max_iter": 100, "tol": 1e-13, "stop_mode": "abs", **(solve or {})}
        ),
        backward=BackwardConfig(**{"solver": "anderson", "max_iter": 100, "tol": 1e-13, **(backward or {})}),
        **kwargs,
    )


def unrolled(net: nn.Module, x: torch.Tensor, steps: int = 300) -> torch.Tensor:
    """The fixed point by plain iteration with the whole trajectory differentiated."""
    group = GlobalScaleGroup()
    z = group.identity_params(x.shape[0], dtype=x.dtype)
    for _ in range(steps):
        z = net(group.act_inverse(x, z))
    return z


def loss_of(params: torch.Tensor, canonical: torch.Tensor) -> torch.Tensor:
    w = torch.linspace(-1, 1, canonical[0].numel(), dtype=canonical.dtype).view_as(canonical[0])
    return (canonical * w).sum() + (params * torch.tensor([1.5], dtype=params.dtype)).sum()


# ------------------------------------------------------------------------------------------ convergence
@pytest.mark.parametrize("solver", ["anderson", "broyden", "fixed_point"])
def test_converges_on_contractive_map(solver, tiny_net, smooth, dtype):
    net = tiny_net(1, gain=0.3).to(dtype)
    x = smooth(3, 1, 12, 12, dtype=dtype)
    tol = 1e-5
    dec = DEQCanonicalizer(
        GlobalScaleGroup(), net, solve=SolveConfig(solver=solver, max_iter=60, tol=tol, stop_mode="abs")
    )
    result = dec(x)
    info = result.info
    assert isinstance(result, CanonicalizationResult) and isinstance(info, SolverInfo)
    assert info.solver == solver and info.fallback is None
    assert 1 <= info.iterations <= 60
    assert info.all_converged and bool((info.abs_residual < tol).all())
    assert info.finite.all()
    # The residual is measured at the returned state: it agrees with one more application of f.
    with torch.no_grad():
        reference = unrolled(net, x, steps=300)
    torch.testing.assert_close(result.params.detach(), reference, atol=10 * tol, rtol=0)
    assert info.abs_trace.shape[0] == 3 and info.abs_trace.shape[1] >= 1


def test_anderson_needs_fewer_iterations_than_fixed_point(tiny_net, smooth):
    net = tiny_net(1, gain=0.5).to(F64)  # spectral radius ~0.85: slow plain iteration
    x = smooth(3, 1, 12, 12, dtype=F64)
    counts = {}
    for solver in ("anderson", "fixed_point"):
        dec = DEQCanonicalizer(
            GlobalScaleGroup(),
            net,
            solve=SolveConfig(solver=solver, max_iter=300, tol=1e-10, stop_mode="abs"),
        )
        info = dec(x).info
        assert info.all_converged
        counts[solver] = info.iterations
    assert counts["anderson"] < counts["fixed_point"] / 2


def test_stop_mode_rel_and_abs(tiny_net, smooth):
    net = tiny_net(1, gain=0.3).to(F64)
    x = smooth(2, 1, 12, 12, dtype=F64)
    result = DEQCanonicalizer(
        GlobalScaleGroup(), net, solve=SolveConfig(solver="fixed_point", max_iter=200, tol=1e-3)
    )(x)
    rel = result.info
    absolute = DEQCanonicalizer(
        GlobalScaleGroup(),
        net,
        solve=SolveConfig(solver="fixed_point", max_iter=200, tol=1e-3, stop_mode="abs"),
    )(x).info
    assert rel.stop_mode == "rel" and absolute.stop_mode == "abs"
    assert bool((rel.rel_residual <= 1e-3).all()) and bool((absolute.abs_residual <= 1e-3).all())
    # relative residual = absolute residual / |f(z*)|, and f(z*) is the returned state
    torch.testing.assert_close(rel.rel_residual, rel.abs_residual / result.params.detach().norm(dim=1))


def test_fresh_dec_is_identity(smooth, device, dtype):
    group = MonotoneScaleGroup(grid=(4, 4))
    dec = DEQCanonicalizer(group, ParamNet(group, 3, widths=(4, 8))).to(device, dtype)
    x = smooth(2, 3, 24, 20, dtype=dtype).to(device)
    result = dec(x)
    assert torch.equal(result.params.detach(), group.identity_params(2, device=device, dtype=dtype))
    torch.testing.assert_close(result.canonical, x, atol=1e-5, rtol=0)
    assert result.info.all_converged
    assert dec.prior_loss(result).item() == 0.0 and dec.residual_loss(result).item() == 0.0


# ------------------------------------------------------------------------------------------- gradients
def test_implicit_gradient_matches_unrolled_and_finite_differences(tiny_net, smooth):
    net = tiny_net(1, gain=0.2).to(F64)
    x = smooth(2, 1, 12, 12, dtype=F64).requires_grad_(True)
    dec = exact_dec(net)

    result = dec(x)
    loss = loss_of(result.params, result.canonical)
    grads = torch.autograd.grad(loss, [x, *net.parameters()])
    assert result.info.backward is not None and result.info.backward.all_converged

    z = unrolled(net, x)
    torch.testing.assert_close(result.params, z, atol=1e-10, rtol=0)
    ref = torch.autograd.grad(loss_of(z, GlobalScaleGroup().act_inverse(x, z)), [x, *net.parameters()])
    for g, r in zip(grads, ref, strict=True):
        torch.testing.assert_close(g, r, atol=1e-8, rtol=1e-6)

    # Central finite differences on the bias and on one input pixel.
    eps = 1e-6

    def value() -> float:
        with torch.no_grad():
            r = dec(x.detach())
            return float(loss_of(r.params, r.canonical))

    with torch.no_grad():
        net.linear.bias += eps
        plus = value()
        net.linear.bias -= 2 * eps
        minus = value()
        net.linear.bias += eps
    bias_grad = grads[1 + [n for n, _ in net.named_parameters()].index("linear.bias")]
    assert (plus - minus) / (2 * eps) == pytest.approx(float(bias_grad), rel=1e-5, abs=1e-7)

    x0 = x.detach().clone()

    def value_at(delta: float) -> float:
        xp = x0.clone()
        xp[1, 0, 5, 7] += delta
        with torch.no_grad():
            r = dec(xp)
            return float(loss_of(r.params, r.canonical))

    fd = (value_at(eps) - value_at(-eps)) / (2 * eps)
    assert fd == pytest.approx(float(grads[0][1, 0, 5, 7]), rel=1e-5, abs=1e-7)


def test_implicit_memory_does_not_depend_on_iterations(tiny_net, smooth):
    """Only one evaluation of f carries a graph: the autograd graph is the same for 5 and 50 iterations."""
    x = smooth(2, 1, 12, 12)

    def graph_size(max_iter: int) -> int:
        net = tiny_net(1, gain=0.3)
        dec = DEQCanonicalizer(
            GlobalScaleGroup(), net, solve=SolveConfig(max_iter=max_iter, tol=1e-30, stop_mode="abs")
        )
        params = dec(x).params
        seen, stack = set(), [params.grad_fn]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            stack.extend(n for n, _ in node.next_functions)
        return len(seen)

    assert graph_size(5) == graph_size(50)


def test_phantom_gradient(tiny_net, smooth):
    net = tiny_net(1, gain=0.2).to(F64)
    x = smooth(2, 1, 12, 12, dtype=F64)

    def grad_of(dec: DEQCanonicalizer) -> tuple[torch.Tensor, torch.Tensor]:
        result = dec(x)
        loss = loss_of(result.params, result.canonical)
        return result.params.detach(), torch.cat(
            [g.flatten() for g in torch.autograd.grad(loss, net.parameters())]
        )

    p_ift, g_ift = grad_of(exact_dec(net))
    p_one, g_one = grad_of(exact_dec(net, backward={"kind": "phantom", "phantom_steps": 1}))
    p_many, g_many = grad_of(exact_dec(net, backward={"kind": "phantom", "phantom_steps": 40}))
    p_damped, g_damped = grad_of(
        exact_dec(net, backward={"kind": "phantom", "phantom_steps": 5, "phantom_damping": 0.5})
    )
    # At a converged fixed point the phantom steps do not move the state ...
    for p in (p_one, p_many, p_damped):
        torch.testing.assert_close(p, p_ift, atol=1e-10, rtol=0)
    # ... but the gradients differ: one step drops the (I - J)^-1 factor, many steps recover it.
    err_one = (g_one - g_ift).norm() / g_ift.norm()
    err_many = (g_many - g_ift).norm() / g_ift.norm()
    err_damped = (g_damped - g_ift).norm() / g_ift.norm()
    assert err_one > 1e-2
    assert err_many < 1e-6
    assert 1e-8 < err_damped < err_one  # a damped, truncated Neumann series: in between
    result = exact_dec(net, backward={"kind": "phantom"})(x)
    loss_of(result.params, result.canonical).backward()
    assert result.info.backward is None  # no adjoint solve in phantom mode


def test_jacobian_regularisation(tiny_net, smooth):
    net = tiny_net(1, gain=0.3)
    x = smooth(2, 1, 12, 12)
    plain = DEQCanonicalizer(GlobalScaleGroup(), net)
    assert plain(x).jacobian_loss is None
    dec = DEQCanonicalizer(GlobalScaleGroup(), net, jac_reg_weight=2.0, jac_reg_vectors=4)
    torch.manual_seed(0)
    result = dec(x)
    assert result.jacobian_loss is not None and result.jacobian_loss.dim() == 0
    assert result.jacobian_loss.item() > 0
    torch.manual_seed(0)
    half = DEQCanonicalizer(GlobalScaleGroup(), net, jac_reg_weight=1.0, jac_reg_vectors=4)(x).jacobian_loss
    torch.testing.assert_close(result.jacobian_loss, 2 * half)
    result.jacobian_loss.backward()
    assert net.linear.weight.grad is not None and net.linear.weight.grad.abs().sum() > 0
    dec.eval()
    assert dec(x).jacobian_loss is None  # training-only regulariser


def test_residual_and_prior_losses(tiny_net, smooth):
    net = tiny_net(1, gain=0.3)
    x = smooth(2, 1, 12, 12)
    dec = DEQCanonicalizer(GlobalScaleGroup(), net, solve=SolveConfig(max_iter=3, tol=1e-12, stop_mode="abs"))
    result = dec(x)
    residual = dec.residual_loss(result)
    assert residual.dim() == 0 and residual.item() > 0  # three iterations do not converge to 1e-12
    torch.testing.assert_close(residual, result.info.abs_residual.pow(2).mean())
    residual.backward()
    assert net.linear.weight.grad.abs().sum() > 0
    prior = dec.prior_loss(result)
    torch.testing.assert_close(prior, result.params.detach().pow(2).sum(1).mean())


def test_double_backward_is_refused(tiny_net, smooth):
    net = tiny_net(1, gain=0.3)
    x = smooth(1, 1, 12, 12).requires_grad_(True)
    result = DEQCanonicalizer(GlobalScaleGroup(), net)(x)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(result.params.sum(), x, create_graph=True)
    phantom = DEQCanonicalizer(GlobalScaleGroup(), net, backward="phantom")(x)
    (g,) = torch.autograd.grad(phantom.params.sum(), x, create_graph=True)
    assert g.requires_grad


def test_backward_statistics_recorded(tiny_net, smooth):
    net = tiny_net(1, gain=0.3)
    result = DEQCanonicalizer(GlobalScaleGroup(), net)(smooth(2, 1, 12, 12))
    assert result.info.backward is None
    result.params.sum().backward()
    back = result.info.backward
    assert isinstance(back, SolverInfo) and back.iterations >= 1 and back.all_converged


# ------------------------------------------------------------------------------------------- eval mode
def test_eval_mode(tiny_net, smooth):
    net = tiny_net(1, gain=0.3).to(F64)
    x = smooth(2, 1, 12, 12, dtype=F64)
    dec = exact_dec(net)
    result = dec(x)
    (train_grad,) = torch.autograd.grad(result.params.sum(), net.linear.bias)

    dec.eval()
    result = dec(x)
    assert result.params.requires_grad  # gradients are available in eval when asked for ...
    (eval_grad,) = torch.autograd.grad(result.params.sum(), net.linear.bias)
    torch.testing.assert_close(eval_grad, train_grad)
    with torch.no_grad():
        assert not dec(x).params.requires_grad  # ... and cost nothing under no_grad
    detached = exact_dec(net, eval_backward="detach").eval()
    assert not detached(x).params.requires_grad
    torch.testing.assert_close(detached(x).params, result.params.detach())

    short = exact_dec(net, solve={"max_iter": 100, "eval_max_iter": 4}).eval()
    assert short(x).info.iterations <= 4
    assert short.train()(x).info.iterations > 4


# ----------------------------------------------------------------------------------------- robustness
def test_singular_anderson_falls_back(tiny_net, smooth, monkeypatch):
    def singular(*args, **kwargs):
        raise torch.linalg.LinAlgError(
            "torch.linalg.solve: The solver failed because the input matrix is singular."
        )

    monkeypatch.setattr(torch.linalg, "solve", singular)
    net = tiny_net(1, gain=0.3)
    x = smooth(2, 1, 12, 12)
    result = DEQCanonicalizer(GlobalScaleGroup(), net, solve=SolveConfig(max_iter=30, tol=1e-5))(x)
    assert result.info.fallback is not None and "singular" in result.info.fallback
    assert result.info.solver == "broyden" and result.info.all_converged
    result.params.sum().backward()  # the adjoint solve falls back too
    assert result.info.backward.solver == "broyden"
    with pytest.raises(torch.linalg.LinAlgError):
        DEQCanonicalizer(GlobalScaleGroup(), net, solve=SolveConfig(fallback=None))(x)


class NaNNet(nn.Module):
    """Finite for sample 0; for sample 1 the features (and so the output) are NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bad = torch.tensor([0.0, float("nan")])[: x.shape[0], None, None, None]
        return self.scale * (x + bad).mean(dim=(1, 2, 3))[:, None]


def test_non_finite_parameters_detected(smooth):
    x = smooth(2, 1, 12, 12).requires_grad_(True)
    dec = DEQCanonicalizer(GlobalScaleGroup(), NaNNet(), solve=SolveConfig(solver="fixed_point", max_iter=5))
    result = dec(x)
    assert result.info.finite.tolist() == [True, False]
    assert result.info.converged[1].item() is False
    assert torch.isfinite(result.params).all() and result.params[1].item() == 0.0  # identity
    assert torch.isfinite(result.canonical).all()
    # No NaN gradients: the batch is detached from H, the canonical input still depends on x.
    assert not result.params.requires_grad and result.residual is None
    result.canonical.sum().backward()
    assert torch.isfinite(x.grad).all() and dec.param_net.scale.grad is None
    with pytest.raises(FloatingPointError, match=r"samples \[1\]"):
        DEQCanonicalizer(
            GlobalScaleGroup(), NaNNet(), solve=SolveConfig(solver="fixed_point"), on_nonfinite="raise"
        )(x)


def test_rejects_non_finite_input():
    dec = DEQCanonicalizer(GlobalScaleGroup(), in_channels=1)
    x = torch.rand(2, 1, 16, 16)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        dec(x)


# ----------------------------------------------------------------------------------- inputs and layouts
@pytest.mark.parametrize("channels", [1, 7])
def test_latent_feature_maps(channels, device, dtype):
    group = MonotoneScaleGroup(grid=(3, 3))
    dec = DEQCanonicalizer(group, ParamNet(group, channels, widths=(4, 8), view_size=16)).to(device, dtype)
    x = torch.rand(2, channels, 40, 24, device=device, dtype=dtype)
    result = dec(x)
    assert result.canonical.shape == x.shape and result.params.shape == (2, 24)


def test_source_predicts_for_another_tensor(tiny_net, smooth):
    net = tiny_net(1, gain=0.3)
    dec = DEQCanonicalizer(GlobalScaleGroup(), net)
    image = smooth(2, 1, 16, 16)
    latent = torch.rand(2, 5, 8, 10)
    from_image = dec(image)
    result = dec(latent, source=image)
    torch.testing.assert_close(result.params, from_image.params)
    torch.testing.assert_close(result.canonical, GlobalScaleGroup().act_inverse(latent, result.params))
    with pytest.raises(ValueError, match="batch size"):
        dec(latent, source=image[:1])


def test_large_inputs_solved_on_view():
    group = MonotoneScaleGroup()
    net = ParamNet(group, 3, widths=(4, 8), view_size=24)
    seen = []
    net.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    dec = DEQCanonicalizer(group, net, solve=SolveConfig(max_iter=4))
    result = dec(torch.rand(1, 3, 96, 72))
    assert set(seen) == {(24, 18)}
    assert result.canonical.shape == (1, 3, 96, 72)


def test_spectral_radius(tiny_net, smooth):
    x = smooth(2, 1, 12, 12)
    radius = DEQCanonicalizer(GlobalScaleGroup(), tiny_net(1, gain=0.3)).spectral_radius(x)
    assert radius.shape == (2,) and bool((radius < 1).all()) and bool((radius > 0).all())


# --------------------------------------------------------------------------------- copies and state
def _weight_norm_dec() -> DEQCanonicalizer:
    group = MonotoneScaleGroup(grid=(3, 3))
    dec = DEQCanonicalizer(group, ParamNet(group, 1, widths=(4, 8), weight_norm=True))
    with torch.no_grad():
        dec.param_net.head.weight_g.fill_(0.05)
    return dec


@pytest.mark.parametrize(
    "make", [_weight_norm_dec, lambda: DEQCanonicalizer(GlobalScaleGroup(), in_channels=1)]
)
def test_deepcopy_pickle_state_dict(make, smooth):
    torch.manual_seed(0)
    dec = make()
    x = smooth(2, 1, 16, 16)
    optimizer = torch.optim.SGD(dec.parameters(), lr=0.1)
    result = dec(x)
    (result.canonical.pow(2).mean() + result.params.pow(2).mean()).backward()
    optimizer.step()
    dec.eval()
    with torch.no_grad():
        expected = dec(x).params

    clone = copy.deepcopy(dec)  # e.g. an EMA copy
    restored = pickle.loads(pickle.dumps(dec))
    buffer = io.BytesIO()
    torch.save(dec.state_dict(), buffer)
    buffer.seek(0)
    fresh = make().eval()
    fresh.load_state_dict(torch.load(buffer))
    for other in (clone, restored, fresh):
        with torch.no_grad():
            torch.testing.assert_close(other(x).params, expected)
    # The original still trains after being copied.
    dec.train()
    result = dec(x)
    result.params.pow(2).sum().backward()


# ---------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"solve": {"solver": "newton"}}, ValueError, "'anderson', 'broyden', 'fixed_point'"),
        ({"solve": {"max_iter": 2}}, ValueError, "max_iter"),
        ({"solve": {"max_iter": 2.5}}, TypeError, "max_iter"),
        ({"solve": {"tol": 0.0}}, ValueError, "tol"),
        ({"solve": {"stop_mode": "relative"}}, ValueError, "stop_mode"),
        ({"backward": "ift"}, ValueError, "'implicit', 'phantom'"),
        ({"backward": {"solver": "lbfgs"}}, ValueError, "backward.solver"),
        ({"backward": {"phantom_steps": 0}}, ValueError, "phantom_steps"),
        ({"backward": {"phantom_damping": 1.5}}, ValueError, "phantom_damping"),
        ({"backward": {"phantom_damping": 0.0}}, ValueError, "phantom_damping"),
        ({"jac_reg_weight": -1.0}, ValueError, "jac_reg_weight"),
        ({"eval_backward": "none"}, ValueError, "eval_backward"),
        ({"solve": {"eval_max_iter": 0}}, ValueError, "eval_max_iter"),
        ({"on_nonfinite": "ignore"}, ValueError, "on_nonfinite"),
        ({"solve": {"fallback": "gd"}}, ValueError, "fallback"),
        ({"solve": {"solver_kwargs": {"m": 4, "beta": 0.5}}}, ValueError, "beta"),
        ({"solve": {"solver_kwargs": {"max_iter": 4}}}, ValueError, "max_iter"),
        ({"solve": {"solver": "broyden", "solver_kwargs": {"lam": 1e-3}}}, ValueError, "lam"),
        ({"f_stop_mode": "rel"}, TypeError, "f_stop_mode"),  # torchdeq-style names are not accepted
        ({"stop_mode_typo": "rel"}, TypeError, "stop_mode_typo"),
        ({"max_iter": 4}, TypeError, "max_iter"),  # the solve settings live in SolveConfig
        ({"solve": {"max_iter": 4}.items()}, TypeError, "SolveConfig"),
        ({"backward": 1}, TypeError, "BackwardConfig"),
    ],
)
def test_option_validation(kwargs, error, match):
    kwargs = dict(kwargs)
    with pytest.raises(error, match=match):
        if isinstance(kwargs.get("solve"), dict):
            kwargs["solve"] = SolveConfig(**kwargs["solve"])
        if isinstance(kwargs.get("backward"), dict):
            kwargs["backward"] = BackwardConfig(**kwargs["backward"])
        DEQCanonicalizer(GlobalScaleGroup(), in_channels=1, **kwargs)


def test_constructor_arguments_validated(tiny_net):
    with pytest.raises(TypeError, match="Group protocol"):
        DEQCanonicalizer(object())
    with pytest.raises(ValueError, match="in_channels"):
        DEQCanonicalizer(GlobalScaleGroup(), tiny_net(1), in_channels=1)
    with pytest.raises(TypeError, match="param_net"):
        DEQCanonicalizer(GlobalScaleGroup(), lambda x: x)
    dec = DEQCanonicalizer(
        GlobalScaleGroup(), in_channels=1, solve=SolveConfig(solver_kwargs={"m": 4, "lam": 1e-5})
    )
    assert dec.solve.solver_kwargs == {"m": 4, "lam": 1e-5}
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\)"):
        dec(torch.rand(1, 16, 16))
