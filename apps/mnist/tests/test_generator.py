"""The scene generator: layout guarantees, labels read back from renders, determinism, re-rendering, for
each layout (horizontal, vertical, diagonal and the per-scene mix ``all``)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lse_mnist.data import SceneDataset, SplitData, SplitMeta, benchmark_render, prepare_split
from lse_mnist.generator import (
    LAYOUT_CHOICES,
    LAYOUTS,
    MAX_FACTOR,
    SceneSpec,
    cell_geometry,
    check_canvas,
    digit_boxes,
    render_scenes,
    sample_factors,
    sample_scenes,
    slot_geometry,
)
from lse_mnist.options import MnistData

CANVASES = [9, 10, 16, 24, 32, 63, 64, 112, 224, (32, 96), (9, 30), (100, 40), (24, 200)]


def _overlaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether boxes ``a`` and ``b`` (`(..., 3)` ``(x, y, n)``) intersect."""
    return (
        (a[..., 0] < b[..., 0] + b[..., 2])
        & (b[..., 0] < a[..., 0] + a[..., 2])
        & (a[..., 1] < b[..., 1] + b[..., 2])
        & (b[..., 1] < a[..., 1] + a[..., 2])
    )


def _scenes_with_extremes(canvas, layout: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    width = canvas if isinstance(canvas, int) else canvas[1]
    spec = sample_scenes(
        np.arange(10), 2000, seed=width, stream=0, scale_range=(0.4, MAX_FACTOR), layout=layout
    )
    extremes = np.array([[3.0, 3.0, 3.0], [0.01, 3.0, 0.01], [3.0, 0.4, 3.0]], dtype=np.float32)
    factors = np.concatenate([spec.factors, extremes])
    centers = np.concatenate([spec.centers, np.random.default_rng(0).random((3, 3, 2)).astype(np.float32)])
    centers[-1] = [[0, 0], [1, 1], [0, 1]]  # centres at the very corners, which the clip must handle
    layouts = np.concatenate([spec.layouts, spec.layouts[:3]])
    return factors, centers, layouts


@pytest.mark.parametrize("layout", LAYOUT_CHOICES)
@pytest.mark.parametrize("canvas", CANVASES, ids=str)
def test_digits_never_overlap_nor_leave_their_cell_up_to_factor_3(canvas, layout):
    height, width = (canvas, canvas) if isinstance(canvas, int) else canvas
    factors, centers, layouts = _scenes_with_extremes(canvas, layout)
    if layout == "all":
        assert set(np.unique(layouts)) == {0, 1, 2}
    boxes = digit_boxes(factors, centers, canvas, layouts)
    x, y, n = boxes[..., 0], boxes[..., 1], boxes[..., 2]
    assert (x >= 0).all() and (y >= 0).all() and (x + n <= width).all() and (y + n <= height).all()
    assert (n >= 1).all()
    for i, j in ((0, 1), (1, 2), (0, 2)):
        assert not _overlaps(boxes[:, i], boxes[:, j]).any()
    for code, name in enumerate(LAYOUTS):
        mine = layouts == code
        if not mine.any():
            continue
        cells, _ = cell_geometry(canvas, name)
        x0, y0, cw, ch = (cells[None, :, k] for k in range(4))
        b = boxes[mine]
        inside = (b[..., 0] >= x0) & (b[..., 1] >= y0)
        inside &= (b[..., 0] + b[..., 2] <= x0 + cw) & (b[..., 1] + b[..., 2] <= y0 + ch)
        assert inside.all(), name
        # cell order is reading order: left to right, top to bottom, or along the diagonal
        ends_x, ends_y = b[..., 0] + b[..., 2], b[..., 1] + b[..., 2]
        if name in ("horizontal", "diagonal"):
            assert (ends_x[:, 0] <= b[:, 1, 0]).all() and (ends_x[:, 1] <= b[:, 2, 0]).all()
        if name in ("vertical", "diagonal"):
            assert (ends_y[:, 0] <= b[:, 1, 1]).all() and (ends_y[:, 1] <= b[:, 2, 1]).all()


def test_factor_3_fills_a_slot_and_sizes_follow_the_base_size():
    w, off, b = slot_geometry(224)
    assert (w, off) == (74, 1) and b == pytest.approx(74 / 3)
    boxes = digit_boxes(np.array([[3.0, 1.0, 0.4]]), np.full((1, 3, 2), 0.5), 224)
    assert boxes[0, :, 2].tolist() == [74, 25, 10]
    with pytest.raises(ValueError, match=r"\(0, 3.0\]"):
        digit_boxes(np.array([[3.2, 1.0, 1.0]]), np.full((1, 3, 2), 0.5), 224)
    with pytest.raises(ValueError, match="scale_range"):
        sample_scenes(np.arange(10), 2, seed=0, stream=0, scale_range=(0.4, 3.5))
    with pytest.raises(ValueError, match="canvas"):
        slot_geometry(8)
    assert slot_geometry((8, 96))[0] == 32  # a low strip is a valid horizontal canvas (cells 32 x 8)
    with pytest.raises(ValueError, match="too small for the vertical layout"):
        digit_boxes(np.ones((1, 3)), np.full((1, 3, 2), 0.5), (8, 96), "vertical")
    # a strip: the height bounds the digits, factor 3 fills the height
    assert digit_boxes(np.array([[3.0, 1.0, 0.4]]), np.full((1, 3, 2), 0.5), (32, 96))[0, :, 2].tolist() == [
        32,
        11,
        4,
    ]


@pytest.mark.parametrize("canvas", [32, 224, (32, 96)], ids=str)
@pytest.mark.parametrize("layout", LAYOUT_CHOICES)
def test_labels_read_back_from_renders(canvas, layout):
    # digit d is a flat square of intensity 20 * (d + 1): each box's value names its digit
    pool = np.stack([np.full((28, 28), 20 * (d + 1), np.uint8) for d in range(10)])
    spec = sample_scenes(np.arange(10), 64, seed=1, stream=2, scale_range=(0.4, 3.0), layout=layout)
    images = render_scenes(pool, spec, canvas)
    boxes = digit_boxes(spec.factors, spec.centers, canvas, spec.layouts)
    for img, bx, label, code in zip(images, boxes, spec.labels, spec.layouts, strict=True):
        # read the digits in reading order, found from the image alone: sort the boxes by x (horizontal),
        # y (vertical) or x + y (diagonal)
        key = {0: bx[:, 0], 1: bx[:, 1], 2: bx[:, 0] + bx[:, 1]}[int(code)]
        read = []
        for x, y, n in bx[np.argsort(key, kind="stable")]:
            patch = img[y : y + n, x : x + n]
            assert (patch == patch.flat[0]).all()
            read.append(int(patch.flat[0]) // 20 - 1)
        assert 100 * read[0] + 10 * read[1] + read[2] == label
        # nothing is drawn outside the boxes
        mask = np.zeros_like(img, dtype=bool)
        for x, y, n in bx:
            mask[y : y + n, x : x + n] = True
        assert (img[~mask] == 0).all()


def test_labels_follow_the_pool_labels_and_cover_1000_classes():
    labels = np.random.default_rng(0).integers(0, 10, 500)
    spec = sample_scenes(labels, 20000, seed=0, stream=0)
    d = labels[spec.digits]
    assert np.array_equal(spec.labels, 100 * d[:, 0] + 10 * d[:, 1] + d[:, 2])
    assert len(np.unique(spec.labels)) == 1000
    assert spec.factors.min() >= 0.4 and spec.factors.max() <= 2.0


@pytest.mark.parametrize("layout", LAYOUT_CHOICES)
def test_scenes_are_a_function_of_seed_stream_and_index(layout):
    labels = np.arange(10)
    a = sample_scenes(labels, 100, seed=3, stream=0, layout=layout)
    b = sample_scenes(labels, 40, seed=3, stream=0, layout=layout)  # a prefix: same whatever the size
    for field in ("digits", "factors", "centers", "labels", "layouts"):
        assert np.array_equal(getattr(a, field)[:40], getattr(b, field))
    assert not np.array_equal(a.digits, sample_scenes(labels, 100, seed=3, stream=1, layout=layout).digits)
    assert not np.array_equal(a.factors, sample_scenes(labels, 100, seed=4, stream=0, layout=layout).factors)
    if layout == "all":
        other = sample_scenes(labels, 100, seed=4, stream=0, layout=layout)
        assert not np.array_equal(a.layouts, other.layouts)
    # the digits and factors take the same draws in every layout
    h = sample_scenes(labels, 100, seed=3, stream=0)
    assert np.array_equal(a.digits, h.digits) and np.array_equal(a.factors, h.factors)
    f = sample_factors(10, 8, seed=0, stream=10)
    assert f.shape == (10, 8, 3) and np.array_equal(f[:5], sample_factors(5, 8, seed=0, stream=10))


def _dataset(n=24, canvas=32, layout="horizontal") -> SceneDataset:
    pool = np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    spec = sample_scenes(np.arange(10), n, seed=0, stream=0, layout=layout)
    meta = SplitMeta("train", n, 0, (0.4, 2.0), "test", 0.1, layout)
    return SceneDataset(SplitData(pool, np.arange(10), spec, meta), canvas)


def test_rendering_is_independent_of_batching_and_workers():
    ds = _dataset()
    whole = render_scenes(ds.data.pool, ds.data.spec, 32)
    single = np.stack([ds[i][0][0].numpy() for i in range(len(ds))])
    assert np.array_equal(whole, single)
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=5, num_workers=workers)
        got = torch.cat([x for x, _ in loader])[:, 0].numpy()
        assert np.array_equal(got, whole)


@pytest.mark.parametrize("layout", LAYOUT_CHOICES)
def test_rerendering_keeps_digits_and_centres(layout):
    ds = _dataset(n=48, canvas=224, layout=layout)
    spec = ds.data.spec
    same = render_scenes(ds.data.pool, spec.with_factors(spec.factors), 224)
    assert np.array_equal(same, render_scenes(ds.data.pool, spec, 224))
    assert np.array_equal(spec.with_factors(2.0).layouts, spec.layouts)
    cells = np.stack([cell_geometry(224, name)[0] for name in LAYOUTS])[spec.layouts]  # (N, 3, 4)
    x0, y0, cw, ch = (cells[..., k] for k in range(4))
    kept = 0
    for factor in (0.5, 1.0, 2.0):
        boxes = digit_boxes(spec.with_factors(factor).factors, spec.centers, 224, spec.layouts)
        x, y, n = boxes[..., 0], boxes[..., 1], boxes[..., 2]
        want_x, want_y = x0 + spec.centers[..., 0] * cw, y0 + spec.centers[..., 1] * ch
        free = (x > x0) & (x + n < x0 + cw) & (y > y0) & (y + n < y0 + ch)
        # unclipped digits keep their centre, in both directions
        assert np.all(np.abs(x + n / 2 - want_x)[free] <= 1.0)
        assert np.all(np.abs(y + n / 2 - want_y)[free] <= 1.0)
        kept += int(free.sum())
    assert kept > 48  # the check above is not vacuous
    x = ds.render(np.arange(4), 1.0)
    assert x.shape == (4, 1, 224, 224) and x.dtype == torch.uint8
    assert SceneSpec.__name__ and spec[np.arange(4)].labels.tolist() == spec.labels[:4].tolist()


def test_layout_geometry_and_canvases_too_small_for_a_layout():
    # 224: columns 74 wide, rows 74 high, diagonal cells 74 x 74, all offset by one pixel
    assert cell_geometry(224, "vertical")[0].tolist() == [
        [0, 1, 224, 74],
        [0, 75, 224, 74],
        [0, 149, 224, 74],
    ]
    assert cell_geometry(224, "diagonal")[0][:, :2].tolist() == [[1, 1], [75, 75], [149, 149]]
    boxes = digit_boxes(np.full((1, 3), 3.0), np.full((1, 3, 2), 0.5), 224, "diagonal")[0]
    assert boxes.tolist() == [[1, 1, 74], [75, 75, 74], [149, 149, 74]]  # factor 3 fills each cell
    assert check_canvas((9, 3), "vertical") == (9, 3) and check_canvas((3, 9), "horizontal") == (3, 9)
    for canvas, layout in (
        ((8, 96), "vertical"),
        ((96, 8), "diagonal"),
        ((8, 96), "all"),
        ((96, 8), "horizontal"),
    ):
        with pytest.raises(ValueError, match=f"too small for the {layout} layout"):
            check_canvas(canvas, layout)
    with pytest.raises(ValueError, match="layout must be one of"):
        sample_scenes(np.arange(10), 2, seed=0, stream=0, layout="spiral")
    with pytest.raises(ValueError, match="names no geometry"):
        digit_boxes(np.ones((1, 3)), np.full((1, 3, 2), 0.5), 224, "all")
    with pytest.raises(ValueError, match="layout codes"):
        SceneSpec(
            np.zeros((1, 3), np.int64), np.ones((1, 3)), np.zeros((1, 3, 2)), np.zeros(1), np.array([3])
        )
    # the data option names itself, checked when the options are built
    assert MnistData(canvas=96, canvas_height=9, layout="all").size == (9, 96)
    with pytest.raises(ValueError, match=r"data.canvas 96, data.canvas_height 8: .* data.layout vertical"):
        MnistData(canvas=96, canvas_height=8, layout="vertical")
    with pytest.raises(ValueError, match=r"data.canvas 8: .* data.layout horizontal"):
        MnistData(canvas=8)


def test_all_draws_each_layout_about_a_third_of_the_time():
    spec = sample_scenes(np.arange(10), 3000, seed=0, stream=0, layout="all")
    counts = np.bincount(spec.layouts, minlength=3)
    assert counts.sum() == 3000 and (np.abs(counts - 1000) < 100).all()


def test_scene_records_keep_their_layouts(tmp_path):
    spec = sample_scenes(np.arange(10), 30, seed=0, stream=0, layout="all")
    spec.save(tmp_path / "s.npz")
    back = SceneSpec.load(tmp_path / "s.npz")
    assert np.array_equal(back.layouts, spec.layouts) and np.array_equal(back[5:9].layouts, spec.layouts[5:9])
    assert SceneSpec(spec.digits, spec.factors, spec.centers, spec.labels).layouts.tolist() == [0] * 30


def test_the_split_cache_is_rebuilt_when_the_layout_changes(tmp_path):
    kw = dict(size=6, canvas=32, seed=0, progress=False)
    a = prepare_split(tmp_path, "test", **kw)
    assert a.meta.layout == "horizontal" and (a.spec.layouts == 0).all()
    stamp = (tmp_path / "test" / "scenes.npz").stat().st_mtime_ns
    assert prepare_split(tmp_path, "test", **kw, layout="horizontal").meta == a.meta  # reused
    assert (tmp_path / "test" / "scenes.npz").stat().st_mtime_ns == stamp
    b = prepare_split(tmp_path, "test", **kw, layout="diagonal")
    assert b.meta.layout == "diagonal" and (b.spec.layouts == 2).all()
    assert (tmp_path / "test" / "scenes.npz").stat().st_mtime_ns != stamp
    assert not np.array_equal(np.asarray(a.images), np.asarray(b.images))  # the rendering is redone too
    assert np.array_equal(np.asarray(b.images), render_scenes(b.pool, b.spec, 32))
    c = prepare_split(tmp_path, "test", size=6, canvas=None, seed=0, progress=False, layout="diagonal")
    assert np.array_equal(c.spec.layouts, b.spec.layouts)  # read back from the cache
    with pytest.raises(ValueError, match="too small for the vertical layout"):
        prepare_split(tmp_path, "test", size=6, canvas=(8, 32), seed=0, progress=False, layout="vertical")


def test_renderer_throughput_smoke():
    """A fast sanity floor (the real measurement is `lse-mnist data --benchmark`, see the docs)."""
    t = time.perf_counter()
    rate = benchmark_render(canvas=64, n=2048)
    assert rate > 200, rate
    assert time.perf_counter() - t < 30


@pytest.mark.slow
def test_renderer_reaches_1000_images_per_second_at_224():
    torch.set_num_threads(2)
    assert benchmark_render(canvas=224, n=8192) >= 1000
