"""Contract tests over a list of timm families (tiny configurations, small inputs, pretrained=False).

Each model comes with the layout its features must have, written down here independently of latentcanon's
detection, and the reference warps below re-implement the layouts with plain reshapes.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

import latentcanon
from latentcanon import INPUT, adapt, find_layers

VIT = dict(depth=2, embed_dim=48, num_heads=2)
# name: (timm model, kwargs, input (H, W), expected layout of block features: kind, P, patch grid)
MODELS = {
    "vit": ("vit_tiny_patch16_224", dict(img_size=32, **VIT), (32, 32), ("tokens", 1, (2, 2))),
    "vit_dynamic": (
        "vit_tiny_patch16_224",
        dict(img_size=32, dynamic_img_size=True, **VIT),
        (32, 48),
        ("tokens", 1, (2, 3)),
    ),
    "deit_distilled": (
        "deit_tiny_distilled_patch16_224",
        dict(img_size=32, **VIT),
        (32, 32),
        ("tokens", 2, (2, 2)),
    ),
    "beit": (
        "beit_base_patch16_224",
        dict(img_size=32, init_values=None, **VIT),
        (32, 32),
        ("tokens", 1, (2, 2)),
    ),
    # zero_init_last / small layer-scale inits make random blocks (nearly) the identity: switched off
    "dinov2_reg": (
        "vit_small_patch14_reg4_dinov2",
        dict(img_size=(28, 42), init_values=1.0, **VIT),
        (28, 42),
        ("tokens", 5, (2, 3)),
    ),
    "swin": (
        "swin_tiny_patch4_window7_224",
        dict(img_size=(32, 64), window_size=2, depths=(1, 1, 1, 1), embed_dim=24, num_heads=(1, 1, 1, 1)),
        (32, 64),
        ("nhwc", 0, None),
    ),
    "resnet": ("resnet18", dict(zero_init_last=False), (48, 64), ("nchw", 0, None)),
    "efficientnet": ("tf_efficientnet_lite0", {}, (32, 48), ("nchw", 0, None)),
    "convnext": ("convnext_atto", dict(ls_init_value=1.0), (32, 64), ("nchw", 0, None)),
}
FAMILIES = list(MODELS)
LAYERS = [INPUT, 0, -1]


def make(family: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    name, kwargs, size, _ = MODELS[family]
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=7, **kwargs).eval()
    return model, torch.randn(2, 3, *size)


def adapt_small(model: nn.Module, x: torch.Tensor, **kwargs) -> latentcanon.LatentCanonicalizedModel:
    return adapt(model, input_size=(3, *x.shape[-2:]), **kwargs)


# ---- independent reference of the layouts and of the group action ------------------------------------------
def ref_split(family: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    kind, num_prefix, grid_size = MODELS[family][3]
    if x.ndim == 4:
        return (x.permute(0, 3, 1, 2), None) if kind == "nhwc" else (x, None)
    batch, _, channels = x.shape
    return x[:, num_prefix:].reshape(batch, *grid_size, channels).permute(0, 3, 1, 2), x[:, :num_prefix]


def ref_join(family: str, fmap: torch.Tensor, prefix: torch.Tensor | None) -> torch.Tensor:
    kind = MODELS[family][3][0]
    if prefix is None:
        return fmap.permute(0, 2, 3, 1) if kind == "nhwc" else fmap
    batch, channels = fmap.shape[:2]
    return torch.cat([prefix, fmap.permute(0, 2, 3, 1).reshape(batch, -1, channels)], dim=1)


def ref_scale(family: str, x: torch.Tensor, p: float) -> torch.Tensor:
    """x with its spatial part multiplied by exp(p * column / (W - 1))."""
    fmap, prefix = ref_split(family, x)
    ramp = torch.linspace(0, 1, fmap.shape[-1])
    return ref_join(family, fmap * torch.exp(p * ramp), prefix)


def hook_counts(model: nn.Module) -> list[tuple[int, int]]:
    return [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()]


# ---- the contract ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", latentcanon.SOURCES)
@pytest.mark.parametrize("mode", latentcanon.MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_identity_equals_base(family, mode, source, canon_factory):
    model, x = make(family)
    with torch.no_grad():
        expected = model(x)
        adapted = adapt_small(
            model, x, layers=LAYERS, mode=mode, source=source, canonicalizer=canon_factory()
        )
        out, results = adapted(x, return_results=True)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert list(results) == list(adapted.keys) and len(results) == 3
    for result in results.values():
        assert result.params.shape == (2, 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_layout_and_prefix_tokens(family, canon_factory):
    """Invariant form: the chosen block receives S^-1(F), computed by hand; prefix tokens untouched."""
    model, x = make(family)
    _, layer = find_layers(model)[1]
    seen = {}
    handle = layer.register_forward_pre_hook(lambda m, a: seen.__setitem__("base", a[0].clone()))
    with torch.no_grad():
        model(x)
    handle.remove()
    adapted = adapt_small(model, x, layers=[1], source="feature", canonicalizer=canon_factory(offset=0.3))
    handle = layer.register_forward_pre_hook(lambda m, a: seen.__setitem__("adapted", a[0].clone()))
    with torch.no_grad():
        adapted(x)
    handle.remove()
    torch.testing.assert_close(seen["adapted"], ref_scale(family, seen["base"], -0.3), atol=1e-6, rtol=1e-6)
    kind, num_prefix, _ = MODELS[family][3]
    if kind == "tokens":
        assert torch.equal(seen["adapted"][:, :num_prefix], seen["base"][:, :num_prefix])


@pytest.mark.parametrize("source", latentcanon.SOURCES)
@pytest.mark.parametrize("family", FAMILIES)
def test_equivariant_layer_is_s_m_s_inverse(family, source, canon_factory):
    """With a fixed element, the adapted layer's output equals S(M_k(S^-1(F_k))) computed by hand (eq. 21)."""
    model, x = make(family)
    layer_name, layer = find_layers(model)[1]
    seen = {}
    handle = layer.register_forward_pre_hook(lambda m, a: seen.__setitem__("f", a[0].clone()))
    with torch.no_grad():
        model(x)
        handle.remove()
        expected = ref_scale(family, layer(ref_scale(family, seen["f"], -0.3)), 0.3)
        base_out = layer(seen["f"])
    adapted = adapt_small(
        model,
        x,
        layers=[layer_name],
        mode="equivariant",
        source=source,
        canonicalizer=canon_factory(offset=0.3),
    )
    layer.register_forward_hook(lambda m, a, out: seen.__setitem__("out", out.clone()))
    with torch.no_grad():
        adapted(x)
    torch.testing.assert_close(seen["out"], expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(seen["out"], base_out, atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_non_identity_changes_output(family, canon_factory):
    model, x = make(family)
    with torch.no_grad():
        expected = model(x)
        adapted = adapt_small(model, x, layers=[0], canonicalizer=canon_factory(offset=1.0))
        out = adapted(x)
    assert out.shape == expected.shape
    assert (out - expected).abs().max() > 1e-3 * expected.abs().max()  # relative: BEiT starts at 1e-4 scale


@pytest.mark.parametrize("mode,source", [("invariant", "input"), ("equivariant", "feature")])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_parameter_gets_a_gradient(family, mode, source, canon_factory):
    model, x = make(family)
    adapted = adapt_small(
        model, x, layers=LAYERS, mode=mode, source=source, canonicalizer=canon_factory(init_std=0.1)
    )
    adapted.train()
    adapted(x).square().mean().backward()
    missing = [n for n, p in adapted.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert any(p.grad.abs().sum() > 0 for p in adapted.canonicalizers.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_remove_and_context_manager(family, canon_factory):
    model, x = make(family)
    before = hook_counts(model)
    with torch.no_grad():
        expected = model(x)
        with adapt_small(
            model, x, layers=LAYERS, mode="equivariant", canonicalizer=canon_factory(offset=1.0)
        ) as a:
            assert a.hooks_installed and hook_counts(model) != before
            assert not torch.allclose(a(x), expected)
        assert hook_counts(model) == before and not a.hooks_installed
        torch.testing.assert_close(a(x), expected, atol=0, rtol=0)
        torch.testing.assert_close(model(x), expected, atol=0, rtol=0)
        a.remove()  # twice is harmless


@pytest.mark.parametrize("family", FAMILIES)
def test_state_dict_keys_and_checkpoints(family, canon_factory, tmp_path):
    model, x = make(family)
    keys = list(model.state_dict())
    plain = copy.deepcopy(model.state_dict())
    adapted = adapt_small(model, x, layers=LAYERS, canonicalizer=canon_factory(init_std=0.1))
    assert list(adapted.backbone.state_dict()) == keys
    full = list(adapted.state_dict())
    assert full[: len(keys)] == [f"backbone.{k}" for k in keys]
    assert all(k.startswith("canonicalizers.") for k in full[len(keys) :])
    assert list(adapted.canonicalizer_state_dict()) == [
        k.removeprefix("canonicalizers.") for k in full[len(keys) :]
    ]
    # an adapted model loads a plain checkpoint; canonicalizers save and load on their own and together
    adapted.backbone.load_state_dict(plain)
    torch.save(adapted.canonicalizer_state_dict(), tmp_path / "canon.pt")
    torch.save(adapted.state_dict(), tmp_path / "all.pt")
    with torch.no_grad():
        expected = adapted(x)
    other, _ = make(family, seed=1)
    again = adapt_small(other, x, layers=LAYERS, canonicalizer=canon_factory(init_std=0.1))
    again.backbone.load_state_dict(plain)
    again.load_canonicalizer_state_dict(torch.load(tmp_path / "canon.pt"))
    with torch.no_grad():
        torch.testing.assert_close(again(x), expected, atol=0, rtol=0)
    third, _ = make(family, seed=2)
    third = adapt_small(third, x, layers=LAYERS, canonicalizer=canon_factory(init_std=0.1))
    third.load_state_dict(torch.load(tmp_path / "all.pt"))
    with torch.no_grad():
        torch.testing.assert_close(third(x), expected, atol=0, rtol=0)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("family", ["vit_dynamic", "swin", "resnet"])
def test_shapes_over_batch_sizes(family, batch, canon_factory):
    model, x = make(family)
    x = x[:1].repeat(batch, 1, 1, 1)
    with torch.no_grad():
        expected, expected_feats = model(x), model.forward_features(x)
        adapted = adapt_small(
            model, x, layers=LAYERS, mode="equivariant", canonicalizer=canon_factory(offset=0.5)
        )
        out, results = adapted(x, return_results=True)
        feats = adapted.forward_features(x)
        inter = adapted.forward_intermediates(x, indices=1, intermediates_only=True)
    assert out.shape == expected.shape == (batch, 7)
    assert feats.shape == expected_feats.shape
    assert len(inter) == 1 and inter[0].shape[0] == batch
    assert adapted.forward_head(feats).shape == (batch, 7)
    assert all(r.params.shape == (batch, 1) for r in results.values())
