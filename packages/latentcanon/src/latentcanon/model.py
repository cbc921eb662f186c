r"""Latent canonicalization of a timm backbone through removable hooks (Sec. 4.3, eqs. 20-22).

The backbone is read as $M = M_K \circ \dots \circ M_1$ (eq. 20) with features $F_{k+1} = M_k(F_k)$,
$F_1 = I$. Before each chosen layer $M_k$ a canonicalizer finds group parameters $\Phi_k$ and the layer is
replaced by

- the invariant form (eq. 22): $\tilde M_k(F_k) = M_k(S^{-1}(F_k; \Phi_k))$, or
- the equivariant form (eq. 21): $\tilde M_k(F_k) = S(M_k(S^{-1}(F_k; \Phi_k)); \Phi_k)$.

$S^{-1}$ is applied by a forward pre-hook on $M_k$, $S$ by a forward hook; the backbone's `forward`,
`forward_features` and `forward_head` are untouched and its `state_dict` keys do not change. $\Phi_k$ is found
from the image that enters the backbone (`source="input"`, what the authors' code does) or from $F_k$ itself
(`source="feature"`, what the paper's Fig. 3 draws). The layer `"input"` canonicalizes the image itself:
$M(S^{-1}(I; \Phi_0))$, in both modes.

The canonicalization results of a call are returned (`return_results=True`), never kept in module state:
each call opens a context (a `contextvars.ContextVar`, so threads and replicas do not see each other's
calls) that the hooks read, and closes it when the backbone returns.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ._utils import check_choice, check_tensor, key_of
from .layers import INPUT, find_layers, resolve_layers
from .layouts import INVERSES, ModelLayout, from_nchw, to_nchw, warp_feature
from .probe import default_input_size, probe_layers

__all__ = [
    "MODES",
    "SOURCES",
    "CanonicalizerFactory",
    "LatentCanonicalizedModel",
    "adapt",
    "default_canonicalizer",
]

MODES: tuple[str, ...] = ("invariant", "equivariant")
"""The two forms of an adapted layer: eq. 22 and eq. 21."""

SOURCES: tuple[str, ...] = ("input", "feature")
"""What the canonicalizer of a layer reads: the image that enters the backbone, or the layer's feature."""

CanonicalizerFactory = Callable[[int], nn.Module]
"""`factory(in_channels) -> canonicalizer`: an `nn.Module` with a `group` (`act`, `act_inverse`) whose
`forward(x)` on `(B, in_channels, H, W)` returns a result with `params`, `element` and `canonical`."""

_IMAGE = [("B", "C", "H", "W")]


def default_canonicalizer(in_channels: int) -> nn.Module:
    """The paper's DEC: a `deqcanon.DEQCanonicalizer` on the monotone scaling group with a 4x4 knot grid.

    deqcanon's defaults are the paper's settings: the parameter network H of appendix A1 (two residual
    stages of 64 and 128 channels, started at the identity), Anderson acceleration from the identity and
    implicit differentiation. A fresh DEC therefore returns the identity, and an adapted model with fresh
    DECs computes what the base model computes. For other settings pass your own factory, e.g.
    `lambda c: deqcanon.DEQCanonicalizer(group, in_channels=c, solve=SolveConfig(max_iter=5),
    backward="phantom")` (`SolveConfig` from deqcanon).

    Args:
        in_channels: channels of the tensor the canonicalizer reads (3 for an RGB image).

    Returns:
        A fresh canonicalizer module.
    """
    import deqcanon

    return deqcanon.DEQCanonicalizer(deqcanon.MonotoneScaleGroup(grid=(4, 4)), in_channels=in_channels)


