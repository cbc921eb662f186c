"""Memory and time of a canonicalizer training step: DEC (implicit differentiation) vs Optim (unrolled).

Two comparisons, each measured side by side in one run and printed with its ratios:

1. Peak memory of one training step (forward + backward) of ``deqcanon.DEQCanonicalizer`` with 5 and with
   30 solver iterations. With the implicit backward only one evaluation of H carries an autograd graph, so
   the ratio should stay within 1.1x. ``OptimCanonicalizer`` (backpropagation through the unrolled steps)
   with 5 and 30 steps is shown for contrast.
2. DEC against Optim at the same number of iterations on 224x224 images, batch 10 (the paper's Sec. 5.2
   setting, where it reports Optim at 7.5x the memory and 2.2x the time of DEC): time per training step and
   peak memory, with the ratios Optim / DEC. DEC with the 1-step phantom gradient (the authors' code setting)
   is shown as well.

Setup. The group is the paper's monotone scaling on a 4x4 knot grid. DEC's H is ``deqcanon.ParamNet`` with the
appendix-A1 widths (64, 128) on its resized view (``--view``, default 64 px; ``--view 0`` for the full
resolution). For a like-for-like comparison Optim's energy is the same network body with a scalar read-out
(a ``ParamNet`` for a one-parameter group), so one DEC iteration and one Optim step evaluate the same network.
The zero-initialised output layers get small random weights (a fresh DEC would sit at the identity, where
its solve is trivial), giving moderate local scalings and a well-conditioned fixed point, as after some
training; the tolerance is unreachable (``tol=1e-30``), so every run uses exactly the stated number of
iterations. The training loss is ``canonical.pow(2).mean() + params.pow(2).mean()``. The DEC rows report
the iterations of the implicit backward's adjoint solve and the spectral radius of the learned map at the
fixed point, which decide the cost of that backward.

Memory, honestly:

- CUDA: ``torch.cuda.max_memory_allocated`` during the step minus the memory allocated before it (exact
  tensor bytes, the allocator's cache excluded).
- CPU: PyTorch has no allocator statistics on CPU, and ``tracemalloc`` does not see tensor memory. The step
  runs under ``torch.profiler`` with ``profile_memory=True``; every operator's own allocations and frees and
  every free outside an operator are replayed in time order, and the peak of the running sum is the peak of
  live tensor bytes created by the step (scratch memory allocated and freed inside one operator is not seen).
  As an independent check the table also shows the growth of the process's resident set (Linux ``VmHWM``,
  reset through ``/proc/self/clear_refs`` before the step): that includes the allocator's behaviour and
  everything else the process does, so it is noisier, but it needs no cooperation from PyTorch.

Time: the median over alternating rounds of the time of one step (CPU time of the process on CPU by default,
``--clock wall`` for wall time; synchronised wall time on CUDA), and the median of the per-round ratios.

Usage::

    python benchmarks/canonicalizer.py            # full run (CPU: a few minutes)
    python benchmarks/canonicalizer.py --quick    # small sizes, 2 rounds
    python benchmarks/canonicalizer.py --device cuda --view 0   # the paper's setting at full resolution
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import deqcanon

Step = Callable[[], None]
# Standard deviation of the output layer's weights: DEC parameters of norm ~0.6 (moderate local scalings)
# and a well-conditioned fixed point (spectral radius of the map ~0.2), as for a DEC after some training.
HEAD_STD = 0.005
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


# ------------------------------------------------------------------------------------------- models
def _off_identity(net: deqcanon.ParamNet, std: float) -> deqcanon.ParamNet:
    """Give the zero-initialised output layer small random weights, as after some training."""
    with torch.no_grad():
        net.head.weight.normal_(0.0, std)
    return net


def make_dec(iters: int, *, view: int | None, backward: str = "implicit") -> deqcanon.DEQCanonicalizer:
    torch.manual_seed(0)
    group = deqcanon.MonotoneScaleGroup(grid=(4, 4))
    net = _off_identity(deqcanon.ParamNet(group, 3, widths=(64, 128), view_size=view), HEAD_STD)
    solve = deqcanon.SolveConfig(max_iter=iters, tol=1e-30, stop_mode="abs")
    back = deqcanon.BackwardConfig("phantom", phantom_steps=1) if backward == "phantom" else "implicit"
    return deqcanon.DEQCanonicalizer(group, net, solve=solve, backward=back)


def make_optim(iters: int, *, view: int | None) -> deqcanon.OptimCanonicalizer:
    torch.manual_seed(0)
    group = deqcanon.MonotoneScaleGroup(grid=(4, 4))
    energy = deqcanon.ParamNet(deqcanon.GlobalScaleGroup(), 3, widths=(64, 128), view_size=view)
    return deqcanon.OptimCanonicalizer(group, _off_identity(energy, HEAD_STD), steps=iters, step_size=0.1)


def training_step(model: nn.Module, x: torch.Tensor) -> Step:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        result = model(x)
        loss = result.canonical.pow(2).mean() + result.params.pow(2).mean()
        loss.backward()

    return step


# ------------------------------------------------------------------------------------------ measures
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_tensor_bytes(step: Step, device: torch.device) -> int:
    """Peak of the live tensor bytes allocated by one call of `step` (see the module docstring)."""
    gc.collect()
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    changes = sorted(
        (e.time_range.start, e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage)
        for e in prof.events()
    )
    live = peak = 0
    for _, delta in changes:
        live += delta
        peak = max(peak, live)
    return peak


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_growth(step: Step) -> int | None:
    """Growth of the resident set's high-water mark during `step` (Linux only; None elsewhere).

    Freed heap memory is first returned to the system (`malloc_trim`), so that pages the step reuses from
    an earlier step count again.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    before = _status_kb("VmRSS")
    step()
    peak = _status_kb("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before) * 1024


def time_steps(
    steps: dict[str, Step], rounds: int, device: torch.device, clock: str
) -> dict[str, list[float]]:
    """Alternate the candidates over `rounds`, one timed step each per round (after one warm-up each)."""
    now = time.perf_counter if device.type == "cuda" else CLOCK[clock]
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            _sync(device)
            t0 = now()
            step()
            _sync(device)
            times[name].append(now() - t0)
    return times


def _ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.1f}"


