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
- `element_step`: label-free training of the canonicalizers alone, on the element-equivariance error of
  eq. 5 between a batch and its warped copy (the canonicalizer warm-up of ``canon.warmup_objective element``).
- `distillation_step`: label-free tuning, e.g. of a canonicalizer on a frozen backbone: a frozen teacher sees
  the original image, the model a rescaled version of it (a pair the data gives, or a random monotone
  scaling of the original), and the loss is the KL divergence of the model's prediction from the
  teacher's. No labels are needed, so a DEC can be tuned on any unlabelled images.

Both supervised steps log the task accuracy (pixel accuracy for dense targets) and take an optional batch
transform ``mix(x, target)`` applied before the warp (timm's mixup/cutmix, which turns the targets into soft
`(B, K)` rows; the accuracy is then taken against the targets' argmax). `classification_recipe` builds that
transform and the matching loss (soft-target cross-entropy, label smoothing) from the usual fine-tuning
settings with timm's own classes.

With ``dense=True`` both take dense predictions (segmentation): the target is a label map `(B, H, W)` warped
with its image (nearest neighbour), and the paired step's consistency term is the equivariance error of eq. 23
between the clean output warped by $\Phi$ and the output on the warped image (`dense_consistency`) instead of
the invariance error.

A model that returns canonicalizer results (``return_results=True``) also gets the size of the warps it
applies logged (`warp_statistics`), so that a canonicalizer that stays at the identity shows in the training
log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "augmented_step",
    "classification_recipe",
    "dense_consistency",
    "distillation_step",
    "element_equivariance",
    "element_step",
    "method_step",
    "options_step",
    "paired_step",
    "warmup_step",
    "warp_statistics",
]

