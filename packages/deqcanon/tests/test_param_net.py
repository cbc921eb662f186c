from __future__ import annotations

import copy
import pickle

import pytest
import torch

from deqcanon import GlobalScaleGroup, MonotoneScaleGroup, ParamNet


@pytest.mark.parametrize(
    "group", [MonotoneScaleGroup(grid=(4, 4)), MonotoneScaleGroup(grid=(3, 5)), GlobalScaleGroup()]
)
@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (3, 3, 20, 36)])
def test_shapes_and_identity_start(group, shape, device, dtype):
    net = ParamNet(group, 3, widths=(4, 8)).to(device, dtype)
    out = net(torch.rand(*shape, device=device, dtype=dtype))
    assert out.shape == (shape[0], *group.param_shape)
    expected = group.identity_params(shape[0], device=device, dtype=dtype)
    assert torch.equal(out, expected)  # a fresh network predicts the identity exactly


def test_depth_and_widths():
    net = ParamNet(GlobalScaleGroup(), 2, widths=(4, 8, 16))
    assert net.min_size == 8
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[-1].in_channels == 16
    assert net(torch.rand(2, 2, 8, 8)).shape == (2, 1)
    with pytest.raises(ValueError, match="at least 8x8"):
        net(torch.rand(2, 2, 6, 12))


def test_default_is_appendix_a1():
    net = ParamNet(MonotoneScaleGroup())
    assert net.widths == (64, 128)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert norms and all(c.padding_mode == "reflect" for c in convs)


def test_view_of_large_inputs():
    net = ParamNet(GlobalScaleGroup(), 3, widths=(4, 8), view_size=32)
    assert net.view(torch.rand(2, 3, 224, 112)).shape == (2, 3, 32, 16)
    small = torch.rand(2, 3, 20, 30)
    assert net.view(small) is small
    assert ParamNet(GlobalScaleGroup(), 3, view_size=None).view(torch.rand(1, 3, 99, 99)).shape[-1] == 99


def test_learns_input_dependence():
    """After the zero-initialised head is perturbed the output depends on the input."""
    net = ParamNet(MonotoneScaleGroup(), 1, widths=(4, 8))
    with torch.no_grad():
        net.head.weight.normal_()
    a, b = net(torch.rand(2, 1, 16, 16))
    assert not torch.allclose(a, b)


def test_gradients_flow_to_all_parameters():
    net = ParamNet(MonotoneScaleGroup(), 1, widths=(4, 8))
    with torch.no_grad():
        net.head.weight.normal_()
    net(torch.rand(2, 1, 16, 16)).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_exceptions():
    net = ParamNet(GlobalScaleGroup(), 3, widths=(4,))
    with pytest.raises(ValueError, match="3 channels"):
        net(torch.rand(1, 4, 16, 16))
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\)"):
        net(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="widths"):
        ParamNet(GlobalScaleGroup(), 3, widths=())
    with pytest.raises(ValueError, match="view_size"):
        ParamNet(GlobalScaleGroup(), 3, view_size=2)
    with pytest.raises(TypeError, match="Group protocol"):
        ParamNet(object(), 3)
    with pytest.raises(TypeError, match="in_channels"):
        ParamNet(GlobalScaleGroup(), 3.0)


def test_weight_norm_copy_and_pickle():
    net = ParamNet(GlobalScaleGroup(), 1, widths=(4, 8), weight_norm=True)
    assert any(k.endswith("weight_v") for k in net.state_dict())
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(net(x), torch.zeros(2, 1))  # the zero-scale head keeps the identity start
    with torch.no_grad():
        net.head.weight_g.fill_(1.0)
    from torchdeq.norm import reset_norm

    reset_norm(net)
    out = net(x)
    out.sum().backward()  # the normalised weights now carry a graph
    clone = copy.deepcopy(net)
    restored = pickle.loads(pickle.dumps(net))
    assert out.abs().sum() > 0
    torch.testing.assert_close(clone(x), out.detach())
    torch.testing.assert_close(restored(x), out.detach())
