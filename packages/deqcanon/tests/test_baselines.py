from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch

from deqcanon import (
    CanonicalizationResult,
    DiscreteCanonicalizer,
    EnergyNet,
    GlobalScaleGroup,
    MonotoneScaleGroup,
    OptimCanonicalizer,
)


def perturbed(net: EnergyNet, seed: int = 0) -> EnergyNet:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.readout.weight.copy_(torch.randn(net.readout.weight.shape, generator=gen))
    return net


# ------------------------------------------------------------------------------------------- energy
def test_energy_net(device, dtype):
    net = EnergyNet(3, width=8).to(device, dtype)
    assert net(torch.rand(2, 3, 20, 13, device=device, dtype=dtype)).shape == (2,)
    assert net.view(torch.rand(1, 3, 256, 128)).shape == (1, 3, 64, 32)
    with pytest.raises(ValueError, match="3 channels"):
        net(torch.rand(2, 1, 16, 16, device=device, dtype=dtype))


def test_energy_is_twice_differentiable():
    net = perturbed(EnergyNet(1, width=4)).double()
    group = GlobalScaleGroup()
    x = torch.rand(1, 1, 12, 12, dtype=torch.float64)
    z = torch.tensor([[0.1]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda p: net(group.act_inverse(x, p)), (z,))


# ----------------------------------------------------------------------------------------- discrete
@pytest.mark.parametrize("group", [MonotoneScaleGroup(grid=(3, 3)), GlobalScaleGroup()], ids=repr)
def test_discrete_shapes_and_identity(group, device, dtype):
    canon = DiscreteCanonicalizer(group, in_channels=2, num_elements=10).to(device, dtype)
    assert canon.num_elements == 10 and canon.elements.shape == (10, *group.param_shape)
    assert torch.equal(canon.elements[0], group.identity_params(1, dtype=dtype, device=device)[0])
    x = torch.rand(3, 2, 16, 20, device=device, dtype=dtype)
    result = canon(x)
    assert isinstance(result, CanonicalizationResult) and result.info is None
    assert result.params.shape == (3, *group.param_shape) and result.canonical.shape == x.shape
    # A fresh (flat) energy selects the identity, index 0.
    torch.testing.assert_close(result.params.detach(), group.identity_params(3, device=device, dtype=dtype))


def test_default_has_64_elements():
    assert DiscreteCanonicalizer(MonotoneScaleGroup()).num_elements == 64


def test_discrete_argmin_and_straight_through():
    group = GlobalScaleGroup()
    canon = DiscreteCanonicalizer(group, perturbed(EnergyNet(1, width=4)), num_elements=8)
    x = torch.rand(4, 1, 16, 16)
    result = canon(x)
    energies = canon.energies(x)
    chosen = canon.elements[energies.argmin(dim=1)]
    assert torch.equal(result.params.detach(), chosen)  # the values are exactly the argmin element
    torch.testing.assert_close(result.canonical.detach(), group.act_inverse(x, chosen))
    (result.canonical.mean() + result.params.sum()).backward()
    grads = [p.grad for p in canon.energy_net.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_discrete_elements_validated():
    group = GlobalScaleGroup()
    elements = torch.tensor([[0.0], [0.3], [-0.3]])
    canon = DiscreteCanonicalizer(group, in_channels=1, elements=elements)
    assert canon.num_elements == 3
    with pytest.raises(ValueError, match="identity"):
        DiscreteCanonicalizer(group, in_channels=1, elements=torch.tensor([[0.2], [0.3]]))
    with pytest.raises(ValueError, match="elements"):
        DiscreteCanonicalizer(group, in_channels=1, elements=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="num_elements"):
        DiscreteCanonicalizer(group, in_channels=1, num_elements=0)
    with pytest.raises(ValueError, match="temperature"):
        DiscreteCanonicalizer(group, in_channels=1, temperature=0.0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        DiscreteCanonicalizer(group, in_channels=1, k=3)


def test_discrete_is_deterministic_and_seeded():
    a = DiscreteCanonicalizer(GlobalScaleGroup(), in_channels=1, num_elements=16, seed=1)
    b = DiscreteCanonicalizer(GlobalScaleGroup(), in_channels=1, num_elements=16, seed=1)
    c = DiscreteCanonicalizer(GlobalScaleGroup(), in_channels=1, num_elements=16, seed=2)
    assert torch.equal(a.elements, b.elements) and not torch.equal(a.elements, c.elements)
    assert a.elements.exp().min() >= 0.5 and a.elements.exp().max() <= 2.0


# -------------------------------------------------------------------------------------------- optim
@pytest.mark.parametrize("optimizer", ["gd", "adam"])
def test_optim_runs_and_backpropagates(optimizer):
    group = MonotoneScaleGroup(grid=(3, 3))
    optim = OptimCanonicalizer(group, perturbed(EnergyNet(1, width=4)), steps=3, optimizer=optimizer)
    x = torch.rand(2, 1, 16, 16)
    result = optim(x)
    assert result.params.shape == (2, 24) and result.info.iterations == 3
    assert result.info.abs_trace.shape == (2, 3) and result.info.solver == optimizer
    assert result.params.abs().sum() > 0  # the steps moved away from the identity
    result.canonical.pow(2).mean().backward()
    # every weight shapes the energy's gradient; the read-out bias does not (a constant energy offset)
    grads = {n: p.grad for n, p in optim.energy_net.named_parameters()}
    assert grads.pop("readout.bias") is None
    assert all(g is not None for g in grads.values())
    assert optim.energy_net.conv1.weight.grad.abs().sum() > 0  # second-order path through the steps


def test_optim_matches_manual_unroll():
    group = GlobalScaleGroup()
    net = perturbed(EnergyNet(1, width=4)).double()
    optim = OptimCanonicalizer(group, net, steps=4, step_size=0.3)
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    z = group.identity_params(2, dtype=torch.float64).requires_grad_()
    for _ in range(4):
        (g,) = torch.autograd.grad(net(group.act_inverse(x, z)).sum(), z, create_graph=True)
        z = z - 0.3 * g
    result = optim(x)
    torch.testing.assert_close(result.params, z)
    ga = torch.autograd.grad(result.canonical.sum(), net.conv2.weight)[0]
    gb = torch.autograd.grad(group.act_inverse(x, z).sum(), net.conv2.weight)[0]
    torch.testing.assert_close(ga, gb)


def test_optim_without_graph():
    group = GlobalScaleGroup()
    optim = OptimCanonicalizer(group, perturbed(EnergyNet(1, width=4)), steps=2)
    x = torch.rand(2, 1, 12, 12)
    with_graph = optim(x)
    with torch.no_grad():
        without = optim(x)  # the inner gradients are still taken, but nothing is kept
    assert not without.params.requires_grad
    torch.testing.assert_close(without.params, with_graph.params.detach())


def test_optim_fresh_is_identity():
    x = torch.rand(2, 3, 16, 16)
    result = OptimCanonicalizer(MonotoneScaleGroup(), in_channels=3)(x)
    assert result.params.abs().max().item() == 0.0  # a flat energy has zero gradient
    torch.testing.assert_close(result.canonical.detach(), x, atol=1e-5, rtol=0)
    assert result.info.abs_residual.abs().max().item() == 0.0


def test_optim_options_validated():
    group = GlobalScaleGroup()
    with pytest.raises(ValueError, match="optimizer"):
        OptimCanonicalizer(group, in_channels=1, optimizer="sgd")
    with pytest.raises(ValueError, match="steps"):
        OptimCanonicalizer(group, in_channels=1, steps=0)
    with pytest.raises(ValueError, match="step_size"):
        OptimCanonicalizer(group, in_channels=1, step_size=-0.1)
    with pytest.raises(ValueError, match="betas"):
        OptimCanonicalizer(group, in_channels=1, betas=(0.9,))
    with pytest.raises(ValueError, match="in_channels"):
        OptimCanonicalizer(group, EnergyNet(1), in_channels=1)


# ---------------------------------------------------------------------------------- copies and state
@pytest.mark.parametrize("cls", [DiscreteCanonicalizer, OptimCanonicalizer])
def test_copy_pickle_state_dict(cls):
    group = GlobalScaleGroup()
    model = cls(group, perturbed(EnergyNet(1, width=4)))
    x = torch.rand(2, 1, 16, 16)
    model(x).canonical.sum().backward()
    with torch.no_grad():
        expected = model(x).params
    fresh = cls(group, EnergyNet(1, width=4))
    fresh.load_state_dict(model.state_dict())
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model)), fresh):
        with torch.no_grad():
            torch.testing.assert_close(other(x).params, expected)


