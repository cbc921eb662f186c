"""Helpers shared by the modules of latentcanon (private); validation is `monowarp.validation`."""

from __future__ import annotations

from monowarp.validation import check_choice, check_tensor

__all__ = ["check_choice", "check_tensor", "key_of"]


def key_of(module_name: str) -> str:
    """ModuleDict key of an adapted layer: the module name with '.' replaced by '_'."""
    return module_name.replace(".", "_")
