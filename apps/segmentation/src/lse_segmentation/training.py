"""``lse-segmentation train``: one run of one method on one backbone, on the shared train skeleton.

The objective of each method (the batch is images ``x`` in ``[0, 1]`` and label maps ``y``, 0 the background;
per-pixel cross-entropy with the background weighted ``model.background_weight``, 0.1 in appendix A1), from
`lse_common.objectives` with dense targets (the label map is warped with its image):

- ``aug``, ``canon``, ``dec``: cross-entropy on the batch, each image and its labels warped by a random
  monotone scaling with probability ``aug.p`` (``aug.enabled false`` turns it off);
- ``augl``: the clean batch and the batch warped by ``Phi ~ Omega`` in one pass, mean cross-entropy of both
  halves plus ``train.invl_weight`` times the equivariance error of eq. 23 between the clean prediction warped
  by ``Phi`` and the prediction on the warped batch (logits warped, then softmax, as the authors' EquE);
- ``canon``, ``dec`` with ``train.consistency_weight > 0``: the same paired objective with that weight.

Everything else is `lse_common.training.run_training` (run folder, optimizer groups for backbone and
canonicalizers, schedule, DDP, checkpoints and resume). Methods other than ``aug`` usually start from the
``aug`` run (``train.init_from``), as in the paper. The validation split gives ``val_miou``, ``val_acc``
(pixel accuracy) and ``val_loss`` at the end of each epoch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lse_common.objectives import options_step, warmup_step
from lse_common.options import AugmentOptions, CanonOptions, TrainOptions
from lse_common.training import TrainingJob, run_training

from .models import CANON_METHODS, build_model
from .options import default_run_dir

__all__ = ["make_loss", "make_step_fn", "train", "validation_fn"]

logger = logging.getLogger(__name__)


def _prepare(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = batch
    return images.float(), masks.long()


def make_loss(num_classes: int, background_weight: float = 0.1):
    """Per-pixel cross-entropy over ``num_classes + 1`` classes, the background (class 0) weighted down."""
    weight = torch.ones(num_classes + 1)
    weight[0] = background_weight

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=weight.to(logits.device, logits.dtype))

    return loss


def make_step_fn(
    method: str, train: TrainOptions, aug: AugmentOptions, loss_fn, canon: CanonOptions | None = None
):
    """The training step of ``method`` (see the module docstring)."""
    adapted = method in CANON_METHODS
    return options_step(
        _prepare,
        method,
        control="augl",
        adapted=adapted,
        train=train,
        aug=aug,
        canon=canon,
        loss_fn=loss_fn,
        dense=True,
    )


def validation_fn(dataset: Any, batch_size: int, num_classes: int, loss_fn, device: torch.device):
    """The engine's ``eval_fn``: data-set mIoU, pixel accuracy and loss on the validation split."""
    import lsmetrics

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        miou = lsmetrics.DatasetMeanIoU(num_classes + 1).to(device)
        loss_sum, correct, pixels, n = 0.0, 0, 0, len(dataset)
        for s in range(0, n, batch_size):
            items = [dataset[i] for i in range(s, min(n, s + batch_size))]
            x = torch.stack([it[0] for it in items]).to(device).float()
            y = torch.stack([torch.as_tensor(it[1]) for it in items]).to(device).long()
            logits = model(x).float()
            loss_sum += float(loss_fn(logits, y)) * len(items)
            pred = logits.argmax(1)
            miou.update(pred, y)
            correct += int((pred == y).sum())
            pixels += y.numel()
        return {"val_miou": float(miou.compute()), "val_acc": correct / pixels, "val_loss": loss_sum / n}

    return evaluate


def train(cfg: Any) -> dict:
    """Train one run of the ``lse-segmentation train`` options ``cfg`` (see the module docstring); returns the
    skeleton's summary. Works under torchrun.

    Args:
        cfg: the train command's options: ``method`` and the groups ``data``, ``model``, ``train``, ``aug``,
            ``canon``, ``runtime``; they are stored in the run folder as ``config.yaml``.
    """
    from .cli import train_config
    from .data import SegmentationDataset, prepare_split

    method, data, model, opts = cfg.method, cfg.data, cfg.model, cfg.train
    out = default_run_dir(opts.out_dir, model.backbone, method, opts.seed)
    size = (data.size, data.size)
    loss_fn = make_loss(data.num_classes, model.background_weight)

    def prepare(progress: bool):
        train_split = prepare_split(data, "train", progress=progress)
        if data.val_size == 0:
            return SegmentationDataset(train_split), None
        return SegmentationDataset(train_split), SegmentationDataset(
            prepare_split(data, "val", progress=progress)
        )

    canon = cfg.canon
    job = TrainingJob(
        out_dir=Path(out),
        config=train_config(cfg),
        build_model=lambda: build_model(
            model, size, data.num_classes, method, canon, init_from=opts.init_from
        ),
        prepare_data=prepare,
        step_fn=make_step_fn(method, opts, cfg.aug, loss_fn, cfg.canon),
        eval_fn=lambda val_set, device: validation_fn(
            val_set, max(16, opts.batch_size), data.num_classes, loss_fn, device
        ),
        description=f"{method} on {model.backbone}, {size[1]}x{size[0]} images",
        warmup_step_fn=warmup_step(_prepare, method in CANON_METHODS, canon, cfg.aug),
    )
    adapted = method in CANON_METHODS
    return run_training(job, train=opts, runtime=cfg.runtime, canon=canon if adapted else None)
