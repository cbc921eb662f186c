"""``lse-mnist train``: one run of one method on one backbone, on the shared train skeleton.

The objective of each method (the batch is ``x`` in ``[0, 1]`` and labels ``y``), from
`lse_common.objectives`:

- ``aug``, ``canon``, ``optim``, ``dec``, ``stn``: cross-entropy on the batch warped by a random monotone
  scaling with probability ``aug.p`` per image (``aug.enabled false`` turns it off);
- ``invl``: eq. 25, the clean batch and the batch warped by ``Phi ~ Omega`` (in ``aug.direction``) in one
  pass, mean cross-entropy of both halves plus ``train.invl_weight`` times the squared-L2 invariance error
  of their softmax outputs;
- ``canon``, ``optim``, ``dec``, ``stn`` with ``train.consistency_weight > 0``: the same paired objective with
  that weight, the canonicalizer seeing both halves (``invl`` is then the control without the canonicalizer).
  The paper's and the authors' "Ours" is trained on cross-entropy alone (consistency weight 0);
- ``dec``, ``stn`` with ``canon.element_weight > 0``: the paired batch, plus that weight times the
  element-equivariance error of the canonicalizer between the halves (eq. 5,
  `deqcanon.element_equivariance_error`): a term that rewards canonicalizing itself;
- with ``canon.freeze_backbone_epochs > 0`` and ``canon.warmup_objective element``, the backbone-frozen
  warm-up epochs train the canonicalizers on that error alone, without labels
  (`lse_common.objectives.warmup_step`).

Everything else is `lse_common.training.run_training`: the run folder, timm's optimizer over the backbone
and canonicalizer parameter groups (``train.lr`` and ``canon.lr``), timm's schedule, the canonicalizers'
own clip (``canon.grad_clip``) and the backbone-frozen warm-up (``canon.freeze_backbone_epochs``). Methods
other than ``aug`` start from the ``aug`` run (``train.init_from``), as in the paper. The validation split
gives ``val_acc`` and ``val_loss`` at the end of each epoch; the test split is never looked at here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lse_common.objectives import options_step, warmup_step
from lse_common.options import AugmentOptions, CanonOptions, TrainOptions
from lse_common.training import TrainingJob, run_training

from .data import SceneDataset, prepare_data_split
from .models import build_model, check_head_layout
from .options import CANONICALIZING, default_run_dir

__all__ = ["make_step_fn", "train", "validation_fn"]

logger = logging.getLogger(__name__)


def _prepare(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = batch
    return images.float() / 255.0, labels


def make_step_fn(method: str, train: TrainOptions, aug: AugmentOptions, canon: CanonOptions | None = None):
    """The training step of ``method`` (see the module docstring)."""
    adapted = method in CANONICALIZING
    return options_step(_prepare, method, control="invl", adapted=adapted, train=train, aug=aug, canon=canon)


def validation_fn(dataset: SceneDataset, batch_size: int, device: torch.device):
    """The engine's ``eval_fn``: accuracy and loss on the validation scenes."""

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        correct, loss_sum, n = 0, 0.0, len(dataset)
        for s in range(0, n, batch_size):
            idx = np.arange(s, min(n, s + batch_size))
            x = torch.stack([dataset[int(i)][0] for i in idx]).to(device).float() / 255.0
            y = torch.as_tensor(dataset.data.spec.labels[idx], device=device)
            logits = model(x).float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        return {"val_acc": correct / n, "val_loss": loss_sum / n}

    return evaluate


def train(cfg: Any) -> dict:
    """Train one run of the ``lse-mnist train`` options ``cfg`` (see the module docstring); returns the
    skeleton's summary. Works under torchrun.

    Args:
        cfg: the train command's options: ``method`` and the groups ``data``, ``model``, ``train``, ``aug``,
            ``canon``, ``runtime``; they are stored in the run folder as ``config.yaml``.
    """
    from .cli import train_config

    method, data, model, opts = cfg.method, cfg.data, cfg.model, cfg.train
    check_head_layout(model.head, data.layout)  # before any data or model work
    out = default_run_dir(opts.out_dir, model, method, opts.seed)
    size = data.size

    def prepare(progress: bool) -> tuple[SceneDataset, SceneDataset]:
        train_data = prepare_data_split(data, "train", progress=progress)
        val_data = prepare_data_split(data, "val", progress=progress)
        return SceneDataset(train_data, size), SceneDataset(val_data, size)

    canon = cfg.canon
    job = TrainingJob(
        out_dir=Path(out),
        config=train_config(cfg),
        build_model=lambda: build_model(
            model, size, method, canon, init_from=opts.init_from, layout=data.layout
        ),
        prepare_data=prepare,
        step_fn=make_step_fn(method, opts, cfg.aug, cfg.canon),
        eval_fn=lambda val_set, device: validation_fn(val_set, max(128, 2 * opts.batch_size), device),
        description=f"{method} on {model.backbone}, {size[1]}x{size[0]} scenes",
        warmup_step_fn=warmup_step(_prepare, method in CANONICALIZING, cfg.canon, cfg.aug),
    )
    adapted = method in CANONICALIZING
    return run_training(job, train=opts, runtime=cfg.runtime, canon=canon if adapted else None)
