from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

import monowarp
from deqcanon import GlobalScaleGroup, Group, MonotoneScaleGroup, field_shape_of

GROUPS = [MonotoneScaleGroup(grid=(4, 4)), MonotoneScaleGroup(grid=(3, 2)), GlobalScaleGroup()]


@pytest.mark.parametrize("group", GROUPS, ids=repr)
def test_protocol_and_identity(group, device, dtype, smooth):
    assert isinstance(group, Group)
    x = smooth(2, 3, 17, 12).to(device, dtype)
    params = group.identity_params(2, device=device, dtype=dtype)
    assert params.shape == (2, *group.param_shape)
    assert params.dtype == dtype and params.device.type == device.type
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(group.act_inverse(x, params), x, atol=tol, rtol=0)
    torch.testing.assert_close(group.act(x, params), x, atol=tol, rtol=0)


@pytest.mark.parametrize("group", GROUPS, ids=repr)
@pytest.mark.parametrize("batch", [1, 3])
def test_cardinality(group, batch, device, dtype):
    x = torch.rand(batch, 5, 13, 20, device=device, dtype=dtype)
    params = 0.2 * torch.randn(batch, *group.param_shape, device=device, dtype=dtype)
    assert group.act(x, params).shape == x.shape
    assert group.act_inverse(x, params).shape == x.shape


@pytest.mark.parametrize("group", GROUPS, ids=repr)
def test_round_trip(group, smooth):
    x = smooth(2, 1, 48, 40, dtype=torch.float64)
    params = group.sample_params(2, scale_range=(0.8, 1.25), generator=torch.Generator().manual_seed(3))
    params = params.to(torch.float64)
    back = group.act_inverse(group.act(x, params), params)
    # Away from the border (padding) the round trip is exact up to interpolation.
    inner = (slice(None), slice(None), slice(12, -12), slice(12, -12))
    assert (back - x)[inner].abs().mean() < 0.02


def test_monotone_group_uses_monowarp(smooth):
    group = MonotoneScaleGroup(grid=(4, 3))
    params = group.sample_params(2, generator=torch.Generator().manual_seed(0))
    assert params.shape == (2, monowarp.MonotoneScale.num_params((4, 3)))
    x = smooth(2, 2, 20, 24)
    g = monowarp.MonotoneScale.from_params(params, (4, 3))
    torch.testing.assert_close(group.act(x, params), monowarp.warp(x, g))
    torch.testing.assert_close(group.act_inverse(x, params), monowarp.unwarp(x, g))
    element = group.element(params)
    assert isinstance(element, monowarp.MonotoneScale) and element.grid == (4, 3)


def test_monotone_field_layout():
    group = MonotoneScaleGroup(grid=(4, 3))  # N = 4 intervals along x, M = 3 along y
    n, m = group.grid
    assert field_shape_of(group) == group.field_shape == (2, m + 1, n + 1)
    params = torch.arange(group.param_shape[0], dtype=torch.float32)[None]
    field = group.field_from_params(params)
    zx = params[0, : (m + 1) * n].reshape(m + 1, n)
    zy = params[0, (m + 1) * n :].reshape(n + 1, m)
    torch.testing.assert_close(field[0, 0, :, :n], zx)  # row functions, rows along y
    torch.testing.assert_close(field[0, 1, :m, :], zy.T)  # column functions, transposed
    assert field[0, 0, :, n].abs().sum() == 0 and field[0, 1, m, :].abs().sum() == 0  # unused entries
    torch.testing.assert_close(group.params_from_field(field), params)


def test_global_scale_feature():
    """Hand-computed: magnifying by 2 about the centre moves a pixel at offset d to offset 2d."""
    group = GlobalScaleGroup()
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 6] = 1.0  # two pixels right of the centre
    zoomed = group.act(x, torch.tensor([[math.log(2.0)]]))
    assert zoomed[0, 0, 4, 8] == pytest.approx(1.0)
    shrunk = group.act_inverse(zoomed, torch.tensor([[math.log(2.0)]]))
    assert shrunk[0, 0, 4, 6] == pytest.approx(1.0)
    assert group.element(torch.tensor([[math.log(2.0)]])).item() == pytest.approx(2.0)


@pytest.mark.parametrize("group", [MonotoneScaleGroup(grid=(2, 2)), GlobalScaleGroup()], ids=repr)
def test_gradcheck(group):
    x = torch.rand(1, 1, 6, 5, dtype=torch.float64, requires_grad=True)
    params = (0.3 * torch.randn(1, *group.param_shape, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(group.act_inverse, (x, params), eps=1e-6, atol=1e-4)
    assert torch.autograd.gradcheck(group.act, (x, params), eps=1e-6, atol=1e-4)


@pytest.mark.parametrize("group", GROUPS, ids=repr)
def test_exceptions(group):
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="params"):
        group.act_inverse(x, torch.zeros(2, group.param_shape[0] + 1))
    with pytest.raises(ValueError, match="batch size"):
        group.act_inverse(x, torch.zeros(3, *group.param_shape))
    with pytest.raises(ValueError, match="x"):
        group.act_inverse(torch.rand(2, 8, 8), torch.zeros(2, *group.param_shape))
    with pytest.raises(TypeError, match="params"):
        group.act(x, [[0.0]])


def test_group_options_validated():
    with pytest.raises(ValueError, match="grid"):
        MonotoneScaleGroup(grid=(0, 4))
    with pytest.raises(ValueError, match="grid"):
        MonotoneScaleGroup(grid=(4,))
    with pytest.raises(ValueError, match="padding_mode"):
        GlobalScaleGroup(padding_mode="wrap")
    with pytest.raises(ValueError, match="mode"):
        MonotoneScaleGroup(mode="cubic")


def test_sample_params_in_range():
    group = GlobalScaleGroup()
    params = group.sample_params(500, scale_range=(0.5, 2.0), generator=torch.Generator().manual_seed(0))
    assert params.shape == (500, 1)
    assert params.exp().min() >= 0.5 and params.exp().max() <= 2.0
    assert params.std() > 0.3


def _howto_code() -> str | None:
    for parent in Path(__file__).resolve().parents:
        page = parent / "docs" / "deqcanon" / "custom-group.md"
        if page.exists():
            blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
            return "\n".join(blocks)
    return None


def test_howto_custom_group_runs():
    """The worked example of the how-to (a rotation group) runs and canonicalizes."""
    code = _howto_code()
    if code is None:
        pytest.skip("docs/deqcanon/custom-group.md not found (package installed outside the repository)")
    namespace: dict = {}
    exec(compile(code, "custom-group.md", "exec"), namespace)
    assert "RotationGroup" in namespace
    group = namespace["RotationGroup"]()
    assert isinstance(group, Group)
