"""Cost of latent canonicalization: adapted timm backbones against the base models, side by side.

By default, for a ViT-S, a Swin-T and a ResNet-50 (random weights; speed does not depend on them) at
224x224, batch 8, the base model and the same model adapted by ``latentcanon.adapt`` with 2 canonicalizer
modules (at the input and before the first block/stage, each reading the input image as the authors' code
does; equivariant form for the ViT, invariant for Swin and ResNet, as in the authors' code) run alternately
in several rounds, for two costs:

- inference: one forward pass in eval mode under ``torch.no_grad()``;
- training step: forward, backward and an AdamW step over all parameters in training mode (cross-entropy
  against fixed random labels), i.e. with the DEC's training iteration budget and its implicit backward
  (the adjoint fixed-point solve).

The canonicalizers come in seven forms (the first five by default, the last two with ``--mnist``):

- ``paper``: ``latentcanon.default_canonicalizer``, i.e. ``deqcanon.DEQCanonicalizer`` with its defaults (the
  paper's H of 64 and 128 channels on a 64 px view, Anderson with 10 evaluations, 4x4 monotone scaling grid);
- ``5 iters``: the same with ``max_iter=5``, the authors' code setting;
- ``light``: ``max_iter=5`` and a smaller H (``deqcanon.ParamNet`` with widths (16, 32) on a 32 px view),
  to show how far the cost moves with the DEC's own size;
- ``stn``: the ablation of the equilibrium, ``deqcanon.SpatialTransformerCanonicalizer`` with the paper's H
  applied once (no solve, plain backpropagation);
- ``stn light``: the same with the light H;
- ``mnist dec``: the DEC the locally scaled MNIST protocol trains (``apps/mnist/configs/cpu/dec.yaml``):
  ``deqcanon.ParamNet`` with widths (8, 16) on a 48 px view and the authors' bounded head, ``max_iter=5``;
- ``mnist stn``: its ablation (``stn.yaml``), the same H applied once.

The STN forms are timed with ``measure_residual=False``: its fixed-point residual is a diagnostic (one more
evaluation of H) that the method itself does not need.

The table shows, for each cost, the median time of the base model and of the adapted one over rounds and
the median of the per-round ratios adapted/base (target: at most 1.25), then the share of the adapted
forward spent inside the canonicalizer modules (the paper reports 24 % of a DINOv2 forward on a GPU) and the
mean number of evaluations of H per canonicalizer call in the forward (solver iterations; 1 for the STN).
Every time is measured in one run of this script with the base model in the same rounds (in an order rotated
every round), so a busy machine slows base and adapted alike; the ratios are the numbers to compare, the
milliseconds depend on the machine. With ``--quick`` (3 rounds) on a shared machine a ratio can still move by
0.2 or more, and a training-step ratio below 1 is such noise: use the full run for numbers to keep.

A fresh DEC starts at the identity, where its fixed-point solve stops after its first residual check; that
would flatter the overhead. The canonicalizer weights are therefore moved off their initialisation by small
noise, so that the solver iterates as a trained one does; the iterations column shows what it did.

``--mnist`` times instead what the locally scaled MNIST protocol (docs/mnist/protocol.md, the reduced CPU
protocol of ``apps/mnist/configs/cpu``) trains: EfficientNet-Lite0 (``tf_efficientnet_lite0``) and ResNet-18
(``resnet18``) with one input channel and 1,000 classes, on a batch of 64 grey 32x96 strips (height 32, width
96), adapted with one canonicalizer module at the input (``layers=["input"]``, invariant form), in the
``mnist dec`` and ``mnist stn`` forms. The protocol's models use pretrained weights and a per-slot digits
head instead of timm's pooled one; neither changes the cost of the canonicalizer. ``--mnist`` only sets
defaults: ``--models``, ``--forms``, ``--batch``, ``--size``, ``--channels``, ``--layers``, ``--rounds``,
``--quick`` (batch 8), ``--threads`` and ``--no-train`` still apply.

``--paired`` (on by default with ``--mnist``, ``--no-paired`` drops it) adds the training step of the paired
objective of eq. 25 that the protocol's InvL, DEC + consistency and DEC + element-equivariance rows train
with: the apps' own ``lse_common.objectives.paired_step`` (consistency weight 1; it needs ``apps/common``), a
fresh random monotone scaling of the batch, the batch and its warped copy in one pass (twice the images),
cross-entropy of both halves plus the invariance term of eq. 24, with an adapted model's
element-equivariance error (eq. 5) computed as the app does for its log (the element-equivariance rows
weight it into the loss, at the same cost). It is timed for the base model (``base x2``: InvL) and for every
form (``mnist dec x2``: DEC + consistency, ``mnist stn x2``) in the same alternating rounds as the plain
training steps, and printed in a second table with two median ratios: ``x base`` against the base model's
plain training step on the single batch (what the pairing costs), and ``x base x2`` against ``base x2``
(what the canonicalizer adds on top of the paired batch).

Usage::

    python benchmarks/latent.py            # full run
    python benchmarks/latent.py --quick    # batch 2, 3 rounds
    python benchmarks/latent.py --threads 4 --device cuda
    python benchmarks/latent.py --forms light "stn light" --no-train
    python benchmarks/latent.py --mnist    # the MNIST protocol's DEC, batch 64, with the paired step
    python benchmarks/latent.py --mnist --channels-last   # the layout the apps train in
    python benchmarks/latent.py --mnist --quick --no-paired
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import timm
import torch
from torch import nn

import deqcanon
import latentcanon

MODELS = {  # name: (timm model, mode of the adapted layers)
    "ViT-S/16": ("vit_small_patch16_224", "equivariant"),
    "Swin-T": ("swin_tiny_patch4_window7_224", "invariant"),
    "ResNet-50": ("resnet50", "invariant"),
    "EfficientNet-Lite0": ("tf_efficientnet_lite0", "invariant"),
    "ResNet-18": ("resnet18", "invariant"),
}


def _dec(
    max_iter: int | None = None,
    widths: tuple[int, ...] | None = None,
    view_size: int | None = None,
    head: str | None = None,
):
    def factory(in_channels: int) -> nn.Module:
        group = deqcanon.MonotoneScaleGroup(grid=(4, 4))
        kwargs = {} if max_iter is None else {"solve": deqcanon.SolveConfig(max_iter=max_iter)}
        if widths is None:
            return deqcanon.DEQCanonicalizer(group, in_channels=in_channels, **kwargs)
        head_kwargs = {} if head is None else {"head": head}
        net = deqcanon.ParamNet(group, in_channels, widths=widths, view_size=view_size, **head_kwargs)
        return deqcanon.DEQCanonicalizer(group, net, **kwargs)

    return factory


def _stn(widths: tuple[int, ...] | None = None, view_size: int | None = None, head: str | None = None):
    def factory(in_channels: int) -> nn.Module:
        group = deqcanon.MonotoneScaleGroup(grid=(4, 4))
        head_kwargs = {} if head is None else {"head": head}
        net = (
            deqcanon.ParamNet(group, in_channels)
            if widths is None
            else deqcanon.ParamNet(group, in_channels, widths=widths, view_size=view_size, **head_kwargs)
        )
        return deqcanon.SpatialTransformerCanonicalizer(group, net, measure_residual=False)

    return factory


FORMS = {
    "paper": latentcanon.default_canonicalizer,
    "5 iters": _dec(max_iter=5),
    "light": _dec(max_iter=5, widths=(16, 32), view_size=32),
    "stn": _stn(),
    "stn light": _stn(widths=(16, 32), view_size=32),
    # the H of apps/mnist/configs/cpu/dec.yaml and stn.yaml
    "mnist dec": _dec(max_iter=5, widths=(8, 16), view_size=48, head="bounded"),
    "mnist stn": _stn(widths=(8, 16), view_size=48, head="bounded"),
}


@dataclass(frozen=True)
class Preset:
    """Defaults of one run: what is timed, on which input, and how the models are adapted."""

    models: tuple[str, ...]
    forms: tuple[str, ...]
    batch: int
    quick_batch: int
    size: tuple[int, int]  # (height, width)
    channels: int
    layers: tuple[int | str, ...]
    paired: bool


PRESETS = {
    "imagenet": Preset(
        models=("ViT-S/16", "Swin-T", "ResNet-50"),
        forms=("paper", "5 iters", "light", "stn", "stn light"),
        batch=8,
        quick_batch=2,
        size=(224, 224),
        channels=3,
        layers=("input", 0),  # 2 canonicalizer modules: the image and the first block / stage
        paired=False,
    ),
    "mnist": Preset(
        models=("EfficientNet-Lite0", "ResNet-18"),
        forms=("mnist dec", "mnist stn"),
        batch=64,
        quick_batch=8,
        size=(32, 96),
        channels=1,
        layers=("input",),
        paired=True,
    ),
}
LAYERS = list(PRESETS["imagenet"].layers)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call (calls here take 0.1 s or more, far above the timer's resolution)."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _canon_share(
    adapted: latentcanon.LatentCanonicalizedModel, x: torch.Tensor, passes: int
) -> tuple[float, float]:
    """Median share of a forward spent inside the canonicalizers, and mean evaluations of H per call."""
    device = x.device
    spent: list[float] = []
    starts: dict[int, float] = {}

    def before(module: nn.Module, args: tuple) -> None:
        _sync(device)
        starts[id(module)] = time.perf_counter()

    def after(module: nn.Module, args: tuple, out: object) -> None:
        _sync(device)
        spent.append(time.perf_counter() - starts.pop(id(module)))

    handles = []
    for canon in adapted.canonicalizers.values():
        handles += [canon.register_forward_pre_hook(before), canon.register_forward_hook(after)]
    shares, iterations = [], []
    try:
        for _ in range(passes):
            spent.clear()
            _sync(device)
            t0 = time.perf_counter()
            _, results = adapted(x, return_results=True)
            _sync(device)
            shares.append(sum(spent) / (time.perf_counter() - t0))
            iterations += [float(r.info.iterations) for r in results.values()]
    finally:
        for handle in handles:
            handle.remove()
    return statistics.median(shares), statistics.fmean(iterations)


def _train_step(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> Callable[[], object]:
    """One training step of `model`: forward, cross-entropy, backward, AdamW step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x).float(), labels)
        loss.backward()
        optimizer.step()

    return step


