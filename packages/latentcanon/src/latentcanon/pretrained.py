"""Pretrained timm backbones from local checkpoint files, offline.

`load_pretrained` goes through timm's own pretrained path (`pretrained_cfg_overlay=dict(file=...)`), so
timm's checkpoint filters, classifier reset for another `num_classes` and stem adaptation for another
`in_chans` all apply, and nothing is downloaded. A checkpoint written by another implementation of the same
architecture (same tensors in the same order, other names) is converted by `match_state_dict_in_order` first.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import timm
import torch
from torch import nn

from ._utils import check_choice

__all__ = ["KEY_MATCHING", "load_pretrained", "match_state_dict_in_order"]

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
        ValueError: bad `key_matching`, or the checkpoint does not match the model.

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
    state = timm.models.load_state_dict(str(path), weights_only=True)
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
