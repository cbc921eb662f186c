r"""Model-level helpers: run the sampling loop of InvE (eq. 24) and EquE (eq. 23) for a model.

A transform is any callable on a batch, `x -> x'` (a monowarp element's warp, an object rescaling, a flip):
this package knows no group. Both helpers put the model in eval mode (restoring every submodule's
training flag afterwards), run under `torch.no_grad()`, split the images into batches and, by default,
apply a softmax over the class dimension (dimension 1) of the model's output, as the paper compares
probabilities.

For EquE the same group element $\Phi$ must act on the input and on the output. Deterministic transform
pairs need nothing more; for random elements pass `sample`, a callable that draws $\Phi$ for a batch, and
transforms that take it as second argument: `transform(x, phi)`, `transform_output(y, phi)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from lsmetrics._utils import check_choice, check_tensor
from lsmetrics.functional import (
    REDUCTIONS,
    VARIANTS,
    Reduction,
    Variant,
    equivariance_error,
    invariance_error,
)

__all__ = ["measure_equivariance", "measure_invariance"]

Images = torch.Tensor | Iterable[Any]


def measure_invariance(
    model: Callable[[torch.Tensor], Any],
    images: Images,
    transforms: Callable[[torch.Tensor], torch.Tensor] | Sequence[Callable[[torch.Tensor], torch.Tensor]],
    *,
    batch_size: int = 32,
    softmax: bool = True,
    variant: Variant = "paper",
    reduction: Reduction = "mean",
    output_fn: Callable[[Any], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""InvE (eq. 24) of a classifier over a set of images and S transforms of each.

    For every image $I$ and every transform $T_s$: $r = M(I)$, $t_s = M(T_s(I))$, and
    `lsmetrics.invariance_error` of $r$ and $(t_1, \dots, t_S)$. A random transform (one that draws a
    new scaling at each call) can be listed several times, e.g. ``[random_warp] * 8`` for the 8 rescalings
    per image of the authors' MNIST evaluation.

    Args:
        model: A classifier, `(B, ...) -> (B, K)`; an `nn.Module` is put in eval mode and restored.
        images: `(N, ...)` tensor split into batches of `batch_size`, or an iterable of batches (a tensor,
            or a tuple/list whose first element is the image tensor, as a `DataLoader` yields).
        transforms: One callable `x -> x'` on a batch, or a sequence of S of them.
        batch_size: Batch size when `images` is a tensor.
        softmax: Compare softmax probabilities over dimension 1 (the paper's setting); `False` compares raw
            outputs.
        variant: ``"paper"`` (squared L2) or ``"reference"`` (relative L2, the authors' code).
        reduction: ``"mean"`` (scalar), ``"sum"`` or ``"none"`` (`(N, S)` per image and transform).
        output_fn: Extracts the `(B, K)` tensor from the model's output when it is not a tensor.
        device: Where to run; defaults to the device of the model's first parameter, else the images'.

    Returns:
        The error, a scalar or `(N, S)`.

    Raises:
        TypeError: If the model output is not a tensor (and no `output_fn`), or a transform is not callable.
        ValueError: On bad shapes, non-finite outputs or options.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5))  # invariant
        >>> images = torch.rand(6, 3, 8, 8)
        >>> flip = lambda x: x.flip(-1)
        >>> print(round(measure_invariance(model, images, [flip, flip], batch_size=4).item(), 6))
        0.0
    """
    check_choice(variant, "variant", VARIANTS)
    check_choice(reduction, "reduction", REDUCTIONS)
    transform_list = [transforms] if callable(transforms) else list(transforms)
    if not transform_list:
        raise ValueError("transforms must hold at least one callable")
    for i, transform in enumerate(transform_list):
        if not callable(transform):
            raise TypeError(f"transforms[{i}] must be callable, got {type(transform).__name__}")
    device = _resolve_device(model, device)
    errors = []
    with _evaluating(model), torch.no_grad():
        for x in _batches(images, batch_size):
            x = x.to(device) if device is not None else x
            reference = _output(model, x, output_fn, softmax)
            transformed = torch.stack(
                [_output(model, t(x), output_fn, softmax) for t in transform_list], dim=1
            )
            errors.append(invariance_error(reference, transformed, variant=variant, reduction="none"))
    if not errors:
        raise ValueError("images must hold at least one batch")
    per_pair = torch.cat(errors)
    return per_pair if reduction == "none" else (per_pair.mean() if reduction == "mean" else per_pair.sum())


