"""The ``train`` skeleton every app runs: one call from options to a finished run folder.

`run_training` does, in order: open the process group (torchrun) and seed every process; claim the run
folder (`lse_common.runs.RunFolder`: a lock, refusal to train over another run, a checked resume); let rank 0
prepare the data while the others wait, then let them read it; build the model; build the optimizer with
timm's factory over the model's parameter groups (backbone and canonicalizers with their own learning
rates, `param_groups`) and the schedule with timm's factory (`create_scheduler`); train on the engine
(`lse_common.engine.Trainer`) with the canonicalizers' own gradient clip and the backbone-frozen warm-up
phase; write ``final.safetensors`` and ``train_summary.json``.

What an app supplies is a `TrainingJob`: how to build its model and data, its step function, its
validation function. `stage_config` derives the options of one training stage (a demo's runs) from a
command's options.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model
from torch import nn
from torch.utils.data import Dataset

from .checkpoint import atomic_path, atomic_write_bytes
from .distributed import barrier, cleanup_distributed, init_distributed
from .engine import StepFn, Trainer, place_model
from .options import CanonOptions, RuntimeOptions, TrainOptions
from .runs import RunFolder
from .seeding import seed_everything

__all__ = [
    "RESUME_IGNORED_KEYS",
    "TrainingJob",
    "backbone_modules",
    "canonicalizer_modules",
    "create_optimizer",
    "create_scheduler",
    "demo_stage",
    "gradient_clip",
    "load_init_weights",
    "option_defaults",
    "param_groups",
    "run_training",
    "stage_config",
]

logger = logging.getLogger(__name__)

RESUME_IGNORED_KEYS: tuple[str, ...] = (
    "train.out_dir",
    "train.resume",
    "train.overwrite",
    "train.allow_config_change",
    "train.max_steps",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.tensorboard",
    "runtime.device",
    "runtime.threads",
    "runtime.num_workers",
    "runtime.progress",
    "runtime.channels_last",
)
"""Options a resumed run may change without changing what it computes (dotted ``group.field`` keys)."""


def canonicalizer_modules(model: nn.Module) -> list[nn.Module]:
    """The canonicalizer containers of every `latentcanon.LatentCanonicalizedModel` inside ``model``."""
    import latentcanon

    return [m.canonicalizers for m in model.modules() if isinstance(m, latentcanon.LatentCanonicalizedModel)]


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    canon_lr: float | None = None,
    weight_decay: float = 0.0,
    layer_decay: float | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups: the canonicalizers (``name="canonicalizers"``) and everything else (``"backbone"``).

    The groups of each adapted backbone come from `latentcanon.LatentCanonicalizedModel.param_groups`
    (timm's no-weight-decay rules for biases and norms, layer decay); parameters outside any adapted
    backbone (a head of the app's) join the backbone's learning rate with the same weight-decay rule.

    Args:
        model: the model to train.
        lr: learning rate of the backbone and head.
        canon_lr: learning rate of the canonicalizers (default: ``lr``).
        weight_decay: weight decay of the parameters that take it.
        layer_decay: timm's layer-wise decay of the backbone.
    """
    from timm.optim import param_groups_layer_decay, param_groups_weight_decay

    import latentcanon

    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, latentcanon.LatentCanonicalizedModel):
            for group in module.param_groups(
                backbone_lr=lr,
                canonicalizer_lr=canon_lr if canon_lr is not None else lr,
                weight_decay=weight_decay,
                layer_decay=layer_decay,
            ):
                seen.update(id(p) for p in group["params"])
                groups.append(group)
    if not seen:  # no adapted backbone: timm's grouping of the whole model
        if layer_decay is not None:
            if not hasattr(model, "group_matcher"):
                raise ValueError(
                    f"train.layer_decay needs a timm model with group_matcher(), got {type(model).__name__}"
                )
            groups = param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=layer_decay)
        else:
            groups = param_groups_weight_decay(model, weight_decay)
        for group in groups:
            group["name"] = "backbone"
            group["lr"] = lr
        return [g for g in groups if g["params"]]
    rest = [(n, p) for n, p in model.named_parameters() if id(p) not in seen and p.requires_grad]
    decay = [p for n, p in rest if p.ndim > 1 and not n.endswith(".bias")]
    no_decay = [p for n, p in rest if p.ndim <= 1 or n.endswith(".bias")]
    for params, wd in ((decay, weight_decay), (no_decay, 0.0)):
        if params:
            groups.append({"params": params, "weight_decay": wd, "lr": lr, "name": "backbone"})
    return groups


