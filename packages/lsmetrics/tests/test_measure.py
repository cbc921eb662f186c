"""Model-level helpers: invariant/equivariant models score 0, others do not; eval mode, no_grad, batching."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lsmetrics import equivariance_error, invariance_error, measure_equivariance, measure_invariance


def _seeded(fn, seed: int = 0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return fn()


def _images(n=6, c=3, h=8, w=10, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def _invariant_classifier(c=3, k=10):
    # global average pooling + linear: invariant to any permutation of the pixels
    return _seeded(lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, k)))


def _plain_classifier(c=3, h=8, w=10, k=10):
    def build():
        model = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, k))
        nn.init.normal_(model[1].weight, std=1.0)
        return model

    return _seeded(build)


def _pixel_permutation(h=8, w=10, seed=1):
    perm = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed))
    return lambda x: x.flatten(-2)[..., perm].reshape(x.shape)


def _hflip(x):
    return x.flip(-1)


class TestMeasureInvariance:
    def test_invariant_model_scores_zero(self, device):
        model = _invariant_classifier().to(device)
        images = _images().to(device)
        transforms = [_hflip, lambda x: x.flip(-2), _pixel_permutation()]
        for variant in ("paper", "reference"):
            value = measure_invariance(model, images, transforms, batch_size=4, variant=variant)
            assert value.item() == pytest.approx(0.0, abs=1e-6)

    def test_non_invariant_model_scores_clearly_above_zero(self):
        images = _images()
        transforms = [_hflip, _pixel_permutation()]
        plain = measure_invariance(_plain_classifier(), images, transforms)
        invariant = measure_invariance(_invariant_classifier(), images, transforms)
        assert plain.item() > 0.05
        assert plain.item() > 1e6 * invariant.item()
        assert measure_invariance(_plain_classifier(), images, transforms, variant="reference").item() > 0.05

    def test_matches_functional_and_softmax_option(self):
        model, images = _plain_classifier(), _images()
        with torch.no_grad():
            logits, flipped = model(images), model(_hflip(images))
        raw = measure_invariance(model, images, _hflip, softmax=False, reduction="none")
        assert raw.shape == (6, 1)
        torch.testing.assert_close(raw, invariance_error(logits, flipped.unsqueeze(1), reduction="none"))
        probs = measure_invariance(model, images, [_hflip], variant="reference")
        expected = invariance_error(logits.softmax(1), flipped.softmax(1), variant="reference")
        torch.testing.assert_close(probs, expected)

    def test_batch_size_and_iterables_do_not_change_the_result(self):
        model, images = _plain_classifier(), _images(n=7)
        transforms = [_hflip, _pixel_permutation()]
        whole = measure_invariance(model, images, transforms, batch_size=7, reduction="none")
        small = measure_invariance(model, images, transforms, batch_size=3, reduction="none")
        loader = [(images[:4], torch.zeros(4)), (images[4:], torch.zeros(3))]
        iterated = measure_invariance(model, loader, transforms, reduction="none")
        assert whole.shape == (7, 2)
        torch.testing.assert_close(small, whole)
        torch.testing.assert_close(iterated, whole)

    def test_eval_mode_restored_and_no_grad(self):
        model = nn.Sequential(
            nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        model.train()
        model[1].eval()  # a frozen BatchNorm stays frozen
        seen = []
        model.register_forward_pre_hook(
            lambda module, args: seen.append((module.training, module[2].training, torch.is_grad_enabled()))
        )
        measure_invariance(model, _images(n=5), [_hflip], batch_size=2)
        assert len(seen) == 6  # 3 batches x (reference + 1 transform)
        assert all(state == (False, False, False) for state in seen)
        assert model.training and model[0].training and model[2].training
        assert not model[1].training

    def test_batches_and_output_fn(self):
        inner = _invariant_classifier()
        sizes = []

        def model(x):
            sizes.append(x.shape[0])
            return {"logits": inner(x)}

        value = measure_invariance(
            model, _images(n=5), [_hflip], batch_size=2, output_fn=lambda out: out["logits"]
        )
        assert sizes == [2, 2, 2, 2, 1, 1]
        assert value.item() == pytest.approx(0.0, abs=1e-6)

    def test_bad_input(self):
        model, images = _invariant_classifier(), _images()
        with pytest.raises(TypeError, match=r"transforms\[1\] must be callable"):
            measure_invariance(model, images, [_hflip, 3])
        with pytest.raises(ValueError, match="transforms must hold at least one"):
            measure_invariance(model, images, [])
        with pytest.raises(TypeError, match="model output must be a tensor"):
            measure_invariance(lambda x: (model(x),), images, [_hflip])
        with pytest.raises(ValueError, match="images must hold at least one batch"):
            measure_invariance(model, [], [_hflip])
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            measure_invariance(model, images, [_hflip], batch_size=0)
        with pytest.raises(TypeError, match=r"images\[0\] must be a tensor"):
            measure_invariance(model, [{"x": images}], [_hflip])
        with pytest.raises(ValueError, match="variant must be one of"):
            measure_invariance(model, images, [_hflip], variant="l1")


def _pointwise(c=3, k=4):
    def build():
        conv = nn.Conv2d(c, k, kernel_size=1)
        nn.init.normal_(conv.bias, std=1.0)
        return conv

    return _seeded(build)


def _shift_right(k):
    def shift(x):
        out = torch.zeros_like(x)
        out[..., k:] = x[..., :-k]
        return out

    return shift


def _zoom_out(factor=1.3):
    """Affine zoom about the centre with zero padding: samples outside the image near the border."""

    def warp(x):
        theta = torch.tensor([[factor, 0.0, 0.0], [0.0, factor, 0.0]], dtype=x.dtype).expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    return warp


class TestMeasureEquivariance:
    def test_pointwise_conv_commutes_with_flip(self, device):
        model, images = _pointwise().to(device), _images().to(device)
        for variant in ("paper", "reference"):
            value = measure_equivariance(model, images, _hflip, _hflip, batch_size=4, variant=variant)
            assert value.item() == pytest.approx(0.0, abs=1e-6)

    def test_non_equivariant_model_scores_above_zero(self):
        def build():
            conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)
            nn.init.normal_(conv.weight, std=1.0)
            return conv

        value = measure_equivariance(_seeded(build), _images(), _hflip, _hflip)
        assert value.item() > 0.05

    def test_integer_shift_needs_the_valid_mask(self):
        model, images, k = _pointwise(), _images(), 3
        shift = _shift_right(k)

        def valid(y):
            mask = torch.ones(y.shape[0], y.shape[-2], y.shape[-1], dtype=torch.bool)
            mask[..., :k] = False  # columns moved in from outside the image
            return mask

        without = measure_equivariance(model, images, shift, shift)
        masked = measure_equivariance(model, images, shift, shift, valid=valid)
        assert without.item() > 0.05
        assert masked.item() == pytest.approx(0.0, abs=1e-6)

    def test_random_elements_through_sample(self):
        def build():
            return nn.Conv2d(3, 4, kernel_size=3, padding=1, padding_mode="circular")

        model, images = _seeded(build), _images()
        gen = torch.Generator().manual_seed(0)
        drawn = []

        def sample(x):
            shift = (
                int(torch.randint(0, 8, (), generator=gen)),
                int(torch.randint(0, 10, (), generator=gen)),
            )
            drawn.append(shift)
            return shift

        def roll(x, shift):
            return x.roll(shift, dims=(-2, -1))

        value = measure_equivariance(
            model, images, roll, roll, sample=sample, num_samples=3, batch_size=4, reduction="none"
        )
        assert value.shape == (6, 3)
        assert len(drawn) == 6 and len(set(drawn)) > 1  # 2 batches x 3 draws
        assert value.abs().max().item() < 1e-10
        # a transform_output that ignores the element breaks equivariance
        broken = measure_equivariance(model, images, roll, lambda y, shift: y, sample=sample, num_samples=2)
        assert broken.item() > 1e-3

    def test_warp_with_interpolation_and_valid_mask(self):
        model, images = _pointwise(), _images(h=16, w=16)
        warp = _zoom_out()

        def valid(y):
            ones = torch.ones(y.shape[0], 1, *y.shape[-2:], dtype=y.dtype)
            return warp(ones)[:, 0] > 1 - 1e-6  # pixels that sampled only inside the image

        # logits warped, softmax afterwards: a 1x1 conv commutes with bilinear interpolation exactly
        logits_first = measure_equivariance(model, images, warp, warp, valid=valid, transform_logits=True)
        assert logits_first.item() == pytest.approx(0.0, abs=1e-10)
        # probabilities warped (the paper's S(M(I))): zero up to interpolation of the softmax
        paper = measure_equivariance(model, images, warp, warp, valid=valid)
        unmasked = measure_equivariance(model, images, warp, warp)
        assert 0.0 < paper.item() < 0.1 * unmasked.item()

    def test_matches_functional(self):
        model, images = _pointwise(), _images()
        shift = _shift_right(2)
        with torch.no_grad():
            logits, shifted = model(images), model(shift(images))
        value = measure_equivariance(model, images, shift, shift, transform_logits=True, variant="reference")
        expected = equivariance_error(shift(logits).softmax(1), shifted.softmax(1), variant="reference")
        torch.testing.assert_close(value, expected)
        raw = measure_equivariance(model, images, shift, shift, softmax=False)
        torch.testing.assert_close(raw, equivariance_error(shift(logits), shifted))

    def test_eval_mode_restored(self):
        model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Dropout2d(0.5))
        model.train()
        seen = []
        model.register_forward_pre_hook(
            lambda module, args: seen.append((module.training, torch.is_grad_enabled()))
        )
        value = measure_equivariance(model, _images(), _hflip, _hflip)
        assert seen and all(state == (False, False) for state in seen)
        assert model.training and model[1].training
        assert value.item() == pytest.approx(0.0, abs=1e-6)  # dropout off during the measurement

    def test_bad_input(self):
        model, images = _pointwise(), _images()
        with pytest.raises(TypeError, match="transform_output must be callable"):
            measure_equivariance(model, images, _hflip, None)
        with pytest.raises(TypeError, match="valid must be callable or None"):
            measure_equivariance(model, images, _hflip, _hflip, valid=torch.ones(6, 8, 10))
        with pytest.raises(ValueError, match="num_samples must be a positive int"):
            measure_equivariance(model, images, _hflip, _hflip, num_samples=0)
        with pytest.raises(ValueError, match=r"expected must have shape"):
            measure_equivariance(_invariant_classifier(), images, _hflip, _hflip)
        with pytest.raises(ValueError, match="actual must have shape"):
            measure_equivariance(model, images, _hflip, lambda y: y[..., :-1])