Prepare = Callable[[Any], tuple[torch.Tensor, torch.Tensor]]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Mix = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Top-1 accuracy against hard `(B,)` targets or the argmax of soft `(B, K)` ones (mixup)."""
    hard = target.argmax(1) if target.ndim == 2 else target
    return float((logits.argmax(1) == hard).float().mean())


def classification_recipe(
    num_classes: int,
    *,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    mix_prob: float = 1.0,
    switch_prob: float = 0.5,
    smoothing: float = 0.0,
) -> tuple[Mix | None, Loss]:
    """timm's mixup/cutmix and label smoothing as a batch transform and a loss for the training steps.

    With ``mixup`` or ``cutmix`` > 0 the transform is `timm.data.Mixup` (per batch; it needs an even batch
    size) and the loss `timm.loss.SoftTargetCrossEntropy` on its soft targets (smoothed by ``smoothing``);
    otherwise there is no transform and the loss is cross-entropy with ``label_smoothing=smoothing``.

    Args:
        num_classes: classes of the soft targets.
        mixup: mixup's Beta(alpha, alpha) parameter (0: off); the timm fine-tuning recipe uses 0.8.
        cutmix: cutmix's alpha (0: off); the recipe uses 1.0.
        mix_prob: probability of mixing a batch.
        switch_prob: probability of cutmix instead of mixup when both are on.
        smoothing: label smoothing (the recipe: 0.1).

    Returns:
        ``(mix or None, loss_fn)``, for ``mix=`` and ``loss_fn=`` of `augmented_step` or `paired_step`.

    Raises:
        ValueError: a negative alpha, a probability outside [0, 1] or ``num_classes < 1``.
    """
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if mixup < 0 or cutmix < 0:
        raise ValueError(f"mixup and cutmix must be >= 0, got {mixup} and {cutmix}")
    for name, value in (("mix_prob", mix_prob), ("switch_prob", switch_prob), ("smoothing", smoothing)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if mixup == 0 and cutmix == 0:
        return None, lambda logits, target: F.cross_entropy(logits, target, label_smoothing=smoothing)
    mixer = Mixup(
        mixup_alpha=mixup,
        cutmix_alpha=cutmix,
        prob=mix_prob,
        switch_prob=switch_prob,
        mode="batch",
        label_smoothing=smoothing,
        num_classes=num_classes,
    )

    def mix(x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] % 2:
            raise ValueError(f"mixup/cutmix need an even batch size, got {x.shape[0]}")
        return mixer(x, target)

    return mix, SoftTargetCrossEntropy()


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


#: Where the element-equivariance error is measured (``canon.element_weighting``).
ELEMENT_WEIGHTINGS = ("uniform", "content")


def element_equivariance(
    results: Mapping[str, Any],
    g: Any,
    direction: str,
    *,
    images: torch.Tensor | None = None,
    reduction: str = "pooled",
) -> torch.Tensor | None:
    r"""`deqcanon.element_equivariance_error` (eq. 5, normalised) of canonicalizers that saw a batch whose
    second half is the first warped by ``g``, averaged over the canonicalizers with a monotone-scaling
    element; ``None`` when there is none.

    Without ``images`` the error is taken on a uniform 9 x 9 grid of points. With them (the model's input on
    the doubled batch) it is taken on a 17 x 17 grid weighted by `deqcanon.content_weight` of the input
    (edges spread by ``max(1, round(max(H, W) / 48))`` pixels): only where a warp is visible, so the empty
    background of a sparse scene, where no canonicalizer can read the warp, neither dilutes the signal nor
    sets a floor under the error. The element acts on normalised coordinates, so the input's map weighs a
    canonicalizer in the latent space as well.

    Args:
        results: layer key -> `deqcanon.CanonicalizationResult` on the doubled batch `(2B, ...)`.
        g: the `monowarp.ScalingMap` of batch `B` that made the second half.
        direction: the second half is $S^{-1}(x; g)$ (``"unwarp"``: the first half's element should be
            $g$ composed with the second's) or $S(x; g)$ (``"warp"``: the second's is $g$ composed with the
            first's).
        images: the `(2B, C, H, W)` input of the doubled batch, for the content-weighted error.
        reduction: ``"pooled"`` (one number) or ``"none"`` (one per pair, `(B,)`), as in
            `deqcanon.element_equivariance_error`.
    """
    import deqcanon
    import monowarp

    weight, points = None, 9
    if images is not None:
        b = images.shape[0] // 2
        # the map over the images whose element comes first in the comparison
        first = images[:b] if direction == "warp" else images[b:]
        weight = deqcanon.content_weight(first, radius=max(1, round(max(images.shape[-2:]) / 48)))
        points = 17
    terms = []
    for result in results.values():
        element = getattr(result, "element", None)
        if not isinstance(element, monowarp.ScalingMap):
            continue
        b = element.batch_size // 2
        clean, warped = element[:b], element[b:]
        pair = (clean, warped) if direction == "warp" else (warped, clean)
        terms.append(
            deqcanon.element_equivariance_error(
                *pair, g.to(element.dtype), points=points, weight=weight, reduction=reduction
            )
        )
    return torch.stack(terms).mean() if terms else None


def _forward(
    model: nn.Module, x: torch.Tensor, log_warps: bool
) -> tuple[torch.Tensor, dict[str, float], Mapping[str, Any]]:
    if not log_warps:
        return model(x), {}, {}
    logits, results = model(x, return_results=True)
    return logits, warp_statistics(results or {}), results or {}


def element_step(
    prepare: Prepare,
    *,
    scale_range: tuple[float, float] = (0.5, 2.0),
    grid: tuple[int, int] = (4, 4),
    direction: str = "unwarp",
    weighting: str = "uniform",
) -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    r"""Label-free training of canonicalizers: the element-equivariance error (eq. 5, `element_equivariance`)
    of a canonicalizing model's canonicalizers between a batch and its copy warped by $\Phi \sim \Omega$.

    The model runs as usual (``return_results=True``) but its output is not used, and the targets are
    ignored: the step for a warm-up in which the backbone is frozen and only the canonicalizers learn to
    canonicalize (``canon.warmup_objective element``), before the task loss takes over.

    Args:
        prepare: ``batch -> (x, target)``; the target is not used.
        scale_range: local scale factors of $\Phi$.
        grid: knot intervals (N, M) of $\Phi$.
        direction: the warped copy is $S^{-1}(x; \Phi)$ (``"unwarp"``) or $S(x; \Phi)$ (``"warp"``).
        weighting: ``"uniform"`` or ``"content"``, where the error is measured (`element_equivariance`).

    Returns:
        The step; its metrics are ``equ_elem`` (the loss) and the warp statistics.

    Raises:
        ValueError: an unknown direction or weighting; at the first step, a model without a monotone-scaling
            canonicalizer.
    """
    import monowarp
    from monowarp.validation import check_choice

    if direction not in ("unwarp", "warp"):
        raise ValueError(f"direction must be 'unwarp' or 'warp', got {direction!r}")
    check_choice(weighting, "element weighting", ELEMENT_WEIGHTINGS)
    apply = monowarp.unwarp if direction == "unwarp" else monowarp.warp

    def step(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        x, _ = prepare(batch)
        g = monowarp.sample_monotone_scale(
            x.shape[0], tuple(grid), tuple(scale_range), device=x.device, dtype=x.dtype
        )
        pair = torch.cat([x, apply(x, g)])
        _, stats, results = _forward(model, pair, True)
        elem = element_equivariance(results, g, direction, images=pair if weighting == "content" else None)
        if elem is None:
            raise ValueError("element_step needs a model with a canonicalizer with a monotone scaling")
        return elem, {"equ_elem": float(elem.detach()), **stats}

    return step


def options_step(
    prepare: Prepare,
    method: str,
    *,
    control: str,
    adapted: bool,
    train: Any,
    aug: Any,
    canon: Any = None,
    augment: bool = True,
    **common: Any,
) -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    """`method_step` from an app's option groups: the paired control ``control`` (``"invl"``, ``"augl"``)
    with ``train.invl_weight``, a canonicalizing method (``adapted``) with ``train.consistency_weight``,
    ``canon.element_weight`` and ``canon.element_weighting``, the warps of ``aug`` (``p`` only when
    ``aug.enabled`` and ``augment``).

    ``common`` goes on to the steps (``loss_fn``, ``mix``, ``dense``).
    """
    return method_step(
        prepare,
        paired_control=method == control,
        adapted=adapted,
        weight=train.invl_weight if method == control else train.consistency_weight,
        element_weight=canon.element_weight if adapted and canon is not None else 0.0,
        element_weighting=canon.element_weighting if adapted and canon is not None else "uniform",
        p=aug.p if aug.enabled and augment else 0.0,
        scale_range=tuple(aug.scale_range),
        grid=tuple(aug.grid),
        direction=aug.direction,
        **common,
    )


def warmup_step(prepare: Prepare, adapted: bool, canon: Any, aug: Any):
    """The step of the backbone-frozen warm-up (`TrainingJob.warmup_step_fn`): `element_step` with the
    warps of ``aug`` (``scale_range``, ``grid``, ``direction``) and ``canon.element_weighting`` for a
    canonicalizing model (``adapted``) with ``canon.warmup_objective == "element"``, else ``None`` (the
    method's own step)."""
    if not adapted or canon is None or canon.warmup_objective != "element":
        return None
    return element_step(
        prepare,
        scale_range=tuple(aug.scale_range),
        grid=tuple(aug.grid),
        direction=aug.direction,
        weighting=canon.element_weighting,
    )


def method_step(
    prepare: Prepare,
    *,
    paired_control: bool,
    adapted: bool,
    weight: float,
    element_weight: float = 0.0,
    element_weighting: str = "uniform",
    p: float = 0.5,
    **common: Any,
) -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    """The step an app trains a method with: `paired_step` for the paired control (InvL, AugL;
    ``paired_control``) and for a canonicalizing model (``adapted``) with a consistency ``weight`` or an
    ``element_weight``, `augmented_step` with warp probability ``p`` otherwise.

    ``common`` goes to both (``scale_range``, ``grid``, ``direction``, ``loss_fn``, ``mix``, ``dense``);
    an adapted model logs its warps.
    """
    if paired_control or (adapted and (weight > 0 or element_weight > 0)):
        element_weight = element_weight if adapted else 0.0
        return paired_step(
            prepare,
            weight=weight,
            element_weight=element_weight,
            element_weighting=element_weighting,
            log_warps=adapted,
            **common,
        )
    return augmented_step(prepare, p=p, log_warps=adapted, **common)


def augmented_step(
    prepare: Prepare,
    *,
    p: float = 0.5,
    scale_range: tuple[float, float] = (0.5, 2.0),
    grid: tuple[int, int] = (4, 4),
    direction: str = "unwarp",
    loss_fn: Loss = F.cross_entropy,
    log_warps: bool = False,
    mix: Mix | None = None,
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
        mix: ``(x, target) -> (x, target)`` applied before the warp (`classification_recipe`).
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
        if mix is not None:
            x, target = mix(x, target)
        if augmentation is not None and dense:
            x, target = augmentation(x, target[:, None])
            target = target[:, 0]
        elif augmentation is not None:
            x = augmentation(x)
        logits, stats, _ = _forward(model, x, log_warps)
        logits = logits.float()
        loss = loss_fn(logits, target)
        return loss, {"acc": _accuracy(logits, target), **stats}

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
    mix: Mix | None = None,
    dense: bool = False,
    element_weight: float = 0.0,
    element_weighting: str = "uniform",
) -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    r"""Eq. 25: task loss on the clean and the warped halves plus ``weight`` x InvE between them.

    With ``dense``, the warped half's label map is warped too and the consistency term is EquE (eq. 23,
    `dense_consistency`): the dense form of the equivariance loss (AugL).

    A canonicalizing model (``log_warps``) also gets the element-equivariance error of its canonicalizers
    between the two halves logged as ``equ_elem`` (`element_equivariance`, eq. 5, normalised: 0 when the
    canonical forms of both halves agree, about 1 for a canonicalizer that ignores the warp), and
    ``element_weight`` times it added to the loss: a signal that rewards canonicalizing itself.

    Args:
        prepare: ``batch -> (x, target)``.
        weight: weight of the invariance term ($\lambda$ of eq. 25), >= 0.
        scale_range: local scale factors of $\Phi \sim \Omega$.
        grid: knot intervals (N, M) of $\Phi$.
        direction: the warped half is $S^{-1}(x; \Phi)$ (``"unwarp"``, as the augmentation) or $S(x; \Phi)$
            (``"warp"``).
        loss_fn: ``loss_fn(logits, target)``, a scalar.
        log_warps: the model takes ``return_results``: log `warp_statistics`.
        mix: ``(x, target) -> (x, target)`` applied before the warp; both halves share the mixed targets.
        dense: label maps `(B, H, W)` and the equivariance term (see above).
        element_weight: weight of the canonicalizers' element-equivariance term, >= 0 (needs
            ``log_warps``).
        element_weighting: ``"uniform"`` or ``"content"``, where that term is measured
            (`element_equivariance`).
    """
    import lsmetrics
    import monowarp
    from monowarp.validation import check_choice

    if not weight >= 0:
        raise ValueError(f"weight must be >= 0, got {weight}")
    if not element_weight >= 0:
        raise ValueError(f"element_weight must be >= 0, got {element_weight}")
    if element_weight > 0 and not log_warps:
        raise ValueError("element_weight needs a canonicalizing model (log_warps=True)")
    if direction not in ("unwarp", "warp"):
        raise ValueError(f"direction must be 'unwarp' or 'warp', got {direction!r}")
    check_choice(element_weighting, "element weighting", ELEMENT_WEIGHTINGS)
    apply = monowarp.unwarp if direction == "unwarp" else monowarp.warp

    def step(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        x, target = prepare(batch)
        if mix is not None:
            x, target = mix(x, target)
        g = monowarp.sample_monotone_scale(
            x.shape[0], tuple(grid), tuple(scale_range), device=x.device, dtype=x.dtype
        )
        pair = torch.cat([x, apply(x, g)])
        logits, stats, results = _forward(model, pair, log_warps)
        clean, warped = logits.float().chunk(2)
        if dense:
            warped_target = apply(target[:, None], g, mode="nearest")[:, 0]
            ce = 0.5 * (loss_fn(clean, target) + loss_fn(warped, warped_target))
            term, name = dense_consistency(clean, warped, apply, g), "equ"
        else:
            ce = 0.5 * (loss_fn(clean, target) + loss_fn(warped, target))
            term = lsmetrics.invariance_error(clean.softmax(1), warped.softmax(1), variant="paper")
            name = "inv"
        acc = _accuracy(clean, target)
        metrics = {"ce": float(ce.detach()), name: float(term.detach()), "acc": acc, **stats}
        loss = ce + weight * term
        with torch.set_grad_enabled(torch.is_grad_enabled() and element_weight > 0):  # else only logged
            images = pair if element_weighting == "content" else None
            elem = element_equivariance(results, g, direction, images=images) if results else None
        if elem is not None:
            metrics["equ_elem"] = float(elem.detach())
            if element_weight > 0:
                loss = loss + element_weight * elem
        elif element_weight > 0:
            raise ValueError("element_weight > 0, but the model has no canonicalizer with a monotone scaling")
        return loss, metrics

    return step


def distillation_step(
    prepare: Callable[[Any], tuple[torch.Tensor, torch.Tensor | None]],
    teacher: nn.Module,
    *,
    temperature: float = 1.0,
    scale_range: tuple[float, float] = (0.5, 2.0),
    grid: tuple[int, int] = (4, 4),
    direction: str = "unwarp",
    log_warps: bool = False,
) -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    r"""Label-free tuning: the model on a rescaled image should predict what a frozen teacher predicts on the
    original.

    The loss is $T^2\,\mathrm{KL}(\mathrm{softmax}(t / T) \,\Vert\, \mathrm{softmax}(s / T))$ with $t$ the
    teacher's logits on the original $x$ and $s$ the model's on the rescaled $x'$, averaged over the batch.
    With the model a DEC-adapted copy of the teacher whose backbone is frozen, only the canonicalizer
    learns, and it learns to undo the rescaling as far as the backbone is concerned: the invariance of
    eq. 24 without a single label. The teacher runs without gradients, in eval mode, on the batch's device.

    Args:
        prepare: ``batch -> (x, x_rescaled)``, both `(B, C, H, W)`; ``x_rescaled`` ``None`` draws a random
            monotone scaling of ``x`` ($\Phi \sim \Omega$ with ``scale_range`` and ``grid``) instead.
        teacher: the frozen reference model (e.g. the pretrained classifier before adaptation).
        temperature: softening temperature $T$ of both distributions.
        scale_range: local scale factors of the random rescaling.
        grid: knot intervals (N, M) of the random rescaling.
        direction: ``"unwarp"`` ($S^{-1}$) or ``"warp"`` ($S$) for the random rescaling.
        log_warps: the model takes ``return_results``: log `warp_statistics`.

    Returns:
        The step; its metrics are ``kl`` (the loss), ``agree`` (share of images on which the model's top-1
        on the rescaled image equals the teacher's on the original) and the warp statistics.

    Raises:
        ValueError: a non-positive temperature or an unknown direction.
    """
    import monowarp

    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if direction not in ("unwarp", "warp"):
        raise ValueError(f"direction must be 'unwarp' or 'warp', got {direction!r}")
    apply = monowarp.unwarp if direction == "unwarp" else monowarp.warp
    for p in teacher.parameters():
        p.requires_grad_(False)

    def step(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        x, rescaled = prepare(batch)
        if rescaled is None:
            g = monowarp.sample_monotone_scale(
                x.shape[0], tuple(grid), tuple(scale_range), device=x.device, dtype=x.dtype
            )
            rescaled = apply(x, g)
        if rescaled.shape != x.shape:
            raise ValueError(
                f"the rescaled batch must have the shape of the original {tuple(x.shape)}, "
                f"got {tuple(rescaled.shape)}"
            )
        teacher.to(x.device).eval()
        with torch.no_grad():
            target = (teacher(x).float() / temperature).softmax(1)
        logits, stats, _ = _forward(model, rescaled, log_warps)
        log_p = (logits.float() / temperature).log_softmax(1)
        kl = F.kl_div(log_p, target, reduction="batchmean") * temperature**2
        agree = (logits.argmax(1) == target.argmax(1)).float().mean()
        return kl, {"kl": float(kl.detach()), "agree": float(agree), **stats}

    return step