def _paired_objective() -> Callable[[nn.Module, tuple[torch.Tensor, torch.Tensor]], tuple]:
    """The apps' paired objective (eq. 25, `lse_common.objectives.paired_step`) with consistency weight 1,
    as apps/mnist/configs/cpu trains InvL and the DEC/STN with consistency; the batch is ``(x, labels)``.

    Raises:
        SystemExit: ``lse_common`` (apps/common) is not importable; the message names the option to drop.
    """
    try:
        from lse_common.objectives import paired_step
    except ImportError as err:
        raise SystemExit(
            "--paired times the apps' paired step (lse_common.objectives.paired_step) and needs apps/common "
            f"installed or on PYTHONPATH ({err}); run without it with --no-paired"
        ) from err

    def prepare(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return batch

    plain = paired_step(prepare, weight=1.0)
    adapted = paired_step(prepare, weight=1.0, log_warps=True)

    def objective(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple:
        step = adapted if isinstance(model, latentcanon.LatentCanonicalizedModel) else plain
        return step(model, batch)

    return objective


def _paired_train_step(
    objective: Callable[[nn.Module, tuple[torch.Tensor, torch.Tensor]], tuple],
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
) -> Callable[[], object]:
    """One training step of `model` on the paired objective: a fresh warp of `x`, the doubled batch
    forward, the loss of eq. 25, backward, AdamW step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss, _ = objective(model, (x, labels))
        loss.backward()
        optimizer.step()

    return step


def _alternate(calls: dict[str, Callable[[], object]], rounds: int, device: torch.device) -> dict[str, list]:
    """Seconds of each call per round, after one warm-up call each; one call of each per round, so that
    neighbours share the machine's load, in an order rotated every round, so that none always goes first."""
    for call in calls.values():
        call()
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(_time(calls[name], device))
    return times


def _against(times: dict[str, list[float]], name: str, reference: str = "base") -> dict[str, float]:
    return {
        "time": statistics.median(times[name]),
        "ratio": statistics.median(a / b for a, b in zip(times[name], times[reference], strict=True)),
    }


def bench_model(
    name: str,
    mode: str,
    forms: list[str],
    *,
    batch: int,
    rounds: int,
    device: torch.device,
    input_size: tuple[int, int, int] = (3, 224, 224),
    layers: list[int | str] | None = None,
    train: bool = True,
    paired: bool = False,
    channels_last: bool = False,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Median base times and, per canonicalizer form, median adapted times, ratios, share and iterations.

    Args:
        name: timm model, created with random weights, ``in_chans=input_size[0]`` and 1,000 classes.
        mode: mode of the adapted layers (``"invariant"`` or ``"equivariant"``).
        forms: keys of `FORMS`.
        batch: batch size of the input (the paired step doubles it).
        rounds: alternating rounds.
        device: where the models run.
        input_size: ``(C, H, W)`` of the input, also the probe image of ``latentcanon.adapt``.
        layers: the adapted layers (default `LAYERS`: the image and the first block / stage).
        train: also time a training step.
        paired: also time the paired training step of eq. 25 (needs ``train``): the base model (InvL)
            and every form on the batch and a warped copy of it.
        channels_last: the base model's and the adapted models' 4-D weights in channels-last layout, as the
            apps train and evaluate (``runtime.channels_last``).

    Returns:
        ``({"forward": s, "train": s, "paired": s, "paired_ratio": x}, {form: {"forward", "forward_ratio",
        "train", "train_ratio", "share", "iterations", "paired", "paired_ratio", "paired_over_base"}})``;
        the ``train`` entries only with ``train``, the ``paired`` ones only with ``train`` and ``paired``.
        ``paired_ratio`` is against the base model's plain training step, ``paired_over_base`` against its
        paired one.

    Raises:
        SystemExit: ``paired`` without ``lse_common`` (see `_paired_objective`).
    """
    objective = _paired_objective() if train and paired else None
    layers = LAYERS if layers is None else list(layers)
    torch.manual_seed(0)
    channels = input_size[0]
    base = timm.create_model(name, pretrained=False, in_chans=channels, num_classes=1000).to(device).eval()
    if channels_last:
        base = base.to(memory_format=torch.channels_last)
    adapted = {}
    for form in forms:
        model = latentcanon.adapt(
            copy.deepcopy(base), layers=layers, mode=mode, canonicalizer=FORMS[form], input_size=input_size
        ).eval()
        with torch.no_grad():
            for p in model.canonicalizers.parameters():  # off the identity: the solver has to iterate
                p.add_(torch.randn_like(p) * 0.02)
        adapted[form] = model.to(memory_format=torch.channels_last) if channels_last else model
    x = torch.randn(batch, *input_size, device=device)
    candidates = {"base": base, **adapted}
    rows: dict[str, dict[str, float]] = {form: {} for form in adapted}
    with torch.no_grad():
        times = _alternate({n: (lambda m=m: m(x)) for n, m in candidates.items()}, rounds, device)
        for form, model in adapted.items():
            share, iterations = _canon_share(model, x, passes=3)
            timing = _against(times, form)
            rows[form].update(
                forward=timing["time"], forward_ratio=timing["ratio"], share=share, iterations=iterations
            )
    base_times = {"forward": statistics.median(times["base"])}
    if train:
        labels = torch.randint(0, base.num_classes, (batch,), device=device)
        for model in candidates.values():
            model.train()
        steps = {n: _train_step(m, x, labels) for n, m in candidates.items()}
        if objective is not None:
            steps.update(
                {f"{n} x2": _paired_train_step(objective, m, x, labels) for n, m in candidates.items()}
            )
        times = _alternate(steps, rounds, device)
        for form in adapted:
            timing = _against(times, form)
            rows[form].update(train=timing["time"], train_ratio=timing["ratio"])
        base_times["train"] = statistics.median(times["base"])
        if objective is not None:
            timing = _against(times, "base x2")
            base_times.update(paired=timing["time"], paired_ratio=timing["ratio"])
            for form in adapted:
                timing = _against(times, f"{form} x2")
                over_base = _against(times, f"{form} x2", reference="base x2")["ratio"]
                rows[form].update(
                    paired=timing["time"], paired_ratio=timing["ratio"], paired_over_base=over_base
                )
    return base_times, rows


def _layer(text: str) -> int | str:
    """A ``--layers`` entry: an int (a block / stage index) or a name (``input``)."""
    try:
        return int(text)
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mnist",
        action="store_true",
        help="the locally scaled MNIST preset: EfficientNet-Lite0 and ResNet-18 on 1x32x96, batch 64, "
        "the protocol's DEC and STN at the input, with the paired step",
    )
    parser.add_argument("--quick", action="store_true", help="batch 2 (--mnist 8), 3 rounds")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 8, --mnist 64)")
    parser.add_argument(
        "--size",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="image side, or height and width (default 224; --mnist 32 96)",
    )
    parser.add_argument("--channels", type=int, default=None, help="input channels (default 3, --mnist 1)")
    parser.add_argument(
        "--layers",
        type=_layer,
        nargs="+",
        default=None,
        help="adapted layers: input and block / stage indices (default input 0, --mnist input)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 7, --quick 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list(MODELS),
        default=None,
        help="models to run (default: the preset's)",
    )
    parser.add_argument(
        "--forms",
        "--decs",
        nargs="+",
        choices=list(FORMS),
        default=None,
        help="canonicalizer forms to run (DEC settings and the STN ablation; default: the preset's)",
    )
    parser.add_argument("--no-train", action="store_true", help="time the forward only")
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="models in channels-last layout, as the apps run them (runtime.channels_last)",
    )
    parser.add_argument(
        "--paired",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time the paired training step of eq. 25 on the doubled batch (default: on with --mnist; "
        "none with --no-train)",
    )
    args = parser.parse_args(argv)
    preset = PRESETS["mnist" if args.mnist else "imagenet"]
    if args.size is not None and len(args.size) > 2:
        parser.error(f"--size takes a side or a height and a width, got {len(args.size)} values")
    height, width = preset.size if args.size is None else (args.size[0], args.size[-1])
    channels = args.channels or preset.channels
    layers = list(preset.layers if args.layers is None else args.layers)
    models = args.models or list(preset.models)
    forms = args.forms or list(preset.forms)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = args.batch or (preset.quick_batch if args.quick else preset.batch)
    rounds = args.rounds or (3 if args.quick else 7)
    train = not args.no_train
    paired = train and (preset.paired if args.paired is None else args.paired)
    if paired:
        _paired_objective()  # refuse before any timing when the apps are missing
    size = f"{height}x{width}" if height == width else f"{height}x{width} (height x width)"
    if channels != 3:
        size += f", {channels} channel{'s' if channels != 1 else ''}"
    modules = f"{len(layers)} canonicalizer module{'s' if len(layers) != 1 else ''}"
    print(
        f"latent canonicalization: batch {batch}, {size}, {device}, "
        f"{torch.get_num_threads()} threads, {rounds} rounds; adapted layers {layers} ({modules}); "
        "forward: eval mode, no_grad; train: forward + backward + AdamW step"
    )
    model_width = max(10, *map(len, models))
    form_width = max(10, *map(len, forms))
    header = (
        f"{'model':<{model_width}} {'mode':<12} {'form':<{form_width}} {'base fwd':>9} {'fwd ms':>8} "
        f"{'fwd x':>6} "
        + (f"{'base train':>11} {'train ms':>9} {'train x':>8} " if train else "")
        + f"{'share':>6} {'iters':>6}"
    )
    print(header)
    print("-" * len(header))
    paired_lines = []
    for label in models:
        name, mode = MODELS[label]
        base, rows = bench_model(
            name,
            mode,
            forms,
            batch=batch,
            rounds=rounds,
            device=device,
            input_size=(channels, height, width),
            layers=layers,
            train=train,
            paired=paired,
            channels_last=args.channels_last,
        )
        for form, r in rows.items():
            line = (
                f"{label:<{model_width}} {mode:<12} {form:<{form_width}} {base['forward'] * 1e3:>9.1f} "
                f"{r['forward'] * 1e3:>8.1f} {r['forward_ratio']:>5.2f}x "
            )
            if train:
                line += f"{base['train'] * 1e3:>11.1f} {r['train'] * 1e3:>9.1f} {r['train_ratio']:>7.2f}x "
            print(line + f"{r['share'] * 100:>5.1f}% {r['iterations']:>6.1f}")
        if paired:
            paired_lines.append((label, "base x2", base["paired"], base["paired_ratio"], 1.0))
            paired_lines += [
                (label, f"{form} x2", r["paired"], r["paired_ratio"], r["paired_over_base"])
                for form, r in rows.items()
            ]
    print(
        "x: median over rounds of adapted/base (target <= 1.25); share: forward time inside the "
        "canonicalizers; iters: evaluations of H per canonicalizer call in the forward"
    )
    if paired:
        print()
        print(
            f"paired training step (eq. 25): the batch and a warped copy, {2 * batch} images in one pass, "
            "cross-entropy of both halves + invariance term"
        )
        step_width = form_width + 3
        header = (
            f"{'model':<{model_width}} {'step':<{step_width}} {'train ms':>9} {'x base':>7} {'x base x2':>10}"
        )
        print(header)
        print("-" * len(header))
        for label, step, seconds, ratio, over_base in paired_lines:
            print(
                f"{label:<{model_width}} {step:<{step_width}} {seconds * 1e3:>9.1f} {ratio:>6.2f}x "
                f"{over_base:>9.2f}x"
            )
        print(
            "x base: median over rounds against the base model's plain training step on the batch (what the "
            "pairing costs); x base x2: against the base model's paired step, InvL (what the canonicalizer "
            "adds to it)"
        )


if __name__ == "__main__":
    main()
