"""The scene generator: layout guarantees, labels read back from renders, determinism, re-rendering."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lse_mnist.data import SceneDataset, SplitData, SplitMeta, benchmark_render
from lse_mnist.generator import (
    MAX_FACTOR,
    SceneSpec,
    digit_boxes,
    render_scenes,
    sample_factors,
    sample_scenes,
    slot_geometry,
)

CANVASES = [9, 10, 16, 24, 32, 63, 64, 112, 224, (32, 96), (9, 30), (100, 40), (24, 200)]


def _overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[2] and b[1] < a[1] + a[2]


@pytest.mark.parametrize("canvas", CANVASES, ids=str)
def test_digits_never_overlap_nor_leave_the_canvas_up_to_factor_3(canvas):
    height, width = (canvas, canvas) if isinstance(canvas, int) else canvas
    spec = sample_scenes(np.arange(10), 2000, seed=width, stream=0, scale_range=(0.4, MAX_FACTOR))
    extremes = np.array([[3.0, 3.0, 3.0], [0.01, 3.0, 0.01], [3.0, 0.4, 3.0]], dtype=np.float32)
    factors = np.concatenate([spec.factors, extremes])
    centers = np.concatenate([spec.centers, np.random.default_rng(0).random((3, 3, 2)).astype(np.float32)])
    # also centres at the very corners, which the clip must handle
    centers[-1] = [[0, 0], [1, 1], [0, 1]]
    boxes = digit_boxes(factors, centers, canvas)
    x, y, n = boxes[..., 0], boxes[..., 1], boxes[..., 2]
    assert (x >= 0).all() and (y >= 0).all() and (x + n <= width).all() and (y + n <= height).all()
    assert (n >= 1).all()
    for b in boxes[:300].tolist() + boxes[-3:].tolist():
        assert not _overlap(b[0], b[1]) and not _overlap(b[1], b[2]) and not _overlap(b[0], b[2])
    # left to right: every box of slot k lies left of every box of slot k + 1
    assert (x[:, 0] + n[:, 0] <= x[:, 1]).all() and (x[:, 1] + n[:, 1] <= x[:, 2]).all()


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
    with pytest.raises(ValueError, match="canvas"):
        slot_geometry((8, 96))
    # a strip: the height bounds the digits, factor 3 fills the height
    assert digit_boxes(np.array([[3.0, 1.0, 0.4]]), np.full((1, 3, 2), 0.5), (32, 96))[0, :, 2].tolist() == [
        32,
        11,
        4,
    ]


@pytest.mark.parametrize("canvas", [32, 224, (32, 96)], ids=str)
def test_labels_read_back_from_renders(canvas):
    # digit d is a flat square of intensity 20 * (d + 1): each box's value names its digit
    pool = np.stack([np.full((28, 28), 20 * (d + 1), np.uint8) for d in range(10)])
    spec = sample_scenes(np.arange(10), 64, seed=1, stream=2, scale_range=(0.4, 3.0))
    images = render_scenes(pool, spec, canvas)
    boxes = digit_boxes(spec.factors, spec.centers, canvas)
    for img, bx, label in zip(images, boxes, spec.labels, strict=True):
        read = []
        for x, y, n in bx:
            patch = img[y : y + n, x : x + n]
            assert (patch == patch.flat[0]).all()
            read.append(int(patch.flat[0]) // 20 - 1)
        assert 100 * read[0] + 10 * read[1] + read[2] == label  # left to right
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


def test_scenes_are_a_function_of_seed_stream_and_index():
    labels = np.arange(10)
    a = sample_scenes(labels, 100, seed=3, stream=0)
    b = sample_scenes(labels, 40, seed=3, stream=0)  # a prefix: same scenes whatever the data set size
    for field in ("digits", "factors", "centers", "labels"):
        assert np.array_equal(getattr(a, field)[:40], getattr(b, field))
    assert not np.array_equal(a.digits, sample_scenes(labels, 100, seed=3, stream=1).digits)
    assert not np.array_equal(a.factors, sample_scenes(labels, 100, seed=4, stream=0).factors)
    f = sample_factors(10, 8, seed=0, stream=10)
    assert f.shape == (10, 8, 3) and np.array_equal(f[:5], sample_factors(5, 8, seed=0, stream=10))


def _dataset(n=24, canvas=32) -> SceneDataset:
    pool = np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    spec = sample_scenes(np.arange(10), n, seed=0, stream=0)
    meta = SplitMeta("train", n, 0, (0.4, 2.0), "test", 0.1)
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


def test_rerendering_keeps_digits_and_centres():
    ds = _dataset(canvas=224)
    spec = ds.data.spec
    same = render_scenes(ds.data.pool, spec.with_factors(spec.factors), 224)
    assert np.array_equal(same, render_scenes(ds.data.pool, spec, 224))
    for factor in (0.5, 1.0, 2.0):
        boxes = digit_boxes(spec.with_factors(factor).factors, spec.centers, 224)
        w, off, _ = slot_geometry(224)
        centre_x = boxes[..., 0] + boxes[..., 2] / 2
        wanted = off + w * np.arange(3) + spec.centers[..., 0] * w
        free = (boxes[..., 0] > off + w * np.arange(3)) & (
            boxes[..., 0] + boxes[..., 2] < off + w * np.arange(1, 4)
        )
        assert np.all(np.abs(centre_x - wanted)[free] <= 1.0)  # unclipped digits keep their centre
    x = ds.render(np.arange(4), 1.0)
    assert x.shape == (4, 1, 224, 224) and x.dtype == torch.uint8
    assert SceneSpec.__name__ and spec[np.arange(4)].labels.tolist() == spec.labels[:4].tolist()


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