def test_prior_loss():
    group = GlobalScaleGroup()
    canon = DiscreteCanonicalizer(group, in_channels=1, elements=torch.tensor([[0.0], [math.log(2.0)]]))
    result = canon(torch.rand(2, 1, 16, 16))
    assert canon.prior_loss(result).item() == 0.0
    result.params = torch.full((2, 1), math.log(2.0))
    assert canon.prior_loss(result).item() == pytest.approx(math.log(2.0) ** 2)


# ------------------------------------------------------------------------- Canon as the paper reports it
def test_structured_candidates_identity_first_then_mild_then_wide():
    group = MonotoneScaleGroup(grid=(3, 3))
    canon = DiscreteCanonicalizer(group, in_channels=1, num_elements=33, seed=4)
    assert canon.identity_index == 0 and torch.equal(canon.elements[0], torch.zeros(group.param_shape))
    slopes = group.log_slopes(canon.elements).abs().amax(dim=1)  # max |log local scale| per candidate
    mild, wide = slopes[1:25], slopes[25:]  # round(0.75 * 32) = 24 mild ones
    assert mild.max() <= math.log(1.25) + 1e-4 and (mild > 0).all()
    assert wide.max() > math.log(1.25) and wide.max() <= math.log(2.0) + 1e-4
    again = DiscreteCanonicalizer(group, in_channels=1, num_elements=33, seed=4).elements
    other = DiscreteCanonicalizer(group, in_channels=1, num_elements=33, seed=5).elements
    assert torch.equal(canon.elements, again) and not torch.equal(canon.elements, other)


