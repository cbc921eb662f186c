r"""Training steps the apps share: augmented task loss, and the paired clean/warped objective of eq. 25.

A step is what `lse_common.engine.Trainer` calls, ``step(model, batch) -> (loss, metrics)``. The app gives
``prepare(batch) -> (x, target)`` (e.g. uint8 images to floats in ``[0, 1]``) and the task loss.

- `augmented_step`: the task loss on the batch, each image warped by a random monotone scaling
  (`monowarp.RandomMonotoneScale`) with probability ``p`` (the paper's Aug baseline, and the augmented batches
  of every other method).
- `paired_step`: eq. 25, the clean batch and the same batch warped by $\Phi \sim \Omega$ in one forward pass;
  the loss is the mean task loss of both halves plus ``weight`` times the invariance error (eq. 24,
  squared L2) between their softmax outputs (`lsmetrics.invariance_error`). InvL is this step on the
  plain model; on a canonicalizing model it adds a consistency term to the canonicalizer's training.

With ``dense=True`` both take dense predictions (segmentation): the target is a label map `(B, H, W)` warped
with its image (nearest neighbour), and the paired step's consistency term is the equivariance error of eq. 23
between the clean output warped by $\Phi$ and the output on the warped image (`dense_consistency`) instead of
the invariance error.

Both log the task accuracy (pixel accuracy for dense targets); a model that returns canonicalizer results
(``return_results=True``) also gets the size of the warps it applies logged (`warp_statistics`), so that a
canonicalizer that stays at the identity shows in the training log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["augmented_step", "dense_consistency", "paired_step", "warp_statistics"]

Prepare = Callable[[Any], tuple[torch.Tensor, torch.Tensor]]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def warp_statistics(results: Mapping[str, Any]) -> dict[str, float]:
    r"""Size of the warps canonicalizers applied: mean and max $|\log|$ slope, solver iterations.

    The slopes are $\partial l_X / \partial x$ and $\partial l_Y / \partial y$ on a 9 x 9 grid of points
    inside the image; 0 means the identity.

    Args:
        results: layer key -> `deqcanon.CanonicalizationResult` (what a `latentcanon.LatentCanonicalizedModel`
            returns with ``return_results=True``); results without a monotone-scaling element are skipped.

    Returns:
        ``{"warp_log_scale_mean", "warp_log_scale_max"}`` averaged over layers (empty when there is none),
        and ``"solver_iters"`` when the canonicalizers report solver statistics.
    """
    means, maxes, iters = [], [], []
    for result in results.values():
        element = getattr(result, "element", None)
        if element is None or not hasattr(element, "local_scale"):
            continue
        with torch.no_grad():  # on a 9 x 9 grid of points inside the image
            t = torch.linspace(0.05, 0.95, 9, device=element.device, dtype=element.dtype)
            pts = torch.stack(torch.meshgrid(t, t, indexing="xy"), dim=-1).reshape(1, -1, 2)
            jac = element.local_scale(pts.expand(element.batch_size, -1, -1))  # (B, P, 2, 2)
            slopes = torch.diagonal(jac, dim1=-2, dim2=-1)  # dl_X/dx, dl_Y/dy
            log = slopes.abs().clamp_min(1e-12).log().abs().float()
        means.append(float(log.mean()))
        maxes.append(float(log.max()))
        info = getattr(result, "info", None)
        if info is not None and getattr(info, "iterations", None) is not None:
            iters.append(float(info.iterations))
    out: dict[str, float] = {}
    if means:
        out["warp_log_scale_mean"] = sum(means) / len(means)
        out["warp_log_scale_max"] = max(maxes)
    if iters:
        out["solver_iters"] = sum(iters) / len(iters)
    return out


def dense_consistency(
    clean_logits: torch.Tensor, warped_logits: torch.Tensor, apply: Callable[..., torch.Tensor], g: Any
) -> torch.Tensor:
    r"""EquE (eq. 23, squared L2) between $S(M(I); \Phi)$ and $M(S(I; \Phi))$ as a loss, on valid pixels.

    As in the authors' code the logits are warped, then turned into probabilities. Pixels the warp fills from
    outside the image (zero padding of a warped all-ones map below 1/2) are left out.

    Args:
        clean_logits: `(B, C, H, W)` logits $M(I)$.
        warped_logits: `(B, C, H, W)` logits $M(S(I; \Phi))$.
        apply: the warp the input went through, ``apply(x, g, **kwargs)`` (`monowarp.warp` or ``unwarp``).
        g: the group element $\Phi$.
    """
    import lsmetrics

    ones = torch.ones_like(clean_logits[:, :1])
    valid = apply(ones, g, mode="nearest", padding_mode="zeros") > 0.5
    expected = apply(clean_logits, g).softmax(1)
    return lsmetrics.equivariance_error(expected, warped_logits.softmax(1), variant="paper", valid=valid)


def _forward(model: nn.Module, x: torch.Tensor, log_warps: bool) -> tuple[torch.Tensor, dict[str, float]]:
    if not log_warps:
        return model(x), {}
    logits, results = model(x, return_results=True)
    return logits, warp_statistics(results or {})


def augmented_step(
    prepare: Prepare,
    *,
    p: float = 0.5,
    scale_range: tuple[float, float] = (0.5, 2.0),
    grid: tuple[int, int] = (4, 4),
    direction: str = "unwarp",
    loss_fn: Loss = F.cross_entropy,
    log_warps: bool = False,
    dense: bool = False,
) -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    """The task loss on a randomly warped batch (see the module docstring).

    Args:
        prepare: ``batch -> (x, target)``, ``x`` of shape `(B, C, H, W)`.
        p: probability of warping each image (0: no augmentation).
        scale_range: local scale factors of the warps.
        grid: knot intervals (N, M) of the warps.
        direction: ``"unwarp"`` ($S^{-1}$) or ``"warp"`` ($S$), see `monowarp.RandomMonotoneScale`.
        loss_fn: ``loss_fn(logits, target)``, a scalar.
        log_warps: the model takes ``return_results`` (an adapted model): log `warp_statistics`.
        dense: the target is a label map `(B, H, W)`, warped with its image (nearest neighbour).
    """
    import monowarp

    if not 0 <= p <= 1:
        raise ValueError(f"p must be in [0, 1], got {p}")
    augmentation = (
        monowarp.RandomMonotoneScale(
            scale_range=tuple(scale_range), grid=tuple(grid), p=p, direction=direction
        )
        if p > 0
        else None
    )
    if augmentation is not None and dense:
        from kornia.augmentation import AugmentationSequential

        augmentation = AugmentationSequential(augmentation, data_keys=["input", "mask"])

    def step(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        x, target = prepare(batch)
        if augmentation is not None and dense:
            x, target = augmentation(x, target[:, None])
            target = target[:, 0]
        elif augmentation is not None:
            x = augmentation(x)
        logits, stats = _forward(model, x, log_warps)
        logits = logits.float()
        loss = loss_fn(logits, target)
        return loss, {"acc": float((logits.argmax(1) == target).float().mean()), **stats}

    return step


def paired_step(
    prepare: Prepare,
    *,
    weight: float,
    scale_range: tuple[float, float] = (0.5, 2.0),
    grid: tuple[int, int] = (4, 4),
    direction: str = "unwarp",
    loss_fn: Loss = F.cross_entropy,
    log_warps: bool = False,
    dense: bool = False,
) -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    r"""Eq. 25: task loss on the clean and the warped halves plus ``weight`` x InvE between them.

    With ``dense``, the warped half's label map is warped too and the consistency term is EquE (eq. 23,
    `dense_consistency`): the dense form of the equivariance loss (AugL).

    Args:
        prepare: ``batch -> (x, target)``.
        weight: weight of the invariance term ($\lambda$ of eq. 25), >= 0.
        scale_range: local scale factors of $\Phi \sim \Omega$.
        grid: knot intervals (N, M) of $\Phi$.
        direction: the warped half is $S^{-1}(x; \Phi)$ (``"unwarp"``, as the augmentation) or $S(x; \Phi)$
            (``"warp"``).
        loss_fn: ``loss_fn(logits, target)``, a scalar.
        log_warps: the model takes ``return_results``: log `warp_statistics`.
        dense: label maps `(B, H, W)` and the equivariance term (see above).
    """
    import lsmetrics
    import monowarp

    if not weight >= 0:
        raise ValueError(f"weight must be >= 0, got {weight}")
    if direction not in ("unwarp", "warp"):
        raise ValueError(f"direction must be 'unwarp' or 'warp', got {direction!r}")
    apply = monowarp.unwarp if direction == "unwarp" else monowarp.warp

    def step(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        x, target = prepare(batch)
        g = monowarp.sample_monotone_scale(
            x.shape[0], tuple(grid), tuple(scale_range), device=x.device, dtype=x.dtype
        )
        logits, stats = _forward(model, torch.cat([x, apply(x, g)]), log_warps)
        clean, warped = logits.float().chunk(2)
        if dense:
            warped_target = apply(target[:, None], g, mode="nearest")[:, 0]
            ce = 0.5 * (loss_fn(clean, target) + loss_fn(warped, warped_target))
            term, name = dense_consistency(clean, warped, apply, g), "equ"
        else:
            ce = 0.5 * (loss_fn(clean, target) + loss_fn(warped, target))
            term = lsmetrics.invariance_error(clean.softmax(1), warped.softmax(1), variant="paper")
            name = "inv"
        acc = (clean.argmax(1) == target).float().mean()
        metrics = {"ce": float(ce.detach()), name: float(term.detach()), "acc": float(acc), **stats}
        return ce + weight * term, metrics

    return step
