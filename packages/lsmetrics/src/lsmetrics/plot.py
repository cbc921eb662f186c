"""Plots of per-scale results: accuracy curves with error bars (Tables 3 and 6) and the probability of
the correct class across scales (Fig. 8), several methods on one axis.

matplotlib is an optional dependency (``pip install "local-scale-metrics[plot]"``), imported only when a
plot is drawn. The functions build figures with `matplotlib.figure.Figure` (no pyplot, no global state,
no GUI backend) and return them; `save_figure` writes PNG, SVG or PDF.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from lsmetrics._utils import check_choice
from lsmetrics.functional import CorrectClassProbability, PerScaleAccuracyResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_correct_class_probability", "plot_per_scale_accuracy", "save_figure"]

PerScaleOutput = PerScaleAccuracyResult | Mapping[str, torch.Tensor]
AccuracyInput = PerScaleOutput | Sequence[PerScaleOutput] | torch.Tensor
ProbabilityInput = CorrectClassProbability | torch.Tensor


def plot_per_scale_accuracy(
    results: Mapping[str, AccuracyInput],
    scales: Sequence[float] | Sequence[str] | torch.Tensor | None = None,
    *,
    ax: Axes | None = None,
    percent: bool = True,
    error: Literal["auto", "none"] = "auto",
    title: str | None = None,
    xlabel: str = "local scale",
) -> Figure:
    r"""Per-scale accuracy of several methods on one axis, with error bars.

    Each method's value is one of:

    - a `lsmetrics.PerScaleAccuracyResult` or the dict that `lsmetrics.PerScaleAccuracy.compute()`
      returns (keys ``"accuracy"`` and ``"total"``): error bars are the binomial standard error
      $\sqrt{a_s (1 - a_s) / n_s}$ of each bucket;
    - a sequence of them (several runs) or an `(R, S)` tensor: the curve is the mean over runs and the
      error bars the population std over runs;
    - an `(S,)` tensor of accuracies: no error bars.

    The legend shows each method's "overall mean $\pm$ std" over the scales (Tables 3 and 6).

    Args:
        results: Method name -> result(s).
        scales: The S bucket positions (numbers) or labels (strings, e.g. ``"[0.4, 1.0]"``); bucket indices
            when omitted.
        ax: Axes to draw on; a new figure when omitted.
        percent: Show accuracy in percent.
        error: ``"auto"`` (as above) or ``"none"``.
        title: Axes title.
        xlabel: x-axis label.

    Returns:
        The figure.

    Raises:
        ImportError: If matplotlib is missing.
        ValueError: If `results` is empty or the curves and `scales` differ in length.
    """
    check_choice(error, "error", ("auto", "none"))
    if not results:
        raise ValueError("results must hold at least one method")
    fig, ax = _axes(ax)
    factor = 100.0 if percent else 1.0
    positions, labels = None, None
    for name, value in results.items():
        mean_curve, err = _accuracy_curve(name, value)
        positions, labels = _positions(scales, mean_curve.shape[0])
        overall = mean_curve[~torch.isnan(mean_curve)]
        summary = f"{overall.mean().item() * factor:.2f} ± {overall.std(correction=0).item() * factor:.2f}"
        ax.errorbar(
            positions,
            (mean_curve * factor).tolist(),
            yerr=None if err is None or error == "none" else (err * factor).tolist(),
            marker="o",
            capsize=3,
            label=f"{name} ({summary})",
        )
    if labels is not None:
        ax.set_xticks(positions, labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)" if percent else "accuracy")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def plot_correct_class_probability(
    curves: Mapping[str, ProbabilityInput],
    scales: Sequence[float] | Sequence[str] | torch.Tensor | None = None,
    *,
    ax: Axes | None = None,
    percent: bool = True,
    band: bool = True,
    title: str | None = None,
    xlabel: str = "local scale factor",
) -> Figure:
    r"""Probability of the correct class across scales (Fig. 8), several methods on one axis.

    Args:
        curves: Method name -> `lsmetrics.CorrectClassProbability` (its spread over images is drawn as
            a band when positive) or an `(S,)` tensor of probabilities.
        scales: The S scale factors (e.g. ``[0.7, 0.8, ..., 1.3]``) or labels; indices when omitted.
        ax: Axes to draw on; a new figure when omitted.
        percent: Show probabilities in percent.
        band: Shade $\pm$ the std over images.
        title: Axes title.
        xlabel: x-axis label.

    Returns:
        The figure. The legend shows each method's mean $\pm$ std over the scales.

    Raises:
        ImportError: If matplotlib is missing.
        ValueError: If `curves` is empty or the curves and `scales` differ in length.
    """
    if not curves:
        raise ValueError("curves must hold at least one method")
    fig, ax = _axes(ax)
    factor = 100.0 if percent else 1.0
    positions, labels = None, None
    for name, value in curves.items():
        if isinstance(value, CorrectClassProbability):
            prob, spread = value.probability.detach().double().cpu(), value.image_std.detach().double().cpu()
        elif isinstance(value, torch.Tensor) and value.ndim == 1:
            prob, spread = value.detach().double().cpu(), None
        else:
            raise TypeError(f"curves[{name!r}] must be a CorrectClassProbability or an (S,) tensor")
        positions, labels = _positions(scales, prob.shape[0])
        summary = f"{prob.mean().item() * factor:.2f} ± {prob.std(correction=0).item() * factor:.2f}"
        (line,) = ax.plot(positions, (prob * factor).tolist(), marker="o", label=f"{name} ({summary})")
        if band and spread is not None and bool((spread > 0).any()):
            ax.fill_between(
                positions,
                ((prob - spread) * factor).tolist(),
                ((prob + spread) * factor).tolist(),
                color=line.get_color(),
                alpha=0.2,
            )
    if labels is not None:
        ax.set_xticks(positions, labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("probability of the correct class" + (" (%)" if percent else ""))
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def save_figure(
    figure: Figure, path: str | Path, *, formats: Sequence[str] | None = None, dpi: int = 150
) -> list[Path]:
    """Save a figure as PNG/SVG/PDF, creating the parent folder.

    Args:
        figure: The figure to save.
        path: The file name; its suffix is the format unless `formats` is given.
        formats: Formats to write, e.g. ``("png", "svg")``: one file per format, `path` with that suffix.
        dpi: Resolution of raster formats.

    Returns:
        The paths written.

    Raises:
        ValueError: On an unsupported format or a path without suffix and no `formats`.
    """
    path = Path(path)
    if formats is None:
        if not path.suffix:
            raise ValueError(f"path needs a suffix (.png, .svg, .pdf) or pass formats, got {str(path)!r}")
        formats = (path.suffix[1:],)
    written = []
    for fmt in formats:
        check_choice(fmt.lower(), "format", ("png", "svg", "pdf"))
        target = path.with_suffix("." + fmt.lower())
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, format=fmt.lower(), dpi=dpi, bbox_inches="tight")
        written.append(target)
    return written


def _axes(ax: Axes | None) -> tuple[Figure, Axes]:
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("lsmetrics.plot needs matplotlib: pip install 'local-scale-metrics[plot]'") from err
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    return fig, fig.add_subplot()


def _accuracy_and_total(value: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The `(S,)` accuracy and sample counts of one per-scale result, or None if `value` is none."""
    if isinstance(value, PerScaleAccuracyResult):
        accuracy, total = value.accuracy, value.total
    elif isinstance(value, Mapping) and isinstance(value.get("accuracy"), torch.Tensor):
        accuracy, total = value["accuracy"], value.get("total")
        if not isinstance(total, torch.Tensor):
            return None
    else:
        return None
    return accuracy.detach().double().cpu(), total.detach().double().cpu()