def test_structured_candidates_options():
    group = GlobalScaleGroup()
    canon = DiscreteCanonicalizer(
        group,
        in_channels=1,
        num_elements=11,
        mild_range=(0.9, 1.1),
        mild_fraction=0.5,
        sample_kwargs={"scale_range": (0.25, 4.0)},
    )
    scales = canon.elements[1:, 0].exp()
    assert ((scales[:5] >= 0.9) & (scales[:5] <= 1.1)).all()
    assert ((scales[5:] < 0.9) | (scales[5:] > 1.1)).any()
    old = DiscreteCanonicalizer(group, in_channels=1, num_elements=11, candidates="random")
    assert (old.elements[1:].exp() < 0.8).any() or (old.elements[1:].exp() > 1.25).any()


def test_energy_readout_is_random_for_canon_and_zero_for_optim():
    assert DiscreteCanonicalizer(GlobalScaleGroup(), in_channels=1).energy_net.readout.weight.abs().sum() > 0
    assert OptimCanonicalizer(GlobalScaleGroup(), in_channels=1).energy_net.readout.weight.abs().sum() == 0
    assert EnergyNet(1, readout_init="random").readout.weight.abs().sum() > 0
    with pytest.raises(ValueError, match="readout_init"):
        EnergyNet(1, readout_init="ones")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_untrained_canon_with_identity_bias_returns_the_identity(seed, in_channels):
    torch.manual_seed(seed)
    group = MonotoneScaleGroup(grid=(3, 3))
    canon = DiscreteCanonicalizer(group, in_channels=in_channels, num_elements=32, seed=seed)
    x = torch.rand(16, in_channels, 32, 32) * (torch.rand(16, 1, 1, 1) * 4)
    energies = canon.energies(x)
    assert (energies.argmin(dim=1) == 0).all()
    assert torch.equal(canon(x).params.detach(), group.identity_params(16))
    flat = copy.deepcopy(canon)
    flat.identity_bias = 0.0
    shift = torch.zeros(32)
    shift[0] = 1.0
    torch.testing.assert_close(energies.detach(), flat.energies(x).detach() - shift)


def test_canon_with_identity_bias_is_trainable():
    group = MonotoneScaleGroup(grid=(3, 3))
    canon = DiscreteCanonicalizer(group, in_channels=1, num_elements=16)
    x = torch.rand(4, 1, 24, 24)
    target = torch.rand(4, 1, 24, 24)
    before = canon.energies(x).detach()
    opt = torch.optim.SGD(canon.parameters(), lr=1.0)
    loss = (canon(x).canonical - target).pow(2).mean()
    loss.backward()
    grads = {n: p.grad for n, p in canon.energy_net.named_parameters()}
    assert grads["readout.weight"].abs().sum() > 0 and grads["conv1.weight"].abs().sum() > 0
    opt.step()
    assert not torch.allclose(canon.energies(x).detach(), before)


def test_identity_bias_on_given_elements_and_validation():
    group = GlobalScaleGroup()
    elements = torch.tensor([[0.3], [0.0], [-0.3]])
    canon = DiscreteCanonicalizer(group, in_channels=1, elements=elements, identity_bias=100.0)
    assert canon.identity_index == 1
    assert canon(torch.rand(2, 1, 16, 16)).params.detach().tolist() == [[0.0], [0.0]]
    for kwargs, match in [
        ({"identity_bias": -1.0}, "identity_bias"),
        ({"candidates": "grid"}, "candidates"),
        ({"mild_range": (1.1, 1.5)}, "mild_range"),
        ({"mild_range": (0.9,)}, "mild_range"),
        ({"mild_fraction": 1.5}, "mild_fraction"),
    ]:
        with pytest.raises(ValueError, match=match):
            DiscreteCanonicalizer(group, in_channels=1, **kwargs)
    with pytest.raises(TypeError, match="sample_kwargs"):
        DiscreteCanonicalizer(group, in_channels=1, sample_kwargs=[("scale_range", (0.5, 2.0))])