def adapt(
    model: nn.Module,
    *,
    layers: int | str | Sequence[int | str],
    mode: Literal["invariant", "equivariant"] = "invariant",
    source: Literal["input", "feature"] = "input",
    canonicalizer: CanonicalizerFactory | None = None,
    input_size: tuple[int, int, int] | None = None,
    check_layout: bool = True,
    inverse: Literal["exact", "approximate"] = "exact",
) -> LatentCanonicalizedModel:
    """Insert a canonicalizer before each chosen layer of a timm backbone (eqs. 21-22).

    The layers are found by inspecting the model (`find_layers`: timm's `feature_info`, else its
    `blocks`/`stages`/`layers`), and the feature layout of each (`(B, C, H, W)`, Swin's `(B, H, W, C)` or
    tokens `(B, P + H*W, C)`) by one forward pass of a zero image of size `input_size` in eval mode under
    `no_grad` (stopped after the last chosen layer), which also gives the channels each canonicalizer reads.
    A second probe pass checks that each feature, laid on its grid, follows the image (`probe_layers`):
    families whose layout cannot be warped (tokens not in raster order, undeclared channels-last features,
    layers that do not take one feature tensor) are refused here, naming the model and the layer, instead of
    failing inside the forward pass or warping a permuted feature.
    The model is not copied: hooks are installed on it until `remove()` is called or a `with` block is left.

    Args:
        model: a timm model (any module with `feature_info` or a `blocks`/`stages`/`layers` container).
        layers: as in timm's `forward_intermediates`: an int n selects the last n layers, a sequence selects
            indices (negative ones count from the end) or module names; `"input"` is the image itself.
        mode: `"invariant"` (eq. 22) or `"equivariant"` (eq. 21, the layer's output is warped back by $S$).
        source: `"input"`: each canonicalizer reads the image that enters the backbone; `"feature"`: it reads
            the layer's input feature, as `(B, C, H, W)`.
        canonicalizer: factory `in_channels -> canonicalizer module`; default `default_canonicalizer` (DEC).
        input_size: `(C, H, W)` of the probe image; default: the model's patch embedding size, else its
            `pretrained_cfg["input_size"]`, else `(3, 224, 224)`.
        check_layout: run the spatial probe pass that refuses layouts it cannot warp (see `probe_layers`);
            False skips it (the structural checks always run).
        inverse: how the equivariant form's $S$ inverts $\\Phi_k$: `"exact"` (monowarp's inverse) or
            `"approximate"` (the paper's per-row/per-column approximation, appendix A2.2, for comparison);
            settable later as `LatentCanonicalizedModel.inverse`.

    Returns:
        The wrapper; call it like the model.

    Raises:
        TypeError: an unsupported model (the message names what is supported), a bad `layers` type, a
            factory that is not callable or builds something without `group.act`/`group.act_inverse`.
        ValueError: bad `mode`/`source` or `layers` out of range.
        UnsupportedLayoutError: (a `ValueError`) a chosen layer whose feature adapt() cannot warp consistently
            with the image; the message names the model, the layer and what is unsupported.

    Examples:
        >>> import timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=10)
        >>> adapted = adapt(vit, layers=["input", 0])
        >>> adapted.keys
        ('input', 'blocks_0')
        >>> logits, results = adapted(torch.randn(2, 3, 32, 32), return_results=True)
        >>> tuple(logits.shape), tuple(results["blocks_0"].params.shape)
        ((2, 10), (2, 40))
        >>> adapted.remove()
    """
    check_choice(mode, "mode", MODES)
    check_choice(source, "source", SOURCES)
    check_choice(inverse, "inverse", INVERSES)
    if not isinstance(check_layout, bool):
        raise TypeError(f"check_layout must be a bool, got {type(check_layout).__name__}")
    factory = default_canonicalizer if canonicalizer is None else canonicalizer
    if not callable(factory):
        raise TypeError(
            f"canonicalizer must be a callable in_channels -> nn.Module, got {type(factory).__name__}"
        )
    found = find_layers(model)
    _check_not_adapted(model)
    chosen = resolve_layers(layers, [name for name, _ in found])
    input_size = default_input_size(model) if input_size is None else tuple(int(s) for s in input_size)
    if len(input_size) != 3 or min(input_size) < 1:
        raise ValueError(f"input_size must be (C, H, W) with positive sizes, got {input_size!r}")
    channels = probe_layers(
        model,
        [n for n in chosen if n != INPUT],
        input_size,
        check_outputs=mode == "equivariant",
        check_spatial=check_layout,
    )
    reference = next(iter(model.parameters()), None)
    canonicalizers = {}
    for name in chosen:
        in_channels = input_size[0] if name == INPUT or source == "input" else channels[name]
        canon = factory(in_channels)
        if reference is not None:
            canon = canon.to(device=reference.device, dtype=reference.dtype)
        canonicalizers[name] = canon
    return LatentCanonicalizedModel(model, canonicalizers, mode=mode, source=source, inverse=inverse)


