"""Demo: warp a real photo by a random monotone scaling, invert it exactly, compare with the paper's inverse.

Run ``hatch run warp-demo [--out DIR] [--seed N] [--image astronaut|chelsea|coffee|rocket|...]`` or
``python apps/warp_demo/warp_demo.py ...`` (needs monowarp, scikit-image for the photo and matplotlib for the
figure). It

1. loads a photo bundled with scikit-image (no download),
2. draws $l$ from `monowarp.sample_monotone_scale`,
3. computes $S(I; l) = I \\circ l^{-1}$ with the exact inverse and the round trip $S^{-1}(S(I; l); l)$,
4. prints how far the round trip of the coordinates, $l(l^{-1}(p))$, is from $p$ in pixels, for monowarp's
   exact inverse and for the approximation of the paper (appendix A2.2: "we approximate the inverse
   function $l^{-1}$ by computing the inverses of each $l_{x_i}$ and $l_{y_j}$ individually"), which is
   `monowarp.approximate_inverse_map`, a labelled comparison, and
5. saves a figure in the style of the paper's Fig. 4 (warped grid, round trip, local scale map) and a map of
   the two round-trip errors.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from monowarp import MonotoneScale, approximate_inverse_map, pixel_grid, sample_monotone_scale, unwarp, warp

__all__ = ["IMAGES", "DemoResult", "approximate_inverse_map", "load_image", "main", "run_demo"]

#: Photos bundled with scikit-image that the demo accepts (no download needed).
IMAGES = ("astronaut", "camera", "cat", "chelsea", "coffee", "coins", "moon", "page", "rocket", "text")


@dataclass(frozen=True)
class DemoResult:
    """Numbers and files produced by `run_demo`.

    Round-trip errors are $|l(\\hat l^{-1}(p)) - p|$ in pixels over every pixel $p$ ($\\hat l^{-1}$ the
    inverse used); image errors are mean absolute differences (values in $[0, 1]$) of $S^{-1}(\\hat S(I))$
    and $I$.
    """

    image: str
    size: tuple[int, int]
    exact_mean_px: float
    exact_max_px: float
    approx_mean_px: float
    approx_max_px: float
    exact_image_mae: float
    approx_image_mae: float
    mean_displacement_px: float
    scale_min: float
    scale_max: float
    dtype: torch.dtype
    figures: tuple[Path, ...]

    def table(self) -> str:
        """The printed summary table."""
        h, w = self.size
        rows = [
            f"image {self.image} ({h}x{w}); "
            f"mean displacement |l(p) - p| = {self.mean_displacement_px:.2f} px; "
            f"local scale (det) in [{self.scale_min:.2f}, {self.scale_max:.2f}]; computed in {self.dtype}",
            "",
            f"{'inverse used for S(I; l) = I o l^-1':<44}{'|l(l^-1(p)) - p| px':>22}{'image round trip':>19}",
            f"{'':<44}{'mean':>11}{'max':>11}{'MAE':>19}",
            f"{'monowarp (exact)':<44}{self.exact_mean_px:>11.2e}{self.exact_max_px:>11.2e}"
            f"{self.exact_image_mae:>19.4f}",
            f"{'paper approximation (per row/column, A2.2)':<44}{self.approx_mean_px:>11.2f}"
            f"{self.approx_max_px:>11.2f}{self.approx_image_mae:>19.4f}",
        ]
        return "\n".join(rows)


def load_image(name: str = "astronaut", *, max_size: int | None = None) -> torch.Tensor:
    """A photo bundled with scikit-image as a `(1, C, H, W)` float tensor in $[0, 1]$ (C = 3, or 1 for grey).

    Args:
        name: one of `IMAGES`.
        max_size: if given, the longer side is downscaled (area) to at most this many pixels.

    Raises:
        ValueError: unknown ``name``.
        ImportError: scikit-image is not installed.
    """
    if name not in IMAGES:
        raise ValueError(f"image must be one of {IMAGES}, got {name!r}")
    try:
        from skimage import data
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the monowarp demo needs scikit-image: pip install scikit-image") from err
    arr = getattr(data, name)()
    x = torch.from_numpy(arr.copy()).float() / 255.0
    x = x[None] if x.dim() == 2 else x[..., :3].permute(2, 0, 1)
    x = x[None]
    if max_size is not None and max(x.shape[-2:]) > max_size:
        f = max_size / max(x.shape[-2:])
        x = F.interpolate(x, size=(round(x.shape[-2] * f), round(x.shape[-1] * f)), mode="area")
    return x


def run_demo(
    out: str | Path = "monowarp-demo",
    *,
    image: str = "astronaut",
    seed: int = 0,
    grid: tuple[int, int] = (4, 4),
    scale_range: tuple[float, float] = (0.5, 2.0),
    max_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    figures: bool = True,
) -> DemoResult:
    """Run the demo and return its numbers (see the module docstring); figures go to ``out``."""
    x = load_image(image, max_size=max_size).to(dtype)
    h, w = x.shape[-2:]
    gen = torch.Generator().manual_seed(seed)
    g = sample_monotone_scale(1, grid=grid, scale_range=scale_range, generator=gen, dtype=dtype)
    to_px = torch.tensor([max(w - 1, 1), max(h - 1, 1)], dtype=x.dtype)
    pts = pixel_grid((h, w), dtype=x.dtype).reshape(1, h * w, 2)

    warped = warp(x, g)
    back = unwarp(warped, g)

    exact = ((g.forward_map(g.inverse_map(pts)) - pts) * to_px).norm(dim=-1)
    approx_inv = approximate_inverse_map(g, (h, w))
    approx = ((g.forward_map(approx_inv.reshape(1, h * w, 2)) - pts) * to_px).norm(dim=-1)
    approx_warped = F.grid_sample(
        x, approx_inv * 2 - 1, mode="bilinear", padding_mode="border", align_corners=True
    )
    approx_back = unwarp(approx_warped, g)
    det = g.local_scale(pts)
    det = det[..., 0, 0] * det[..., 1, 1] - det[..., 0, 1] * det[..., 1, 0]

    files: list[Path] = []
    if figures:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        files = _figures(out, image, x, g, exact.reshape(h, w), approx.reshape(h, w), seed)
    return DemoResult(
        image=image,
        size=(h, w),
        exact_mean_px=float(exact.mean()),
        exact_max_px=float(exact.max()),
        approx_mean_px=float(approx.mean()),
        approx_max_px=float(approx.max()),
        exact_image_mae=float((back - x).abs().mean()),
        approx_image_mae=float((approx_back - x).abs().mean()),
        mean_displacement_px=float(((g.forward_map(pts) - pts) * to_px).norm(dim=-1).mean()),
        scale_min=float(det.min()),
        scale_max=float(det.max()),
        dtype=dtype,
        figures=tuple(files),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``hatch run warp-demo``)."""
    parser = argparse.ArgumentParser(prog="warp-demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", default="monowarp-demo", help="output folder for the figures (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random scaling (default: %(default)s)"
    )
    parser.add_argument(
        "--image", default="astronaut", choices=IMAGES, help="scikit-image photo (default: %(default)s)"
    )
    parser.add_argument(
        "--grid", type=int, nargs=2, default=(4, 4), metavar=("N", "M"), help="knot grid (default: 4 4)"
    )
    parser.add_argument(
        "--scale-range",
        type=float,
        nargs=2,
        default=(0.5, 2.0),
        metavar=("LOW", "HIGH"),
        help="range of the local scale factors (default: 0.5 2.0)",
    )
    parser.add_argument(
        "--max-size", type=int, default=None, help="downscale the longer side to this many pixels"
    )
    parser.add_argument("--float64", action="store_true", help="compute in float64 instead of float32")
    parser.add_argument("--no-figures", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 4))
    result = run_demo(
        args.out,
        image=args.image,
        seed=args.seed,
        grid=tuple(args.grid),
        scale_range=tuple(args.scale_range),
        max_size=args.max_size,
        dtype=torch.float64 if args.float64 else torch.float32,
        figures=not args.no_figures,
    )
    print(f"monowarp demo: grid {tuple(args.grid)}, scale_range {tuple(args.scale_range)}, seed {args.seed}")
    print(result.table())
    for path in result.figures:
        print(f"saved {path}")
    return 0


