"""Plots are written to disk (PNG/SVG) with several methods on one axis; skipped without matplotlib."""

from __future__ import annotations

import pytest
import torch

from lsmetrics import (
    PerScaleAccuracy,
    correct_class_probability,
    per_scale_accuracy,
    per_scale_accuracy_from_counts,
)
from lsmetrics.plot import plot_correct_class_probability, plot_per_scale_accuracy, save_figure

pytest.importorskip("matplotlib")


def _result(counts):
    return per_scale_accuracy_from_counts(torch.tensor(counts), torch.tensor([100] * len(counts)))


def test_per_scale_accuracy_plot(tmp_path):
    results = {
        "Aug": _result([92, 96, 94]),
        "Ours": [_result([95, 98, 96]), _result([94, 97, 97])],  # two runs -> error bars over runs
        "Canon": torch.tensor([0.90, 0.95, 0.91]),
    }
    fig = plot_per_scale_accuracy(results, ["[0.4, 1]", "[1, 2]", "[2, 3]"], title="Table 3")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "Aug (94.00 ± 1.63)"
    assert labels[1].startswith("Ours (96.17")
    assert len(labels) == 3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["[0.4, 1]", "[1, 2]", "[2, 3]"]
    written = save_figure(fig, tmp_path / "plots" / "per_scale", formats=("png", "svg"))
    assert [p.name for p in written] == ["per_scale.png", "per_scale.svg"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in written[1].read_text()


def test_correct_class_probability_plot(tmp_path):
    scales = [0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(4, 7, 5, generator=gen).softmax(-1)
    curves = {
        "Base": correct_class_probability(probs, torch.tensor([0, 1, 2, 3])),
        "Ours": torch.linspace(0.6, 0.8, 7),
    }
    fig = plot_correct_class_probability(curves, scales)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 2
    assert len(ax.collections) == 1  # the spread band of the 4-image curve
    assert ax.get_lines()[1].get_xdata().tolist() == pytest.approx(scales)
    path = save_figure(fig, tmp_path / "fig8.svg")[0]
    assert path.exists() and path.stat().st_size > 0


def test_metric_plot_and_existing_axes(tmp_path):
    from matplotlib.figure import Figure

    metric = PerScaleAccuracy(num_scales=2)
    metric.update(torch.tensor([True, False, True]), torch.tensor([0, 1, 1]))
    _, ax = metric.plot()
    assert ax.get_legend().get_texts()[0].get_text() == "PerScaleAccuracy (75.00 ± 25.00)"
    own = Figure()
    axes = own.add_subplot()
    result = per_scale_accuracy(torch.tensor([True, True]), torch.tensor([0, 1]), 2)
    assert plot_per_scale_accuracy({"a": result}, ax=axes) is own
    assert save_figure(own, tmp_path / "own.png")[0].exists()


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="results must hold at least one"):
        plot_per_scale_accuracy({})
    with pytest.raises(ValueError, match="scales must have 3 entries"):
        plot_per_scale_accuracy({"a": _result([1, 2, 3])}, [1.0, 2.0])
    with pytest.raises(TypeError, match=r"results\['a'\] must be"):
        plot_per_scale_accuracy({"a": [1, 2]})
    with pytest.raises(TypeError, match=r"curves\['a'\] must be"):
        plot_correct_class_probability({"a": torch.zeros(2, 2)})
    fig = plot_per_scale_accuracy({"a": _result([1, 2])})
    with pytest.raises(ValueError, match="path needs a suffix"):
        save_figure(fig, tmp_path / "noext")
    with pytest.raises(ValueError, match="format must be one of"):
        save_figure(fig, tmp_path / "x", formats=("jpg",))


def test_metric_outputs_plot_like_results():
    metric = PerScaleAccuracy(num_scales=3)
    metric.update(torch.tensor([True, False, True, True]), torch.tensor([0, 0, 1, 2]))
    first = metric.compute()
    metric.update(torch.tensor([False, False]), torch.tensor([1, 2]))
    second = metric.compute()
    fig = plot_per_scale_accuracy({"one": first, "runs": [first, second]})
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "one (83.33 ± 23.57)"  # 1/2, 1, 1
    assert labels[1] == "runs (66.67 ± 11.79)"  # the mean curve over the runs: 1/2, 3/4, 3/4
    # the same error bars as the functional result of the same counts
    result = per_scale_accuracy_from_counts(first["correct"], first["total"])
    fig_result = plot_per_scale_accuracy({"one": result})
    bars = ax.containers[0].lines[2][0].get_segments()
    bars_result = fig_result.axes[0].containers[0].lines[2][0].get_segments()
    assert [s.tolist() for s in bars] == [s.tolist() for s in bars_result]
    with pytest.raises(TypeError, match=r"results\['x'\] must be a sequence"):
        plot_per_scale_accuracy({"x": [first, {"accuracy": torch.zeros(3)}]})
