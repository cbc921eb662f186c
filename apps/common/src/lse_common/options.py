"""Option groups every app shares, as typed dataclasses that jsonargparse turns into flags and YAML keys.

Each group is one dataclass; a subcommand takes the groups it needs under a name (``train``, ``aug``,
``canon``, ``eval``, ``runtime``), and an app adds its own groups (its data, its model) or extends one by
subclassing it. On the command line a field is ``--<group>.<field>`` (``--train.lr 3e-4``), in a YAML file
it is a key of the group's mapping::

    train:
      lr: 3.0e-4
      epochs: 40
    canon:
      layers: [input, 0]

Values are checked when they are parsed (types, ranges, choices: ``--train.lr -1`` is refused, naming
the option) and when the group is built (``__post_init__``: relations between fields). Library code never
sees these objects: the apps translate them into keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from jsonargparse.typing import (
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
)

__all__ = [
    "SCHEDULERS",
    "AugmentOptions",
    "CanonOptions",
    "EvalOptions",
    "RuntimeOptions",
    "TrainOptions",
    "check_range",
]

SCHEDULERS = ("cosine", "tanh", "step", "multistep", "plateau", "poly", "none")
"""Learning-rate schedules: timm's scheduler factory names, or ``none`` for a constant rate."""


def check_range(name: str, value: tuple[float, float], *, positive: bool = True) -> None:
    """Reject a range that is not ``(low, high)`` with ``low <= high`` (and ``low > 0`` if ``positive``).

    Raises:
        ValueError: naming the option.
    """
    low, high = value
    if not low <= high or (positive and low <= 0):
        kind = "0 < low <= high" if positive else "low <= high"
        raise ValueError(f"{name} must be [low, high] with {kind}, got {list(value)}")


@dataclass
class TrainOptions:
    """Training: the run folder, the optimizer and schedule (timm's factories), the objective.

    Args:
        out_dir: run folder (default: chosen by the app from the model, method and seed).
        seed: seed of the weights' initialisation, the sample order and the augmentation.
        epochs: training epochs.
        max_steps: stop after this many optimisation steps in all (a checkpoint is written).
        batch_size: images per process and step.
        opt: optimizer, any name of timm's optimizer factory (adamw, sgd, lamb, ...).
        lr: learning rate of the backbone and head.
        weight_decay: weight decay (not applied to biases and norm weights).
        layer_decay: timm's layer-wise learning-rate decay of the backbone (e.g. 0.75).
        sched: learning-rate schedule (timm's scheduler factory), stepped every update; plateau follows the
            validation accuracy, and a resumed run restarts its counters (the others resume exactly).
        warmup_epochs: epochs of linear learning-rate warm-up.
        warmup_lr: learning rate at the start of the warm-up.
        min_lr: floor of the schedule.
        grad_clip: clip the gradient norm of the backbone and head to this value.
        invl_weight: weight of the invariance loss of eq. 25 for the ``invl`` method.
        consistency_weight: weight of eq. 25's invariance term on top of a canonicalizing method (0: off).
        init_from: a run folder or ``.safetensors`` file to fine-tune from (the paper: the aug run).
        resume: continue the run in out_dir from its newest intact checkpoint.
        overwrite: start clean in an out_dir that holds another run, deleting that run's files.
        allow_config_change: let resume continue with options that differ from the run's config.yaml.
        amp: mixed precision (default: on for CUDA).
        log_every: optimisation steps between rows of the training log.
        checkpoint_every: steps between mid-epoch checkpoints (default: at the end of each epoch).
        keep_checkpoints: how many of the run's checkpoints to keep.
        tensorboard: also write the log to out_dir/tensorboard (the tensorboard extra).
    """

    out_dir: str | None = None
    seed: NonNegativeInt = 0
    epochs: PositiveInt = 50
    max_steps: PositiveInt | None = None
    batch_size: PositiveInt = 64
    opt: str = "adamw"
    lr: PositiveFloat = 1e-4
    weight_decay: NonNegativeFloat = 0.05
    layer_decay: OpenUnitInterval | None = None
    sched: Literal["cosine", "tanh", "step", "multistep", "plateau", "poly", "none"] = "cosine"
    warmup_epochs: NonNegativeInt = 0
    warmup_lr: NonNegativeFloat = 1e-6
    min_lr: NonNegativeFloat = 0.0
    grad_clip: PositiveFloat | None = 5.0
    invl_weight: NonNegativeFloat = 1.0
    consistency_weight: NonNegativeFloat = 0.0
    init_from: str | None = None
    resume: bool = False
    overwrite: bool = False
    allow_config_change: bool = False
    amp: bool | None = None
    log_every: PositiveInt = 10
    checkpoint_every: PositiveInt | None = None
    keep_checkpoints: PositiveInt = 2
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if self.resume and self.overwrite:
            raise ValueError(
                "train.resume and train.overwrite exclude each other: continue the run or replace it"
            )
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(
                f"train.warmup_epochs ({self.warmup_epochs}) must be smaller than "
                f"train.epochs ({self.epochs})"
            )


