"""The warp demo (``hatch run warp-demo``) runs end to end; the approximate inverse is what it says."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from monowarp import MonotoneScale, sample_monotone_scale


def _load_demo():
    # the demo is a script, not an installed module: load it from its file
    path = Path(__file__).with_name("warp_demo.py")
    spec = importlib.util.spec_from_file_location("warp_demo", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("warp_demo", module)  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


demo = _load_demo()


def test_demo_runs_end_to_end(tmp_path, capsys):
    pytest.importorskip("skimage")
    pytest.importorskip("matplotlib")
    assert demo.main(["--out", str(tmp_path), "--seed", "1", "--image", "chelsea", "--max-size", "96"]) == 0
    text = capsys.readouterr().out
    assert "monowarp (exact)" in text and "paper approximation" in text
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["monowarp_demo_chelsea.png", "monowarp_demo_chelsea_inverse_error.png"]


def test_demo_numbers():
    pytest.importorskip("skimage")
    r = demo.run_demo(image="camera", seed=0, max_size=64, figures=False)
    assert r.size == (64, 64)
    assert r.exact_max_px < 1e-3  # float32, exact inverse
    assert r.approx_mean_px > 100 * r.exact_mean_px  # the paper's inverse is off by pixels
    assert r.exact_image_mae < r.approx_image_mae


def test_approximate_inverse_is_exact_for_separable_maps():
    # separable: every row function equal, every column function equal -> the per-row/column inverse is exact
    # (the sizes put every knot on a pixel, so the linear interpolation between pixels is exact too)
    gen = torch.Generator().manual_seed(0)
    g = sample_monotone_scale(1, generator=gen, dtype=torch.float64)
    kx = g.knots_x[:, :1].expand(1, 5, 5).contiguous()
    ky = g.knots_y[:, :1].expand(1, 5, 5).contiguous()
    sep = MonotoneScale.from_knots(kx, ky)
    approx = demo.approximate_inverse_map(sep, (33, 45))
    exact = sep.dense_inverse_map((33, 45))
    assert torch.allclose(approx, exact, atol=1e-6)
    # and not for the non-separable original
    assert (demo.approximate_inverse_map(g, (33, 45)) - g.dense_inverse_map((33, 45))).abs().max() > 1e-3


def test_load_image_errors():
    with pytest.raises(ValueError, match="image must be one of"):
        demo.load_image("lena")