# ------------------------------------------------------------------------------------------------- private
def _figures(
    out: Path,
    name: str,
    x: torch.Tensor,
    g: MonotoneScale,
    exact: torch.Tensor,
    approx: torch.Tensor,
    seed: int,
) -> list[Path]:
    from monowarp.viz import plot_warp  # matplotlib only when drawing

    warp_path = out / f"monowarp_demo_{name}.png"
    plot_warp(x[0], g, title=f"monotone scaling of '{name}' (seed {seed})", path=warp_path, dpi=90)

    from matplotlib.figure import Figure

    h, w = exact.shape
    fig = Figure(figsize=(7.0, 3.0 * h / w + 0.6))
    axes = fig.subplots(1, 2)
    vmax = max(float(approx.max()), 1e-6)
    for ax, err, label in (
        (axes[0], exact, "monowarp exact inverse"),
        (axes[1], approx, "paper approximation (A2.2)"),
    ):
        im = ax.imshow(err.numpy(), cmap="magma", vmin=0, vmax=vmax)
        ax.set_title(f"{label}\nmean {float(err.mean()):.2g} px, max {float(err.max()):.2g} px", fontsize=9)
        ax.set_axis_off()
    fig.colorbar(im, ax=list(axes), fraction=0.03, pad=0.02, label=r"$|l(\hat l^{-1}(p)) - p|$ (px)")
    err_path = out / f"monowarp_demo_{name}_inverse_error.png"
    fig.savefig(err_path, dpi=90)
    return [warp_path, err_path]


if __name__ == "__main__":
    raise SystemExit(main())
