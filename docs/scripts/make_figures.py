"""Generate the figures of the monowarp docs into docs/assets/ (run: ``hatch run figures``).

Every figure is computed from code here, from photos bundled with scikit-image (no download). PNGs are
palette-quantised so that each stays well under 200 KB. Deterministic: fixed seeds throughout.

Usage: ``python docs/scripts/make_figures.py [--out docs/assets]``
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

import monowarp
from monowarp import Monotone1d, demo, viz

ROOT = Path(__file__).resolve().parents[2]
MAX_BYTES = 200_000


def save(fig: Figure, path: Path, *, dpi: int = 80) -> int:
    """Render with Agg, quantise to a 256-colour palette and write an optimised PNG; returns its size."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    img = Image.open(buf).convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
    img.save(path, format="PNG", optimize=True)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise RuntimeError(f"{path} is {size} bytes, over the {MAX_BYTES} byte budget: lower its dpi or size")
    return size


def fig_warp(out: Path) -> Path:
    """Fig. 4 of the paper, extended: original, S(I; l) with the moved grid, round trip, local scale."""
    x = demo.load_image("astronaut", max_size=256)
    g = monowarp.sample_monotone_scale(1, generator=torch.Generator().manual_seed(3))
    fig = viz.plot_warp(x, g, lines=9, panel_size=2.6)
    path = out / "monowarp_warp.png"
    save(fig, path)
    return path


