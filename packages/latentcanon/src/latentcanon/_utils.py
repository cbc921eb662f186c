"""Validation helpers shared by the modules of latentcanon (private)."""

from __future__ import annotations

import torch


def check_tensor(x: object, name: str, *, ndim: tuple[int, ...], shape: str) -> torch.Tensor:
    """Return ``x`` if it is a floating tensor with one of the allowed ranks, raise otherwise."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if x.ndim not in ndim:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {x.dtype}")
    return x


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, raise a ValueError that lists them otherwise."""
    if not isinstance(value, str) or value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {valid}, got {value!r}")
    return value


def key_of(module_name: str) -> str:
    """ModuleDict key of an adapted layer: the module name with '.' replaced by '_'."""
    return module_name.replace(".", "_")
