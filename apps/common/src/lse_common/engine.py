"""The training engine the apps share: DistributedDataParallel, mixed precision, progress, logs, resume.

`Trainer.fit` runs the classic loop on top of PyTorch's own distributed engine. Under ``torchrun`` the
model is wrapped in `torch.nn.parallel.DistributedDataParallel` (gloo on the CPU, nccl on CUDA) and every
process reads its own shard of each batch through `ResumableBatchSampler`; alone, it is a plain loop.

What the app provides is a *step function* ``step_fn(model, batch) -> loss`` (or ``(loss, metrics)``), run
under autocast on CUDA (bfloat16 where supported, float16 with a gradient scaler otherwise); the engine does
the rest: moving the batch, backward, gradient clipping (global, or per named parameter group), the
optimizer and scheduler, a tqdm bar on rank 0, a CSV log (``metrics.csv``, optionally mirrored to
TensorBoard), evaluation at the end of every epoch, and checkpoints.

Schedulers: a timm scheduler (`timm.scheduler.Scheduler`, recognised by its ``step_update``) is driven as
timm's own training loop drives it: ``step_update(num_updates=global_step)`` after every optimisation step
and ``step(epoch + 1, metric)`` at the end of every epoch. A torch scheduler is stepped every epoch or
every step (``scheduler_interval``); ``ReduceLROnPlateau`` gets the monitored evaluation value.

Frozen warm-up: for the first ``frozen_epochs`` epochs the modules returned by ``frozen_modules(model)``
(e.g. the backbone, while a canonicalizer warms up) are in eval mode (batch-norm statistics stay, dropout
is off) and their parameters do not require gradients, so the optimizer skips them (weight decay
included). Under DDP the model is wrapped again whenever the set of trainable parameters changes.

Exact resume: a checkpoint (see `lse_common.checkpoint`) stores the weights, optimizer, scheduler, gradient
scaler, every process's Python/NumPy/torch random states, the epoch and the number of batches done in it.
``fit(..., resume=True)`` restores all of them and the sampler skips the batches already seen, so a run
interrupted after any checkpoint and resumed ends with the same weights as an uninterrupted one (bitwise
on the CPU with ``num_workers=0`` or a deterministic data set), in the frozen phase or after it. With
``override_hparams=True`` a resume keeps the weights, optimizer moments and counters but takes the
hyper-parameters (lr, weight decay, ...) the optimizer was built with now, and re-derives the schedule
from the step count instead of restoring the scheduler. The data loader gets its own generator (seeded
from the seed, the epoch and the rank), so starting a loader never draws from the global random state.

Several machines: the same command on every node (see `lse_common.distributed`), e.g.
``torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:PORT <app> train ...``;
sharding, seeding and checkpoint writing follow the global rank, so the result equals one process with the
same global batch.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .checkpoint import find_latest, load_checkpoint, save_checkpoint
from .distributed import DistInfo, all_gather_objects, broadcast_object, reduce_mean
from .metrics_log import CSVLogger
from .sampler import ResumableBatchSampler
from .schedules import (
    check_clip,
    clip_gradients,
    learning_rates,
    rederive_schedule,
    step_after_epoch,
    step_after_update,
)
from .seeding import get_rng_state, set_rng_state

__all__ = ["StepFn", "Trainer", "move_to_device", "place_model", "unwrap_model"]

logger = logging.getLogger(__name__)

StepFn = Callable[[torch.nn.Module, Any], "torch.Tensor | tuple[torch.Tensor, Mapping[str, float]]"]


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a `DistributedDataParallel` wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def place_model(model: torch.nn.Module, device: torch.device | str, *, channels_last: bool = False):
    """``model`` on ``device``, its 4-D weights in channels-last layout with ``channels_last`` (convolutions
    pick that layout for their outputs whatever the input's; the results are the same up to rounding).

    Returns:
        ``model`` (moved in place).
    """
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


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
        out_dir: receives ``metrics.csv``, ``checkpoints/`` and (optionally) ``tensorboard/``.
        dist: from `lse_common.distributed.init_distributed`; ``None`` means one CPU process.
        scheduler: a timm scheduler (driven per update and per epoch, see the module docstring) or a torch
            learning-rate scheduler, stepped every ``scheduler_interval`` (``"epoch"`` or ``"step"``);
            `torch.optim.lr_scheduler.ReduceLROnPlateau` is stepped with the evaluation metric named
            ``scheduler_monitor``, which a timm scheduler receives as ``step(epoch + 1, metric)``.
        amp: mixed precision; ``None`` turns it on for CUDA.
        grad_clip: clip the global gradient norm to this value; or ``{group name: max norm}`` to clip, for
            each name, the parameters of the optimizer's param groups whose ``"name"`` is that name (all
            such groups together), logged as ``grad_norm/<name>``; ``None``: no clipping.
        log_every: steps between training rows of the log (the loss averaged over processes).
        checkpoint_every: steps between mid-epoch checkpoints (``None``: only at the end of each epoch).
        keep_checkpoints: how many checkpoints of this run to keep.
        progress: show a progress bar on rank 0.
        find_unused_parameters: passed to DDP.
        on_step_end: called with the global step after each optimisation step (and any checkpoint it
            triggered), on every process.
        frozen_epochs: epochs at the start during which ``frozen_modules`` are frozen (eval mode, no
            gradients, no updates); the log's ``phase`` column reads ``"frozen"`` then ``"joint"``.
        frozen_modules: ``frozen_modules(model) -> modules`` on the unwrapped model; required when
            ``frozen_epochs > 0``.
        tensorboard: also write the logged scalars to ``<out_dir>/tensorboard`` (rank 0; needs the
            ``lse-common[tensorboard]`` extra).
        override_hparams: on resume, keep the optimizer's current hyper-parameters instead of the stored
            ones and re-derive the schedule from the step count (see the module docstring).

    Raises:
        ValueError: for a bad option (named in the message).
        ImportError: if ``tensorboard`` is requested and TensorBoard is not installed.
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
        grad_clip: float | Mapping[str, float] | None = None,
        log_every: int = 10,
        checkpoint_every: int | None = None,
        keep_checkpoints: int = 2,
        progress: bool = True,
        find_unused_parameters: bool = False,
        on_step_end: Callable[[int], None] | None = None,
        frozen_epochs: int = 0,
        frozen_modules: Callable[[torch.nn.Module], Sequence[torch.nn.Module]] | None = None,
        tensorboard: bool = False,
        override_hparams: bool = False,
    ) -> None:
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        if log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        if checkpoint_every is not None and checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 or None, got {checkpoint_every}")
        if isinstance(grad_clip, Mapping):
            names = {g.get("name") for g in optimizer.param_groups}
            unknown = sorted(set(grad_clip) - names)
            if unknown:
                raise ValueError(
                    f"grad_clip names param groups {unknown} that the optimizer lacks; its groups are named "
                    f"{sorted(n for n in names if n is not None)}"
                )
            grad_clip = {k: check_clip(f"grad_clip[{k!r}]", v) for k, v in grad_clip.items()}
        elif grad_clip is not None:
            grad_clip = check_clip("grad_clip", grad_clip)
        if isinstance(frozen_epochs, bool) or not isinstance(frozen_epochs, int) or frozen_epochs < 0:
            raise ValueError(f"frozen_epochs must be an int >= 0, got {frozen_epochs!r}")
        if frozen_epochs > 0 and frozen_modules is None:
            raise ValueError("frozen_epochs > 0 needs frozen_modules, the modules to freeze")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401
            except ImportError as err:
                raise ImportError(
                    "tensorboard=True needs TensorBoard: pip install 'lse-common[tensorboard]'"
                ) from err
        self.dist = dist or DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
        self.device = self.dist.device
        self.find_unused_parameters = find_unused_parameters
        self._ddp_signature: tuple[bool, ...] | None = None
        self.model = self._wrap(model.to(self.device))
        self.optimizer = optimizer
        self._initial_hparams = [
            {k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups
        ]
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
        self.frozen_epochs = frozen_epochs
        self.frozen_modules = frozen_modules
        self._frozen: list[tuple[torch.nn.Parameter, bool]] | None = None
        self._frozen_mods: list[torch.nn.Module] = []
        self.tensorboard = tensorboard
        self._tb: Any = None
        self.override_hparams = override_hparams
        self.run_id = uuid.uuid4().hex
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log = CSVLogger(self.out_dir / "metrics.csv", enabled=self.dist.is_main)
        self.epoch = 0
        self.batch_in_epoch = 0
        self.global_step = 0

    # -- model, phases -------------------------------------------------------------------------------
    @property
    def module(self) -> torch.nn.Module:
        """The trained model without its DDP wrapper."""
        return unwrap_model(self.model)

    @property
    def phase(self) -> str:
        """``"frozen"`` during the first ``frozen_epochs`` epochs, ``"joint"`` afterwards."""
        return "frozen" if self.epoch < self.frozen_epochs else "joint"

    def _wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """Wrap ``module`` in DDP for its current set of trainable parameters (no-op alone)."""
        if not self.dist.distributed:
            return module
        self._ddp_signature = tuple(p.requires_grad for p in module.parameters())
        return DistributedDataParallel(
            module,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=self.find_unused_parameters,
        )

    def _set_frozen(self, frozen: bool) -> None:
        """Enter or leave the frozen phase; under DDP re-wrap when the trainable set changed (collective)."""
        if frozen and self._frozen is None:
            mods = list(self.frozen_modules(self.module))  # type: ignore[misc]
            if not mods or not all(isinstance(m, torch.nn.Module) for m in mods):
                raise ValueError(f"frozen_modules must return a non-empty list of modules, got {mods!r}")
            seen: dict[int, torch.nn.Parameter] = {}
            for m in mods:
                for p in m.parameters():
                    seen.setdefault(id(p), p)
            self._frozen = [(p, p.requires_grad) for p in seen.values()]
            self._frozen_mods = mods
            for p in seen.values():
                p.requires_grad_(False)
        elif not frozen:
            self._unfreeze()
        if self.dist.distributed and tuple(p.requires_grad for p in self.module.parameters()) != (
            self._ddp_signature
        ):
            module = self.module
            self.model = module  # drop the old wrapper (and its gradient hooks) before wrapping again
            self.model = self._wrap(module)

    def _unfreeze(self) -> None:
        """Give the frozen parameters back their ``requires_grad`` and their modules the model's mode."""
        if self._frozen is None:
            return
        for p, flag in self._frozen:
            p.requires_grad_(flag)
        for m in self._frozen_mods:
            m.train(self.module.training)
        self._frozen, self._frozen_mods = None, []

    def _train_mode(self) -> None:
        self.model.train()
        for m in self._frozen_mods:
            m.eval()

    # -- state ---------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything but the weights, for a checkpoint (collective: call on every process)."""
        rng = all_gather_objects(get_rng_state())
        return {
            "format": 1,
            "run_id": self.run_id,
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
        """Restore the newest intact checkpoint of ``out_dir`` (or ``path``); False when there is none."""
        target = Path(path) if path is not None else find_latest(self.ckpt_dir)
        if target is None:
            return False
        self._unfreeze()  # the stored optimizer state refers to every parameter
        state = load_checkpoint(target, self.module, map_location="cpu")
        self.optimizer.load_state_dict(state["optimizer"])
        self.run_id = str(state.get("run_id") or self.run_id)
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.global_step = int(state["global_step"])
        if self.override_hparams:
            for group, hparams in zip(self.optimizer.param_groups, self._initial_hparams, strict=True):
                params = group["params"]
                group.clear()
                group.update(copy.deepcopy(hparams), params=params)
            self._rederive_schedule()
        elif self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
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
            logger.info(
                "resuming from %s at step %d (epoch %d, batch %d)%s",
                target,
                self.global_step,
                self.epoch + 1,
                self.batch_in_epoch,
                " with the new hyper-parameters" if self.override_hparams else "",
            )
        return True

    def _rederive_schedule(self) -> None:
        """After ``override_hparams``: bring a fresh scheduler to the current epoch and step."""
        rederive_schedule(self.scheduler, self.scheduler_interval, self.epoch, self.global_step)

    # -- loop ----------------------------------------------------------------------------------------
    def _autocast(self):
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def _train_step(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        batch = move_to_device(batch, self.device)
        lrs = learning_rates(self.optimizer)  # the learning rates this step uses
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.step_fn(self.model, batch)
        loss, metrics = out if isinstance(out, tuple) else (out, {})
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise TypeError("step_fn must return a scalar loss tensor (optionally with a metrics dict)")
        self.scaler.scale(loss).backward()
        metrics = {**lrs, **metrics}
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            metrics.update(clip_gradients(self.module, self.optimizer, self.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.global_step += 1
        step_after_update(self.scheduler, self.scheduler_interval, self.global_step)
        return loss.detach(), metrics

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _log(self, row: dict[str, Any]) -> None:
        self.log.log(row)
        if self._tb is not None:
            split = row.get("split", "train")
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                    self._tb.add_scalar(f"{split}/{k}", v, global_step=row["step"])

    def _open_tensorboard(self) -> None:
        if self.tensorboard and self.dist.is_main and self._tb is None:
            from torch.utils.tensorboard import SummaryWriter  # a resume drops the events after its step

            self._tb = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self.global_step or None)

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
            resume: ``True`` to continue from the newest intact checkpoint in ``out_dir`` (when there is
                one), or a checkpoint path; the step it resumes from is logged.
            max_steps: stop (after a checkpoint) once this many steps are done in all (>= 1).

        Returns:
            ``{"global_step", "epoch", "last_eval", "stopped_early"}``.

        Raises:
            ValueError: if ``epochs`` or ``max_steps`` is smaller than 1.
        """
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
        if resume and not self.load(None if resume is True else resume) and self.dist.is_main:
            logger.info("no checkpoint in %s: starting from step 0", self.ckpt_dir)
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
        stopped = max_steps is not None and self.global_step >= max_steps and self.epoch < epochs
        self._open_tensorboard()
        try:
            t0 = time.perf_counter()
            while self.epoch < epochs and not stopped:
                self._set_frozen(self.epoch < self.frozen_epochs)
                sampler.set_epoch(self.epoch, start_batch=self.batch_in_epoch)
                seeds = np.random.SeedSequence([seed, self.epoch, self.dist.rank]).generate_state(2)
                loader_gen.manual_seed(int(seeds[0]) << 32 | int(seeds[1]))
                self._train_mode()
                stopped = self._run_epoch(loader, len(sampler), epochs, max_steps, t0)
                if stopped:
                    break
                # end of epoch: evaluate, step the scheduler, checkpoint
                if eval_fn is not None:
                    last_eval = self._evaluate(eval_fn, epochs)
                step_after_epoch(
                    self.scheduler, self.scheduler_interval, self.scheduler_monitor, self.epoch, last_eval
                )
                self.epoch += 1
                self.batch_in_epoch = 0
                self.save()
                if max_steps is not None and self.global_step >= max_steps:
                    stopped = self.epoch < epochs
                    break
        finally:
            self._unfreeze()
            if self._tb is not None:
                self._tb.close()
                self._tb = None
        return {
            "global_step": self.global_step,
            "epoch": self.epoch,
            "last_eval": last_eval,
            "stopped_early": stopped,
        }

    def _run_epoch(
        self, loader: DataLoader, n_batches: int, epochs: int, max_steps: int | None, t0: float
    ) -> bool:
        """The batches of one epoch; True when ``max_steps`` stopped it early."""
        bar = tqdm(
            total=n_batches,
            initial=self.batch_in_epoch,
            desc=f"epoch {self.epoch + 1}/{epochs}",
            disable=not (self.progress and self.dist.is_main),
            dynamic_ncols=True,
            leave=False,
        )
        running: list[torch.Tensor] = []
        try:
            for batch in loader:
                loss, metrics = self._train_step(batch)
                self.batch_in_epoch += 1
                running.append(loss)
                bar.update(1)
                if self.global_step % self.log_every == 0 or self.batch_in_epoch == n_batches:
                    mean_loss = float(reduce_mean(torch.stack(running).mean()))
                    running = []
                    bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{metrics['lr']:.2e}")
                    self._log(
                        {
                            "step": self.global_step,
                            "epoch": self.epoch,
                            "split": "train",
                            "phase": self.phase,
                            "loss": mean_loss,
                            **metrics,
                            "time_s": round(time.perf_counter() - t0, 3),
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
                    return True
        finally:
            bar.close()
        return False

    def _evaluate(
        self, eval_fn: Callable[[torch.nn.Module], Mapping[str, float]], epochs: int
    ) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad():
            last_eval = {k: float(v) for k, v in eval_fn(self.module).items()}
        last_eval = broadcast_object(last_eval)
        self._train_mode()
        self._log(
            {
                "step": self.global_step,
                "epoch": self.epoch,
                "split": "val",
                "phase": self.phase,
                "lr": self._lr(),
                **last_eval,
            }
        )
        if self._tb is not None:
            self._tb.flush()
        if self.dist.is_main:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in last_eval.items())
            tqdm.write(f"epoch {self.epoch + 1}/{epochs}: {shown}")
        return last_eval
