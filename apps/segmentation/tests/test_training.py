"""One training step of each method on synthetic scenes, and the loss of appendix A1."""

from __future__ import annotations

import pytest
import torch
from lse_segmentation.models import build_model
from lse_segmentation.options import SegModel
from lse_segmentation.training import make_loss, make_step_fn

from lse_common.options import AugmentOptions, CanonOptions, TrainOptions

SIZE = (32, 32)
K = 3
MODEL = SegModel(backbone="tf_efficientnet_lite0", pretrained=False, head_width=8)
CANON = CanonOptions(
    layers=["input", 0], mode="equivariant", dec_widths=[4, 8], dec_view_size=24, energy_width=4
)


def _batch(b: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(b, *SIZE, dtype=torch.long)
    masks[:, 4:14, 6:20] = 1
    masks[:, 16:28, 10:30] = 3
    images = torch.rand(b, 3, *SIZE, generator=g) * 0.2 + masks[:, None].float() / K * 0.8
    return images, masks


@pytest.mark.parametrize("method", ["aug", "augl", "canon", "dec"])
def test_one_training_step_per_method(method):
    torch.manual_seed(0)
    model = build_model(MODEL, SIZE, K, method, CANON)
    step = make_step_fn(method, TrainOptions(invl_weight=1.0), AugmentOptions(p=1.0), make_loss(K))
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    head_before = model.head.predict[-1].weight.detach().clone()
    loss, metrics = step(model, _batch())
    assert torch.isfinite(loss) and loss > 0
    assert 0 <= metrics["acc"] <= 1
    loss.backward()
    opt.step()
    assert not torch.equal(model.head.predict[-1].weight, head_before)  # the head learns
    if method == "augl":
        assert metrics["equ"] >= 0 and "ce" in metrics  # eq. 23's term is part of the loss
    if method in ("canon", "dec"):
        assert "warp_log_scale_mean" in metrics  # the canonicalizers' warp size is logged
    if method == "dec":
        grads = [p.grad for p in model.net.canonicalizers.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads)  # the DECs learn from the task loss


def test_loss_weights_the_background():
    logits = torch.zeros(1, K + 1, 2, 2)
    logits[:, 1] = 2.0  # predicts class 1 everywhere, the background second
    logits[:, 0] = 1.0
    target = torch.tensor([[[0, 0], [0, 2]]])
    loss = make_loss(K, background_weight=0.1)(logits, target)
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")[0]
    expected = (0.1 * ce[target[0] == 0].sum() + ce[target[0] == 2].sum()) / (0.1 * 3 + 1)
    assert torch.allclose(loss, expected)
    assert not torch.allclose(loss, ce.mean())


def test_consistency_weight_makes_dec_paired():
    torch.manual_seed(0)
    model = build_model(MODEL, SIZE, K, "dec", CANON)
    step = make_step_fn("dec", TrainOptions(consistency_weight=0.5), AugmentOptions(), make_loss(K))
    _, metrics = step(model, _batch())
    assert "equ" in metrics
