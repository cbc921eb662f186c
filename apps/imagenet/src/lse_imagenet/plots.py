"""Plots of the ImageNet app: accuracy per object scale factor (Table 6), the probability of the correct class
across factors for chosen images (Fig. 8), and a grid of rescaled photos (what the model sees)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["plot_factor_accuracy", "plot_fig8", "save_variant_grid"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path, dpi: int = 150) -> Path:
    from lsmetrics.plot import save_figure

    try:
        return Path(save_figure(fig, path, dpi=dpi)[0])
    finally:
        _plt().close(fig)


def _class_title(entry: Mapping[str, Any]) -> str:
    """ImageNet's short description for a WordNet class name (``n02123045`` -> ``tabby``), else the name."""
    name = str(entry.get("class_name") or entry["label"])
    if name.startswith("n") and name[1:].isdigit():
        from timm.data import ImageNetInfo

        return ImageNetInfo().index_to_description(int(entry["label"])).split(",")[0]
    return name


def plot_factor_accuracy(
    per_method: Mapping[str, Mapping[str, Any]], path: str | Path, *, title: str = ""
) -> Path:
    """Accuracy (%) against the factor, one line per method (``factor_acc`` in percent, ``factors``)."""
    from lsmetrics.plot import plot_per_scale_accuracy

    first = next(iter(per_method.values()))
    curves = {name: torch.tensor(v["factor_acc"]) / 100.0 for name, v in per_method.items()}
    fig = plot_per_scale_accuracy(
        curves, [float(f) for f in first["factors"]], error="none", title=title, xlabel="object scale factor"
    )
    return _save(fig, path)


def plot_fig8(results: Mapping[str, Mapping[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """Fig. 8: for each chosen image (one panel), the probability of the correct class against the factor, one
    line per method; ``results`` maps a method's name to its evaluation result (``factors``, ``fig8``)."""
    from lsmetrics.plot import plot_correct_class_probability

    plt = _plt()
    common = sorted(set.intersection(*(set(r["fig8"]) for r in results.values())))
    if not common:
        raise ValueError("the results share no Fig. 8 image")
    cols = min(3, len(common))
    rows = (len(common) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax, image_id in zip(axes.flat, common, strict=False):
        curves = {name: torch.tensor(r["fig8"][image_id]["p_correct"]) for name, r in results.items()}
        factors = next(iter(results.values()))["factors"]
        entry = next(iter(results.values()))["fig8"][image_id]
        plot_correct_class_probability(
            curves,
            [float(f) for f in factors],
            ax=ax,
            title=f"{image_id.split('/')[-1]}: {_class_title(entry)}",
            xlabel="object scale factor",
        )
    for ax in list(axes.flat)[len(common) :]:
        ax.axis("off")
    if title:
        fig.suptitle(f"{title}: probability of the correct class across factors (Fig. 8)")
    fig.tight_layout()
    return _save(fig, path, dpi=90)


def save_variant_grid(
    rows: Sequence[tuple[str, Sequence[np.ndarray]]],
    factors: Sequence[float],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """A grid of photos, one row per image (its label) and one column per factor; images `(H, W, 3)` uint8."""
    plt = _plt()
    if not rows:
        raise ValueError("rows must hold at least one image")
    n, s = len(rows), len(factors)
    aspect = float(np.mean([im.shape[0] / im.shape[1] for _, images in rows for im in images]))
    fig, axes = plt.subplots(n, s, figsize=(1.6 * s, 1.6 * aspect * n + 0.5), squeeze=False)
    for i, (label, images) in enumerate(rows):
        if len(images) != s:
            raise ValueError(f"row {i} has {len(images)} images for {s} factors")
        for j, image in enumerate(images):
            ax = axes[i, j]
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"x{factors[j]:g}", fontsize=8)
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = _save(fig, path, dpi=80)
    from PIL import Image

    from lse_common.checkpoint import atomic_path

    with Image.open(out) as im:  # photos: a 256-colour palette keeps the file small
        small = im.convert("RGB").quantize(256)
    with atomic_path(out) as tmp:
        small.save(tmp, format="PNG", optimize=True)
    return out