class LatentCanonicalizedModel(nn.Module):
    """A backbone with canonicalizers hooked in before chosen layers (eqs. 21-22).

    Usually built by `adapt`. The backbone stays a submodule under `backbone` (its own `state_dict` keys are
    unchanged, so it loads a plain checkpoint) and the canonicalizers live in the `ModuleDict`
    `canonicalizers`, keyed by layer: `"input"` or the module name with `.` replaced by `_`
    (`blocks.3` -> `blocks_3`). The wrapper's own `state_dict` holds both (`backbone.*`, `canonicalizers.*`).

    Call it like the backbone: `forward`, `forward_features`, `forward_intermediates` (all with
    `return_results=True` to also get `{key: result}` of this call) and `forward_head`. After `remove()` (or
    on leaving a `with` block) the hooks are gone and the wrapper runs the plain backbone.

    Gradient checkpointing inside the backbone is not supported for adapted layers (its recomputation
    runs the hooks again outside the call).

    Args:
        backbone: the model to adapt.
        canonicalizers: `{layer name: canonicalizer}`, names as in `find_layers` or `"input"`; each
            canonicalizer has a `group` (`act`, `act_inverse`) and returns a result with `params` and
            `canonical` from `forward(x)`.
        mode: `"invariant"` (eq. 22) or `"equivariant"` (eq. 21).
        source: `"input"` or `"feature"`: what each canonicalizer reads (see `adapt`).
        inverse: `"exact"` or `"approximate"`: the inverse the equivariant form's $S$ uses (see `adapt`);
            the attribute `inverse` may be changed between calls.
    """

    def __init__(
        self,
        backbone: nn.Module,
        canonicalizers: Mapping[str, nn.Module],
        *,
        mode: Literal["invariant", "equivariant"] = "invariant",
        source: Literal["input", "feature"] = "input",
        inverse: Literal["exact", "approximate"] = "exact",
    ) -> None:
        super().__init__()
        self.mode = check_choice(mode, "mode", MODES)
        self._inverse = check_choice(inverse, "inverse", INVERSES)
        self.source = check_choice(source, "source", SOURCES)
        if not isinstance(canonicalizers, Mapping) or not canonicalizers:
            raise ValueError("canonicalizers must be a non-empty mapping {layer name: canonicalizer}")
        if not all(isinstance(name, str) for name in canonicalizers):
            raise TypeError(f"canonicalizers must be keyed by layer names (str), got {list(canonicalizers)}")
        modules = dict(find_layers(backbone))
        names = resolve_layers(list(canonicalizers), list(modules))
        self.backbone = backbone
        self.canonicalizers = nn.ModuleDict()
        for name in names:
            canon = canonicalizers[name]
            _check_canonicalizer(canon, name)
            self.canonicalizers[key_of(name)] = canon
        if len(self.canonicalizers) != len(names):
            raise ValueError(f"layer names {names} collide once '.' is replaced by '_'")
        self.layers: tuple[str, ...] = tuple(names)
        self.model_layout = ModelLayout.from_model(backbone)
        self._token = _Token()
        self._handles: list[RemovableHandle] = []
        _check_not_adapted(backbone)
        hooked = [(name, modules[name]) for name in names if name != INPUT]
        equivariant = self.mode == "equivariant"
        for name, module in hooked:
            key = key_of(name)
            self._handles.append(
                module.register_forward_pre_hook(_Canonicalize(self._token, key, name, equivariant))
            )
            if equivariant:
                self._handles.append(module.register_forward_hook(_Restore(self._token, key, name)))
        self._installed = True

    @property
    def inverse(self) -> str:
        """`"exact"` or `"approximate"`: the inverse the equivariant form's $S$ uses."""
        return self._inverse

    @inverse.setter
    def inverse(self, value: str) -> None:
        self._inverse = check_choice(value, "inverse", INVERSES)

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys of `canonicalizers` and of the results, in network order."""
        return tuple(self.canonicalizers.keys())

    @property
    def hooks_installed(self) -> bool:
        """Whether the hooks are in place (False after `remove()`)."""
        return self._installed

    def extra_repr(self) -> str:
        layers = list(self.layers)
        return f"mode={self.mode!r}, source={self.source!r}, layers={layers}, inverse={self._inverse!r}"

    # ---- the backbone's timm interface ---------------------------------------------------------------------
    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """The backbone's `pretrained_cfg` (preprocessing: `input_size`, `mean`, `std`, ...), so that
        `timm.data.resolve_data_config(model=adapted)` resolves what it resolves for the backbone."""
        return getattr(self.backbone, "pretrained_cfg", None) or {}

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: dict[str, Any]) -> None:
        self.backbone.pretrained_cfg = cfg

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm's older name of `pretrained_cfg`."""
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict[str, Any]) -> None:
        self.pretrained_cfg = cfg

    @property
    def num_classes(self) -> int:
        """The backbone's number of classes (0: no classifier)."""
        return int(self._backbone_attr("num_classes"))

    @property
    def num_features(self) -> int:
        """Channels of the backbone's final features (what `forward_head` reads)."""
        return int(self._backbone_attr("num_features"))

    def get_classifier(self) -> nn.Module:
        """The backbone's classifier module."""
        return self._backbone_attr("get_classifier")()

    def reset_classifier(self, num_classes: int, *args: Any, **kwargs: Any) -> None:
        """The backbone's `reset_classifier(num_classes, ...)`: a fresh head; canonicalizers are kept."""
        self._backbone_attr("reset_classifier")(num_classes, *args, **kwargs)

    def _backbone_attr(self, name: str) -> Any:
        if not hasattr(self.backbone, name):
            raise AttributeError(f"the backbone {type(self.backbone).__name__} has no {name!r}")
        return getattr(self.backbone, name)

    # ---- forward -------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *, return_results: bool = False) -> Any:
        """The backbone's `forward` with the adapted layers.

        Args:
            x: the image `(B, C, H, W)`.
            return_results: also return `{key: result}` of this call (the canonicalizers' results).

        Returns:
            The backbone's output, or `(output, results)`.
        """
        return self._run(self.backbone, x, return_results)

    def forward_features(self, x: torch.Tensor, *, return_results: bool = False) -> Any:
        """The backbone's `forward_features` with the adapted layers (see `forward`)."""
        return self._run(self.backbone.forward_features, x, return_results)

    def forward_intermediates(self, x: torch.Tensor, *, return_results: bool = False, **kwargs: Any) -> Any:
        """The backbone's `forward_intermediates(x, **kwargs)` with the adapted layers (see `forward`)."""
        return self._run(functools.partial(self.backbone.forward_intermediates, **kwargs), x, return_results)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The backbone's `forward_head` (no layer of the head is adapted)."""
        return self.backbone.forward_head(x, pre_logits=pre_logits)

    def _run(self, fn: Callable[[torch.Tensor], Any], x: torch.Tensor, return_results: bool) -> Any:
        x = check_tensor(x, "x", _IMAGE, finite=False, nonempty=False)
        results: dict[str, Any] = {}
        if not self._installed:
            out = fn(x)
            return (out, results) if return_results else out
        if INPUT in self.canonicalizers:
            result = self.canonicalizers[INPUT](x)
            results[INPUT] = result
            x = _checked_canonical(result, x, INPUT)
        call = _Call(self._token, self.canonicalizers, self.source, self.model_layout, x, results)
        call.inverse = self._inverse
        reset = _ACTIVE.set((*_ACTIVE.get(), call))
        try:
            out = fn(x)
        finally:
            _ACTIVE.reset(reset)
        if any(call.pending.values()):
            raise RuntimeError(
                f"adapted layers {[k for k, v in call.pending.items() if v]} ran without finishing"
            )
        return (out, results) if return_results else out

    # ---- hooks ---------------------------------------------------------------------------------------------
    def remove(self) -> None:
        """Remove every hook; the wrapper then runs the plain backbone. Calling it twice is harmless."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._installed = False

    def __enter__(self) -> LatentCanonicalizedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # ---- checkpoints and optimisation ----------------------------------------------------------------------
    def canonicalizer_state_dict(self) -> dict[str, Any]:
        """The canonicalizers' weights alone (keys `<layer key>.<parameter>`)."""
        return self.canonicalizers.state_dict()

    def load_canonicalizer_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any:
        """Load weights saved by `canonicalizer_state_dict` (returns `load_state_dict`'s key report)."""
        return self.canonicalizers.load_state_dict(state_dict, strict=strict)

    def param_groups(
        self,
        *,
        backbone_lr: float | None = None,
        canonicalizer_lr: float | None = None,
        weight_decay: float = 0.0,
        layer_decay: float | None = None,
    ) -> list[dict[str, Any]]:
        """Optimizer parameter groups with separate learning rates for backbone and canonicalizers.

        Built with timm's helpers: biases, norm weights and the backbone's `no_weight_decay()` get no weight
        decay; `layer_decay` adds timm's layer-wise `lr_scale` to the backbone groups. Each group carries a
        `"name"` (`"backbone"` or `"canonicalizers"`); an lr of None leaves the optimizer's default. Pass the
        result to `timm.optim.create_optimizer_v2(groups, "adamw", lr=...)` or to any torch optimizer.

        Args:
            backbone_lr: learning rate of the backbone (the paper uses a much smaller one than for the DEC).
            canonicalizer_lr: learning rate of the canonicalizers.
            weight_decay: weight decay of the parameters that take it.
            layer_decay: timm's layer-wise learning-rate decay of the backbone (e.g. 0.75), or None.

        Returns:
            A list of parameter-group dicts; only parameters with `requires_grad` appear.
        """
        from timm.optim import param_groups_layer_decay, param_groups_weight_decay

        no_decay = tuple(self.backbone.no_weight_decay()) if hasattr(self.backbone, "no_weight_decay") else ()
        if layer_decay is None:
            backbone = param_groups_weight_decay(self.backbone, weight_decay, no_weight_decay_list=no_decay)
        else:
            backbone = param_groups_layer_decay(
                self.backbone,
                weight_decay=weight_decay,
                no_weight_decay_list=no_decay,
                layer_decay=layer_decay,
            )
        canon = param_groups_weight_decay(self.canonicalizers, weight_decay)
        groups = []
        for name, lr, parts in (
            ("backbone", backbone_lr, backbone),
            ("canonicalizers", canonicalizer_lr, canon),
        ):
            for group in parts:
                group["name"] = name
                if lr is not None:
                    group["lr"] = lr
                groups.append(group)
        return groups