# ---------------------------------------------------------------------------------------- sections
def section_iterations(args: argparse.Namespace, device: torch.device) -> None:
    batch, size = (2, 64) if args.quick else (args.batch, args.size)
    x = torch.rand(batch, 3, size, size, device=device)
    print(
        f"\n1. Peak memory of one training step vs solver iterations: batch {batch}, 3x{size}x{size}, "
        f"H view {args.view or size} px"
    )
    header = f"{'candidate':<24} {'iters':>5} {'peak MB':>9} {'RSS growth MB':>14} {'ratio 30/5':>11}"
    print(header)
    print("-" * len(header))
    candidates = [("DEC (implicit backward)", make_dec), ("Optim (unrolled)", make_optim)]
    for label, make in candidates:
        peaks = {}
        for iters in (5, 30):
            model = make(iters, view=args.view).to(device)
            step = training_step(model, x)
            step()  # warm-up: lazy initialisations do not count
            peaks[iters] = peak_tensor_bytes(step, device)
            rss = peak_rss_growth(step) if device.type == "cpu" else None
            ratio = f"{peaks[30] / peaks[5]:.2f}x" if iters == 30 else ""
            print(f"{label:<24} {iters:>5} {_mb(peaks[iters]):>9} {_mb(rss):>14} {ratio:>11}")
            del model, step
    print(
        "peak MB: live tensor bytes (CUDA allocator on GPU, profiler replay on CPU); target for DEC: <= 1.10x"
    )


def section_dec_vs_optim(args: argparse.Namespace, device: torch.device) -> None:
    batch, size, rounds = (2, 64, 2) if args.quick else (10, 224, args.rounds)
    x = torch.rand(batch, 3, size, size, device=device)
    print(
        f"\n2. DEC vs Optim at the same number of iterations: batch {batch}, 3x{size}x{size}, "
        f"H / energy view {args.view or size} px, {device}, {torch.get_num_threads()} threads, "
        f"{rounds} rounds"
    )
    header = (
        f"{'candidate':<22} {'iters':>5} {'time/step ms':>13} {'peak MB':>9} {'time vs DEC':>12} "
        f"{'memory vs DEC':>14} {'adjoint iters':>14}"
    )
    print(header)
    print("-" * len(header))
    ref = "DEC (implicit)"
    for iters in args.iters:
        models = {
            ref: make_dec(iters, view=args.view),
            "DEC (phantom, 1 step)": make_dec(iters, view=args.view, backward="phantom"),
            "Optim (unrolled GD)": make_optim(iters, view=args.view),
        }
        steps = {name: training_step(m.to(device), x) for name, m in models.items()}
        times = time_steps(steps, rounds, device, args.clock)
        peaks = {name: peak_tensor_bytes(step, device) for name, step in steps.items()}
        result = models[ref](x)
        result.params.sum().backward()
        adjoint = result.info.backward.iterations if result.info.backward is not None else "-"
        for name in steps:
            print(
                f"{name:<22} {iters:>5} {statistics.median(times[name]) * 1e3:>13.1f} {_mb(peaks[name]):>9} "
                f"{_ratio(times, name, ref):>11.2f}x {peaks[name] / peaks[ref]:>13.2f}x "
                f"{adjoint if name == ref else '':>14}"
            )
        radius = models[ref].spectral_radius(x).mean().item()
        print(f"{'':<22} (DEC map: spectral radius {radius:.2f} at the fixed point)")
    print("paper (Sec. 5.2, GPU, full resolution, DEC with the authors' 1-step phantom gradient):")
    print("  Optim at 7.5x the memory and 2.2x the time of DEC")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 2, 64x64 images, 2 rounds")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--view", type=int, default=64, help="longer side of H's view; 0 = full resolution")
    parser.add_argument("--iters", type=int, nargs="+", default=[5, 10], help="iterations in section 2")
    parser.add_argument("--batch", type=int, default=4, help="batch of section 1 (default 4)")
    parser.add_argument("--size", type=int, default=224, help="image side of section 1 (default 224)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds of section 2")
    parser.add_argument("--clock", choices=list(CLOCK), default="cpu", help="CPU timing clock (default cpu)")
    parser.add_argument("--sections", nargs="+", choices=["1", "2"], default=["1", "2"])
    args = parser.parse_args(argv)
    if args.view == 0:
        args.view = None
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"deqcanon {deqcanon.__version__}, torch {torch.__version__}, {device}")
    if "1" in args.sections:
        section_iterations(args, device)
    if "2" in args.sections:
        section_dec_vs_optim(args, device)


if __name__ == "__main__":
    main()
