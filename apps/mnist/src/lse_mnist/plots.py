"""Figures of the app: per-scale accuracy curves (lsmetrics.plot) and learned canonical warps (Fig. A2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from lse_common import atomic_path

__all__ = ["plot_canonicalizer_warps", "plot_curves", "save_samples"]


def _save(fig, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_curves(
    curves: Mapping[str, Sequence[Sequence[float]]],
    scales: Sequence[float] | Sequence[str],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
) -> Path:
    """Accuracy against digit scale, one line per method (mean and std over seeds), via lsmetrics."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from lsmetrics.plot import plot_per_scale_accuracy

    data = {name: torch.tensor(np.asarray(runs, dtype=np.float64)) for name, runs in curves.items()}
    fig = plot_per_scale_accuracy(data, list(scales), title=title, xlabel=xlabel)
    return _save(fig, path)


@torch.no_grad()
def plot_canonicalizer_warps(
    model, dataset, count: int, device: torch.device, path: str | Path, *, title: str = ""
) -> Path:
    """Test images (top, regular grid) and what the first canonicalizer makes of them (bottom).

    The bottom row is $S^{-1}(I; \\Phi)$ for the element $\\Phi$ found by the model's first canonicalizer,
    with the grid that was regular on the input drawn where it lands (like the paper's Fig. A2).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    import monowarp
    from monowarp.viz import draw_grid

    idx = np.arange(count)
    x = dataset.render(idx).to(device).float() / 255.0
    _, results = model(x, return_results=True)
    key = next(iter(results))
    element = results[key].element
    canonical = monowarp.unwarp(x, element).clamp(0, 1).cpu()
    size = tuple(x.shape[-2:])
    fig, axes = plt.subplots(2, count, figsize=(2.2 * count, 4.6), squeeze=False)
    for i in range(count):
        for row, (img, elem) in enumerate(((x[i, 0].cpu(), None), (canonical[i, 0], element.inverse()))):
            ax = axes[row, i]
            ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
            if elem is None:
                draw_grid(ax, element, size, index=i, warped=False, lines=7, color="tab:cyan", linewidth=0.6)
            else:
                draw_grid(
                    ax,
                    elem.to(torch.device("cpu")),
                    size,
                    index=i,
                    warped=True,
                    lines=7,
                    color="tab:orange",
                    linewidth=0.6,
                )
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, i].set_title(f"{int(dataset.data.spec.labels[i]):03d}", fontsize=9)
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel(f"canonical ({key})")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def save_samples(images: np.ndarray, labels: np.ndarray, path: str | Path, *, title: str = "") -> Path:
    """A row of rendered scenes with their labels."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.5), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(images[i], cmap="gray", vmin=0, vmax=255)
        axes[0, i].set_title(f"{int(labels[i]):03d}", fontsize=9)
        axes[0, i].set_xticks([])
        axes[0, i].set_yticks([])
    if title:
        fig.suptitle(title)
    return _save(fig, path)
