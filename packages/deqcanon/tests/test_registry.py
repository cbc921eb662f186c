"""The canonicalizer registry: built-ins by name, options checked, user entries, the adapt() factory."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

import deqcanon
from deqcanon import (
    DEQCanonicalizer,
    DiscreteCanonicalizer,
    EnergyNet,
    GlobalScaleGroup,
    MonotoneScaleGroup,
    OptimCanonicalizer,
    ParamNet,
    canonicalizer_factory,
    canonicalizer_names,
    create_canonicalizer,
    get_canonicalizer,
    register_canonicalizer,
)


@pytest.fixture
def scratch_name():
    """A registry name that is removed again after the test."""
    name = "test_scratch_canonicalizer"
    yield name
    deqcanon.registry._REGISTRY.pop(name, None)


def test_builtins_are_registered_first():
    assert canonicalizer_names()[:3] == ("dec", "canon", "optim")


def test_dec_with_the_options_the_app_passes():
    group = MonotoneScaleGroup(grid=(3, 2))
    dec = create_canonicalizer(
        "dec",
        group,
        1,
        widths=(8, 16),
        view_size=32,
        solver="broyden",
        max_iter=4,
        tol=1e-4,
        backward="phantom",
    )
    assert isinstance(dec, DEQCanonicalizer) and isinstance(dec.param_net, ParamNet)
    assert dec.group is group and dec.param_net.in_channels == 1
    assert dec.param_net.widths == (8, 16) and dec.param_net.view_size == 32
    assert (dec.solve.solver, dec.solve.max_iter, dec.solve.tol, dec.backward.kind) == (
        "broyden",
        4,
        1e-4,
        "phantom",
    )
    result = dec(torch.rand(2, 1, 24, 20))
    assert result.params.shape == (2, group.param_shape[0])
    assert result.canonical.shape == (2, 1, 24, 20)


def test_canon_with_sample_kwargs_and_energy_options():
    canon = create_canonicalizer(
        "canon",
        MonotoneScaleGroup(grid=(2, 2)),
        3,
        num_elements=5,
        sample_kwargs={"scale_range": (0.8, 1.25)},
        width=8,
        view_size=16,
        seed=3,
    )
    assert isinstance(canon, DiscreteCanonicalizer) and isinstance(canon.energy_net, EnergyNet)
    assert canon.num_elements == 5 and canon.energy_net.view_size == 16
    assert canon.energy_net.conv1.out_channels == 8
    # the sample range reached the group's sampler: a narrow range gives elements near the identity
    narrow = canon.elements[1:].abs().amax()
    wide = create_canonicalizer("canon", MonotoneScaleGroup(grid=(2, 2)), 3, num_elements=5, seed=3).elements
    assert narrow < wide[1:].abs().amax()


def test_canon_paper_options():
    canon = create_canonicalizer(
        "canon",
        GlobalScaleGroup(),
        1,
        num_elements=9,
        width=4,
        mild_range=(0.9, 1.1),
        mild_fraction=0.5,
        identity_bias=2.0,
        readout_init="zero",
        candidates="structured",
    )
    assert canon.identity_bias == 2.0 and canon.energy_net.readout.weight.abs().sum() == 0
    assert ((canon.elements[1:5].exp() - 1).abs() <= 0.11).all()
    default = create_canonicalizer("canon", GlobalScaleGroup(), 1, width=4)
    assert default.identity_bias == 1.0 and default.energy_net.readout_init == "random"
    with pytest.raises(ValueError, match="candidates"):
        create_canonicalizer("canon", candidates="uniform")
    with pytest.raises(ValueError, match="identity_bias"):
        create_canonicalizer("canon", identity_bias=-0.5)


def test_optim_options():
    optim = create_canonicalizer("optim", GlobalScaleGroup(), 2, steps=3, step_size=0.05, width=4)
    assert isinstance(optim, OptimCanonicalizer)
    assert (optim.steps, optim.step_size, optim.energy_net.in_channels) == (3, 0.05, 2)
    assert optim(torch.rand(2, 2, 16, 16)).info.iterations == 3


def test_default_group_is_the_paper_grid():
    dec = create_canonicalizer("dec", widths=(4,))
    assert isinstance(dec.group, MonotoneScaleGroup) and dec.group.grid == (4, 4)
    assert dec.param_net.in_channels == 3


@pytest.mark.parametrize("name", ["dec", "canon", "optim"])
def test_unknown_option_is_named(name):
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus'\] for canonicalizer '" + name):
        create_canonicalizer(name, bogus=1)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus'\]"):
        canonicalizer_factory(name, bogus=1)  # checked before any module is built


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown canonicalizer 'deq'; registered: dec, canon, optim"):
        create_canonicalizer("deq")
    with pytest.raises(ValueError, match="registered: dec"):
        get_canonicalizer(3)  # type: ignore[arg-type]


def test_bad_values_are_rejected_by_the_classes():
    with pytest.raises(ValueError, match="max_iter"):
        create_canonicalizer("dec", max_iter=0)
    with pytest.raises(ValueError, match="in_channels"):
        create_canonicalizer("optim", in_channels=0)
    with pytest.raises(ValueError, match="solver"):
        create_canonicalizer("dec", solver="newton")


def test_user_entry_signature_options_and_overwrite(scratch_name):
    @register_canonicalizer(scratch_name)
    def build(group, in_channels, *, steps=2):
        return OptimCanonicalizer(group, in_channels=in_channels, steps=steps)

    assert scratch_name in canonicalizer_names()
    assert get_canonicalizer(scratch_name).options == frozenset({"steps"})
    assert create_canonicalizer(scratch_name, GlobalScaleGroup(), 1, steps=4).steps == 4
    with pytest.raises(ValueError, match=r"\['step'\]"):
        create_canonicalizer(scratch_name, step=4)
    with pytest.raises(ValueError, match="already registered"):
        register_canonicalizer(scratch_name)(build)
    register_canonicalizer(scratch_name, overwrite=True)(
        lambda group, in_channels, **kw: build(group, in_channels)
    )
    assert get_canonicalizer(scratch_name).options is None  # **kwargs without options=: not checked


def test_user_entry_with_declared_options(scratch_name):
    register_canonicalizer(scratch_name, options=["steps"])(
        lambda group, in_channels, **kw: OptimCanonicalizer(group, in_channels=in_channels, **kw)
    )
    assert create_canonicalizer(scratch_name, GlobalScaleGroup(), 1, steps=2).steps == 2
    with pytest.raises(ValueError, match=r"\['eps'\]"):
        create_canonicalizer(scratch_name, eps=1.0)


def test_register_errors(scratch_name):
    with pytest.raises(TypeError, match="non-empty str"):
        register_canonicalizer("")
    with pytest.raises(TypeError, match="callable"):
        register_canonicalizer(scratch_name)(3)
    with pytest.raises(TypeError, match=r"\(group, in_channels"):
        register_canonicalizer(scratch_name)(lambda group: group)
    assert scratch_name not in canonicalizer_names()


def test_factory_builds_fresh_modules_and_pickles():
    factory = canonicalizer_factory("dec", MonotoneScaleGroup(grid=(2, 2)), widths=(4,), max_iter=3)
    a, b = factory(5), factory(5)
    assert isinstance(a, DEQCanonicalizer) and a is not b
    assert a.param_net.in_channels == 5 and a.solve.max_iter == 3 and a.group.grid == (2, 2)
    clone = pickle.loads(pickle.dumps(factory))
    assert isinstance(clone(2), DEQCanonicalizer) and clone(2).param_net.in_channels == 2


def test_factory_plugs_into_adapt():
    timm = pytest.importorskip("timm")
    latentcanon = pytest.importorskip("latentcanon")
    torch.manual_seed(0)
    net = timm.create_model("resnet10t", num_classes=4).eval()
    factory = canonicalizer_factory("dec", widths=(4, 8), max_iter=3)
    x = torch.rand(2, 3, 32, 32)
    with latentcanon.adapt(
        net, layers=["input", -1], canonicalizer=factory, input_size=(3, 32, 32)
    ) as adapted:
        assert all(
            isinstance(m, nn.Module) and isinstance(m, DEQCanonicalizer)
            for m in adapted.canonicalizers.values()
        )
        channels = [m.param_net.in_channels for m in adapted.canonicalizers.values()]
        with torch.no_grad():
            out = adapted(x)
    assert channels == [3, 3]  # source="input": every canonicalizer reads the image
    with torch.no_grad():
        torch.testing.assert_close(out, net(x), atol=1e-5, rtol=0)  # fresh DECs are the identity
