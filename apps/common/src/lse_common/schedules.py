"""Learning-rate schedules and gradient clipping as the engine drives them.

timm's schedulers (`timm.scheduler.Scheduler`) are stepped twice: `step_update(num_updates)` after every
optimisation step and `step(epoch, metric)` at the end of each epoch; torch's schedulers once per step or
per epoch (`ReduceLROnPlateau` with the monitored metric). Clipping acts on the whole model or, given a
mapping ``{group name: max norm}``, on the parameters of the optimizer's groups of each name together (the
backbone and the canonicalizers get their own clip, as the authors train their DEC).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "DelayedSchedule",
    "check_clip",
    "clip_gradients",
    "is_timm_scheduler",
    "learning_rates",
    "rederive_schedule",
    "step_after_epoch",
    "step_after_update",
]

logger = logging.getLogger(__name__)


class DelayedSchedule:
    """A timm scheduler that starts after ``delay_epochs`` epochs of ``updates_per_epoch`` updates: until
    then the rates stay at the optimizer groups' base values (``scheduler.base_values``: no learning-rate
    warm-up yet), afterwards the schedule runs as if training began there, its own warm-up included (e.g. a
    backbone-frozen warm-up that must not use up the joint phase's cosine).

    Driven like the scheduler it wraps (`step_update`, `step`), and stored with it (`state_dict`).

    Examples:
        >>> import torch
        >>> from timm.scheduler import CosineLRScheduler
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = DelayedSchedule(CosineLRScheduler(opt, t_initial=2), delay_epochs=2, updates_per_epoch=1)
        >>> rates = []
        >>> for epoch in range(4):
        ...     sched.step(epoch)
        ...     rates.append(round(opt.param_groups[0]["lr"], 3))
        >>> rates
        [1.0, 1.0, 1.0, 0.5]
    """

    def __init__(self, scheduler: Any, delay_epochs: int, updates_per_epoch: int) -> None:
        if not is_timm_scheduler(scheduler):
            raise TypeError(f"DelayedSchedule wraps a timm scheduler, got {type(scheduler).__name__}")
        if delay_epochs < 0 or updates_per_epoch < 1:
            raise ValueError(
                "delay_epochs must be >= 0 and updates_per_epoch >= 1, "
                f"got {delay_epochs} and {updates_per_epoch}"
            )
        self.scheduler = scheduler
        self.delay_epochs = delay_epochs
        self.delay_updates = delay_epochs * updates_per_epoch
        if delay_epochs:
            self._hold()

    def _hold(self) -> None:
        """The base rates, during the delay."""
        s = self.scheduler
        for group, value in zip(s.optimizer.param_groups, s.base_values, strict=True):
            group[s.param_group_field] = value

    def step_update(self, num_updates: int, metric: float | None = None) -> None:
        if num_updates < self.delay_updates:
            self._hold()
        else:
            self.scheduler.step_update(num_updates=num_updates - self.delay_updates, metric=metric)

    def step(self, epoch: int, metric: float | None = None) -> None:
        if epoch < self.delay_epochs:
            self._hold()
        else:
            self.scheduler.step(epoch - self.delay_epochs, metric)

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


def is_timm_scheduler(scheduler: Any) -> bool:
    """Whether ``scheduler`` is driven the timm way (it has ``step_update`` and ``step``)."""
    return callable(getattr(scheduler, "step_update", None)) and callable(getattr(scheduler, "step", None))


def check_clip(name: str, value: Any) -> float:
    """``value`` as a float if it is a positive finite number.

    Raises:
        ValueError: naming ``name`` otherwise.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value > 0 and math.isfinite(value))
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def clip_gradients(
    module: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float | Mapping[str, float]
) -> dict[str, float]:
    """Clip the gradient norm of ``module`` (a float) or of each named group of ``optimizer`` (a mapping).

    Returns:
        The norms before clipping: ``{"grad_norm": ...}`` or ``{"grad_norm/<name>": ...}``.
    """
    if not isinstance(grad_clip, Mapping):
        return {"grad_norm": float(torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip))}
    out = {}
    for name, max_norm in grad_clip.items():
        params = [p for g in optimizer.param_groups if g.get("name") == name for p in g["params"]]
        out[f"grad_norm/{name}"] = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return out


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``{"lr": first group's rate, "lr/<name>": each named group's rate}``."""
    out = {"lr": float(optimizer.param_groups[0]["lr"])}
    for g in optimizer.param_groups:
        if g.get("name") is not None:
            out.setdefault(f"lr/{g['name']}", float(g["lr"]))
    return out


def step_after_update(scheduler: Any, interval: str, global_step: int) -> None:
    """Step ``scheduler`` after optimisation step ``global_step`` (timm: always; torch: if per step)."""
    if scheduler is None:
        return
    if is_timm_scheduler(scheduler):
        scheduler.step_update(num_updates=global_step)
    elif interval == "step":
        scheduler.step()


def step_after_epoch(
    scheduler: Any, interval: str, monitor: str | None, epoch: int, last_eval: Mapping[str, float]
) -> None:
    """Step ``scheduler`` at the end of ``epoch`` (0-based), with ``last_eval[monitor]`` where it needs one.

    Raises:
        ValueError: if a metric-driven scheduler has no ``monitor`` among ``last_eval``'s keys.
    """
    if scheduler is None:
        return
    timm = is_timm_scheduler(scheduler)
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if (plateau or (timm and monitor is not None)) and (monitor is None or monitor not in last_eval):
        raise ValueError(
            f"the scheduler needs scheduler_monitor naming one of eval_fn's outputs ({sorted(last_eval)}), "
            f"got {monitor!r}"
        )
    metric = last_eval[monitor] if monitor is not None and monitor in last_eval else None
    if timm:
        scheduler.step(epoch + 1, metric)
    elif plateau:
        scheduler.step(metric)
    elif interval == "epoch":
        scheduler.step()


def rederive_schedule(scheduler: Any, interval: str, epoch: int, global_step: int) -> None:
    """Bring a freshly built ``scheduler`` to ``epoch`` and ``global_step`` (a resume with new settings)."""
    if scheduler is None:
        return
    if is_timm_scheduler(scheduler):
        scheduler.step(epoch)  # each one acts only on the unit the scheduler counts in
        scheduler.step_update(num_updates=global_step)
    elif isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        logger.info("ReduceLROnPlateau starts afresh after a resume with new hyper-parameters")
    else:
        n = epoch if interval == "epoch" else global_step
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(n):
                scheduler.step()
