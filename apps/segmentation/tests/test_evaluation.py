"""The metrics on known inputs: an oracle that reads the labels off the pixels, consistency counts, tables."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lse_segmentation.evaluation import evaluate_model, variant_consistency
from lse_segmentation.options import SegEval
from lse_segmentation.tables import markdown_tables, summarise
from torch import nn

K = 3


class PixelOracle(nn.Module):
    """Reads the label a pixel's red value encodes (label * 60): exact, and equivariant to any warp but for
    interpolation at label edges. ``shift`` > 0 predicts the label of the pixel ``shift`` columns to the
    left instead (not equivariant)."""

    def __init__(self, shift: int = 0) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x, *, return_results=False):
        labels = (x[:, 0] * 255 / 60).round().long().clamp(0, K)
        if self.shift:
            labels = torch.roll(labels, self.shift, dims=-1)
        logits = 10.0 * torch.nn.functional.one_hot(labels, K + 1).movedim(-1, 1).float()
        return (logits, {}) if return_results else logits


def _split(n: int = 6, v: int = 2, size: int = 24) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    masks = np.zeros((n, 1 + v, size, size), np.uint8)
    for i in range(n):
        for j in range(1 + v):  # two objects per scene, their sizes change across the variants
            a, b = rng.integers(4, 10, size=2)
            masks[i, j, 2 : 2 + a, 2 : 2 + a] = 1 + i % K
            masks[i, j, 12 : 12 + b, 12 : 12 + b] = 1 + (i + 1) % K
    images = np.repeat((masks * 60)[..., None], 3, axis=-1).astype(np.uint8)
    return SimpleNamespace(
        images=images[:, 0], masks=masks[:, 0], variant_images=images[:, 1:], variant_masks=masks[:, 1:]
    )


def test_oracle_has_perfect_miou_and_near_zero_equivariance_error():
    ev = SegEval(batch_size=4, equ_rescalings=2)
    out = evaluate_model(PixelOracle(), _split(), K, ev, device=torch.device("cpu"))
    assert out["miou"] == pytest.approx(1.0)
    assert out["variant_miou"] == pytest.approx(1.0)
    assert out["variant_consistency"] == pytest.approx(1.0)
    assert out["variant_objects"] == 12  # two objects in each of the six scenes
    # bilinear images mix label values at edges (60 and 180 average to 120: label 2); the warped labels are
    # nearest neighbour on the same map (exact agreement with nearest images)
    assert out["miou_warped"] > 0.75
    assert out["equ_paper"] < 0.1  # only the interpolated label edges disagree
    assert out["images"] == 6


def test_a_shifted_model_is_worse_and_not_equivariant():
    ev = SegEval(batch_size=4, equ_rescalings=2)
    good = evaluate_model(PixelOracle(), _split(), K, ev, device=torch.device("cpu"))
    bad = evaluate_model(PixelOracle(shift=3), _split(), K, ev, device=torch.device("cpu"))
    assert bad["miou"] < good["miou"] - 0.1
    assert bad["equ_paper"] > 2 * good["equ_paper"] + 0.01
    assert bad["equ_reference"] > good["equ_reference"]


def test_rescalings_are_the_same_for_every_run():
    ev = SegEval(batch_size=2, equ_rescalings=3, seed=7)
    a = evaluate_model(PixelOracle(shift=2), _split(), K, ev, device=torch.device("cpu"))
    b = evaluate_model(
        PixelOracle(shift=2),
        _split(),
        K,
        SegEval(batch_size=5, equ_rescalings=3, seed=7),
        device=torch.device("cpu"),
    )  # other batches, the same scalings per image
    assert a["equ_paper"] == pytest.approx(b["equ_paper"], rel=1e-5)


def test_variant_consistency_counts():
    masks = torch.zeros(2, 3, 4, 4, dtype=torch.long)
    masks[:, :, :2] = 1  # class 1 in every variant of both scenes
    masks[0, :2, 2:] = 2  # class 2 in two variants of scene 0 only: not an object of every variant
    preds = masks.clone()
    preds[1, 2, :2] = 3  # scene 1 reads its object as class 3 in the last variant
    assert variant_consistency(preds, masks, 3) == (1, 2)
    with pytest.raises(ValueError, match="N, V, H, W"):
        variant_consistency(preds[0], masks[0], 3)


def test_table_lists_methods_inverses_and_the_paper():
    base = {"backbone": "vit_tiny_patch16_224", "seed": 0, "run": "r", "images": 10}
    metrics = {"miou": 0.5, "equ_paper": 0.02, "equ_reference": 0.1, "miou_warped": 0.45}
    results = [
        {**base, "method": "aug", **metrics},
        {
            **base,
            "method": "dec",
            **metrics,
            "miou": 0.6,
            "warp_log_scale_mean": 0.12,
            "by_inverse": {"exact": {**metrics, "miou": 0.6}, "approximate": {**metrics, "miou": 0.55}},
        },
    ]
    md = markdown_tables(summarise(results))
    assert "| Aug | 50.00 | 0.0200 | 0.1000 |" in md
    assert "| DEC (ours) | 60.00 |" in md
    assert "| approximate | 55.00 |" in md
    assert "0.120" in md  # the DEC's warp size
    assert "| ViT | Ours | 83.12 | 0.052 |" in md  # the paper's row of the same family
    assert "+10.00" in md  # paired difference against Aug