def create_optimizer(
    model: nn.Module, train: TrainOptions, canon: CanonOptions | None = None
) -> torch.optim.Optimizer:
    """timm's optimizer ``train.opt`` over `param_groups` (canonicalizers at ``canon.lr``).

    Raises:
        ValueError: for an optimizer name timm does not know (the message lists them).
    """
    from timm.optim import create_optimizer_v2, list_optimizers

    names = list_optimizers()
    if train.opt.lower() not in names:
        raise ValueError(f"train.opt {train.opt!r} is not one of timm's optimizers: {', '.join(names)}")
    groups = param_groups(
        model,
        lr=train.lr,
        canon_lr=canon.lr if canon is not None else None,
        weight_decay=train.weight_decay,
        layer_decay=train.layer_decay,
    )
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return create_optimizer_v2(groups, opt=train.opt, lr=train.lr, weight_decay=train.weight_decay)


def create_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainOptions, updates_per_epoch: int, delay_epochs: int = 0
) -> tuple[Any | None, str | None]:
    """timm's schedule ``train.sched`` stepped every update (``None`` for ``"none"``), and its monitor.

    ``plateau`` reduces the rate when the validation accuracy (``val_acc``) stops improving; the others
    follow the number of updates, with ``train.warmup_epochs`` of linear warm-up from ``train.warmup_lr``.
    With ``delay_epochs`` (the backbone-frozen warm-up) the schedule spans the remaining epochs and starts
    after them (`lse_common.schedules.DelayedSchedule`); the warm-up runs at the base rates. A
    run that is all warm-up (``delay_epochs >= train.epochs``, e.g. label-free tuning of a canonicalizer on
    a frozen backbone) follows the schedule over all its epochs.
    """
    from timm.scheduler import create_scheduler_v2

    from .schedules import DelayedSchedule

    if train.sched == "none":
        return None, None
    if delay_epochs < 0:
        raise ValueError(f"delay_epochs must be >= 0, got {delay_epochs}")
    if delay_epochs >= train.epochs:  # all warm-up: the schedule is the warm-up's
        delay_epochs = 0
    plateau = train.sched == "plateau"
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=train.sched,
        num_epochs=train.epochs - delay_epochs,
        min_lr=train.min_lr,
        warmup_lr=train.warmup_lr,
        warmup_epochs=train.warmup_epochs,
        step_on_epochs=plateau,
        updates_per_epoch=max(1, updates_per_epoch),
        plateau_mode="max",
        patience_epochs=3,
        decay_rate=0.5 if plateau else 0.1,
    )
    if delay_epochs:
        scheduler = DelayedSchedule(scheduler, delay_epochs, max(1, updates_per_epoch))
    return scheduler, ("val_acc" if plateau else None)


