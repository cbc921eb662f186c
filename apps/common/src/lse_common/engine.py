"""The training engine the apps share: DistributedDataParallel, mixed precision, progress, logs, resume.

`Trainer.fit` runs the classic loop on top of PyTorch's own distributed engine. Under ``torchrun`` the
model is wrapped in `torch.nn.parallel.DistributedDataParallel` (gloo on the CPU, nccl on CUDA) and every
process reads its own shard of each batch through `ResumableBatchSampler`; alone, it is a plain loop.

What the app provides is a *step function* ``step_fn(model, batch) -> loss`` (or ``(loss, metrics)``), run
under autocast on CUDA (bfloat16 where supported, float16 with a gradient scaler otherwise); the engine does
the rest: moving the batch, backward, gradient clipping, the optimizer and scheduler, a tqdm bar on rank 0,
a CSV log (``metrics.csv``), evaluation at the end of every epoch, and checkpoints.

Exact resume: a checkpoint (see `lse_common.checkpoint`) stores the weights, optimizer, scheduler, gradient
scaler, every process's Python/NumPy/torch random states, the epoch and the number of batches done in it.
``fit(..., resume=True)`` restores all of them and the sampler skips the batches already seen, so a run
interrupted after any checkpoint and resumed ends with the same weights as an uninterrupted one (bitwise
on the CPU with ``num_workers=0`` or a deterministic data set). The data loader gets its own generator, so
starting a loader never draws from the global random state.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .checkpoint import find_latest, load_checkpoint, save_checkpoint
from .distributed import DistInfo, all_gather_objects, broadcast_object, reduce_mean
from .metrics_log import CSVLogger
from .sampler import ResumableBatchSampler
from .seeding import get_rng_state, set_rng_state

__all__ = ["StepFn", "Trainer", "move_to_device", "unwrap_model"]

logger = logging.getLogger(__name__)

StepFn = Callable[[torch.nn.Module, Any], "torch.Tensor | tuple[torch.Tensor, Mapping[str, float]]"]


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a `DistributedDataParallel` wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside nested tuples, lists and dicts to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


class Trainer:
    """Train a model with a step function; see the module docstring.

    Args:
        model: the model, on any device (it is moved to ``dist.device``).
        optimizer: built from ``model``'s parameters (param groups with their own learning rates welcome).
        step_fn: ``step_fn(model, batch) -> loss`` or ``(loss, {name: float})``; ``model`` is the DDP wrapper
            in a distributed run (call it, not ``.module``, so gradients are synchronised).
        out_dir: receives ``metrics.csv`` and ``checkpoints/``.
        dist: from `lse_common.distributed.init_distributed`; ``None`` means one CPU process.
        scheduler: a learning-rate scheduler, stepped every ``scheduler_interval`` (``"epoch"`` or
            ``"step"``); `torch.optim.lr_scheduler.ReduceLROnPlateau` is stepped with the evaluation metric
            named ``scheduler_monitor``.
        amp: mixed precision; ``None`` turns it on for CUDA.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        log_every: steps between training rows of the log (the loss averaged over processes).
        checkpoint_every: steps between mid-epoch checkpoints (``None``: only at the end of each epoch).
        keep_checkpoints: how many checkpoints to keep.
        progress: show a progress bar on rank 0.
        find_unused_parameters: passed to DDP.
        on_step_end: called with the global step after each optimisation step (and any checkpoint it
            triggered), on every process.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        step_fn: StepFn,
        *,
        out_dir: str | Path,
        dist: DistInfo | None = None,
        scheduler: Any | None = None,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str | None = None,
        amp: bool | None = None,
        grad_clip: float | None = None,
        log_every: int = 10,
        checkpoint_every: int | None = None,
        keep_checkpoints: int = 2,
        progress: bool = True,
        find_unused_parameters: bool = False,
        on_step_end: Callable[[int], None] | None = None,
    ) -> None:
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        if log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        if checkpoint_every is not None and checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 or None, got {checkpoint_every}")
        if grad_clip is not None and not (grad_clip > 0 and math.isfinite(grad_clip)):
            raise ValueError(f"grad_clip must be a positive finite number or None, got {grad_clip}")
        self.dist = dist or DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
        self.device = self.dist.device
        model = model.to(self.device)
        if self.dist.distributed:
            model = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=find_unused_parameters,
            )
        self.model = model
        self.optimizer = optimizer
        self.step_fn = step_fn
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.scheduler_monitor = scheduler_monitor
        self.amp = (self.device.type == "cuda") if amp is None else bool(amp)
        if self.amp and self.device.type != "cuda":
            logger.warning("mixed precision is only used on CUDA; running in float32 on %s", self.device)
            self.amp = False
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.grad_clip = grad_clip
        self.log_every = log_every
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.progress = progress
        self.on_step_end = on_step_end
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log = CSVLogger(self.out_dir / "metrics.csv", enabled=self.dist.is_main)
        self.epoch = 0
        self.batch_in_epoch = 0
        self.global_step = 0

    # -- state ---------------------------------------------------------------------------------------
    @property
    def module(self) -> torch.nn.Module:
        """The trained model without its DDP wrapper."""
        return unwrap_model(self.model)

    def state(self) -> dict[str, Any]:
        """Everything but the weights, for a checkpoint (collective: call on every process)."""
        rng = all_gather_objects(get_rng_state())
        return {
            "format": 1,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "world_size": self.dist.world_size,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "rng": rng,
        }

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 writes; every process must call)."""
        state = self.state()
        path = None
        if self.dist.is_main:
            path = save_checkpoint(
                self.ckpt_dir, self.global_step, self.module, state, keep=self.keep_checkpoints
            )
        return path

    def load(self, path: str | Path | None = None) -> bool:
        """Restore the latest checkpoint of ``out_dir`` (or ``path``); False when there is none."""
        target = Path(path) if path is not None else find_latest(self.ckpt_dir)
        if target is None:
            return False
        state = load_checkpoint(target, self.module, map_location="cpu")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.global_step = int(state["global_step"])
        rngs = state.get("rng") or []
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        else:
            logger.warning(
                "checkpoint was written by %d process(es), this run has %d: random states not restored, "
                "the resumed run will not match an uninterrupted one exactly",
                len(rngs),
                self.dist.world_size,
            )
        self.log.truncate(self.global_step)
        if self.dist.is_main:
            logger.info("resumed from %s (epoch %d, step %d)", target, self.epoch, self.global_step)
        return True

    # -- loop ----------------------------------------------------------------------------------------
    def _autocast(self):
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def _train_step(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        batch = move_to_device(batch, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.step_fn(self.model, batch)
        loss, metrics = out if isinstance(out, tuple) else (out, {})
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise TypeError("step_fn must return a scalar loss tensor (optionally with a metrics dict)")
        self.scaler.scale(loss).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
            metrics = {**metrics, "grad_norm": float(norm)}
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        return loss.detach(), dict(metrics)

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def fit(
        self,
        train_set: Dataset,
        *,
        epochs: int,
        batch_size: int,
        seed: int = 0,
        num_workers: int = 0,
        collate_fn: Callable | None = None,
        eval_fn: Callable[[torch.nn.Module], Mapping[str, float]] | None = None,
        resume: bool | str | Path = False,
        max_steps: int | None = None,
    ) -> dict[str, Any]:
        """Train for ``epochs`` epochs (or until ``max_steps`` optimisation steps in all).

        Args:
            train_set: a map-style data set.
            epochs: total number of epochs (a resumed run trains the remaining ones).
            batch_size: per process.
            seed: seeds the sample order (with the epoch).
            num_workers: data-loader worker processes.
            collate_fn: passed to the data loader.
            eval_fn: ``eval_fn(model) -> {name: value}``, called on every process at the end of each epoch
                with the unwrapped model in eval mode; rank 0's values are logged and drive the scheduler.
            resume: ``True`` to continue from the latest checkpoint in ``out_dir`` (when there is one), or a
                checkpoint path.
            max_steps: stop (after a checkpoint) once this many steps are done in all.

        Returns:
            ``{"global_step", "epoch", "last_eval", "stopped_early"}``.
        """
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if resume:
            self.load(None if resume is True else resume)
        sampler = ResumableBatchSampler(
            len(train_set),  # type: ignore[arg-type]
            batch_size,
            shuffle=True,
            seed=seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            drop_last=True,
        )
        loader_gen = torch.Generator()
        loader = DataLoader(
            train_set,
            batch_sampler=sampler,
            num_workers=num_workers,
            collate_fn=collate_fn,
            pin_memory=self.device.type == "cuda",
            generator=loader_gen,
            persistent_workers=False,
        )
        last_eval: dict[str, float] = {}
        stopped = False
        t0 = time.perf_counter()
        while self.epoch < epochs and not stopped:
            sampler.set_epoch(self.epoch, start_batch=self.batch_in_epoch)
            loader_gen.manual_seed(seed * 1_000_003 + self.epoch)
            self.model.train()
            n_batches = len(sampler)
            bar = tqdm(
                total=n_batches,
                initial=self.batch_in_epoch,
                desc=f"epoch {self.epoch + 1}/{epochs}",
                disable=not (self.progress and self.dist.is_main),
                dynamic_ncols=True,
                leave=False,
            )
            running: list[torch.Tensor] = []
            for batch in loader:
                loss, metrics = self._train_step(batch)
                self.global_step += 1
                self.batch_in_epoch += 1
                running.append(loss)
                bar.update(1)
                if self.global_step % self.log_every == 0 or self.batch_in_epoch == n_batches:
                    mean_loss = float(reduce_mean(torch.stack(running).mean()))
                    running = []
                    bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{self._lr():.2e}")
                    self.log.log(
                        {
                            "step": self.global_step,
                            "epoch": self.epoch,
                            "split": "train",
                            "loss": mean_loss,
                            "lr": self._lr(),
                            "time_s": round(time.perf_counter() - t0, 3),
                            **metrics,
                        }
                    )
                end_of_epoch = self.batch_in_epoch == n_batches
                reached_max = max_steps is not None and self.global_step >= max_steps
                if not end_of_epoch and (
                    reached_max or (self.checkpoint_every and self.global_step % self.checkpoint_every == 0)
                ):
                    self.save()
                if self.on_step_end is not None:
                    self.on_step_end(self.global_step)
                if reached_max and not end_of_epoch:
                    stopped = True
                    break
            bar.close()
            if stopped:
                break
            # end of epoch: evaluate, step the scheduler, checkpoint
            if eval_fn is not None:
                self.model.eval()
                with torch.no_grad():
                    last_eval = {k: float(v) for k, v in eval_fn(self.module).items()}
                last_eval = broadcast_object(last_eval)
                self.model.train()
                self.log.log(
                    {
                        "step": self.global_step,
                        "epoch": self.epoch,
                        "split": "val",
                        "lr": self._lr(),
                        **last_eval,
                    }
                )
                if self.dist.is_main:
                    shown = ", ".join(f"{k}={v:.4g}" for k, v in last_eval.items())
                    tqdm.write(f"epoch {self.epoch + 1}/{epochs}: {shown}")
            if self.scheduler is not None and self.scheduler_interval == "epoch":
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    if self.scheduler_monitor is None or self.scheduler_monitor not in last_eval:
                        raise ValueError(
                            "ReduceLROnPlateau needs scheduler_monitor naming one of eval_fn's outputs "
                            f"({sorted(last_eval)}), got {self.scheduler_monitor!r}"
                        )
                    self.scheduler.step(last_eval[self.scheduler_monitor])
                else:
                    self.scheduler.step()
            self.epoch += 1
            self.batch_in_epoch = 0
            self.save()
            if max_steps is not None and self.global_step >= max_steps:
                stopped = self.epoch < epochs
                break
        return {
            "global_step": self.global_step,
            "epoch": self.epoch,
            "last_eval": last_eval,
            "stopped_early": stopped,
        }
