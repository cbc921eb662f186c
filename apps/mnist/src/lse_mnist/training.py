"""``lse-mnist train``: one run of one method on one backbone, on lse_common's DDP engine.

The objective of each method (the batch is ``x`` in ``[0, 1]`` and labels ``y``):

- ``aug``, ``canon``, ``optim``, ``dec``: cross-entropy on the batch warped by a random monotone scaling
  with probability ``aug_p`` per image (`monowarp.RandomMonotoneScale`; ``--no-augment`` turns it off);
- ``invl``: eq. 25 on top of that: the clean batch and the batch warped by ``Phi ~ Omega``
  (`monowarp.sample_monotone_scale`, `monowarp.warp`) go through the model together; the loss is the mean
  cross-entropy of both halves plus ``invl_weight`` times `lsmetrics.invariance_error` (squared L2 between
  their softmax probabilities, the paper variant);
- ``canon``, ``optim``, ``dec`` with ``consistency_weight > 0``: the same objective with that weight, the
  canonicalizer seeing both halves. The authors' code trains its DEC this way (a consistency loss on a
  doubled batch, not described in the paper); ``invl`` is then the control without the canonicalizer.

The backbone uses ``lr`` and the canonicalizers ``canon_lr`` (two AdamW parameter groups, as the paper's
DEC fine-tuning does). The methods other than ``aug`` start from the ``aug`` run (``init_from``), as in
the paper. The validation split (scenes of digits held out of MNIST's train split) gives ``val_acc`` and
``val_loss`` at the end of each epoch; the test split is never looked at here.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_model

import lsmetrics
import monowarp
from lse_common import (
    Trainer,
    atomic_path,
    atomic_write_bytes,
    barrier,
    cleanup_distributed,
    init_distributed,
    save_options,
    seed_everything,
)

from .data import SceneDataset, prepare_split_from_options
from .models import DigitClassifier, build_model
from .options import MnistOptions, canvas_of, check_options

__all__ = ["default_run_dir", "make_step_fn", "train", "validation_fn"]

logger = logging.getLogger(__name__)


def default_run_dir(opts: MnistOptions) -> Path:
    """``<runs_root>/<backbone>/<method>-s<seed>`` unless ``out_dir`` is set."""
    if opts.out_dir:
        return Path(opts.out_dir)
    return Path(opts.runs_root) / opts.backbone / f"{opts.method}-s{opts.seed}"


def make_step_fn(opts: MnistOptions):
    """The training step of ``opts.method`` (see the module docstring)."""
    augmentation = (
        monowarp.RandomMonotoneScale(
            scale_range=tuple(opts.aug_scale_range), grid=tuple(opts.aug_grid), p=opts.aug_p
        )
        if opts.augment and opts.aug_p > 0
        else None
    )
    weight = opts.invl_weight if opts.method == "invl" else opts.consistency_weight
    paired = opts.method == "invl" or (opts.method != "aug" and opts.consistency_weight > 0)

    def step(model: torch.nn.Module, batch):
        images, labels = batch
        x = images.float() / 255.0
        if paired:  # clean and warped halves in one batch, eq. 25
            g = monowarp.sample_monotone_scale(
                x.shape[0], tuple(opts.aug_grid), tuple(opts.aug_scale_range), device=x.device, dtype=x.dtype
            )
            logits = model(torch.cat([x, monowarp.warp(x, g)]))
            clean, warped = logits.float().chunk(2)
            ce = 0.5 * (F.cross_entropy(clean, labels) + F.cross_entropy(warped, labels))
            inv = lsmetrics.invariance_error(clean.softmax(1), warped.softmax(1), variant="paper")
            loss = ce + weight * inv
            acc = (clean.argmax(1) == labels).float().mean()
            return loss, {"ce": float(ce.detach()), "inv": float(inv.detach()), "acc": float(acc)}
        if augmentation is not None:
            x = augmentation(x)
        logits = model(x).float()
        loss = F.cross_entropy(logits, labels)
        return loss, {"acc": float((logits.argmax(1) == labels).float().mean())}

    return step


def validation_fn(dataset: SceneDataset, batch_size: int, device: torch.device):
    """``eval_fn`` of the engine: accuracy and loss on the validation scenes."""

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


def _optimizer(model: DigitClassifier, opts: MnistOptions) -> torch.optim.Optimizer:
    groups = [{"params": model.backbone_parameters(), "lr": opts.lr, "weight_decay": opts.weight_decay}]
    canon = model.canonicalizer_parameters()
    if canon:
        groups.append({"params": canon, "lr": opts.canon_lr, "weight_decay": 0.0})
    return torch.optim.AdamW(groups)


def _scheduler(opt: torch.optim.Optimizer, opts: MnistOptions, steps_per_epoch: int):
    if opts.scheduler == "none":
        return None, "epoch", None
    if opts.scheduler == "plateau":
        return (
            torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3),
            "epoch",
            "val_acc",
        )
    if opts.scheduler == "cosine":
        total = max(1, opts.epochs * steps_per_epoch)
        warm = opts.warmup_epochs * steps_per_epoch

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        return torch.optim.lr_scheduler.LambdaLR(opt, factor), "step", None
    raise ValueError(f"scheduler must be cosine, plateau or none, got {opts.scheduler!r}")


def train(opts: MnistOptions) -> dict:
    """Train one run (see the module docstring); returns the engine's summary. Works under torchrun."""
    check_options(opts)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    info = init_distributed(opts.device)
    try:
        seed_everything(opts.seed, rank=info.rank)
        out = default_run_dir(opts)
        if info.is_main:  # rank 0 draws and renders the data; the others read its cache
            train_data = prepare_split_from_options(opts, "train")
            val_data = prepare_split_from_options(opts, "val")
        barrier()
        if not info.is_main:
            train_data = prepare_split_from_options(opts, "train", progress=False)
            val_data = prepare_split_from_options(opts, "val", progress=False)
        model = build_model(opts, for_training=True)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            save_options(opts, out / "config.yaml")
            logger.info(
                "run %s: %s on %s, %d training scenes of %dx%d, %d process(es) on %s",
                out,
                opts.method,
                opts.backbone,
                len(train_data),
                opts.canvas,
                canvas_of(opts)[0],
                info.world_size,
                info.device,
            )
        train_set = SceneDataset(train_data, canvas_of(opts))
        steps_per_epoch = len(train_set) // (opts.batch_size * info.world_size)
        optimizer = _optimizer(model, opts)
        scheduler, interval, monitor = _scheduler(optimizer, opts, steps_per_epoch)
        trainer = Trainer(
            model,
            optimizer,
            make_step_fn(opts),
            out_dir=out,
            dist=info,
            scheduler=scheduler,
            scheduler_interval=interval,
            scheduler_monitor=monitor,
            amp=opts.amp,
            grad_clip=opts.grad_clip,
            log_every=opts.log_every,
            checkpoint_every=opts.checkpoint_every,
            progress=opts.progress,
            find_unused_parameters=opts.method in ("canon", "optim", "dec"),
        )
        summary = trainer.fit(
            train_set,
            epochs=opts.epochs,
            batch_size=opts.batch_size,
            seed=opts.seed,
            num_workers=opts.num_workers,
            eval_fn=validation_fn(SceneDataset(val_data, canvas_of(opts)), opts.eval_batch_size, info.device),
            resume=opts.resume,
            max_steps=opts.max_steps,
        )
        if info.is_main:
            with atomic_path(out / "final.safetensors") as tmp:
                save_model(trainer.module, str(tmp))
            atomic_write_bytes(out / "train_summary.json", json.dumps(summary, indent=1).encode())
            logger.info("run %s done: %s", out, summary)
        return summary
    finally:
        cleanup_distributed()