# ---- private: the per-call context and the hooks -----------------------------------------------------------
class _Token:
    """Identifies one wrapper (shared by its replicas, copied by deepcopy)."""


@dataclass
class _Call:
    token: _Token
    canonicalizers: nn.ModuleDict
    source: str
    model_layout: ModelLayout
    image: torch.Tensor
    results: dict[str, Any]
    pending: dict[str, list[Any]] = field(default_factory=dict)
    inverse: str = "exact"


_ACTIVE: contextvars.ContextVar[tuple[_Call, ...]] = contextvars.ContextVar("latentcanon_calls", default=())


def _current(token: _Token, name: str) -> _Call:
    for call in reversed(_ACTIVE.get()):
        if call.token is token:
            return call
    raise RuntimeError(
        f"the adapted layer {name!r} ran outside its LatentCanonicalizedModel: call the wrapper (forward, "
        "forward_features, forward_intermediates), not the backbone, or remove() the hooks first"
    )


class _Canonicalize:
    """Forward pre-hook: F_k -> S^-1(F_k; Phi_k), Phi_k from the image or from F_k."""

    def __init__(self, token: _Token, key: str, name: str, equivariant: bool) -> None:
        self.token, self.key, self.name, self.equivariant = token, key, name, equivariant

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        call = _current(self.token, self.name)
        if not args or not isinstance(args[0], torch.Tensor):
            raise TypeError(
                f"adapted layer {self.name!r} must receive its feature as first positional argument"
            )
        feature = args[0]
        layout = call.model_layout.detect(feature, tuple(call.image.shape[-2:]))
        fmap, prefix = to_nchw(feature, layout)
        canon = call.canonicalizers[self.key]
        if call.source == "feature":
            result = canon(fmap)
            canonical = _checked_canonical(result, fmap, self.name)
        else:
            result = canon(call.image)
            canonical = canon.group.act_inverse(fmap, result.params)
        call.results[self.key] = result
        if self.equivariant:
            call.pending.setdefault(self.key, []).append(result.params)
        return (from_nchw(canonical, layout, prefix), *args[1:])


