"""The DEC's solve settings (`SolveConfig`, `BackwardConfig`) and its functional core (`deq_canonicalize`)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from deqcanon import (
    BackwardConfig,
    DEQCanonicalizer,
    MonotoneScaleGroup,
    ParamNet,
    SolveConfig,
    create_canonicalizer,
    deq_canonicalize,
)

FLAT = {
    "anderson+implicit": dict(
        solver="anderson", max_iter=6, tol=1e-4, stop_mode="abs", backward="implicit", backward_max_iter=9
    ),
    "fixed_point+phantom": dict(
        solver="fixed_point", max_iter=5, backward="phantom", phantom_steps=3, phantom_damping=0.5
    ),
}
CONFIGS = {
    "anderson+implicit": (
        SolveConfig(solver="anderson", max_iter=6, tol=1e-4, stop_mode="abs"),
        BackwardConfig("implicit", max_iter=9),
    ),
    "fixed_point+phantom": (
        SolveConfig(solver="fixed_point", max_iter=5),
        BackwardConfig("phantom", phantom_steps=3, phantom_damping=0.5),
    ),
}


def _off_identity(dec: DEQCanonicalizer) -> DEQCanonicalizer:
    torch.manual_seed(1)
    with torch.no_grad():
        dec.param_net.head.weight.normal_(0.0, 0.05)
    return dec


def _run(dec: DEQCanonicalizer, x: torch.Tensor):
    x = x.clone().requires_grad_(True)
    result = dec(x)
    loss = result.canonical.square().mean() + result.params.square().sum() + dec.residual_loss(result)
    grads = torch.autograd.grad(loss, [x, *dec.param_net.parameters()])
    return result, grads


@pytest.mark.parametrize("case", sorted(FLAT))
def test_configs_give_bitwise_the_flat_registry_dec(case):
    group = MonotoneScaleGroup(grid=(3, 2))
    torch.manual_seed(0)
    flat = _off_identity(create_canonicalizer("dec", group, 1, widths=(4, 8), view_size=16, **FLAT[case]))
    torch.manual_seed(0)
    solve, backward = CONFIGS[case]
    net = ParamNet(group, 1, widths=(4, 8), view_size=16)
    grouped = _off_identity(DEQCanonicalizer(group, net, solve=solve, backward=backward))
    assert flat.solve == grouped.solve and flat.backward == grouped.backward

    x = torch.rand(3, 1, 20, 18, generator=torch.Generator().manual_seed(2))
    (r_flat, g_flat), (r_grouped, g_grouped) = _run(flat, x), _run(grouped, x)
    assert r_flat.params.abs().max() > 1e-3  # the element is not the identity
    assert torch.equal(r_flat.canonical, r_grouped.canonical)
    assert torch.equal(r_flat.params, r_grouped.params)
    assert r_flat.info.iterations == r_grouped.info.iterations
    assert torch.equal(r_flat.info.abs_residual, r_grouped.info.abs_residual)
    assert len(g_flat) == len(g_grouped) > 1
    for a, b in zip(g_flat, g_grouped, strict=True):
        assert torch.equal(a, b)
    if backward.kind == "implicit":
        assert r_flat.info.backward is not None
        assert r_flat.info.backward.iterations == r_grouped.info.backward.iterations
    else:
        assert r_flat.info.backward is None and r_grouped.info.backward is None


def test_module_is_the_functional_core():
    group = MonotoneScaleGroup(grid=(3, 3))
    torch.manual_seed(0)
    dec = _off_identity(
        DEQCanonicalizer(
            group, ParamNet(group, 1, widths=(4,), view_size=None), solve=SolveConfig(max_iter=5)
        )
    )
    x = torch.rand(2, 1, 16, 16)
    out = dec(x)
    ref = deq_canonicalize(x, dec.param_net, group, solve=dec.solve, backward=dec.backward)
    assert torch.equal(out.params, ref.params) and torch.equal(out.canonical, ref.canonical)
    assert out.info.iterations == ref.info.iterations and torch.equal(out.info.converged, ref.info.converged)


def test_configs_are_frozen_and_validated():
    solve = SolveConfig(max_iter=4, tol=1)
    assert solve.tol == 1.0 and isinstance(solve.tol, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        solve.max_iter = 5  # type: ignore[misc]
    assert SolveConfig(max_iter=12, eval_max_iter=4).iterations(training=False) == 4
    assert SolveConfig(max_iter=12, eval_max_iter=4).iterations(training=True) == 12
    assert SolveConfig().solver_kwargs == {}
    with pytest.raises(ValueError, match="max_iter"):
        SolveConfig(solver="anderson", max_iter=2)
    with pytest.raises(ValueError, match=r"backward\.max_iter"):
        BackwardConfig(max_iter=0)
    with pytest.raises(ValueError, match=r"backward\.tol"):
        BackwardConfig(tol=-1.0)
    assert BackwardConfig.of("phantom") == BackwardConfig(kind="phantom")
    with pytest.raises(TypeError, match="BackwardConfig"):
        BackwardConfig.of(None)  # type: ignore[arg-type]


def test_registry_takes_a_backward_config_too():
    group = MonotoneScaleGroup(grid=(2, 2))
    back = BackwardConfig("phantom", phantom_steps=2)
    dec = create_canonicalizer("dec", group, 1, widths=(4,), backward=back, phantom_damping=0.5)
    assert dec.backward == dataclasses.replace(back, phantom_damping=0.5)
    with pytest.raises(ValueError, match="backward_typo"):
        create_canonicalizer("dec", group, 1, widths=(4,), backward_typo=1)
