"""Tests of ``monowarp.viz``: local scale maps (values) and the figures (PNG files, Agg backend)."""

from __future__ import annotations

import pytest
import torch

import monowarp
from monowarp import MonotoneScale, viz


def stretch_left_half() -> MonotoneScale:
    """Separable: l_X has slope 2 on x < 1/4 (moved to x < 1/2), 2/3 elsewhere; l_Y is the identity."""
    row = torch.tensor([0.0, 0.5, 2.0 / 3.0, 5.0 / 6.0, 1.0])
    knots_x = row.expand(1, 5, 5).clone()
    knots_y = torch.linspace(0, 1, 5).expand(1, 5, 5).clone()
    return MonotoneScale.from_knots(knots_x, knots_y)


def test_local_scale_map_identity():
    g = MonotoneScale.identity(2, grid=(4, 3))
    for kind in ("det", "x", "y"):
        m = viz.local_scale_map(g, (9, 13), kind=kind)
        assert m.shape == (2, 9, 13)
        assert torch.allclose(m, torch.ones_like(m), atol=1e-5)


def test_local_scale_map_values_in_both_frames():
    g = stretch_left_half()
    h, w = 11, 41
    src = viz.local_scale_map(g, (h, w), kind="x", frame="source")[0]
    xs = torch.linspace(0, 1, w)
    # source frame: slope 2 where x < 1/4 (content magnified), 2/3 where x > 1/4
    assert torch.allclose(src[:, xs < 0.24], torch.tensor(2.0), atol=1e-4)
    assert torch.allclose(src[:, xs > 0.26], torch.tensor(2 / 3), atol=1e-4)
    # output frame: content from x < 1/4 now covers x < 1/2
    out = viz.local_scale_map(g, (h, w), kind="x", frame="output")[0]
    assert torch.allclose(out[:, xs < 0.49], torch.tensor(2.0), atol=1e-4)
    assert torch.allclose(out[:, xs > 0.51], torch.tensor(2 / 3), atol=1e-4)
    det = viz.local_scale_map(g, (h, w), kind="det", frame="source")[0]
    assert torch.allclose(det, src, atol=1e-5)  # l_Y is the identity


@pytest.mark.parametrize(("kwargs", "match"), [({"kind": "trace"}, "kind"), ({"frame": "input"}, "frame")])
def test_local_scale_map_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.local_scale_map(MonotoneScale.identity(1), (4, 4), **kwargs)
    with pytest.raises(TypeError, match="ScalingMap"):
        viz.local_scale_map(torch.zeros(1, 5, 5), (4, 4))


def test_draw_grid_lines_follow_the_map():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    g = stretch_left_half()
    ax = Figure().subplots()
    lines = viz.draw_grid(ax, g, (11, 41), lines=(5, 3), warped=True)
    assert len(lines) == 5 + 3
    # the second vertical line x = 1/4 (pixel 10) is moved by l to x = 1/2 (pixel 20)
    assert lines[1].get_xdata() == pytest.approx(20.0, abs=1e-4)
    regular = viz.draw_grid(ax, g, (11, 41), lines=(5, 3), warped=False)
    assert regular[1].get_xdata() == pytest.approx(10.0, abs=1e-4)


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_warp_writes_a_png(tmp_path, channels):
    pytest.importorskip("matplotlib")
    g = monowarp.sample_monotone_scale(2, generator=torch.Generator().manual_seed(0))
    img = torch.rand(channels, 24, 32)
    path = tmp_path / "warp.png"
    fig = viz.plot_warp(img, g, index=1, path=path, title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == 5  # four panels and the colour bar
    fig2 = viz.plot_warp(img[0], g, panels=("warped",), kind="x", path=tmp_path / "one.png")
    assert len(fig2.axes) == 1 and (tmp_path / "one.png").stat().st_size > 0


def test_plot_warp_errors():
    pytest.importorskip("matplotlib")
    g = MonotoneScale.identity(1)
    with pytest.raises(ValueError, match="panels"):
        viz.plot_warp(torch.rand(3, 8, 8), g, panels=("nope",))
    with pytest.raises(ValueError, match="image"):
        viz.plot_warp(torch.rand(2, 8, 8), g)