@dataclass
class TrainingJob:
    """What an app gives `run_training`.

    Args:
        out_dir: the run folder.
        config: the run's options as a nested mapping (stored as ``config.yaml``; compared on resume).
        build_model: ``() -> model`` (called on every process after the data exist).
        prepare_data: ``(progress) -> (train_set, val_set or None)``; rank 0 calls it first (it may draw,
            render and cache), then the other processes (which read the cache).
        step_fn: the engine's training step (`lse_common.objectives` has the usual ones).
        eval_fn: ``(val_set, device) -> (model -> {name: value})``, run at the end of each epoch.
        frozen_modules: ``model -> modules`` frozen (eval mode, no updates) in the warm-up phase; default:
            every direct child of the model except those that hold canonicalizers.
        description: a line for the log.
        warmup_step_fn: the step of the backbone-frozen warm-up epochs (``canon.freeze_backbone_epochs``)
            in place of ``step_fn`` (e.g. `lse_common.objectives.element_step` for
            ``canon.warmup_objective element``); ``None``: ``step_fn`` throughout.
    """

    out_dir: Path
    config: Mapping[str, Any]
    build_model: Callable[[], nn.Module]
    prepare_data: Callable[[bool], tuple[Dataset, Dataset | None]]
    step_fn: StepFn
    eval_fn: Callable[[Dataset, torch.device], Callable[[nn.Module], Mapping[str, float]]] | None = None
    frozen_modules: Callable[[nn.Module], Sequence[nn.Module]] | None = None
    description: str = ""
    warmup_step_fn: StepFn | None = None


def backbone_modules(model: nn.Module) -> list[nn.Module]:
    """Everything but the canonicalizers, as modules to freeze: the backbones of adapted models and every
    other child of ``model``."""
    import latentcanon

    out: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, latentcanon.LatentCanonicalizedModel):
                out.append(child.backbone)
            elif any(isinstance(m, latentcanon.LatentCanonicalizedModel) for m in child.modules()):
                visit(child)
            else:
                out.append(child)

    if isinstance(model, latentcanon.LatentCanonicalizedModel):
        return [model.backbone]
    visit(model)
    return out


def gradient_clip(train: Any, canon: Any = None) -> float | dict[str, float] | None:
    """The ``grad_clip`` of `Trainer` for ``train.grad_clip`` and ``canon.grad_clip``.

    Without ``canon.grad_clip`` one norm over all parameters is clipped to ``train.grad_clip``. With it the
    canonicalizers and the rest (``backbone``, the optimizer groups of `create_optimizer`) are clipped each by
    its own norm, even at the same value, as the authors train their DEC: a canonicalizer whose gradient is
    large (an implicit gradient near a poorly contracting fixed point) then cannot shrink the backbone's step
    to nothing through a shared norm.

    Example:
        >>> from lse_common.options import CanonOptions, TrainOptions
        >>> gradient_clip(TrainOptions(grad_clip=1.0), CanonOptions(grad_clip=1.0))
        {'backbone': 1.0, 'canonicalizers': 1.0}
        >>> gradient_clip(TrainOptions(grad_clip=1.0), CanonOptions())
        1.0
    """
    if canon is None or canon.grad_clip is None:
        return train.grad_clip
    clips = {"backbone": train.grad_clip, "canonicalizers": canon.grad_clip}
    return {name: value for name, value in clips.items() if value is not None}


def option_defaults(**groups: Any) -> dict[str, Any]:
    """``{"group.field": default}`` of the option dataclasses (classes or instances) given as ``group=...``
    (``None`` skipped): what a run started before an option existed computed with
    (`lse_common.runs.config_differences`)."""
    out: dict[str, Any] = {}
    for group, options in groups.items():
        if options is None or not dataclasses.is_dataclass(options):
            continue
        for f in dataclasses.fields(options):
            if f.default is not dataclasses.MISSING:
                out[f"{group}.{f.name}"] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f"{group}.{f.name}"] = f.default_factory()
    return out