def measure_equivariance(
    model: Callable[[torch.Tensor], Any],
    images: Images,
    transform: Callable[..., torch.Tensor],
    transform_output: Callable[..., torch.Tensor],
    *,
    sample: Callable[[torch.Tensor], Any] | None = None,
    num_samples: int = 1,
    valid: Callable[..., torch.Tensor] | None = None,
    batch_size: int = 16,
    softmax: bool = True,
    transform_logits: bool = False,
    variant: Variant = "paper",
    reduction: Reduction = "mean",
    output_fn: Callable[[Any], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""EquE (eq. 23) of a dense model: $S(M(I); \Phi)$ against $M(S(I; \Phi))$.

    For each batch and each of `num_samples` draws: `expected = transform_output(M(x))`,
    `actual = M(transform(x))`, then `lsmetrics.equivariance_error` (with the `valid` mask if
    given). With `softmax`, $M$ ends in a softmax over dimension 1, so the output transform acts on
    probabilities (the paper's $S(M(I))$); `transform_logits=True` instead transforms the logits and
    applies the softmax afterwards, as the authors' code does (the two differ under interpolation).

    Args:
        model: A dense model, `(B, ...) -> (B, C, H, W)`; an `nn.Module` is put in eval mode and restored.
        images: `(N, ...)` tensor split into batches of `batch_size`, or an iterable of batches (a tensor,
            or a tuple/list whose first element is the image tensor).
        transform: Acts on the input batch: `transform(x)`, or `transform(x, phi)` with `sample`.
        transform_output: The same action on the output batch: `transform_output(y)` or
            `transform_output(y, phi)`.
        sample: Draws a group element for a batch, `phi = sample(x)`; once per batch and draw.
        num_samples: Draws per batch (the expectation over $\Phi \sim \Omega$); use 1 for a deterministic
            transform.
        valid: Returns the `(B, H, W)` / `(B, 1, H, W)` mask of output pixels to compare, `valid(y)` or
            `valid(y, phi)` where `y` is the untransformed output; e.g. the warp of an all-ones image with
            zero padding, thresholded.
        batch_size: Batch size when `images` is a tensor.
        softmax: Compare probabilities (softmax over dimension 1); `False` compares raw outputs.
        transform_logits: With `softmax`, transform the logits and apply the softmax afterwards.
        variant: ``"paper"`` (squared L2, eq. 23) or ``"reference"`` (per-sample root mean square).
        reduction: ``"mean"`` (scalar), ``"sum"`` or ``"none"`` (`(N, num_samples)`).
        output_fn: Extracts the `(B, C, H, W)` tensor from the model's output when it is not a tensor.
        device: Where to run; defaults to the device of the model's first parameter, else the images'.

    Returns:
        The error, a scalar or `(N, num_samples)`.

    Raises:
        TypeError: If the model output is not a tensor (and no `output_fn`) or an argument is not callable.
        ValueError: On bad shapes, non-finite outputs, an empty `valid` mask or bad options.

    Examples:
        >>> import torch
        >>> model = torch.nn.Conv2d(3, 4, kernel_size=1)  # pointwise: commutes with any pixel permutation
        >>> images = torch.rand(5, 3, 6, 7)
        >>> flip = lambda x: x.flip(-1)
        >>> print(round(measure_equivariance(model, images, flip, flip, batch_size=2).item(), 6))
        0.0
    """
    check_choice(variant, "variant", VARIANTS)
    check_choice(reduction, "reduction", REDUCTIONS)
    for name, fn in (("transform", transform), ("transform_output", transform_output)):
        if not callable(fn):
            raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    for name, fn in (("sample", sample), ("valid", valid), ("output_fn", output_fn)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    device = _resolve_device(model, device)
    errors = []
    with _evaluating(model), torch.no_grad():
        for x in _batches(images, batch_size):
            x = x.to(device) if device is not None else x
            logits = _output(model, x, output_fn, softmax=False)
            probs = logits.softmax(dim=1) if softmax and not transform_logits else logits
            per_draw = []
            for _ in range(num_samples):
                extra = () if sample is None else (sample(x),)
                expected = transform_output(probs, *extra)
                if softmax and transform_logits:
                    expected = expected.softmax(dim=1)
                actual = _output(model, transform(x, *extra), output_fn, softmax)
                mask = None if valid is None else valid(logits, *extra)
                per_draw.append(
                    equivariance_error(expected, actual, variant=variant, valid=mask, reduction="none")
                )
            errors.append(torch.stack(per_draw, dim=1))
    if not errors:
        raise ValueError("images must hold at least one batch")
    per_sample = torch.cat(errors)
    return (
        per_sample
        if reduction == "none"
        else (per_sample.mean() if reduction == "mean" else per_sample.sum())
    )


@contextmanager
def _evaluating(model: object) -> Iterator[None]:
    """Eval mode inside the block; every submodule's own training flag restored afterwards."""
    if not isinstance(model, nn.Module):
        yield
        return
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _resolve_device(model: object, device: torch.device | str | None) -> torch.device | None:
    if device is not None:
        return torch.device(device)
    if isinstance(model, nn.Module):
        for tensor in model.parameters():
            return tensor.device
        for tensor in model.buffers():
            return tensor.device
    return None


def _batches(images: Images, batch_size: int) -> Iterator[torch.Tensor]:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(images, torch.Tensor):
        check_tensor(images, "images", [("N", *[f"D{i}" for i in range(1, images.ndim)])], kind="any")
        yield from images.split(batch_size)
        return
    if not isinstance(images, Iterable):
        raise TypeError(f"images must be a tensor or an iterable of batches, got {type(images).__name__}")
    for i, batch in enumerate(images):
        if isinstance(batch, (tuple, list)) and batch:
            batch = batch[0]
        if not isinstance(batch, torch.Tensor):
            raise TypeError(
                f"images[{i}] must be a tensor or a tuple/list starting with one, got {type(batch).__name__}"
            )
        yield batch


def _output(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    output_fn: Callable[[Any], torch.Tensor] | None,
    softmax: bool,
) -> torch.Tensor:
    out = model(x)
    if output_fn is not None:
        out = output_fn(out)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model output must be a tensor (or pass output_fn), got {type(out).__name__}")
    if out.ndim < 2:
        raise ValueError(f"the model output must have shape (B, K, ...), got {tuple(out.shape)}")
    if not out.dtype.is_floating_point:
        out = out.float()
    return out.softmax(dim=1) if softmax else out
