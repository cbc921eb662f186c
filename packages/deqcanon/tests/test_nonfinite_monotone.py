"""The DEC's non-finite fallback with the monotone scaling group, whose own validation rejects NaN/inf.

`monowarp.MonotoneScale.from_params` raises on non-finite parameters, so the solve must never hand such a
state to the group: `deq_map` evaluates a non-finite sample at the identity and keeps it non-finite, and the
fallback (`on_nonfinite`) replaces it after the solve. Finite parameters, however large, are valid elements.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from deqcanon import BackwardConfig, DEQCanonicalizer, MonotoneScaleGroup, ParamNet, SolveConfig

GROUP = MonotoneScaleGroup(grid=(3, 3))


class Corrupt(nn.Module):
    """A bounded `ParamNet` whose output for sample `bad` becomes `value` from call `after` on (0: always)."""

    def __init__(self, value: float, bad: int = 1, after: int = 0, scale: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inner = ParamNet(GROUP, 1, widths=(4, 8), head="bounded", init_scale=0.5)
        self.value, self.bad, self.after, self.scale = value, bad, after, scale
        self.calls = 0

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.view(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x) * self.scale
        self.calls += 1
        if self.calls <= self.after:
            return out
        mask = torch.zeros(out.shape[0], 1, dtype=torch.bool)
        mask[self.bad] = True
        return torch.where(mask, torch.full_like(out, self.value), out)


def test_the_group_itself_rejects_non_finite_parameters():
    params = GROUP.identity_params(2)
    params[1, 3] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        GROUP.element(params)
    with pytest.raises(ValueError, match="finite"):
        GROUP.act_inverse(torch.rand(2, 1, 8, 8), params)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("after", [0, 2])
def test_non_finite_states_fall_back_to_the_identity(value, after, caplog):
    """Non-finite from the start or only later in the solve (a state that turns non-finite mid-way)."""
    net = Corrupt(value, after=after)
    dec = DEQCanonicalizer(GROUP, net, solve=SolveConfig(solver="fixed_point", max_iter=6, tol=1e-12))
    x = torch.rand(3, 1, 24, 24, requires_grad=True)
    with caplog.at_level(logging.WARNING, logger="deqcanon.functional"):
        result = dec(x)
    assert net.calls > after + 1  # the corrupt outputs did reach the solve
    assert result.info.finite.tolist() == [True, False, True]
    assert "samples [1]" in caplog.text
    torch.testing.assert_close(result.params[1], GROUP.identity_params(1)[0])
    torch.testing.assert_close(result.canonical[1], x[1].detach(), atol=1e-5, rtol=0)
    assert bool(result.element.is_invertible().all())
    result.canonical.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_phantom_backward_and_raise_mode():
    x = torch.rand(2, 1, 24, 24, requires_grad=True)
    backward = BackwardConfig("phantom", phantom_steps=2, phantom_damping=0.5)
    dec = DEQCanonicalizer(
        GROUP, Corrupt(float("nan"), bad=0), solve=SolveConfig(max_iter=4), backward=backward
    )
    result = dec(x)
    assert result.info.finite.tolist() == [False, True]
    result.canonical.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    dec = DEQCanonicalizer(
        GROUP, Corrupt(float("inf"), bad=0), solve=SolveConfig(max_iter=4), on_nonfinite="raise"
    )
    with pytest.raises(FloatingPointError, match=r"samples \[0\]"):
        dec(x)


def test_eval_without_grad():
    dec = DEQCanonicalizer(GROUP, Corrupt(float("nan"), bad=1, after=1), solve=SolveConfig(max_iter=5)).eval()
    with torch.no_grad():
        result = dec(torch.rand(2, 1, 24, 24))
    assert result.info.finite.tolist() == [True, False]
    assert torch.isfinite(result.canonical).all() and not result.params.requires_grad


def test_huge_finite_parameters_are_valid_elements():
    """No fallback for finite outputs, however large: the group maps them to invertible elements."""
    net = Corrupt(1e30, bad=1, scale=40.0)
    dec = DEQCanonicalizer(GROUP, net, solve=SolveConfig(solver="fixed_point", max_iter=4))
    x = torch.rand(3, 1, 24, 24)
    result = dec(x)
    assert result.info.finite.all() and float(result.params[1].detach().abs().min()) > 1e29
    assert bool(result.element.is_invertible().all())
    assert torch.isfinite(result.canonical).all()
