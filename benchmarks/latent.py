"""Cost of latent canonicalization: adapted timm backbones against the base models, side by side.

For a ViT-S, a Swin-T and a ResNet-50 (random weights; speed does not depend on them) at 224x224, batch 8,
the base model and the same model adapted by ``latentcanon.adapt`` with 2 canonicalizer modules (at the input
and before the first block/stage, each reading the input image as the authors' code does; equivariant form
for the ViT, invariant for Swin and ResNet, as in the authors' code) run alternately in several rounds, for
two costs:

- inference: one forward pass in eval mode under ``torch.no_grad()``;
- training step: forward, backward and an AdamW step over all parameters in training mode (cross-entropy
  against fixed random labels), i.e. with the DEC's training iteration budget and its implicit backward
  (the adjoint fixed-point solve).

The canonicalizers come in five forms:

- ``paper``: ``latentcanon.default_canonicalizer``, i.e. ``deqcanon.DEQCanonicalizer`` with its defaults (the
  paper's H of 64 and 128 channels on a 64 px view, Anderson with 10 evaluations, 4x4 monotone scaling grid);
- ``5 iters``: the same with ``max_iter=5``, the authors' code setting;
- ``light``: ``max_iter=5`` and a smaller H (``deqcanon.ParamNet`` with widths (16, 32) on a 32 px view),
  to show how far the cost moves with the DEC's own size;
- ``stn``: the ablation of the equilibrium, ``deqcanon.SpatialTransformerCanonicalizer`` with the paper's H
  applied once (no solve, plain backpropagation);
- ``stn light``: the same with the light H.

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

Usage::

    python benchmarks/latent.py            # full run
    python benchmarks/latent.py --quick    # batch 2, 3 rounds
    python benchmarks/latent.py --threads 4 --device cuda
    python benchmarks/latent.py --forms light "stn light" --no-train
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import timm
import torch
from torch import nn

import deqcanon
import latentcanon

MODELS = {  # name: (timm model, mode of the adapted layers)
    "ViT-S/16": ("vit_small_patch16_224", "equivariant"),
    "Swin-T": ("swin_tiny_patch4_window7_224", "invariant"),
    "ResNet-50": ("resnet50", "invariant"),
}
LAYERS = ["input", 0]  # 2 canonicalizer modules: the image and the first block / stage


def _dec(max_iter: int | None = None, widths: tuple[int, ...] | None = None, view_size: int | None = None):
    def factory(in_channels: int) -> nn.Module:
        group = deqcanon.MonotoneScaleGroup(grid=(4, 4))
        kwargs = {} if max_iter is None else {"solve": deqcanon.SolveConfig(max_iter=max_iter)}
        if widths is None:
            return deqcanon.DEQCanonicalizer(group, in_channels=in_channels, **kwargs)
        net = deqcanon.ParamNet(group, in_channels, widths=widths, view_size=view_size)
        return deqcanon.DEQCanonicalizer(group, net, **kwargs)

    return factory


def _stn(widths: tuple[int, ...] | None = None, view_size: int | None = None):
    def factory(in_channels: int) -> nn.Module:
        group = deqcanon.MonotoneScaleGroup(grid=(4, 4))
        net = (
            deqcanon.ParamNet(group, in_channels)
            if widths is None
            else deqcanon.ParamNet(group, in_channels, widths=widths, view_size=view_size)
        )
        return deqcanon.SpatialTransformerCanonicalizer(group, net, measure_residual=False)

    return factory


FORMS = {
    "paper": latentcanon.default_canonicalizer,
    "5 iters": _dec(max_iter=5),
    "light": _dec(max_iter=5, widths=(16, 32), view_size=32),
    "stn": _stn(),
    "stn light": _stn(widths=(16, 32), view_size=32),
}


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


def _against_base(times: dict[str, list[float]], name: str) -> dict[str, float]:
    return {
        "time": statistics.median(times[name]),
        "ratio": statistics.median(a / b for a, b in zip(times[name], times["base"], strict=True)),
    }


def bench_model(
    name: str,
    mode: str,
    forms: list[str],
    *,
    batch: int,
    size: int,
    rounds: int,
    device: torch.device,
    train: bool = True,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Median base times and, per canonicalizer form, median adapted times, ratios, share and iterations.

    Returns:
        ``({"forward": s, "train": s}, {form: {"forward", "forward_ratio", "train", "train_ratio", "share",
        "iterations"}})``; the ``train`` entries only with ``train``.
    """
    torch.manual_seed(0)
    base = timm.create_model(name, pretrained=False).to(device).eval()
    adapted = {}
    for form in forms:
        model = latentcanon.adapt(
            copy.deepcopy(base), layers=LAYERS, mode=mode, canonicalizer=FORMS[form]
        ).eval()
        with torch.no_grad():
            for p in model.canonicalizers.parameters():  # off the identity: the solver has to iterate
                p.add_(torch.randn_like(p) * 0.02)
        adapted[form] = model
    x = torch.randn(batch, 3, size, size, device=device)
    candidates = {"base": base, **adapted}
    rows: dict[str, dict[str, float]] = {form: {} for form in adapted}
    with torch.no_grad():
        times = _alternate({n: (lambda m=m: m(x)) for n, m in candidates.items()}, rounds, device)
        for form, model in adapted.items():
            share, iterations = _canon_share(model, x, passes=3)
            timing = _against_base(times, form)
            rows[form].update(
                forward=timing["time"], forward_ratio=timing["ratio"], share=share, iterations=iterations
            )
    base_times = {"forward": statistics.median(times["base"])}
    if train:
        labels = torch.randint(0, base.num_classes, (batch,), device=device)
        for model in candidates.values():
            model.train()
        steps = {n: _train_step(m, x, labels) for n, m in candidates.items()}
        times = _alternate(steps, rounds, device)
        for form in adapted:
            timing = _against_base(times, form)
            rows[form].update(train=timing["time"], train_ratio=timing["ratio"])
        base_times["train"] = statistics.median(times["base"])
    return base_times, rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 2, 3 rounds")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 8, --quick 2)")
    parser.add_argument("--size", type=int, default=224, help="image side (default 224)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 7, --quick 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="models to run"
    )
    parser.add_argument(
        "--forms",
        "--decs",
        nargs="+",
        choices=list(FORMS),
        default=list(FORMS),
        help="canonicalizer forms to run (DEC settings and the STN ablation)",
    )
    parser.add_argument("--no-train", action="store_true", help="time the forward only")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = args.batch or (2 if args.quick else 8)
    rounds = args.rounds or (3 if args.quick else 7)
    train = not args.no_train
    print(
        f"latent canonicalization: batch {batch}, {args.size}x{args.size}, {device}, "
        f"{torch.get_num_threads()} threads, {rounds} rounds; adapted layers {LAYERS} (2 canonicalizer "
        "modules); forward: eval mode, no_grad; train: forward + backward + AdamW step"
    )
    header = (
        f"{'model':<10} {'mode':<12} {'form':<10} {'base fwd':>9} {'fwd ms':>8} {'fwd x':>6} "
        + (f"{'base train':>11} {'train ms':>9} {'train x':>8} " if train else "")
        + f"{'share':>6} {'iters':>6}"
    )
    print(header)
    print("-" * len(header))
    for label in args.models:
        name, mode = MODELS[label]
        base, rows = bench_model(
            name, mode, args.forms, batch=batch, size=args.size, rounds=rounds, device=device, train=train
        )
        for form, r in rows.items():
            line = (
                f"{label:<10} {mode:<12} {form:<10} {base['forward'] * 1e3:>9.1f} {r['forward'] * 1e3:>8.1f} "
                f"{r['forward_ratio']:>5.2f}x "
            )
            if train:
                line += f"{base['train'] * 1e3:>11.1f} {r['train'] * 1e3:>9.1f} {r['train_ratio']:>7.2f}x "
            print(line + f"{r['share'] * 100:>5.1f}% {r['iterations']:>6.1f}")
    print(
        "x: median over rounds of adapted/base (target <= 1.25); share: forward time inside the "
        "canonicalizers; iters: evaluations of H per canonicalizer call in the forward"
    )


if __name__ == "__main__":
    main()