def _accuracy_curve(name: str, value: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    single = _accuracy_and_total(value)
    if single is not None:
        acc, total = single
        err = (acc * (1 - acc) / total.clamp_min(1)).sqrt()
        return acc, err
    if isinstance(value, torch.Tensor):
        runs = value.detach().double().cpu()
    elif isinstance(value, Sequence) and value:
        parts = [_accuracy_and_total(v) for v in value]
        if any(p is None for p in parts):
            raise TypeError(
                f"results[{name!r}] must be a sequence of PerScaleAccuracyResult objects or "
                "PerScaleAccuracy outputs"
            )
        runs = torch.stack([p[0] for p in parts if p is not None])
    else:
        raise TypeError(
            f"results[{name!r}] must be a PerScaleAccuracyResult or a PerScaleAccuracy output, "
            "a sequence of them, or an (S,) / (R, S) tensor"
        )
    if runs.ndim == 1:
        return runs, None
    if runs.ndim != 2:
        raise ValueError(f"results[{name!r}] must have shape (S,) or (R, S), got {tuple(runs.shape)}")
    return runs.mean(dim=0), runs.std(dim=0, correction=0)


def _positions(scales: Any, size: int) -> tuple[list[float], list[str] | None]:
    if scales is None:
        return [float(i) for i in range(size)], None
    values = scales.tolist() if isinstance(scales, torch.Tensor) else list(scales)
    if len(values) != size:
        raise ValueError(f"scales must have {size} entries (one per bucket), got {len(values)}")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values], None
    return [float(i) for i in range(size)], [str(v) for v in values]
