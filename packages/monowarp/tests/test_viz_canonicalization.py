"""Tests of ``monowarp.viz.plot_canonicalization`` (the learned-warp figure, Fig. A2), on matplotlib's Agg."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import monowarp
from monowarp import MonotoneScale
from monowarp.viz import plot_canonicalization

pytest.importorskip("matplotlib")


def stretch_left_quarter(batch: int = 1) -> MonotoneScale:
    """Separable: l_X maps [0, 1/4] onto [0, 1/2] (slope 2), [1/4, 1] onto [1/2, 1]; l_Y is the identity."""
    row = torch.tensor([0.0, 0.5, 2.0 / 3.0, 5.0 / 6.0, 1.0])
    knots_x = row.expand(batch, 5, 5).clone()
    knots_y = torch.linspace(0, 1, 5).expand(batch, 5, 5).clone()
    return MonotoneScale.from_knots(knots_x, knots_y)


def image_rows(fig, count: int) -> list[list]:
    """The axes of the figure's panels (colour bars left out), row by row."""
    panels = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    return [panels[r * count : (r + 1) * count] for r in range(len(panels) // count)]


def test_draws_inputs_and_canonical_forms_grey():
    g = monowarp.sample_monotone_scale(3, (4, 4), generator=torch.Generator().manual_seed(0))
    x = torch.rand(3, 1, 20, 36, generator=torch.Generator().manual_seed(1))
    fig = plot_canonicalization(x, g, titles=["007", "123", "999"])
    grid = fig.axes
    assert len(grid) == 6  # 2 rows x 3 columns
    top, bottom = grid[:3], grid[3:]  # subplots are created row by row
    assert [ax.get_title() for ax in top] == ["007", "123", "999"]
    assert top[0].get_ylabel() == "input" and bottom[0].get_ylabel() == "canonical"
    expected = monowarp.unwarp(x, g).clamp(0, 1)
    for i in range(3):
        np.testing.assert_allclose(top[i].images[0].get_array(), x[i, 0].numpy(), atol=1e-6)
        np.testing.assert_allclose(bottom[i].images[0].get_array(), expected[i, 0].numpy(), atol=1e-5)
        assert len(top[i].lines) == 14 and len(bottom[i].lines) == 14  # 7 lines per axis


def test_grid_lands_where_the_content_goes():
    """In S^-1(I; l) the content at input x = 1/2 appears at l^-1(1/2) = 1/4, and so does the line x = 1/2."""
    g = stretch_left_quarter()
    h, w = 9, 41
    fig = plot_canonicalization(torch.rand(1, 1, h, w), g, lines=3)  # vertical lines at x = 0, 1/2, 1
    top, bottom = fig.axes
    top_x = sorted(float(line.get_xdata()[0]) for line in top.lines[:3])
    bottom_x = sorted(float(line.get_xdata()[0]) for line in bottom.lines[:3])
    assert top_x == pytest.approx([0.0, 0.5 * (w - 1), w - 1], abs=1e-4)
    assert bottom_x == pytest.approx([0.0, 0.25 * (w - 1), w - 1], abs=1e-3)


def test_zoom_row_rgb_and_given_canonical(tmp_path):
    g = stretch_left_quarter(2)
    x = torch.rand(2, 3, 16, 41)
    canonical = torch.zeros_like(x)  # whatever the caller computed is drawn, not recomputed
    path = tmp_path / "warps.png"
    fig = plot_canonicalization(x, g, canonical=canonical, scale=True, kind="x", path=path, title="learned")
    assert path.is_file() and path.stat().st_size > 1000
    rows = image_rows(fig, 2)
    assert len(rows) == 3
    assert rows[0][0].images[0].get_array().shape == (16, 41, 3)
    assert float(np.abs(rows[1][1].images[0].get_array()).max()) == 0.0
    zoom = np.asarray(rows[2][0].images[0].get_array())
    xs = np.linspace(0, 1, 41)
    # the canonical form shrinks [0, 1/2] of the input into [0, 1/4]: zoom 1/2 there, 3/2 on the rest
    np.testing.assert_allclose(zoom[:, xs < 0.24], 0.5, atol=1e-3)
    np.testing.assert_allclose(zoom[:, xs > 0.26], 1.5, atol=1e-3)
    assert rows[2][0].get_ylabel() == "zoom (x)"
    assert fig.get_suptitle() == "learned"


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (torch.rand(1, 8, 8), ValueError, r"shape \(B, 1, H, W\) or \(B, 3, H, W\), got \(1, 8, 8\)"),
        (torch.rand(1, 2, 8, 8), ValueError, r"must have shape \(B, 1, H, W\) or \(B, 3, H, W\)"),
        (np.zeros((1, 1, 8, 8)), TypeError, "torch.Tensor"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.uint8), TypeError, "must have a floating point dtype"),
        (torch.full((1, 1, 8, 8), float("nan")), ValueError, "NaN"),
        (torch.rand(2, 1, 8, 8), ValueError, "one scaling per image \\(2\\), got a batch of 1"),
    ],
)
def test_rejects_bad_images(images, error, match):
    with pytest.raises(error, match=match):
        plot_canonicalization(images, MonotoneScale.identity(1, grid=(2, 2)))


def test_rejects_bad_options():
    g = MonotoneScale.identity(2, grid=(2, 2))
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(TypeError, match="element must be a ScalingMap"):
        plot_canonicalization(x, torch.zeros(2, 8))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="titles must be a sequence of 2"):
        plot_canonicalization(x, g, titles=["a"])
    with pytest.raises(ValueError, match="titles must be a sequence of 2"):
        plot_canonicalization(x, g, titles="ab")
    with pytest.raises(ValueError, match=r"canonical must have the shape of images \(2, 1, 8, 8\)"):
        plot_canonicalization(x, g, canonical=torch.rand(2, 1, 8, 9))
    with pytest.raises(ValueError, match="kind must be one of"):
        plot_canonicalization(x, g, kind="area")