def run_training(
    job: TrainingJob,
    *,
    train: TrainOptions,
    runtime: RuntimeOptions,
    canon: CanonOptions | None = None,
    ignore_keys: Sequence[str] = RESUME_IGNORED_KEYS,
) -> dict[str, Any]:
    """Train one run (see the module docstring); works alone and under torchrun (one or several nodes).

    Returns:
        The engine's summary (``global_step``, ``epoch``, ``last_eval``, ``stopped_early``) and
        ``resumed_from``.
    """
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    info = init_distributed(runtime.device)
    try:
        seed_everything(train.seed, rank=info.rank)
        folder = RunFolder(job.out_dir, is_main=info.is_main)
        folder.open(
            dict(job.config),
            resume=train.resume,
            overwrite=train.overwrite,
            allow_config_change=train.allow_config_change,
            ignore_keys=tuple(ignore_keys),
            defaults=option_defaults(
                train=type(train), runtime=type(runtime), canon=type(canon) if canon else CanonOptions
            ),
        )
        try:
            if info.is_main:  # rank 0 draws and caches the data; the others read its cache
                train_set, val_set = job.prepare_data(runtime.progress)
            barrier()
            if not info.is_main:
                train_set, val_set = job.prepare_data(False)
            model = place_model(job.build_model(), info.device, channels_last=runtime.channels_last)
            if info.is_main:
                logger.info(
                    "run %s: %s, %d training items, %d process(es) on %s",
                    job.out_dir,
                    job.description,
                    len(train_set),  # type: ignore[arg-type]
                    info.world_size,
                    info.device,
                )
            updates = len(train_set) // (train.batch_size * info.world_size)  # type: ignore[arg-type]
            if updates < 1:
                raise ValueError(
                    f"train.batch_size {train.batch_size} x {info.world_size} process(es) exceeds the "
                    f"{len(train_set)} training items: no full batch"  # type: ignore[arg-type]
                )
            optimizer = create_optimizer(model, train, canon)
            frozen_epochs = canon.freeze_backbone_epochs if canon is not None else 0
            scheduler, monitor = create_scheduler(optimizer, train, updates, delay_epochs=frozen_epochs)
            grad_clip = gradient_clip(train, canon)
            adapted = bool(canonicalizer_modules(model))
            if frozen_epochs and not adapted:
                raise ValueError("canon.freeze_backbone_epochs needs a method with canonicalizers")
            step_fn = job.step_fn
            if job.warmup_step_fn is not None and frozen_epochs:
                phases = {"frozen": job.warmup_step_fn, "joint": job.step_fn}

                def step_fn(model: nn.Module, batch: Any) -> Any:  # the trainer's phase picks the step
                    return phases[trainer.phase](model, batch)

            trainer = Trainer(
                model,
                optimizer,
                step_fn,
                out_dir=job.out_dir,
                dist=info,
                scheduler=scheduler,
                scheduler_monitor=monitor,
                amp=train.amp,
                grad_clip=grad_clip,
                log_every=train.log_every,
                checkpoint_every=train.checkpoint_every,
                keep_checkpoints=train.keep_checkpoints,
                progress=runtime.progress,
                find_unused_parameters=adapted,
                frozen_epochs=frozen_epochs,
                frozen_modules=(job.frozen_modules or backbone_modules) if frozen_epochs else None,
                tensorboard=train.tensorboard,
                override_hparams=train.allow_config_change,
            )
            eval_fn = (
                job.eval_fn(val_set, info.device) if job.eval_fn is not None and val_set is not None else None
            )
            summary = trainer.fit(
                train_set,
                epochs=train.epochs,
                batch_size=train.batch_size,
                seed=train.seed,
                num_workers=runtime.num_workers,
                eval_fn=eval_fn,
                resume=folder.resumed_from if folder.resumed_from is not None else False,
                max_steps=train.max_steps,
            )
            summary["resumed_from"] = str(folder.resumed_from) if folder.resumed_from is not None else None
            if info.is_main:
                with atomic_path(job.out_dir / "final.safetensors") as tmp:
                    save_model(trainer.module, str(tmp))
                atomic_write_bytes(job.out_dir / "train_summary.json", json.dumps(summary, indent=1).encode())
                logger.info("run %s done: %s", job.out_dir, summary)
            return summary
        finally:
            folder.close()
    finally:
        cleanup_distributed()


