"""Canonicalizers by name: a registry and a factory in the manner of timm's `create_model`.

Apps and configuration files choose a canonicalizer by a string and a few keyword options; the
registry maps the name to a builder `builder(group, in_channels, **options) -> nn.Module`. Built in:

- `"dec"`: `DEQCanonicalizer` (eqs. 14-16) with the parameter network `ParamNet` (appendix A1);
  options: `widths`, `view_size`, `weight_norm`, `head` (`"identity_init"` or `"bounded"`),
  `temperature` (bounded head, default 3.0), `init_scale` (default 0.0 for `"identity_init"`, 0.01 for
  `"bounded"`) (of `ParamNet`) and every keyword of
  `DEQCanonicalizer` (`solver`, `max_iter`, `tol`, `backward`, ...).
- `"canon"`: `DiscreteCanonicalizer` (the paper's Canon) with an `EnergyNet`; options: `width`,
  `view_size`, `readout_init` (of `EnergyNet`, default `"random"`), `num_elements`, `elements`,
  `candidates` (default `"structured"`), `mild_range` (default (0.8, 1.25)), `mild_fraction` (default
  0.75), `sample_kwargs`, `temperature`, `seed`, `identity_bias` (default 1.0).
- `"optim"`: `OptimCanonicalizer` (the paper's Optim, eq. 7) with an `EnergyNet`; options: `width`,
  `view_size`, `steps`, `step_size`, `optimizer`, `betas`, `eps`, `tol`, `stop_mode`.
- `"stn"`: `SpatialTransformerCanonicalizer`, the DEC's ablation without the equilibrium ($H$ applied
  once); the same `ParamNet` options as `"dec"` and the keywords of `SpatialTransformerCanonicalizer`
  (`tol`, `stop_mode`, `measure_residual`, `eval_backward`, `on_nonfinite`).

The options a builder accepts are read from its signature (or given to `register_canonicalizer`),
and an unknown option is an error that names it: nothing is silently ignored.
`canonicalizer_factory` returns the `in_channels -> module` callable that `latentcanon.adapt` takes.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ._utils import check_option
from .baselines import DiscreteCanonicalizer, EnergyNet, OptimCanonicalizer
from .config import BACKWARD_OPTIONS, SOLVE_OPTIONS, configs_from_flat
from .deq import DEQCanonicalizer
from .groups import Group, MonotoneScaleGroup
from .param_net import ParamNet
from .stn import SpatialTransformerCanonicalizer

__all__ = [
    "CanonicalizerEntry",
    "canonicalizer_factory",
    "canonicalizer_names",
    "create_canonicalizer",
    "get_canonicalizer",
    "register_canonicalizer",
]

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class CanonicalizerEntry:
    """One registered canonicalizer.

    Attributes:
        name: the registry key.
        builder: `builder(group, in_channels, **options) -> nn.Module`.
        options: the keyword options it accepts, or None when it takes any (`**kwargs`, not checked).
    """

    name: str
    builder: Builder
    options: frozenset[str] | None


_REGISTRY: dict[str, CanonicalizerEntry] = {}


def register_canonicalizer(
    name: str, *, options: Sequence[str] | None = None, overwrite: bool = False
) -> Callable[[Builder], Builder]:
    """Decorator that registers `builder(group, in_channels, **options)` under `name`.

    The builder's keyword parameters after `group` and `in_channels` are its options; a builder with
    `**kwargs` must list them in `options` to have them checked (otherwise any option is passed on).

    Args:
        name: the key users pass to `create_canonicalizer`.
        options: the accepted keyword options (default: read from the builder's signature).
        overwrite: allow replacing an existing entry.

    Returns:
        The decorator; it returns the builder unchanged.

    Raises:
        TypeError: `name` is not a non-empty str, or the builder is not callable or does not take
            `(group, in_channels)`.
        ValueError: `name` is taken and `overwrite` is False.

    Examples:
        >>> from deqcanon import SolveConfig
        >>> @register_canonicalizer("tiny_dec", overwrite=True)
        ... def tiny_dec(group, in_channels, *, max_iter=3):
        ...     net = ParamNet(group, in_channels, widths=(4,))
        ...     return DEQCanonicalizer(group, net, solve=SolveConfig(max_iter=max_iter))
        >>> "tiny_dec" in canonicalizer_names()
        True
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    check_option(overwrite, "overwrite", kind=bool)

    def decorator(builder: Builder) -> Builder:
        if not callable(builder):
            raise TypeError(f"the builder of {name!r} must be callable, got {type(builder).__name__}")
        if name in _REGISTRY and not overwrite:
            raise ValueError(
                f"a canonicalizer named {name!r} is already registered; pass overwrite=True to replace it"
            )
        _REGISTRY[name] = CanonicalizerEntry(name, builder, _options_of(name, builder, options))
        return builder

    return decorator


def get_canonicalizer(name: str) -> CanonicalizerEntry:
    """The registry entry of `name`.

    Raises:
        ValueError: unknown name (the message lists the registered ones).
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown canonicalizer {name!r}; registered: {', '.join(canonicalizer_names())}")
    return _REGISTRY[name]


def canonicalizer_names() -> tuple[str, ...]:
    """Names of the registered canonicalizers, in registration order (the built-ins first).

    Examples:
        >>> canonicalizer_names()[:4]
        ('dec', 'canon', 'optim', 'stn')
    """
    return tuple(_REGISTRY)


def create_canonicalizer(
    name: str, group: Group | None = None, in_channels: int = 3, **kwargs: Any
) -> nn.Module:
    """Build the canonicalizer registered as `name`.

    Args:
        name: a registered name (`canonicalizer_names()`): `"dec"`, `"canon"`, `"optim"`, `"stn"` or a
            user's.
        group: the group it acts with; default `MonotoneScaleGroup(grid=(4, 4))` (the knot grid is
            chosen through the group, e.g. `MonotoneScaleGroup(grid=(3, 3))`).
        in_channels: channels of the tensors it reads `(B, in_channels, H, W)`.
        **kwargs: the options of that canonicalizer (see the module docstring).

    Returns:
        A fresh canonicalizer module.

    Raises:
        ValueError: unknown name, unknown option (named, with the valid ones), or an invalid value.
        TypeError: an option of the wrong type.

    Examples:
        >>> import torch
        >>> dec = create_canonicalizer("dec", in_channels=1, widths=(8, 16), max_iter=5)
        >>> dec(torch.rand(2, 1, 32, 32)).params.shape
        torch.Size([2, 40])
        >>> create_canonicalizer("optim", stepz=3)
        Traceback (most recent call last):
        ...
        ValueError: unknown option(s) ['stepz'] for canonicalizer 'optim'; valid: ['betas', 'eps', ...
    """
    entry = get_canonicalizer(name)
    check_option(in_channels, "in_channels", kind=int, low=1)
    _check_options(entry, kwargs)
    group = MonotoneScaleGroup(grid=(4, 4)) if group is None else group
    return entry.builder(group, in_channels, **kwargs)


def canonicalizer_factory(name: str, group: Group | None = None, **kwargs: Any) -> Callable[[int], nn.Module]:
    """An `in_channels -> canonicalizer` factory for `latentcanon.adapt(..., canonicalizer=...)`.

    The name and the option names are checked now, so a configuration error surfaces before any model
    is built; every call of the factory builds a fresh module with `create_canonicalizer`. The factory
    is a `functools.partial`, so it pickles.

    Args:
        name: a registered name.
        group: the group (default `MonotoneScaleGroup(grid=(4, 4))`).
        **kwargs: the options of that canonicalizer.

    Raises:
        ValueError: unknown name or option.

    Examples:
        >>> factory = canonicalizer_factory("canon", num_elements=8, width=8)
        >>> factory(3).num_elements
        8
    """
    _check_options(get_canonicalizer(name), kwargs)
    return functools.partial(create_canonicalizer, name, group, **kwargs)


# ------------------------------------------------------------------------------------------------- private
def _options_of(name: str, builder: Builder, options: Sequence[str] | None) -> frozenset[str] | None:
    if options is not None:
        if isinstance(options, str) or not all(isinstance(o, str) for o in options):
            raise TypeError(f"options must be a sequence of option names, got {options!r}")
        return frozenset(options)
    try:
        params = list(inspect.signature(builder).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: options unchecked
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2 and not any(p.kind is p.VAR_POSITIONAL for p in params):
        raise TypeError(f"the builder of {name!r} must take (group, in_channels, **options)")
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params[2:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _check_options(entry: CanonicalizerEntry, kwargs: dict[str, Any]) -> None:
    if entry.options is None:
        return
    unknown = sorted(set(kwargs) - entry.options)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for canonicalizer {entry.name!r}; valid: {sorted(entry.options)}"
        )


# ------------------------------------------------------------------- built-ins (registered at import)
# The DEC's keyword options, with the solve settings spelled flat (`max_iter=`, `backward_tol=`, ...) as apps
# and configuration files pass them; the builder groups them into `SolveConfig` and `BackwardConfig`.
_DEC_OPTIONS = (
    *SOLVE_OPTIONS,
    *BACKWARD_OPTIONS,
    *(
        p.name
        for p in inspect.signature(DEQCanonicalizer.__init__).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in ("in_channels", "solve", "backward")
    ),
)


# The options of H (`ParamNet`) that "dec" and "stn" share: the ablation runs with the DEC's network.
_PARAM_NET_OPTIONS = ("widths", "view_size", "weight_norm", "head", "temperature", "init_scale")
_STN_OPTIONS = tuple(
    p.name
    for p in inspect.signature(SpatialTransformerCanonicalizer.__init__).parameters.values()
    if p.kind is p.KEYWORD_ONLY and p.name != "in_channels"
)


def _param_net(
    group: Group,
    in_channels: int,
    *,
    widths: Sequence[int] = (64, 128),
    view_size: int | None = 64,
    weight_norm: bool = False,
    head: str = "identity_init",
    temperature: float | None = None,
    init_scale: float | None = None,
) -> ParamNet:
    return ParamNet(
        group,
        in_channels,
        widths=tuple(widths),
        view_size=view_size,
        weight_norm=weight_norm,
        head=head,
        temperature=temperature,
        init_scale=init_scale,
    )


def _split_param_net_options(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    net = {k: v for k, v in kwargs.items() if k in _PARAM_NET_OPTIONS}
    return net, {k: v for k, v in kwargs.items() if k not in _PARAM_NET_OPTIONS}


@register_canonicalizer("dec", options=(*_PARAM_NET_OPTIONS, *_DEC_OPTIONS))
def _dec(group: Group, in_channels: int, **kwargs: Any) -> nn.Module:
    net_options, rest = _split_param_net_options(kwargs)
    solve, backward, rest = configs_from_flat(rest)
    return DEQCanonicalizer(
        group, _param_net(group, in_channels, **net_options), solve=solve, backward=backward, **rest
    )


@register_canonicalizer("canon")
def _canon(
    group: Group,
    in_channels: int,
    *,
    width: int = 32,
    view_size: int | None = 64,
    num_elements: int = 64,
    elements: Any = None,
    candidates: str = "structured",
    mild_range: tuple[float, float] = (0.8, 1.25),
    mild_fraction: float = 0.75,
    sample_kwargs: dict | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    identity_bias: float = 1.0,
    readout_init: str = "random",
) -> nn.Module:
    return DiscreteCanonicalizer(
        group,
        EnergyNet(in_channels, width=width, view_size=view_size, readout_init=readout_init),
        num_elements=num_elements,
        elements=elements,
        candidates=candidates,
        mild_range=mild_range,
        mild_fraction=mild_fraction,
        sample_kwargs=sample_kwargs,
        temperature=temperature,
        seed=seed,
        identity_bias=identity_bias,
    )


@register_canonicalizer("optim")
def _optim(
    group: Group,
    in_channels: int,
    *,
    width: int = 32,
    view_size: int | None = 64,
    steps: int = 5,
    step_size: float = 0.1,
    optimizer: str = "gd",
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-4,
    tol: float = 1e-3,
    stop_mode: str = "rel",
) -> nn.Module:
    return OptimCanonicalizer(
        group,
        EnergyNet(in_channels, width=width, view_size=view_size),
        steps=steps,
        step_size=step_size,
        optimizer=optimizer,
        betas=betas,
        eps=eps,
        tol=tol,
        stop_mode=stop_mode,
    )


@register_canonicalizer("stn", options=(*_PARAM_NET_OPTIONS, *_STN_OPTIONS))
def _stn(group: Group, in_channels: int, **kwargs: Any) -> nn.Module:
    net_options, rest = _split_param_net_options(kwargs)
    return SpatialTransformerCanonicalizer(group, _param_net(group, in_channels, **net_options), **rest)