@dataclass
class AugmentOptions:
    """Random monotone scaling augmentation of the training batches (`monowarp.RandomMonotoneScale`).

    Args:
        enabled: warp training images at random (every method's training batches).
        p: probability of warping each image.
        scale_range: local scale factors of the augmentation warps.
        grid: knot intervals (N, M) of the random monotone scalings.
        direction: unwarp applies S^-1(x; l) = S(x; l^-1) (the authors' Aug; the forward map only, the
            faster one), warp applies S(x; l) (exact inverse at every pixel); see the augmentation how-to.
    """

    enabled: bool = True
    p: NonNegativeFloat = 0.5
    scale_range: tuple[float, float] = (0.5, 2.0)
    grid: tuple[PositiveInt, PositiveInt] = (4, 4)
    direction: Literal["unwarp", "warp"] = "unwarp"

    def __post_init__(self) -> None:
        if self.p > 1:
            raise ValueError(f"aug.p must be in [0, 1], got {self.p}")
        check_range("aug.scale_range", self.scale_range)


@dataclass
class CanonOptions:
    """Canonicalizers (canon, optim, dec) and where they sit in the backbone (`latentcanon.adapt`).

    Args:
        layers: where canonicalizers go: 'input' and/or block or stage indices (dec).
        mode: invariant (eq. 22) or equivariant (eq. 21).
        source: what a DEC reads: input (the image) or feature (the latent feature).
        grid: knot intervals (N, M) of the canonicalizers' monotone scalings.
        lr: learning rate of the canonicalizers.
        grad_clip: clip the canonicalizers' gradient norm to this, and the backbone's (train.grad_clip) by its
            own norm, even at the same value (None: one norm over all parameters, train.grad_clip).
        freeze_backbone_epochs: epochs at the start (of train.epochs) in which only the canonicalizers train
            (backbone and head frozen and in eval mode), as the authors train their DEC before the joint
            phase; they run at the base rates (train.lr, canon.lr) and the schedule, its warm-up included,
            spans the joint epochs after them.
        warmup_objective: what the canonicalizers learn in the backbone-frozen warm-up epochs
            (freeze_backbone_epochs): task (the method's own loss, as the authors' warm-up) or element (the
            label-free element-equivariance error alone, eq. 5: canonicalizing itself).
        element_weight: weight of the element-equivariance term (eq. 5, `deqcanon.element_equivariance_error`)
            between the canonicalizers' elements on a batch and on its randomly warped copy; > 0 trains on
            that paired batch (0: off; the term is logged as equ_elem whenever the batch is paired).
        element_weighting: where that error (the term, its log and the element warm-up) is measured: uniform
            (a 9x9 grid of points over the image) or content (a 17x17 grid weighted by the input's edges,
            `deqcanon.content_weight`: only where a warp is visible, not on empty background).
        num_elements: candidate group elements of canon (the identity is one of them).
        scale_range: local scale factors of canon's wide candidates.
        candidates: canon's candidate set: structured (the identity first, then mostly mild warps) or random.
        identity_bias: subtracted from the energy of canon's identity candidate, so that an untrained
            energy picks the identity.
        optim_steps: unrolled gradient steps of optim (eq. 7).
        optim_step_size: step size of optim's gradient steps.
        energy_width: channels of the energy CNN of canon and optim.
        energy_view_size: longer side of the view the energy of canon and optim sees.
        dec_widths: channels of the stages of the DEC's parameter network H.
        dec_view_size: longer side of the view H sees (None: full resolution).
        dec_head: H's output head: identity_init (exactly the identity at step 0) or bounded (the authors'
            sigmoid(InstanceNorm(conv)) with a temperature: bounded local scales, not the identity at step 0).
        dec_temperature: temperature of the bounded head (None: 3, the authors').
        dec_init_scale: initial scale of H's last layer (None: the head's default, 0 or 0.01).
        dec_solver: fixed-point solver of the DEC (deqcanon.solver_names()).
        dec_max_iter: solver iterations.
        dec_tol: solver tolerance (relative residual).
        dec_backward: implicit differentiation or the phantom gradient.
        dec_update: what H predicts: absolute (the parameters, the authors' code) or residual (a step added
            to them, as eq. 16 writes the update; only this form can be equivariant, eq. 5; train it with
            the phantom gradient, since the implicit one is ill-posed while H ignores its input).
    """

    layers: list[int | str] = field(default_factory=lambda: ["input"])
    mode: Literal["invariant", "equivariant"] = "invariant"
    source: Literal["input", "feature"] = "input"
    grid: tuple[PositiveInt, PositiveInt] = (4, 4)
    lr: PositiveFloat = 1e-3
    grad_clip: PositiveFloat | None = None
    freeze_backbone_epochs: NonNegativeInt = 0
    warmup_objective: Literal["task", "element"] = "task"
    element_weight: NonNegativeFloat = 0.0
    element_weighting: Literal["uniform", "content"] = "uniform"
    num_elements: PositiveInt = 64
    scale_range: tuple[float, float] = (0.5, 2.0)
    candidates: Literal["structured", "random"] = "structured"
    identity_bias: NonNegativeFloat = 1.0
    optim_steps: PositiveInt = 5
    optim_step_size: PositiveFloat = 0.1
    energy_width: PositiveInt = 32
    energy_view_size: PositiveInt | None = 64
    dec_widths: list[PositiveInt] = field(default_factory=lambda: [32, 64])
    dec_view_size: PositiveInt | None = 64
    dec_head: Literal["identity_init", "bounded"] = "identity_init"
    dec_temperature: PositiveFloat | None = None
    dec_init_scale: NonNegativeFloat | None = None
    dec_solver: str = "anderson"
    dec_max_iter: PositiveInt = 5
    dec_tol: PositiveFloat = 1e-3
    dec_backward: Literal["implicit", "phantom"] = "implicit"
    dec_update: Literal["absolute", "residual"] = "absolute"

    def __post_init__(self) -> None:
        for layer in self.layers:
            if isinstance(layer, str) and layer != "input" and not layer.lstrip("-").isdigit():
                raise ValueError(f"canon.layers takes 'input' and block indices, got {layer!r}")
            if isinstance(layer, int) and layer < 0:
                raise ValueError(f"canon.layers indices must be >= 0, got {layer}")
        if not self.layers:
            raise ValueError("canon.layers must name at least one layer ('input' or a block index)")
        if not self.dec_widths:
            raise ValueError("canon.dec_widths must have at least one stage width")
        check_range("canon.scale_range", self.scale_range)
        if self.dec_temperature is not None and self.dec_head != "bounded":
            raise ValueError("canon.dec_temperature applies to canon.dec_head bounded only")
        if self.warmup_objective == "element" and self.freeze_backbone_epochs == 0:
            raise ValueError("canon.warmup_objective element needs canon.freeze_backbone_epochs > 0")

    @property
    def layer_list(self) -> list[int | str]:
        """``layers`` with block indices as integers (YAML may give them as strings)."""
        return [layer if layer == "input" else int(layer) for layer in self.layers]