def stage_config(
    cfg: Any,
    method: str,
    groups: Sequence[str],
    *,
    out_dir: str | Path,
    resume: bool,
    overwrite: bool = False,
    **replace: Mapping[str, Any] | None,
) -> Any:
    """The options of one training run of ``method`` made from ``cfg`` (e.g. a demo's options): the train
    command's ``groups`` of ``cfg``, ``train.out_dir``, ``train.resume`` and ``train.overwrite`` set, and the
    fields in ``replace[group]`` replaced (`dataclasses.replace`).

    Args:
        cfg: a namespace holding an options dataclass under each name of ``groups``.
        method: the method to train.
        groups: the option groups of the train command, in its order (``"train"`` among them).
        out_dir: the run folder.
        resume: whether the run continues from that folder's checkpoints.
        overwrite: whether the run replaces the folder's contents.
        replace: group name -> ``{field: value}`` replacing the fields of that group (``None``: none).

    Returns:
        A `jsonargparse.Namespace` with ``method`` and the groups, as the train command builds it.

    Raises:
        ValueError: if ``replace`` names a group that is not in ``groups``, or ``groups`` lacks ``"train"``.

    Example:
        >>> from jsonargparse import Namespace
        >>> cfg = Namespace(train=TrainOptions(), runtime=RuntimeOptions(), demo=None)
        >>> run = stage_config(cfg, "aug", ["train", "runtime"], out_dir="d/aug", resume=True,
        ...                    train={"epochs": 2})
        >>> run.method, run.train.out_dir, run.train.resume, run.train.epochs, "demo" in run
        ('aug', 'd/aug', True, 2, False)
    """
    import dataclasses

    from jsonargparse import Namespace

    if "train" not in groups:
        raise ValueError(f"groups must include 'train', got {list(groups)}")
    unknown = sorted(set(replace) - set(groups))
    if unknown:
        raise ValueError(f"replace names groups {unknown} that are not among groups {list(groups)}")
    fields: dict[str, dict[str, Any]] = {g: dict(replace.get(g) or {}) for g in groups}
    fields["train"] = {"out_dir": str(out_dir), "resume": resume, "overwrite": overwrite, **fields["train"]}
    out = Namespace(method=method)
    for group in groups:
        value = cfg[group]
        out[group] = dataclasses.replace(value, **fields[group]) if fields[group] else value
    return out


def demo_stage(
    cfg: Any,
    method: str,
    groups: Sequence[str],
    *,
    train: Mapping[str, Any],
    canon: Mapping[str, Any] | None = None,
) -> Any:
    """One training run of an app's demo (`stage_config`): the run in ``<demo.out_dir>/<method>``, the data in
    ``<demo.out_dir>/data``, resumed unless ``demo.overwrite`` (then replaced), ``train`` and ``canon``
    replacing fields of those groups.

    Args:
        cfg: the demo command's options: a ``demo`` group with ``out_dir`` and ``overwrite``, and ``groups``.
        method: the method to train.
        groups: the option groups of the app's train command (``"data"``, ``"train"`` and ``"canon"`` among
            them).
        train: fields of the ``train`` group to replace (epochs, lr, init_from, ...).
        canon: fields of the ``canon`` group to replace.
    """
    root = Path(cfg.demo.out_dir)
    return stage_config(
        cfg,
        method,
        groups,
        out_dir=root / method,
        resume=not cfg.demo.overwrite,
        overwrite=cfg.demo.overwrite,
        data={"dir": str(root / "data")},
        train=dict(train),
        canon=dict(canon or {}),
    )


def load_init_weights(model: nn.Module, init_from: str | Path) -> Path:
    """Load ``train.init_from`` into ``model``: a weights file, or a run folder's ``final.safetensors``,
    else the newest intact checkpoint of its ``checkpoints`` folder (`lse_common.load_checkpoint`).

    Returns:
        The file or checkpoints folder loaded.
    """
    from .checkpoint import load_checkpoint

    path = Path(init_from)
    if path.is_dir():
        final = path / "final.safetensors"
        path = final if final.is_file() else path / "checkpoints"
    load_checkpoint(path, model)
    logger.info("initialised from %s", path)
    return path
