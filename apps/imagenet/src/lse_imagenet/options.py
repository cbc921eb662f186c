"""The ImageNet app's own option groups; the shared ones (train, aug, canon, eval, runtime) are in
`lse_common.options`.

On the command line a field is ``--<group>.<field>`` (``--data.img_size 160``), in a YAML file a key of the
group's mapping (``data: {img_size: 160}``); the method is ``--method``. ``lse-imagenet train`` writes the
resolved options to ``<run>/config.yaml``; ``--config`` on that file replays the run, and
``lse-imagenet evaluate`` rebuilds the model from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from lse_common.options import EvalOptions

__all__ = [
    "METHODS",
    "PAPER_FACTORS",
    "ImagenetEval",
    "ImagenetModel",
    "Method",
    "Recipe",
    "TrainData",
    "default_run_dir",
]

Method = Literal["base", "aug", "canon", "invl", "dec"]
METHODS: tuple[str, ...] = ("base", "aug", "canon", "invl", "dec")
PAPER_FACTORS: tuple[float, ...] = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
"""The object scale factors of locally scaled ImageNet (Table 6)."""


@dataclass
class TrainData:
    """The images a run trains and validates on.

    Each folder is either an ImageFolder (one sub-folder per class; folders named by an integer are that
    ImageNet class index, otherwise the sorted folder names are the indices 0, 1, ..., as torchvision's
    ImageFolder numbers them: ImageNet's wnid folders give its standard indices) or the output root of
    ``lse-imagenet data`` (a ``manifest.jsonl`` of locally scaled variants, each with its label).

    Args:
        train_dir: training images (an ImageFolder or a ``lse-imagenet data`` root).
        val_dir: validation images, evaluated at the end of each epoch (none: no validation).
        img_size: side of the square images the model sees.
        num_classes: classes of the classifier (1000: the pretrained ImageNet head is kept).
        train_limit: use the first N training images only.
        val_limit: use the first N validation images only.
        crop_pct: centre crop of evaluation images (timm's eval transform; 1: the whole image, resized).
        interpolation: resampling of the resize.
    """

    train_dir: str = "runs/imagenet/data/train"
    val_dir: str | None = None
    img_size: PositiveInt = 224
    num_classes: PositiveInt = 1000
    train_limit: PositiveInt | None = None
    val_limit: PositiveInt | None = None
    crop_pct: PositiveFloat = 1.0
    interpolation: Literal["bilinear", "bicubic"] = "bicubic"

    def __post_init__(self) -> None:
        if self.crop_pct > 1:
            raise ValueError(f"data.crop_pct must be in (0, 1], got {self.crop_pct}")


@dataclass
class ImagenetModel:
    """The classifier: a pretrained timm model, fine-tuned with its own ImageNet head.

    Args:
        backbone: any timm model name (the paper: ViT, DeiT, Swin, BEiT; ``swin_base_patch4_window7_224``).
        pretrained: start from pretrained weights: a package's (``tf_efficientnet_lite0``) or ``weights``.
        weights: a local checkpoint file of the backbone (timm's ``.safetensors`` or ``.pth``).
        key_matching: name or order: how the keys of weights match the model's.
        drop_path_rate: stochastic depth, for backbones that have it (timm's fine-tuning: 0.1).
    """

    backbone: str = "swin_base_patch4_window7_224"
    pretrained: bool = True
    weights: str | None = None
    key_matching: Literal["name", "order"] = "name"
    drop_path_rate: NonNegativeFloat = 0.1

    def __post_init__(self) -> None:
        if self.drop_path_rate >= 1:
            raise ValueError(f"model.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")


@dataclass
class Recipe:
    """timm's fine-tuning recipe (the paper's Table A1) and label-free tuning.

    Args:
        mixup: mixup alpha (Table A1: 0.8; 0 turns it off).
        cutmix: cutmix alpha (timm's recipe: 1.0; 0 turns it off).
        mix_prob: probability of mixing a batch.
        smoothing: label smoothing (Table A1: 0.1).
        reprob: random erasing probability (Table A1: 0.25).
        hflip: horizontal flip probability of the training transform.
        color_jitter: colour jitter strength of the training transform (0: off).
        auto_augment: timm's auto-augment policy (e.g. ``rand-m9-mstd0.5-inc1``; none: off).
        train_crop_scale: scale range of the random resized crop of the training transform.
        label_free: tune without labels (`lse_common.objectives.distillation_step`): the frozen pretrained
            (or ``train.init_from``) model predicts on the original image, the trained model on a rescaled
            one, and the loss is their KL divergence; for ``dec`` and ``canon`` the backbone stays frozen
            (only the canonicalizer learns). Works on unlabelled images.
        distill_temperature: softening temperature of the label-free loss.
        pairs: what the label-free model sees: ``variants`` (a manifest's object-rescaled variants against
            the same image's original or factor-1 variant; an ImageFolder falls back to ``warps``) or
            ``warps`` (random monotone scalings of each image, ``aug.scale_range``).
    """

    mixup: NonNegativeFloat = 0.8
    cutmix: NonNegativeFloat = 1.0
    mix_prob: NonNegativeFloat = 1.0
    smoothing: NonNegativeFloat = 0.1
    reprob: NonNegativeFloat = 0.25
    hflip: NonNegativeFloat = 0.5
    color_jitter: NonNegativeFloat = 0.4
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    train_crop_scale: tuple[float, float] = (0.08, 1.0)
    label_free: bool = False
    distill_temperature: PositiveFloat = 1.0
    pairs: Literal["variants", "warps"] = "variants"

    def __post_init__(self) -> None:
        for name in ("mix_prob", "smoothing", "reprob", "hflip"):
            value = getattr(self, name)
            if value > 1:
                raise ValueError(f"recipe.{name} must be in [0, 1], got {value}")
        low, high = self.train_crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"recipe.train_crop_scale must be [low, high] in (0, 1], got {[low, high]}")


@dataclass
class ImagenetEval(EvalOptions):
    """Evaluation of ImageNet runs on a locally scaled test set (the output root of ``lse-imagenet data``).

    Args:
        data_dir: the test set's root (its ``manifest.jsonl``); default: the run's ``data.val_dir``.
        factors: the object scale factors evaluated (Table 6); images lacking one of them are skipped.
        reference_factor: the factor whose prediction is InvE's reference ``M(I)`` (eq. 24).
        fig8_images: image ids of the Fig. 8 curves (none: the first ``fig8_count`` images).
        fig8_count: images in the Fig. 8 curves when ``fig8_images`` is not given.
    """

    data_dir: str | None = None
    factors: list[float] = field(default_factory=lambda: list(PAPER_FACTORS))
    reference_factor: PositiveFloat = 1.0
    fig8_images: list[str] | None = None
    fig8_count: NonNegativeInt = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.factors or any(f <= 0 for f in self.factors):
            raise ValueError(f"eval.factors must be positive factors, got {self.factors}")
        if len(set(self.factors)) != len(self.factors):
            raise ValueError(f"eval.factors must not repeat a factor, got {self.factors}")
        if not any(abs(f - self.reference_factor) < 1e-6 for f in self.factors):
            raise ValueError(
                f"eval.reference_factor {self.reference_factor} must be one of eval.factors {self.factors}"
            )


def default_run_dir(
    out_dir: str | None,
    model: ImagenetModel,
    method: str,
    seed: int,
    *,
    label_free: bool = False,
    root: str = "runs/imagenet",
) -> Path:
    """``out_dir``, or ``<root>/<backbone>/<method>[-lf]-s<seed>``."""
    if out_dir:
        return Path(out_dir)
    return Path(root) / model.backbone / f"{method}{'-lf' if label_free else ''}-s{seed}"
