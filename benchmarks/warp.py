"""Speed of the monotone scaling warps, measured side by side in one run, printed as a table of ratios.

Sections:

1. ``unwarp`` (forward + backward) against a bare ``torch.nn.functional.grid_sample`` with a precomputed grid
   of the same size (the floor), and ``warp`` (exact inverse) against ``unwarp``, at ``(32, 64, 56, 56)`` and
   ``(16, 3, 224, 224)``; once with gradients for the image only (augmentation, the equivariant form) and once
   with gradients for the image and the parameters (canonicalizer training), where the floor is a
   ``grid_sample`` whose grid requires grad as well.
2. ``inverse_map`` against ``forward_map`` on the points of a 224x224 grid (generic points and the dense
   pixel-grid fast paths).
3. Augmentation: ``RandomMonotoneScale`` (both directions) against kornia's ``RandomThinPlateSpline``,
   ``RandomElasticTransform`` and ``RandomAffine`` on the same ``(16, 3, 224, 224)`` batch, ``p=1``.

The run ends with the targets of the speed issue next to the ratios measured in this run.

Candidates of a comparison run alternately in several rounds; the table shows the median time over rounds and
the median of the per-round ratios. On CPU the clock is the CPU time of the process by default (``--clock``),
which, with the ratios, keeps the numbers meaningful on a shared machine.

Usage::

    python benchmarks/warp.py --threads 2   # full run (the targets are stated for 2 threads on CPU)
    python benchmarks/warp.py --quick    # fewer rounds, shorter timing blocks
    python benchmarks/warp.py --threads 4 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

import monowarp
from monowarp import MonotoneScale, sample_monotone_scale, unwarp, warp

SIZES = ((32, 64, 56, 56), (16, 3, 224, 224))
Row = tuple[str, str, float, str]  # (section/config, candidate, median ms, ratio text)

#: Ratios measured in this run, by target name (filled by the sections, read by `print_targets`).
MEASURED: dict[str, list[float]] = {}

#: The targets: (name, description, comparison, bound). The ratio is `MEASURED[name]` (max over configs).
TARGETS = (
    ("tps", "TPS time / RandomMonotoneScale time (ours faster)", ">=", 5.0),
    ("elastic", "elastic time / RandomMonotoneScale time (ours faster)", ">=", 5.0),
    ("affine", "RandomMonotoneScale time / RandomAffine time", "<=", 2.0),
    ("warp_vs_unwarp", "warp / unwarp, fwd+bwd, grads for x and params, 224", "<=", 1.5),
    ("dense_inverse", "dense_inverse_map / dense_map, 16x224x224", "<=", 4.0),
    ("unwarp_vs_grid_sample", "unwarp / bare grid_sample (max over configs)", "<=", 1.15),
)


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def _time(fn: Callable[[], object], min_run_time: float, device: torch.device) -> float:
    if device.type == "cuda":

        def run() -> None:
            fn()
            torch.cuda.synchronize(device)

    else:
        run = fn  # type: ignore[assignment]
    run()  # warm-up
    timer = Timer("run()", globals={"run": run}, timer=_clock)
    return timer.blocked_autorange(min_run_time=min_run_time).median


def compare(
    candidates: dict[str, Callable[[], object]],
    ratios: list[tuple[str, str]],
    *,
    rounds: int,
    min_run_time: float,
    device: torch.device,
) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """Time ``candidates`` alternately for ``rounds`` rounds; medians of times (s) and of per-round ratios."""
    times: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            times[name].append(_time(fn, min_run_time, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    rat = {
        (a, b): statistics.median(x / y for x, y in zip(times[a], times[b], strict=True)) for a, b in ratios
    }
    return med, rat


def _fwd_bwd(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    def run() -> None:
        fn().sum().backward()

    return run


def bench_warps(args: argparse.Namespace, device: torch.device) -> list[Row]:
    """Section 1: unwarp vs bare grid_sample, warp vs unwarp (forward + backward)."""
    rows: list[Row] = []
    gen = torch.Generator().manual_seed(0)
    for b, c, h, w in SIZES:
        cfg = f"({b}, {c}, {h}, {w})"
        g = sample_monotone_scale(b, grid=(4, 4), generator=gen).to(device)
        x = torch.rand(b, c, h, w, device=device, requires_grad=True)
        grid = (g.dense_map((h, w)) * 2 - 1).detach()
        rows += _warp_rows(
            args,
            device,
            f"{cfg} grad x",
            "grid_sample (precomputed grid)",
            lambda x=x, grid=grid: F.grid_sample(x, grid, padding_mode="border", align_corners=True),
            lambda x=x, g=g: unwarp(x, g),
            lambda x=x, g=g: warp(x, g),
        )
        # Gradients for the parameters too (canonicalizer training).
        params = g.to_params().detach().requires_grad_(True)
        grid_p = grid.clone().requires_grad_(True)
        rows += _warp_rows(
            args,
            device,
            f"{cfg} grad x, params",
            "grid_sample (grid requires grad)",
            lambda x=x, grid=grid_p: F.grid_sample(x, grid, padding_mode="border", align_corners=True),
            lambda x=x, p=params: unwarp(x, MonotoneScale.from_params(p)),
            lambda x=x, p=params: warp(x, MonotoneScale.from_params(p)),
        )
    return rows


def _warp_rows(
    args: argparse.Namespace,
    device: torch.device,
    cfg: str,
    floor: str,
    floor_fn: Callable[[], torch.Tensor],
    unwarp_fn: Callable[[], torch.Tensor],
    warp_fn: Callable[[], torch.Tensor],
) -> list[Row]:
    """Time grid_sample (the floor), unwarp and warp forward + backward; rows with their ratios."""
    cands = {
        floor: _fwd_bwd(floor_fn),
        "unwarp": _fwd_bwd(unwarp_fn),
        "warp (exact inverse)": _fwd_bwd(warp_fn),
    }
    pairs = [("unwarp", floor), ("warp (exact inverse)", "unwarp")]
    med, rat = compare(cands, pairs, rounds=args.rounds, min_run_time=args.min_run_time, device=device)
    MEASURED.setdefault("unwarp_vs_grid_sample", []).append(rat[("unwarp", floor)])
    if "224" in cfg and "params" in cfg:
        MEASURED.setdefault("warp_vs_unwarp", []).append(rat[("warp (exact inverse)", "unwarp")])
    return [
        (cfg, floor, med[floor], "1.00 (floor)"),
        (cfg, "unwarp", med["unwarp"], f"{rat[('unwarp', floor)]:.2f} x grid_sample"),
        (
            cfg,
            "warp (exact inverse)",
            med["warp (exact inverse)"],
            f"{rat[('warp (exact inverse)', 'unwarp')]:.2f} x unwarp",
        ),
    ]


def bench_maps(args: argparse.Namespace, device: torch.device) -> list[Row]:
    """Section 2: inverse_map vs forward_map on the points of a 224x224 grid (no autograd)."""
    b, h, w = 16, 224, 224
    cfg = f"B={b}, {h}x{w} points"
    g = sample_monotone_scale(b, grid=(4, 4), generator=torch.Generator().manual_seed(1)).to(device)
    pts = monowarp.pixel_grid((h, w), device=device).reshape(1, h * w, 2).expand(b, h * w, 2).contiguous()

    def nograd(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return fn()

        return run

    cands = {
        "forward_map(points)": nograd(lambda: g.forward_map(pts)),
        "inverse_map(points)": nograd(lambda: g.inverse_map(pts)),
        "dense_map(size)": nograd(lambda: g.dense_map((h, w))),
        "dense_inverse_map(size)": nograd(lambda: g.dense_inverse_map((h, w))),
    }
    med, rat = compare(
        cands,
        [("inverse_map(points)", "forward_map(points)"), ("dense_inverse_map(size)", "dense_map(size)")],
        rounds=args.rounds,
        min_run_time=args.min_run_time,
        device=device,
    )
    MEASURED.setdefault("dense_inverse", []).append(rat[("dense_inverse_map(size)", "dense_map(size)")])
    return [
        (cfg, "forward_map(points)", med["forward_map(points)"], "1.00"),
        (
            cfg,
            "inverse_map(points)",
            med["inverse_map(points)"],
            f"{rat[('inverse_map(points)', 'forward_map(points)')]:.2f} x forward_map",
        ),
        (cfg, "dense_map(size)", med["dense_map(size)"], "1.00"),
        (
            cfg,
            "dense_inverse_map(size)",
            med["dense_inverse_map(size)"],
            f"{rat[('dense_inverse_map(size)', 'dense_map(size)')]:.2f} x dense_map",
        ),
    ]


# ---------------------------------------------------------------------------------------------------------
# Section 3: augmentation. RandomMonotoneScale vs kornia's RandomThinPlateSpline, RandomElasticTransform and
# RandomAffine on the same batch.
# ---------------------------------------------------------------------------------------------------------
def bench_augmentation(args: argparse.Namespace, device: torch.device) -> list[Row]:
    """Section 3: ``RandomMonotoneScale`` vs kornia's thin-plate, elastic and affine augmentations.

    All with ``p=1`` on the same ``(16, 3, 224, 224)`` batch, no autograd; one call draws fresh parameters and
    warps the batch (kornia's defaults otherwise; ``RandomMonotoneScale``: ``scale_range=(0.5, 2.0)``, grid
    4 x 4, its default direction ``"unwarp"``, and ``direction="warp"`` as a second row). Ratios are the
    other augmentation's time over ``RandomMonotoneScale``'s: above 1 means ``RandomMonotoneScale`` is faster.
    """
    import kornia.augmentation as K

    b, c, h, w = 16, 3, 224, 224
    cfg = f"({b}, {c}, {h}, {w}) augmentation p=1"
    x = torch.rand(b, c, h, w, device=device)
    ref = "RandomMonotoneScale"
    augs = {
        ref: monowarp.RandomMonotoneScale(p=1.0),
        "RandomMonotoneScale(direction='warp')": monowarp.RandomMonotoneScale(p=1.0, direction="warp"),
        "RandomThinPlateSpline": K.RandomThinPlateSpline(p=1.0),
        "RandomElasticTransform": K.RandomElasticTransform(p=1.0),
        "RandomAffine": K.RandomAffine(degrees=30.0, translate=(0.1, 0.1), scale=(0.8, 1.2), p=1.0),
    }

    def call(aug: torch.nn.Module) -> Callable[[], object]:
        aug = aug.to(device)

        def run() -> object:
            with torch.no_grad():
                return aug(x)

        return run

    cands = {name: call(aug) for name, aug in augs.items()}
    others = [name for name in augs if name != ref]
    pairs = [(name, ref) for name in others]
    med, rat = compare(cands, pairs, rounds=args.rounds, min_run_time=args.min_run_time, device=device)
    MEASURED["tps"] = [rat[("RandomThinPlateSpline", ref)]]
    MEASURED["elastic"] = [rat[("RandomElasticTransform", ref)]]
    MEASURED["affine"] = [1.0 / rat[("RandomAffine", ref)]]
    rows = [(cfg, n, med[n], f"{rat[(n, ref)]:.2f} x {ref}") for n in others]
    return [(cfg, ref, med[ref], "1.00"), *rows]


def print_targets() -> None:
    """The targets next to the ratios measured in this run (only those whose section ran)."""
    lines = []
    for name, text, op, bound in TARGETS:
        if name not in MEASURED:
            continue
        ratio = max(MEASURED[name]) if op == "<=" else min(MEASURED[name])
        met = ratio <= bound if op == "<=" else ratio >= bound
        lines.append((text, f"{ratio:.2f}", f"{op} {bound:g}", "met" if met else "MISSED"))
    if not lines:
        return
    w0 = max(len(t[0]) for t in lines)
    print()
    print(f"{'target':<{w0}}  {'measured':>8}  {'target':>7}")
    print("-" * (w0 + 28))
    for text, ratio, bound, met in lines:
        print(f"{text:<{w0}}  {ratio:>8}  {bound:>7}  {met}")


def print_table(rows: list[Row]) -> None:
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"{'config':<{w0}}  {'candidate':<{w1}}  {'median ms':>10}  ratio")
    print("-" * (w0 + w1 + 32))
    last = None
    for cfg, name, t, ratio in rows:
        if last is not None and cfg != last:
            print()
        print(f"{cfg:<{w0}}  {name:<{w1}}  {t * 1e3:>10.2f}  {ratio}")
        last = cfg


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and shorter timing blocks")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds per comparison")
    parser.add_argument("--min-run-time", type=float, default=None, help="seconds per timing block")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCK),
        default=None,
        help="wall: elapsed time; cpu: CPU time of this process (robust on a shared machine; the sum over "
        "threads). Default: cpu on CPU, wall on CUDA",
    )
    parser.add_argument(
        "--sections", default="warps,maps,augmentation", help="comma-separated: warps, maps, augmentation"
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.min_run_time = args.min_run_time or (0.2 if args.quick else 1.0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    global _clock
    clock = args.clock or ("wall" if device.type == "cuda" else "cpu")
    if device.type == "cuda" and clock == "cpu":
        parser.error("--clock cpu does not measure CUDA kernels; use --clock wall")
    _clock = CLOCK[clock]
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"rounds {args.rounds}, block {args.min_run_time}s, clock {clock}"
    )
    sections = {"warps": bench_warps, "maps": bench_maps, "augmentation": bench_augmentation}
    rows: list[Row] = []
    for name in args.sections.split(","):
        if name not in sections:
            parser.error(f"unknown section {name!r}; choose from {sorted(sections)}")
        rows += sections[name](args, device)
    print_table(rows)
    print_targets()


if __name__ == "__main__":
    main()
