"""Shared helpers of `deqcanon`: argument validation and the resized view that the small networks see.

Every public entry point validates its arguments through `check_tensor` (tensors: type, shape pattern such
as `("B", "C", "H", "W")`, dtype kind, finiteness; monowarp's, the vocabulary monowarp and the packages built
on it share), `check_choice` (string options, also monowarp's) and `check_option` (numeric ranges, types and
choices that may be None), so that bad input raises a `ValueError`/`TypeError` that names the argument and
what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from monowarp.validation import check_choice, check_tensor

__all__ = ["check_choice", "check_option", "check_tensor", "detach_norm_weights", "resize_to_fit"]


def check_option(
    value: Any,
    name: str,
    *,
    choices: Iterable[Any] | None = None,
    kind: type | tuple[type, ...] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    allow_none: bool = False,
) -> Any:
    """Validate a configuration option (a choice among names or a number in a range) and return it.

    Args:
        value: the option value.
        name: its name, used in the error message.
        choices: the valid values, listed in the message when `value` is not one of them.
        kind: required Python type(s); `bool` never passes as `int` or `float`.
        low: lower bound (inclusive unless `low_inclusive` is False).
        high: upper bound (inclusive).
        low_inclusive: whether `low` itself is allowed.
        allow_none: accept None.

    Returns:
        `value`.

    Raises:
        TypeError: wrong type.
        ValueError: not among `choices` or outside the range.
    """
    if value is None and allow_none:
        return value
    if choices is not None:
        valid = tuple(choices)
        if value not in valid:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, valid))}; got {value!r}")
        return value
    if kind is not None:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise TypeError(f"{name} must be {' or '.join(k.__name__ for k in kinds)}, got bool")
        if not isinstance(value, kinds):
            raise TypeError(
                f"{name} must be {' or '.join(k.__name__ for k in kinds)}, got {type(value).__name__}"
            )
    if isinstance(value, (int, float)) and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (value < low or (not low_inclusive and value == low)):
        bound = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {bound} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return value


def resize_to_fit(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """Downsample `(B, C, H, W)` so that its longer side is at most `size`, keeping the aspect ratio.

    Antialiased bilinear resampling with `align_corners=True`, the coordinate convention of the groups
    (pixel `c` of `W` sits at `c / (W - 1)`), so a group element acts on the view as on the full input.
    Inputs that already fit, and `size=None`, are returned unchanged.
    """
    if size is None:
        return x
    h, w = x.shape[-2:]
    longest = max(h, w)
    if longest <= size:
        return x
    scale = size / longest
    new = (max(2, round(h * scale)), max(2, round(w * scale)))
    return F.interpolate(x, size=new, mode="bilinear", antialias=True, align_corners=True)


def detach_norm_weights(module: torch.nn.Module) -> None:
    """Recompute torchdeq's normalised weights without autograd history.

    torchdeq's weight/spectral norm stores the normalised weight as a plain tensor attribute with a
    graph back to its `_v`/`_g` parameters; such non-leaf tensors cannot be deep-copied or pickled.
    Recomputing them under `torch.no_grad()` gives the same values as leaves; the next forward resets
    them with a graph again.
    """
    from torchdeq.norm import reset_norm

    with torch.no_grad():
        reset_norm(module)