class _Restore:
    """Forward hook of the equivariant form: M_k(...) -> S(M_k(...); Phi_k)."""

    def __init__(self, token: _Token, key: str, name: str) -> None:
        self.token, self.key, self.name = token, key, name

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> torch.Tensor:
        call = _current(self.token, self.name)
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"adapted layer {self.name!r} must return a tensor, got {type(output).__name__}")
        params = call.pending[self.key].pop()
        layout = call.model_layout.detect(output, tuple(call.image.shape[-2:]))
        return warp_feature(output, call.canonicalizers[self.key].group, params, layout, inverse=call.inverse)


def _checked_canonical(result: Any, x: torch.Tensor, name: str) -> torch.Tensor:
    canonical = getattr(result, "canonical", None)
    if not isinstance(canonical, torch.Tensor) or canonical.shape != x.shape:
        got = tuple(canonical.shape) if isinstance(canonical, torch.Tensor) else type(canonical).__name__
        raise ValueError(
            f"the canonicalizer of {name!r} must return result.canonical of shape {tuple(x.shape)}, got {got}"
        )
    return canonical


def _check_canonicalizer(canon: object, name: str) -> None:
    group = getattr(canon, "group", None)
    if not isinstance(canon, nn.Module) or not all(
        callable(getattr(group, a, None)) for a in ("act", "act_inverse")
    ):
        raise TypeError(
            f"the canonicalizer of {name!r} must be an nn.Module with a `group` that has act(x, params) and "
            f"act_inverse(x, params), got {type(canon).__name__}"
        )


def _check_not_adapted(model: nn.Module) -> None:
    adapted = [
        name
        for name, m in model.named_modules()
        if any(isinstance(h, _Canonicalize) for h in m._forward_pre_hooks.values())
    ]
    if adapted:
        raise ValueError(
            f"{type(model).__name__} is already adapted by another LatentCanonicalizedModel "
            f"(layers {adapted}); remove() that one first"
        )
