"""The segmentation app's own option groups; the shared ones (train, aug, canon, eval, runtime) are in
`lse_common.options`.

On the command line a field is ``--<group>.<field>`` (``--data.size 64``), in a YAML file a key of the group's
mapping (``data: {size: 64}``); ``--data FILE`` (or ``data: FILE`` in a config) reads the group from a file
of its own. ``apps/segmentation/configs/paper/data.yaml`` is the paper's data set (Sec. 5.1: 100 objects,
6,000 training and 2,000 test images at 256x256), ``configs/cpu/data.yaml`` the small one of the tests and
the demo (`SMALL_DATA`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from jsonargparse.typing import NonNegativeInt, PositiveInt

from lse_common.options import EvalOptions, check_range

__all__ = ["METHODS", "SMALL_DATA", "Method", "SegData", "SegEval", "SegModel", "default_run_dir"]

SMALL_DATA: dict[str, Any] = {
    "dir": "runs/segmentation-small/data",
    "size": 64,
    "train_size": 300,
    "val_size": 50,
    "test_size": 100,
    "num_classes": 10,
    "variants": 2,
    "object_size": 0.4,
}
"""The small, fast data set of the tests and the demo (64x64, 10 classes, 300/50/100 scenes); the same as
``configs/cpu/data.yaml``."""


@dataclass
class SegData:
    """Locally scaled object segmentation: the rendered scenes (`lse_segmentation.render`).

    Two objects of 100 classes (meshes of ``pybullet_data``, ``classes.json``) are rendered on a background
    photo, each at its own distance from the camera; the mask labels each pixel with its object's class (1 to
    ``num_classes``) or 0 for the background. Every test scene comes with ``variants`` copies in which only
    the objects' distances (their apparent scales) differ, for the consistency metric (EquE, Eq. (23)).

    Args:
        dir: folder of the cached splits (each split in a sub-folder named after a hash of its options).
        size: image side in pixels (the paper: 256).
        train_size: training scenes (the paper: 6,000).
        val_size: validation scenes (0: none).
        test_size: test scenes (the paper: 2,000).
        num_classes: object classes, the first ones of ``classes.json`` (the paper: 100, at most 100).
        objects_per_image: objects in each scene, of distinct classes (the paper: 2).
        scale_range: each object's apparent scale ``U[low, high]`` relative to its size at the reference
            distance (scale ``s`` puts it at ``1 / s`` of that distance, on the same camera ray).
        object_size: an object's bounding-sphere diameter at scale 1, a fraction of the image side.
        fov: the camera's field of view in degrees.
        variants: distance variants of each test scene (the objects' scales drawn again, all else kept).
        settle: drop each object on a plane and render it in the pose it comes to rest in.
        min_visible: smallest visible area of every object, a fraction of the image (scenes below it are
            drawn again).
        backgrounds: a folder of background images or HDRI panoramas (default: the photos and textures that
            ship with scikit-image, matplotlib, pybullet_data and scikit-learn).
        seed: the data seed (a scene is a function of seed, split and index).
        workers: rendering processes (0: one per CPU core; 1: this process). The data do not depend on it.
    """

    dir: str = "runs/segmentation/data"
    size: PositiveInt = 256
    train_size: PositiveInt = 6000
    val_size: NonNegativeInt = 500
    test_size: PositiveInt = 2000
    num_classes: PositiveInt = 100
    objects_per_image: PositiveInt = 2
    scale_range: tuple[float, float] = (0.5, 2.0)
    object_size: float = 0.3
    fov: float = 40.0
    variants: NonNegativeInt = 4
    settle: bool = False
    min_visible: float = 0.002
    backgrounds: str | None = None
    seed: NonNegativeInt = 0
    workers: NonNegativeInt = 0

    def __post_init__(self) -> None:
        check_range("data.scale_range", self.scale_range)
        if self.size < 16:
            raise ValueError(f"data.size must be >= 16, got {self.size}")
        if self.num_classes > 100:
            raise ValueError(
                f"data.num_classes must be at most 100 (the classes of classes.json), got {self.num_classes}"
            )
        if self.objects_per_image > self.num_classes:
            raise ValueError(
                f"data.objects_per_image ({self.objects_per_image}) must not exceed data.num_classes "
                f"({self.num_classes}): the objects of a scene are of distinct classes"
            )
        if not 0 < self.object_size <= 1:
            raise ValueError(f"data.object_size must be in (0, 1], got {self.object_size}")
        if self.object_size * self.scale_range[1] > 0.9:
            raise ValueError(
                f"data.object_size * data.scale_range[1] = {self.object_size * self.scale_range[1]:.3g}: an "
                "object at the largest scale must span at most 0.9 of the image"
            )
        if self.object_size * self.scale_range[1] * self.objects_per_image > 2.5:
            raise ValueError(
                f"data.objects_per_image {self.objects_per_image} objects of data.object_size "
                f"{self.object_size} at scale {self.scale_range[1]} do not fit in the image side by side"
            )
        if not 1 <= self.fov <= 120:
            raise ValueError(f"data.fov must be in [1, 120] degrees, got {self.fov}")
        if not 0 <= self.min_visible < 0.5:
            raise ValueError(f"data.min_visible must be in [0, 0.5), got {self.min_visible}")

    @classmethod
    def small(cls, **overrides: Any) -> SegData:
        """The small data set of the tests and the demo (`SMALL_DATA`), with ``overrides``."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"SegData has no field(s) {', '.join(unknown)}")
        return cls(**{**SMALL_DATA, **overrides})


# ---- the model, the methods and the evaluation ------------------------------------------------------------
Method = Literal["aug", "canon", "augl", "dec"]
METHODS: tuple[str, ...] = ("aug", "canon", "augl", "dec")
"""The methods of Table 1 (and canon, the discrete canonicalizer baseline)."""


@dataclass
class SegModel:
    """The segmentation model: a timm backbone, the features its DPT-style head reads, the head's width.

    Args:
        backbone: any timm model with ``forward_intermediates`` (ViT, Swin, DINOv2, EfficientNet, ResNet...).
        pretrained: start from pretrained weights (offline: tf_efficientnet_lite0, whose ImageNet weights ship
            in a package).
        weights: a local checkpoint file for the backbone.
        key_matching: name or order: how the keys of weights match the model's.
        drop_path_rate: stochastic depth, for backbones that have it.
        indices: blocks or stages the head reads (default: 4 evenly spaced blocks of a ViT, the last 4
            stages of a pyramid).
        num_features: how many features the head reads when indices is not given.
        head_width: channels inside the head.
        window_size: Swin's attention window (small images need a small one).
        depth: blocks of a ViT (or Swin's depths) built smaller than the named model (random init only).
        patch_size: a ViT's patch size other than the named model's (random init only; small images).
        background_weight: cross-entropy weight of the background class (appendix A1: 0.1).
    """

    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    weights: str | None = None
    key_matching: Literal["name", "order"] = "name"
    drop_path_rate: float = 0.0
    indices: list[int] | None = None
    num_features: PositiveInt = 4
    head_width: PositiveInt = 64
    window_size: PositiveInt | None = None
    depth: int | list[int] | None = None
    patch_size: PositiveInt | None = None
    background_weight: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.drop_path_rate < 1:
            raise ValueError(f"model.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if not 0 < self.background_weight <= 1:
            raise ValueError(f"model.background_weight must be in (0, 1], got {self.background_weight}")


@dataclass
class SegEval(EvalOptions):
    """Evaluation of segmentation runs: mIoU, EquE under random monotone scalings, variant consistency.

    Args:
        equ_rescalings: random monotone scalings per test image for EquE (eq. 23).
        equ_scale_range: local scale factors of EquE's scalings.
        equ_grid: knot intervals of EquE's scalings.
        inverses: the inverses a DEC's S is evaluated with: exact, and approximate (the paper's per-row /
            per-column inverse, on the same weights).
        figure_examples: test images in the prediction figure.
        data_dir: read the data from this folder instead of the run's data.dir.
    """

    batch_size: PositiveInt = 16
    equ_rescalings: PositiveInt = 2
    equ_scale_range: tuple[float, float] = (0.5, 2.0)
    equ_grid: tuple[PositiveInt, PositiveInt] = (4, 4)
    inverses: list[Literal["exact", "approximate"]] = field(default_factory=lambda: ["exact", "approximate"])
    figure_examples: int = 4
    data_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("eval.equ_scale_range", self.equ_scale_range)
        if not self.inverses or self.inverses[0] != "exact":
            raise ValueError(f"eval.inverses must start with exact, got {self.inverses}")


def default_run_dir(
    out_dir: str | None, backbone: str, method: str, seed: int, root: str = "runs/seg"
) -> Path:
    """``out_dir``, or ``<root>/<backbone>/<method>-s<seed>``."""
    if out_dir:
        return Path(out_dir)
    return Path(root) / backbone / f"{method}-s{seed}"
