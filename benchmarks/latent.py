"""Forward latency of latent canonicalization: adapted timm backbones against the base models, side by side.

For a ViT-S, a Swin-T and a ResNet-50 (random weights; speed does not depend on them) at 224x224, batch 8,
the base model and the same model adapted by ``latentcanon.adapt`` with 2 DEC modules (at the input and
before the first block/stage, each reading the input image as the authors' code does; equivariant form for
the ViT, invariant for Swin and ResNet, as in the authors' code) run alternately in several rounds. The DEC
modules come in three settings:

- ``paper``: ``latentcanon.default_canonicalizer``, i.e. ``deqcanon.DEQCanonicalizer`` with its defaults (the
  paper's H of 64 and 128 channels, Anderson, 4x4 monotone scaling grid);
- ``5 iters``: the same with ``max_iter=5``, the authors' code setting;
- ``light``: ``max_iter=5`` and a smaller H (``deqcanon.ParamNet`` with widths (16, 32) on a 32 px view),
  to show how far the cost moves with the DEC's own size.

The table shows the median time over rounds, the median of the per-round ratios adapted/base (target: at most
1.25), the share of the adapted forward spent inside the DEC modules (the paper reports 24 % of a DINOv2
forward) and the mean number of solver iterations per DEC call.

A fresh DEC starts at the identity, where its fixed-point solve stops after its first residual check; that
would flatter the overhead. The DEC weights are therefore moved off their initialisation by small noise, so
that the solver iterates as a trained one does; the iterations column shows what it did.

Usage::

    python benchmarks/latent.py            # full run
    python benchmarks/latent.py --quick    # batch 2, fewer rounds
    python benchmarks/latent.py --threads 4 --device cuda
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
LAYERS = ["input", 0]  # 2 DEC modules: the image and the first block / stage


def _dec(max_iter: int | None = None, widths: tuple[int, ...] | None = None, view_size: int | None = None):
    def factory(in_channels: int) -> nn.Module:
        group = deqcanon.MonotoneScaleGroup(grid=(4, 4))
        kwargs = {} if max_iter is None else {"solve": deqcanon.SolveConfig(max_iter=max_iter)}
        if widths is None:
            return deqcanon.DEQCanonicalizer(group, in_channels=in_channels, **kwargs)
        net = deqcanon.ParamNet(group, in_channels, widths=widths, view_size=view_size)
        return deqcanon.DEQCanonicalizer(group, net, **kwargs)

    return factory


DECS = {
    "paper": latentcanon.default_canonicalizer,
    "5 iters": _dec(max_iter=5),
    "light": _dec(max_iter=5, widths=(16, 32), view_size=32),
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


def _dec_share(
    adapted: latentcanon.LatentCanonicalizedModel, x: torch.Tensor, passes: int
) -> tuple[float, float]:
    """Median share of a forward spent inside the canonicalizers, and mean solver iterations per DEC call."""
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


def bench_model(
    name: str,
    mode: str,
    decs: list[str],
    *,
    batch: int,
    size: int,
    rounds: int,
    device: torch.device,
) -> tuple[float, dict[str, dict[str, float]]]:
    """Median base time and, per DEC setting, median adapted time, ratio, DEC share and iterations."""
    torch.manual_seed(0)
    base = timm.create_model(name, pretrained=False).to(device).eval()
    adapted = {}
    for dec in decs:
        model = latentcanon.adapt(
            copy.deepcopy(base), layers=LAYERS, mode=mode, canonicalizer=DECS[dec]
        ).eval()
        with torch.no_grad():
            for p in model.canonicalizers.parameters():  # off the identity: the solver has to iterate
                p.add_(torch.randn_like(p) * 0.02)
        adapted[dec] = model
    x = torch.randn(batch, 3, size, size, device=device)
    candidates = {"base": base, **adapted}
    times: dict[str, list[float]] = {name: [] for name in candidates}
    with torch.no_grad():
        for model in candidates.values():  # warm-up
            model(x)
        for _ in range(rounds):  # one call of each per round: neighbours share the machine's load
            for name, model in candidates.items():
                times[name].append(_time(lambda model=model: model(x), device))
        rows = {}
        for dec, model in adapted.items():
            share, iterations = _dec_share(model, x, passes=3)
            rows[dec] = {
                "adapted": statistics.median(times[dec]),
                "ratio": statistics.median(a / b for a, b in zip(times[dec], times["base"], strict=True)),
                "share": share,
                "iterations": iterations,
            }
    return statistics.median(times["base"]), rows


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
        "--decs", nargs="+", choices=list(DECS), default=list(DECS), help="DEC settings to run"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = args.batch or (2 if args.quick else 8)
    rounds = args.rounds or (3 if args.quick else 7)
    print(
        f"latent canonicalization, forward only: batch {batch}, {args.size}x{args.size}, {device}, "
        f"{torch.get_num_threads()} threads, {rounds} rounds; adapted layers {LAYERS} (2 DEC modules)"
    )
    header = (
        f"{'model':<10} {'mode':<12} {'DEC':<8} {'base ms':>9} {'adapted ms':>11} {'ratio':>6} "
        f"{'DEC share':>10} {'DEC iters':>10}"
    )
    print(header)
    print("-" * len(header))
    for label in args.models:
        name, mode = MODELS[label]
        base, rows = bench_model(
            name,
            mode,
            args.decs,
            batch=batch,
            size=args.size,
            rounds=rounds,
            device=device,
        )
        for dec, r in rows.items():
            print(
                f"{label:<10} {mode:<12} {dec:<8} {base * 1e3:>9.1f} {r['adapted'] * 1e3:>11.1f} "
                f"{r['ratio']:>5.2f}x {r['share'] * 100:>9.1f}% {r['iterations']:>10.1f}"
            )
    print(
        "ratio: median over rounds of adapted/base (target <= 1.25); DEC share: time inside the DEC modules"
    )


if __name__ == "__main__":
    main()
