"""Input validation that monowarp and the packages built on it (deqcanon, latentcanon) share.

`check_tensor` checks type, shape (symbolic patterns such as ``("B", "C", "H", "W")`` whose letters are bound
across arguments), dtype kind and finiteness, raises a `TypeError` or `ValueError` that names the argument and
the expected shape, and returns the checked tensor; `check_choice` checks a string option against the valid
ones and returns it. lsmetrics, which needs only torch, speaks the same vocabulary with its own copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

__all__ = ["Pattern", "check_choice", "check_tensor"]

Pattern = Sequence[str | int]


def _format_pattern(pattern: Pattern, dims: dict[str, int]) -> str:
    parts = []
    for entry in pattern:
        if isinstance(entry, str) and entry in dims:
            parts.append(f"{entry}={dims[entry]}")
        else:
            parts.append(str(entry))
    return "(" + ", ".join(parts) + (",)" if len(parts) == 1 else ")")


def _matches(shape: torch.Size, pattern: Pattern, dims: dict[str, int]) -> dict[str, int] | None:
    if len(shape) != len(pattern):
        return None
    bound = dict(dims)
    for size, entry in zip(shape, pattern, strict=True):
        if isinstance(entry, int):
            if size != entry:
                return None
        elif entry in bound:
            if size != bound[entry]:
                return None
        else:
            bound[entry] = int(size)
    return bound


def check_tensor(
    value: object,
    name: str,
    shapes: Sequence[Pattern] | None,
    *,
    dims: dict[str, int] | None = None,
    kind: Literal["float", "integer", "label", "mask", "any"] = "float",
    finite: bool = True,
    nonempty: bool = True,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Validate a tensor argument, bind its symbolic dimensions and return it.

    The same helper, with the same arguments and messages, as those of lsmetrics and latentcanon (the
    packages stay independent, so each keeps its own copy).

    Args:
        value: the argument to check.
        name: the argument's name, used in error messages.
        shapes: accepted shape patterns; entries are ints (exact sizes) or letters (sizes bound on first use
            and checked on later uses, also across calls that share ``dims``), e.g. ``[("B", "M+1", "N+1")]``;
            None: any shape.
        dims: letters already bound by earlier arguments; updated in place with the new bindings.
        kind: ``"float"`` (floating point), ``"integer"`` (integer, not bool), ``"label"`` (integer or
            bool), ``"mask"`` (bool or floating point) or ``"any"``.
        finite: reject NaN and infinite entries of floating point tensors (synchronises with the device).
        nonempty: reject tensors with zero elements.
        device: the device ``value`` must be on (that of an earlier argument), if given.

    Returns:
        ``value`` itself, now known to be a tensor of the expected kind and shape.

    Raises:
        TypeError: ``value`` is not a tensor or has the wrong dtype kind.
        ValueError: no pattern matches, the tensor is empty or not finite, or on another device.
    """
    if dims is None:
        dims = {}
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    dtype = value.dtype
    ok = {
        "float": dtype.is_floating_point,
        "integer": not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool,
        "label": not dtype.is_floating_point and not dtype.is_complex,
        "mask": dtype == torch.bool or dtype.is_floating_point,
        "any": not dtype.is_complex,
    }
    if kind not in ok:
        raise ValueError(f"kind must be one of {sorted(ok)}, got {kind!r}")
    if not ok[kind]:
        expected = {
            "float": "a floating point dtype",
            "integer": "an integer dtype",
            "label": "an integer or bool dtype",
            "mask": "a bool or floating point dtype",
            "any": "a real dtype",
        }[kind]
        raise TypeError(f"{name} must have {expected}, got {dtype}")
    if shapes is not None:
        matches = (_matches(value.shape, pattern, dims) for pattern in shapes)
        bound = next((b for b in matches if b is not None), None)
        if bound is None:
            expected = " or ".join(_format_pattern(p, dims) for p in shapes)
            raise ValueError(f"{name} must have shape {expected}, got {tuple(value.shape)}")
        dims.update(bound)
    if device is not None and value.device != device:
        raise ValueError(
            f"{name} must be on the same device as the other inputs ({device}), got {value.device}"
        )
    if nonempty and value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")
    if finite and dtype.is_floating_point and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return value


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """Check that a string option is one of ``choices`` and return it.

    Raises:
        ValueError: ``value`` is not one of ``choices``; the message lists the valid ones.
    """
    if not isinstance(value, str) or value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {valid}, got {value!r}")
    return value
