"""The renderer: deterministic scenes, masks that match the rendered objects, distance variants that change
only the objects' sizes, the class list and the backgrounds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pybullet_data
import pytest
from lse_segmentation.backgrounds import Backgrounds, background_sources, load_backgrounds, read_image
from lse_segmentation.render import (
    MAX_CLASSES,
    RenderConfig,
    Renderer,
    generate_scene,
    load_classes,
    render_scenes,
)
from lse_segmentation.scenes import EDGE, SEPARATION, SceneSampler

SMALL = RenderConfig(size=48, num_classes=12, object_size=0.4, variants=2, seed=3, stream=2)


@pytest.fixture(scope="module")
def backgrounds() -> Backgrounds:
    return load_backgrounds(size=96)


@pytest.fixture(scope="module")
def renderer(backgrounds):
    with Renderer(SMALL, backgrounds) as r:
        yield r


def test_class_list_is_the_documented_100_meshes():
    classes = load_classes()
    assert len(classes) == MAX_CLASSES == 100
    assert [c.id for c in classes] == list(range(1, 101))
    assert len({c.name for c in classes}) == 100 and len({c.path for c in classes}) == 100
    root = Path(pybullet_data.getDataPath())
    assert all((root / c.path).is_file() and c.kind in ("urdf", "obj") and c.scale > 0 for c in classes)
    assert load_classes(7) == classes[:7]
    with pytest.raises(ValueError, match="num_classes"):
        load_classes(101)


def test_class_list_matches_its_generator(renderer):
    # the file is what scripts/make_classes.py writes: re-measure a few meshes the same way
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "make_classes.py"
    spec = importlib.util.spec_from_file_location("make_classes", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import pybullet as p

    client = p.connect(p.DIRECT)
    try:
        for c in load_classes()[::33]:
            rec = mod.describe(client, c.name, c.kind, c.path)
            assert rec is not None and rec["scale"] == pytest.approx(c.scale, rel=1e-5)
    finally:
        p.disconnect(client)
    doc = json.loads((script.parents[1] / "src" / "lse_segmentation" / "classes.json").read_text())
    assert [c["name"] for c in doc["classes"][:3]] == [n for n, _, _ in mod.NAMED[:3]]


def test_renderer_is_deterministic(renderer, backgrounds):
    a = generate_scene(renderer, 5)
    b = generate_scene(renderer, 5)
    with Renderer(SMALL, backgrounds) as fresh:
        generate_scene(fresh, 9)  # another history in the client first
        c = generate_scene(fresh, 5)
    for other in (b, c):
        np.testing.assert_array_equal(a.image, other.image)
        np.testing.assert_array_equal(a.mask, other.mask)
        np.testing.assert_array_equal(a.variant_images, other.variant_images)
        np.testing.assert_array_equal(a.variant_scales, other.variant_scales)
    d = generate_scene(renderer, 6)
    assert not np.array_equal(a.image, d.image)


def test_worker_processes_render_the_same_scenes():
    cfg = RenderConfig(size=32, num_classes=5, object_size=0.45, seed=1)
    one = list(render_scenes(cfg, range(10), workers=1))
    two = list(render_scenes(cfg, range(10), workers=2, chunksize=2))
    assert [r.index for r in two] == list(range(10))
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)


def test_settled_poses_are_deterministic(backgrounds):
    cfg = RenderConfig(size=32, num_classes=6, object_size=0.45, settle=True, seed=2)
    with Renderer(cfg, backgrounds) as r:
        a, b = generate_scene(r, 0), generate_scene(r, 0)
        plain = generate_scene(Renderer(RenderConfig(**{**cfg.__dict__, "settle": False}), backgrounds), 0)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.scene.orientations, b.scene.orientations)
    assert not np.allclose(a.scene.orientations, plain.scene.orientations)


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_masks_match_the_rendered_objects(renderer, index):
    r = generate_scene(renderer, index)
    shot = renderer.render(r.scene)
    # every pixel the renderer drew an object on (depth buffer, independent of the segmentation) is labelled
    np.testing.assert_array_equal(shot.depth < 1.0, shot.mask > 0)
    labels = set(np.unique(shot.mask).tolist())
    assert labels == {0, *r.scene.classes.tolist()}
    assert all(1 <= c <= SMALL.num_classes for c in r.scene.classes)
    assert r.mask.dtype == np.uint8 and r.image.dtype == np.uint8 and r.image.shape == (48, 48, 3)
    # each label sits inside its object's bounding circle, around the drawn centre
    s = SMALL.size
    yy, xx = np.mgrid[0:s, 0:s]
    for label, (u, v), scale in zip(r.scene.classes, r.scene.centers, r.scene.scales, strict=True):
        inside = r.mask == label
        assert inside.sum() >= SMALL.min_visible * s * s
        radius = SMALL.object_size * scale / 2 * s * 1.25 + 1.5  # perspective stretches off-axis objects
        dist = np.hypot(xx + 0.5 - u * s, yy + 0.5 - v * s)
        assert dist[inside].max() <= radius
    # the background of the image is the background crop, untouched
    bg = renderer.backgrounds.crop(r.scene.background, r.scene.crop, r.scene.flip, s)
    np.testing.assert_array_equal(r.image[r.mask == 0], bg[r.mask == 0])


def test_distance_variants_change_object_sizes_not_the_background(backgrounds):
    cfg = RenderConfig(size=128, num_classes=12, object_size=0.3, variants=3, seed=7, stream=2)
    with Renderer(cfg, backgrounds) as renderer:
        for index in range(3):
            r = generate_scene(renderer, index)
            assert r.variant_images.shape == (3, 128, 128, 3) and r.variant_scales.shape == (3, 2)
            assert np.all((r.variant_scales >= 0.5) & (r.variant_scales <= 2.0))
            for v in range(3):
                vi, vm = r.variant_images[v], r.variant_masks[v]
                both_bg = (r.mask == 0) & (vm == 0)
                np.testing.assert_array_equal(vi[both_bg], r.image[both_bg])
                for k, label in enumerate(r.scene.classes):
                    ratio = r.variant_scales[v, k] / r.scene.scales[k]
                    area0, area1 = (r.mask == label).sum(), (vm == label).sum()
                    # area grows with the square of the scale (pixelation at small sizes: 30 %)
                    assert area1 / area0 == pytest.approx(ratio**2, rel=0.3)
                    c0 = np.argwhere(r.mask == label).mean(axis=0)
                    c1 = np.argwhere(vm == label).mean(axis=0)
                    assert np.abs(c0 - c1).max() < 0.08 * 128  # the object stays where it was


def test_sampler_placement_rule():
    sampler = SceneSampler(
        num_classes=20, objects=2, scale_range=(0.5, 2.0), object_size=0.3, num_backgrounds=4
    )
    rng = np.random.default_rng(0)
    for _ in range(50):
        scene, var = sampler.sample(rng, variants=3)
        assert (
            len(set(scene.classes.tolist())) == 2 and scene.classes.min() >= 1 and scene.classes.max() <= 20
        )
        radii = 0.3 * np.maximum(scene.scales, var.max(axis=0)) / 2
        assert np.all(scene.centers >= EDGE * radii[:, None] - 1e-9)
        assert np.all(scene.centers <= 1 - EDGE * radii[:, None] + 1e-9)
        assert np.linalg.norm(scene.centers[0] - scene.centers[1]) >= SEPARATION * radii.sum() - 1e-9
        assert np.allclose(np.linalg.norm(scene.orientations, axis=1), 1)
    with pytest.raises(ValueError, match="objects"):
        SceneSampler(num_classes=1, objects=2, scale_range=(1, 1), object_size=0.3, num_backgrounds=1)


def test_builtin_backgrounds_ship_in_packages(backgrounds):
    names = [n for n, _ in background_sources()]
    assert {"astronaut", "chelsea", "coffee", "rocket", "brick", "grass", "gravel"} <= set(names)
    assert backgrounds.names == tuple(names)
    for img in backgrounds.images:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) <= 192
    a = backgrounds.crop(0, np.array([0.2, 0.7, 0.6]), False, 40)
    b = backgrounds.crop(0, np.array([0.2, 0.7, 0.6]), True, 40)
    assert a.shape == (40, 40, 3)
    np.testing.assert_array_equal(a[:, ::-1], b)


def test_user_background_folder(tmp_path):
    from PIL import Image

    (tmp_path / "sub").mkdir()
    Image.fromarray(np.full((30, 50, 3), 200, np.uint8)).save(tmp_path / "sub" / "a.png")
    Image.fromarray(np.full((40, 40), 10, np.uint8)).save(tmp_path / "b.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    pool = load_backgrounds(tmp_path, size=16)
    assert pool.names == ("b.jpg", "sub/a.png")
    assert pool.images[1].shape == (30, 50, 3) and pool.images[0].shape == (32, 32, 3)
    cv2 = pytest.importorskip("cv2")
    hdr = np.linspace(0, 50, 20 * 40 * 3, dtype=np.float32).reshape(20, 40, 3)
    cv2.imwrite(str(tmp_path / "sky.hdr"), hdr)
    img = read_image(tmp_path / "sky.hdr")
    assert img.dtype == np.uint8 and img.shape == (20, 40, 3) and img.max() > img.min()
    with pytest.raises(FileNotFoundError, match=r"data\.backgrounds"):
        background_sources(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image"):
        background_sources(empty)
