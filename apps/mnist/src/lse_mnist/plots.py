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
    """Test scenes and what the model's first canonicalizer makes of them, like the paper's Fig. A2
    (`monowarp.viz.plot_canonicalization`), with the local zoom of the warp."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from monowarp.viz import plot_canonicalization

    idx = np.arange(count)
    x = dataset.render(idx).to(device).float() / 255.0
    _, results = model(x, return_results=True)
    key = next(iter(results))
    fig = plot_canonicalization(
        x.cpu(),
        results[key].element.to(torch.device("cpu")),
        titles=[f"{int(label):03d}" for label in dataset.data.spec.labels[idx]],
        scale=True,
        labels=("input", f"canonical ({key})"),
        title=title or None,
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


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
