"""The canonicalizers of the methods, built from `lse_common.options.CanonOptions`, and the adapted model.

`make_canonicalizer` turns the canon option group into deqcanon's factory for `latentcanon.adapt` (``canon``:
a `deqcanon.DiscreteCanonicalizer`, ``optim``: a `deqcanon.OptimCanonicalizer`, ``dec``: a
`deqcanon.DEQCanonicalizer`, all on the monotone scaling group); `adapt_for_method` puts them into a timm
model: ``canon`` and ``optim`` at the input, ``dec`` before ``canon.layers`` (`method_layers`), in
``canon.mode`` (invariant, eq. 22, or equivariant, eq. 21) unless the app fixes the mode (the segmentation
app's ``dec`` is always equivariant). Any app whose model is a timm backbone uses these.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .options import CanonOptions

__all__ = ["CANONICALIZING_METHODS", "adapt_for_method", "make_canonicalizer", "method_layers"]

CANONICALIZING_METHODS: tuple[str, ...] = ("canon", "optim", "dec", "stn")
"""Methods whose model carries canonicalizers (``stn``: the DEC's H applied once, its ablation)."""


def make_canonicalizer(method: str, canon: CanonOptions):
    """``in_channels -> canonicalizer`` of ``method`` for `latentcanon.adapt`, from deqcanon's registry.

    ``dec`` and ``stn`` share the parameter network H (``canon.dec_*``); ``canon`` and ``optim`` their
    energy network (``canon.energy_*``).

    Raises:
        ValueError: for a method without a canonicalizer.
    """
    import deqcanon

    if method not in CANONICALIZING_METHODS:
        raise ValueError(
            f"method {method!r} has no canonicalizer; those that do: {', '.join(CANONICALIZING_METHODS)}"
        )
    group = deqcanon.MonotoneScaleGroup(grid=tuple(canon.grid))
    energy = {"width": canon.energy_width, "view_size": canon.energy_view_size}
    param_net = {  # H, shared by dec and its ablation stn
        "widths": tuple(canon.dec_widths),
        "view_size": canon.dec_view_size,
        "head": canon.dec_head,
        "temperature": canon.dec_temperature,
        "init_scale": canon.dec_init_scale,
    }
    options: dict[str, dict[str, Any]] = {
        "canon": {
            **energy,
            "num_elements": canon.num_elements,
            "sample_kwargs": {"scale_range": tuple(canon.scale_range)},
            "candidates": canon.candidates,
            "identity_bias": canon.identity_bias,
        },
        "optim": {**energy, "steps": canon.optim_steps, "step_size": canon.optim_step_size},
        "dec": {
            **param_net,
            "solver": canon.dec_solver,
            "max_iter": canon.dec_max_iter,
            "tol": canon.dec_tol,
            "backward": canon.dec_backward,
            "update": canon.dec_update,
        },
        "stn": {**param_net, "tol": canon.dec_tol},
    }
    return deqcanon.canonicalizer_factory(method, group=group, **options[method])


def method_layers(method: str, canon: CanonOptions) -> list[str]:
    """The layers `adapt_for_method` puts canonicalizers before: ``["input"]`` for ``canon`` and ``optim``,
    ``canon.layers`` for ``dec`` and ``stn``, none for a method without canonicalizers."""
    if method not in CANONICALIZING_METHODS:
        return []
    return list(canon.layer_list) if method in ("dec", "stn") else ["input"]


def adapt_for_method(
    model: nn.Module,
    method: str,
    canon: CanonOptions,
    input_size: tuple[int, int, int],
    *,
    mode: str | None = None,
) -> nn.Module:
    """``model`` with the canonicalizers of ``method`` (`latentcanon.adapt`), or ``model`` itself for a method
    without them.

    Args:
        model: a timm model.
        method: the method; ``canon`` and ``optim`` canonicalize the input, ``dec`` and ``stn`` the layers
            ``canon.layers``.
        canon: the canonicalizer options.
        input_size: ``(C, H, W)`` of the images.
        mode: ``"invariant"`` (eq. 22) or ``"equivariant"`` (eq. 21) in place of ``canon.mode``; ``None``
            keeps ``canon.mode``.

    Raises:
        ValueError: for a ``mode`` other than those two.
    """
    import latentcanon

    if mode is not None and mode not in ("invariant", "equivariant"):
        raise ValueError(f"mode must be 'invariant' or 'equivariant' (or None), got {mode!r}")
    if method not in CANONICALIZING_METHODS:
        return model
    return latentcanon.adapt(
        model,
        layers=method_layers(method, canon),
        mode=canon.mode if mode is None else mode,
        source=canon.source,
        canonicalizer=make_canonicalizer(method, canon),
        input_size=tuple(input_size),
    )