def fig_1d(out: Path) -> Path:
    """The 1-D case (eq. 8, 12): a monotone l, its exact inverse, and S(f; l) = f o l^-1 of a signal."""
    f = Monotone1d.from_knots(torch.tensor([[0.0, 0.12, 0.3, 0.75, 1.0]], dtype=torch.float64))
    t = torch.linspace(0, 1, 401, dtype=torch.float64)[None]
    signal = (torch.exp(-((t - 0.2) ** 2) / 0.002) + 0.6 * torch.exp(-((t - 0.62) ** 2) / 0.004))[:, None]
    warped = monowarp.warp1d(signal, f)
    fig = Figure(figsize=(8.0, 2.6), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ax1.plot(t[0], f.forward_map(t)[0], label="$l$")
    ax1.plot(t[0], f.inverse_map(t)[0], label="$l^{-1}$ (exact)")
    ax1.plot(f.xs[0], f.ys[0], "o", color="C0", markersize=4)
    ax1.plot(t[0], t[0], ":", color="grey", linewidth=0.8)
    ax1.set_title("monotone $l$ and $l^{-1}$", fontsize=9)
    ax1.legend(fontsize=8)
    ax2.plot(t[0], signal[0, 0], color="C2")
    ax2.set_title("$f$", fontsize=9)
    ax3.plot(t[0], warped[0, 0], color="C3")
    ax3.set_title("$S(f; l) = f \\circ l^{-1}$ (eq. 8)", fontsize=9)
    for ax in (ax1, ax2, ax3):
        ax.set_xlabel("$x$", fontsize=8)
        ax.tick_params(labelsize=7)
    path = out / "monowarp_1d.png"
    save(fig, path, dpi=90)
    return path


def fig_directions(out: Path) -> Path:
    """The two directions: S moves the content at q to l(q), S^-1 moves it to l^-1(q)."""
    x = demo.load_image("chelsea", max_size=240)
    h, w = x.shape[-2:]
    g = monowarp.sample_monotone_scale(1, generator=torch.Generator().manual_seed(7))
    q = torch.tensor([[[0.3, 0.35], [0.55, 0.55], [0.75, 0.3], [0.45, 0.8]]])
    panels = (
        ("original $I$, points $q$", x, q),
        ("$S(I; l)$ = warp: content at $q$ is now at $l(q)$", monowarp.warp(x, g), g.forward_map(q)),
        ("$S^{-1}(I; l)$ = unwarp: now at $l^{-1}(q)$", monowarp.unwarp(x, g), g.inverse_map(q)),
    )
    fig = Figure(figsize=(9.0, 3.0 * h / w + 0.4), layout="constrained")
    axes = fig.subplots(1, 3)
    colors = ["#ffdd00", "#00e5ff", "#ff4081", "#76ff03"]
    for ax, (title, img, pts) in zip(axes, panels, strict=True):
        ax.imshow(img[0].clamp(0, 1).permute(1, 2, 0).numpy())
        pix = monowarp.points_to_pixels(pts, (h, w))[0]
        ax.scatter(pix[:, 0], pix[:, 1], s=40, c=colors, edgecolors="black", linewidths=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    path = out / "monowarp_directions.png"
    save(fig, path)
    return path


def fig_inverse_error(out: Path) -> Path:
    """Round-trip error |l(l^-1(p)) - p| of monowarp's exact inverse and of the paper's approximation."""
    h = w = 224
    g = monowarp.sample_monotone_scale(1, generator=torch.Generator().manual_seed(0))
    pts = monowarp.pixel_grid((h, w)).reshape(1, h * w, 2)
    to_px = torch.tensor([w - 1.0, h - 1.0])
    exact = ((g.forward_map(g.inverse_map(pts)) - pts) * to_px).norm(dim=-1).reshape(h, w)
    approx_inv = demo.approximate_inverse_map(g, (h, w)).reshape(1, h * w, 2)
    approx = ((g.forward_map(approx_inv) - pts) * to_px).norm(dim=-1).reshape(h, w)
    fig = Figure(figsize=(6.4, 2.9), layout="constrained")
    axes = fig.subplots(1, 2)
    vmax = float(approx.max())
    for ax, err, label in ((axes[0], exact, "monowarp, exact"), (axes[1], approx, "paper, per row/column")):
        im = ax.imshow(err.numpy(), cmap="magma", vmin=0, vmax=vmax)
        ax.set_title(f"{label}\nmean {float(err.mean()):.2g} px, max {float(err.max()):.2g} px", fontsize=9)
        ax.set_axis_off()
    fig.colorbar(im, ax=list(axes), fraction=0.03, pad=0.02, label=r"$|l(\hat l^{-1}(p)) - p|$ (px)")
    path = out / "monowarp_inverse_error.png"
    save(fig, path)
    return path


def fig_augmentation(out: Path) -> Path:
    """RandomMonotoneScale in an AugmentationSequential with a mask and keypoints, and its inverse."""
    from scipy import ndimage
    from skimage import data, filters, measure

    coins = data.coins()[:, :320]
    # threshold after removing the uneven background, so that every coin gets a mask
    smooth = filters.gaussian(coins, sigma=2) - filters.gaussian(coins, sigma=40)
    labels = measure.label(ndimage.binary_fill_holes(smooth > filters.threshold_otsu(smooth)))
    regions = [r for r in measure.regionprops(labels) if r.area > 400 and r.solidity > 0.9]
    mask_np = np.isin(labels, [r.label for r in regions])
    centres = [r.centroid[::-1] for r in regions]
    x = torch.from_numpy(coins.astype(np.float32) / 255.0)[None, None]
    mask = torch.from_numpy(mask_np.astype(np.float32))[None, None]
    kps = torch.tensor(np.array(centres), dtype=torch.float32)[None]

    torch.manual_seed(1)
    seq = K.AugmentationSequential(
        monowarp.RandomMonotoneScale(scale_range=(0.5, 2.0), p=1.0), data_keys=["input", "mask", "keypoints"]
    )
    x_aug, mask_aug, kps_aug = seq(x, mask, kps)
    x_inv, mask_inv, kps_inv = seq.inverse(x_aug, mask_aug, kps_aug)

    fig = Figure(figsize=(9.0, 3.0 * coins.shape[0] / coins.shape[1] + 0.4), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, (title, img, m, k) in zip(
        axes,
        (
            ("input, mask, keypoints", x, mask, kps),
            ("RandomMonotoneScale", x_aug, mask_aug, kps_aug),
            ("inverse", x_inv, mask_inv, kps_inv),
        ),
        strict=True,
    ):
        ax.imshow(img[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.contour(m[0, 0].numpy(), levels=[0.5], colors="#00e5ff", linewidths=0.8)
        ax.scatter(k[0, :, 0], k[0, :, 1], s=14, c="#ff4081", edgecolors="white", linewidths=0.5)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    path = out / "monowarp_augmentation.png"
    save(fig, path)
    return path


FIGURES = (fig_warp, fig_1d, fig_directions, fig_inverse_error, fig_augmentation)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "assets", help="output folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(min(torch.get_num_threads(), 4))
    for make in FIGURES:
        path = make(args.out)
        print(f"{path} ({path.stat().st_size / 1000:.0f} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
