"""Which modules of a backbone can be adapted, and how `layers=` selects them.

A network is read as $M = M_K \\circ \\dots \\circ M_1$ (eq. 20); the $M_k$ are the blocks or stages that
timm itself indexes in `forward_intermediates`: the modules named by `model.feature_info` (ViT, DeiT, BEiT,
DINOv2: every block; Swin, ConvNeXt: every stage; ResNet: the stem activation, then `layer1`..`layer4`;
EfficientNet: the stages that end a feature level). Models without `feature_info` fall back to their
`blocks`, `stages` or `layers` container. Found by inspecting the model, never from a table of names.

`layers=` follows timm's index semantics (`feature_take_indices`): an int `n` selects the last n layers; a
sequence selects indices (negative ones count from the end) or module names; `"input"` stands for the image
itself (canonicalized before the backbone sees it).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["INPUT", "find_layers", "resolve_layers"]

INPUT = "input"
"""The name that `layers=` uses for the input image."""

_CONTAINERS = ("blocks", "stages", "layers")
_SUPPORTED = (
    "adapt() supports models that expose timm's `feature_info` (a list of dicts with a 'module' name, as "
    "every timm model built by timm.create_model does) or a `blocks`, `stages` or `layers` container of "
    "modules"
)


def find_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The adaptable layers of a model, in the order of timm's `forward_intermediates` indices.

    Args:
        model: a timm model (or any module with `feature_info` or a `blocks`/`stages`/`layers` container).

    Returns:
        `(name, module)` pairs, names as in `model.named_modules()`.

    Raises:
        TypeError: `model` is not an `nn.Module`, or neither source of layers exists (the message names
            what is supported).

    Examples:
        >>> import timm
        >>> resnet = timm.create_model("resnet18")
        >>> names = [name for name, _ in find_layers(resnet)]
        >>> names
        ['act1', 'layer1', 'layer2', 'layer3', 'layer4']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    info = getattr(model, "feature_info", None)
    if isinstance(info, Sequence) and info and all(isinstance(i, dict) and "module" in i for i in info):
        found = []
        for entry in info:
            try:
                found.append((entry["module"], model.get_submodule(entry["module"])))
            except AttributeError:
                break
        else:
            names = [name for name, _ in found]
            if len(set(names)) == len(names):
                return found
    for attr in _CONTAINERS:
        container = getattr(model, attr, None)
        if isinstance(container, nn.Sequential | nn.ModuleList) and len(container) > 0:
            return [(f"{attr}.{i}", module) for i, module in enumerate(container)]
    raise TypeError(f"{_SUPPORTED}; {type(model).__name__} has neither")


def resolve_layers(layers: int | str | Sequence[int | str], names: Sequence[str]) -> list[str]:
    """Turn a `layers=` argument into layer names, `"input"` first, then in network order.

    Args:
        layers: an int n (the last n layers), `"input"`, a module name, or a sequence of indices
            (negative ones count from the end), module names and `"input"`.
        names: the names of the adaptable layers, in order (`find_layers`).

    Returns:
        The selected names, without duplicates, `"input"` first, then in the order of `names`.

    Raises:
        TypeError: `layers` or an entry has another type.
        ValueError: an index or count out of range, an unknown name, a duplicate, or an empty selection.

    Examples:
        >>> names = ["blocks.0", "blocks.1", "blocks.2"]
        >>> resolve_layers(["input", -1, 0], names)
        ['input', 'blocks.0', 'blocks.2']
        >>> resolve_layers(2, names)
        ['blocks.1', 'blocks.2']
    """
    num = len(names)
    valid = (
        f"an int n in 1..{num} (the last n layers), 'input', or a sequence of indices in "
        f"{-num}..{num - 1}, layer names and 'input'; the {num} layers are {list(names)}"
    )
    if isinstance(layers, bool) or not isinstance(layers, int | str | Sequence):
        raise TypeError(f"layers must be {valid}; got {type(layers).__name__} {layers!r}")
    if isinstance(layers, int):
        if not 0 < layers <= num:
            raise ValueError(f"layers={layers} is out of range: it must be {valid}")
        return list(names[num - layers :])
    entries = [layers] if isinstance(layers, str) else list(layers)
    if not entries:
        raise ValueError(f"layers is empty: it must be {valid}")
    chosen: list[int] = []  # -1 is the input
    for entry in entries:
        if isinstance(entry, str):
            if entry == INPUT:
                index = -1
            elif entry in names:
                index = list(names).index(entry)
            else:
                raise ValueError(f"layers entry {entry!r} is not a layer name: layers must be {valid}")
        elif isinstance(entry, int) and not isinstance(entry, bool):
            if not -num <= entry < num:
                raise ValueError(f"layers index {entry} is out of range: layers must be {valid}")
            index = entry % num
        else:
            raise TypeError(
                f"layers entry {entry!r} ({type(entry).__name__}) is invalid: layers must be {valid}"
            )
        if index in chosen:
            label = INPUT if index < 0 else names[index]
            raise ValueError(f"layers selects {label!r} twice (from {layers!r})")
        chosen.append(index)
    return [INPUT if i < 0 else names[i] for i in sorted(chosen)]
