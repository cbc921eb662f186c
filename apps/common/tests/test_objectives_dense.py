"""The training steps with dense targets (segmentation): label maps warped with their images, EquE term."""

import torch
import torch.nn.functional as F
from torch import nn

import monowarp
from lse_common.objectives import augmented_step, dense_consistency, paired_step


def _onehot_batch(b: int = 4, k: int = 3, size: tuple[int, int] = (24, 32)):
    target = torch.zeros(b, *size, dtype=torch.long)
    target[:, 4:14, 6:20] = 1
    target[:, 12:22, 18:30] = 2
    return F.one_hot(target, k).permute(0, 3, 1, 2).float(), target


def test_augmented_step_warps_the_label_map_with_the_image():
    x, target = _onehot_batch()
    seen = {}

    class Probe(nn.Module):  # logits = the (warped) one-hot image itself
        def forward(self, inp):
            seen["x"] = inp
            return inp * 20.0

    def prepare(batch):
        return batch

    torch.manual_seed(0)
    step = augmented_step(prepare, p=1.0, dense=True)
    _, metrics = step(Probe(), (x, target))
    assert not torch.equal(seen["x"], x)  # the images were warped
    assert metrics["acc"] > 0.97  # and the labels with them (nearest vs bilinear differ only on edges)
    torch.manual_seed(0)
    _, undense = augmented_step(prepare, p=1.0)(Probe(), (x, target))
    assert undense["acc"] < metrics["acc"]  # without dense the labels stay put and disagree


def test_dense_consistency_is_zero_for_a_pixelwise_model_and_positive_otherwise():
    g = monowarp.sample_monotone_scale(2, generator=torch.Generator().manual_seed(1))
    x = torch.rand(2, 3, 20, 28)
    pixelwise = nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        zero = dense_consistency(pixelwise(x), pixelwise(monowarp.warp(x, g)), monowarp.warp, g)
        spatial = nn.Conv2d(3, 4, 7, padding=3)
        positive = dense_consistency(spatial(x), spatial(monowarp.warp(x, g)), monowarp.warp, g)
    assert zero < 1e-3
    assert positive > 10 * zero


def test_paired_step_dense_logs_the_equivariance_term_and_backpropagates():
    x, target = _onehot_batch(2)
    model = nn.Conv2d(3, 3, 3, padding=1)
    step = paired_step(lambda b: b, weight=1.0, dense=True, direction="warp")
    loss, metrics = step(model, (x, target))
    loss.backward()
    assert "equ" in metrics and "inv" not in metrics and metrics["equ"] >= 0
    assert model.weight.grad is not None and model.weight.grad.abs().sum() > 0
