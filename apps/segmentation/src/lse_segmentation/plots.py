"""The prediction figure: test images, their ground truth and each method's predicted labels (the data's
label colours, `lse_segmentation.data.mask_colors`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_predictions"]


def plot_predictions(runs: dict[str, str | Path], path: str | Path, *, title: str = "") -> Path:
    """One row per image: the image, the ground truth, then each method's prediction.

    Args:
        runs: method name -> ``predictions.npz`` (``images`` `(N, H, W, 3)`, ``masks`` and ``preds``
            `(N, H, W)`), all of the same images.
        path: the PNG to write.
        title: the figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lse_common import atomic_path

    from .data import mask_colors

    loaded = {name: np.load(p) for name, p in runs.items()}
    if not loaded:
        raise ValueError("runs is empty: nothing to plot")
    first = next(iter(loaded.values()))
    images, masks = first["images"], first["masks"]
    n = len(images)
    top = int(max(masks.max(), *(d["preds"].max() for d in loaded.values()))) + 1
    colors = mask_colors(max(top - 1, 1))  # the data's colours: black background
    cols = 2 + len(loaded)
    fig, axes = plt.subplots(n, cols, figsize=(2.0 * cols, 2.0 * n * images.shape[1] / images.shape[2] + 0.4))
    axes = np.atleast_2d(axes)
    for i in range(n):
        panels = [images[i], colors[masks[i]]] + [colors[d["preds"][i]] for d in loaded.values()]
        for j, (ax, panel) in enumerate(zip(axes[i], panels, strict=True)):
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(["image", "ground truth", *loaded][j], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=72, format="png")
    plt.close(fig)
    return path