@dataclass
class EvalOptions:
    """Evaluation: which split, how many images, the rescalings for InvE, where results go.

    Args:
        split: test (the reported numbers) or val (held-out training data, for choosing settings).
        size: evaluate the first N images of the split only (default: all).
        batch_size: images per forward pass.
        seed: seed of the rescalings (every run sees the same images).
        inv_rescalings: random rescalings per image for InvE (eq. 24).
        inv_scale_range: local scale factors of InvE's rescalings.
        results_dir: where the tables and plots over several runs go.
        warp_examples: images in the learned-warp figure of a canonicalizing run (0: none).
        force: re-evaluate even when a stored result was computed from the same weights and settings.
    """

    split: Literal["test", "val"] = "test"
    size: PositiveInt | None = None
    batch_size: PositiveInt = 128
    seed: NonNegativeInt = 1234
    inv_rescalings: PositiveInt = 8
    inv_scale_range: tuple[float, float] = (0.4, 2.0)
    results_dir: str | None = None
    warp_examples: NonNegativeInt = 6
    force: bool = False

    def __post_init__(self) -> None:
        check_range("eval.inv_scale_range", self.inv_scale_range)


@dataclass
class RuntimeOptions:
    """Where and how a command runs: device, threads, data-loader workers, progress bars.

    Args:
        device: cpu or cuda (default: cuda when available; under torchrun each process takes its local GPU).
        threads: torch intra-op threads.
        num_workers: data-loader worker processes.
        progress: show progress bars.
        channels_last: keep the model's 4-D weights in channels-last memory layout (about twice as fast
            convolutions on the CPU for EfficientNet, 1.1-1.6x for ResNet; the same results up to rounding,
            as a change of threads).
    """

    device: Literal["cpu", "cuda"] | None = None
    threads: PositiveInt | None = None
    num_workers: NonNegativeInt = 2
    progress: bool = True
    channels_last: bool = True
