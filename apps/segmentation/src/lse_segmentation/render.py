"""Rendering the scenes with pybullet's CPU renderer and compositing them over the backgrounds.

Each process holds its own pybullet client (``DIRECT`` mode, no window, no GPU). A scene is rendered by
loading its objects (meshes of ``pybullet_data``, listed in ``classes.json``) scaled to a bounding sphere of
radius 1, placing each one on the camera ray of its image centre at depth ``z_ref / s``
(`lse_segmentation.scenes`), and calling ``getCameraImage`` with the tiny renderer, which returns the colour
image and a per-pixel segmentation of body ids. The ids become class labels (0 where no object is), and the
object pixels are pasted over the scene's background crop: the background of an image is exactly its photo,
whatever the objects do.

With ``settle`` each object is first dropped from its random orientation onto a ground plane in a second,
physics-only client and left to come to rest for one simulated second; the orientation it rests in, tilted
towards the camera by ``U[10, 40]`` degrees, replaces the random one (objects then show the poses they take
on a table rather than arbitrary ones).

`generate_scene` draws and renders scene ``index`` of a split from its own seed sequence ``(seed, stream,
index)``, re-drawing a scene whose objects are not all visible over at least ``min_visible`` of the image (in
the scene and in each of its distance variants), so a split does not depend on the number of processes.
`render_scenes` runs it over many scenes, in worker processes (``spawn``) when asked.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pybullet as p
import pybullet_data

from .backgrounds import Backgrounds, load_backgrounds
from .scenes import Scene, SceneSampler

__all__ = [
    "MAX_CLASSES",
    "ObjectClass",
    "RenderConfig",
    "RenderedScene",
    "Renderer",
    "Shot",
    "benchmark_render",
    "generate_scene",
    "load_classes",
    "render_scenes",
]

NEAR, FAR = 0.1, 200.0
SETTLE_STEPS = 240
MAX_REDRAWS = 100


@dataclass(frozen=True)
class ObjectClass:
    """One object class: its label, name and mesh.

    Args:
        id: the mask label (``1..100``; 0 is the background).
        name: a short name.
        kind: ``urdf`` (loaded with ``loadURDF``) or ``obj`` (a bare Wavefront mesh).
        path: the file, relative to ``pybullet_data``.
        scale: the factor that scales the mesh's bounding sphere to radius 1.
        rgba: the colour of a bare mesh (its material's), or ``None``.
    """

    id: int
    name: str
    kind: str
    path: str
    scale: float
    rgba: tuple[float, float, float, float] | None = None


@lru_cache(maxsize=1)
def _all_classes() -> tuple[ObjectClass, ...]:
    doc = json.loads(resources.files("lse_segmentation").joinpath("classes.json").read_text())
    return tuple(
        ObjectClass(**{**c, "rgba": tuple(c["rgba"]) if "rgba" in c else None}) for c in doc["classes"]
    )


MAX_CLASSES = 100
"""Classes listed in ``classes.json`` (the paper's 100 objects)."""


def load_classes(num_classes: int | None = None) -> tuple[ObjectClass, ...]:
    """The first ``num_classes`` object classes of ``classes.json`` (all 100 by default).

    Raises:
        ValueError: if ``num_classes`` is not in ``[1, 100]``.
    """
    classes = _all_classes()
    n = len(classes) if num_classes is None else num_classes
    if not 1 <= n <= len(classes):
        raise ValueError(f"num_classes must be in [1, {len(classes)}], got {num_classes}")
    return classes[:n]


@dataclass(frozen=True)
class RenderConfig:
    """Everything that makes the scenes of one split (a picklable description for worker processes).

    Args:
        size: image side in pixels.
        num_classes: object classes drawn from (the first ones of ``classes.json``).
        objects: objects per image.
        scale_range: object scales ``U[low, high]``.
        object_size: bounding-sphere diameter at scale 1, a fraction of the image side.
        fov: the camera's field of view in degrees.
        variants: distance variants per scene.
        settle: physics settle of the objects' poses.
        min_visible: smallest visible area of an object, a fraction of the image.
        backgrounds: a folder of backgrounds, or ``None`` for the built-in pool.
        seed: the data seed.
        stream: the split's stream (train 0, val 1, test 2).
    """

    size: int = 256
    num_classes: int = 100
    objects: int = 2
    scale_range: tuple[float, float] = (0.5, 2.0)
    object_size: float = 0.3
    fov: float = 40.0
    variants: int = 0
    settle: bool = False
    min_visible: float = 0.002
    backgrounds: str | None = None
    seed: int = 0
    stream: int = 0

    @property
    def ref_depth(self) -> float:
        """``z_ref``: the depth at which a unit bounding sphere spans ``object_size`` of the image."""
        return 1.0 / (self.object_size * math.tan(math.radians(self.fov) / 2))


class Shot(NamedTuple):
    """One rendering of a scene.

    Args:
        image: `(H, W, 3)` uint8, the objects over the background crop.
        mask: `(H, W)` uint8 class labels, 0 = background.
        visible: `(K,)` visible pixels of each object.
        depth: `(H, W)` float32 depth buffer in ``[0, 1]`` (1 where no object is).
    """

    image: np.ndarray
    mask: np.ndarray
    visible: np.ndarray
    depth: np.ndarray


@dataclass
class RenderedScene:
    """A rendered scene and its distance variants.

    Args:
        index: the scene's index in its split.
        scene: what was drawn.
        image: `(H, W, 3)` uint8.
        mask: `(H, W)` uint8 class labels, 0 = background.
        visible: `(K,)` visible pixels of each object.
        variant_scales: `(V, K)`.
        variant_images: `(V, H, W, 3)` uint8.
        variant_masks: `(V, H, W)` uint8.
        redraws: scenes drawn and rejected before this one.
    """

    index: int
    scene: Scene
    image: np.ndarray
    mask: np.ndarray
    visible: np.ndarray
    variant_scales: np.ndarray
    variant_images: np.ndarray
    variant_masks: np.ndarray
    redraws: int = 0


def _rotation(q: np.ndarray) -> np.ndarray:
    return np.asarray(p.getMatrixFromQuaternion([float(v) for v in q]), dtype=np.float64).reshape(3, 3)


@dataclass
class Renderer:
    """One pybullet client that renders scenes of a `RenderConfig` (see the module docstring).

    Args:
        config: the split's settings.
        backgrounds: the background pool (default: loaded from ``config.backgrounds``).
    """

    config: RenderConfig
    backgrounds: Backgrounds | None = None
    classes: tuple[ObjectClass, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.classes = load_classes(self.config.num_classes)
        if self.backgrounds is None:
            self.backgrounds = load_backgrounds(self.config.backgrounds, size=self.config.size)
        self._client = p.connect(p.DIRECT)
        self._physics: int | None = None
        self._shapes: dict[int, tuple[int, int]] = {}
        self._bodies: list[int] = []
        self._root = Path(pybullet_data.getDataPath())
        c = self.config
        self._view = p.computeViewMatrix([0, 0, 0], [0, 1, 0], [0, 0, 1], physicsClientId=self._client)
        self._proj = p.computeProjectionMatrixFOV(c.fov, 1.0, NEAR, FAR, physicsClientId=self._client)

    def close(self) -> None:
        """Disconnect the pybullet clients."""
        for client in (self._client, self._physics):
            if client is not None and p.isConnected(client):
                p.disconnect(client)
        self._physics = None

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sampler(self) -> SceneSampler:
        """The scene sampler of this configuration."""
        c = self.config
        return SceneSampler(
            c.num_classes, c.objects, tuple(c.scale_range), c.object_size, len(self.backgrounds)
        )

    def _load(self, label: int, client: int) -> tuple[int, np.ndarray]:
        """Load class ``label`` normalised to a unit bounding sphere; its body id and the offset of its
        bounding-box centre from the base frame (in the base frame). The render client keeps the parsed
        meshes between scenes (pybullet's graphics-shape cache, and the shapes of bare meshes)."""
        cls = self.classes[label - 1]
        path = str(self._root / cls.path)
        if cls.kind == "urdf":
            flags = p.URDF_ENABLE_CACHED_GRAPHICS_SHAPES if client == self._client else 0
            body = p.loadURDF(path, globalScaling=cls.scale, flags=flags, physicsClientId=client)
        else:
            shapes = self._shapes.get(label) if client == self._client else None
            if shapes is None:
                scale = [cls.scale] * 3
                shapes = (
                    p.createCollisionShape(
                        p.GEOM_MESH, fileName=path, meshScale=scale, physicsClientId=client
                    ),
                    p.createVisualShape(
                        p.GEOM_MESH,
                        fileName=path,
                        meshScale=scale,
                        rgbaColor=list(cls.rgba) if cls.rgba else None,
                        physicsClientId=client,
                    ),
                )
                if client == self._client:
                    self._shapes[label] = shapes
            body = p.createMultiBody(0.1, *shapes, physicsClientId=client)
        pos, orn = p.getBasePositionAndOrientation(body, physicsClientId=client)
        low, high = p.getAABB(body, physicsClientId=client)
        centre = (np.asarray(low) + np.asarray(high)) / 2 - np.asarray(pos)
        return body, _rotation(np.asarray(orn)).T @ centre

    def settle(self, scene: Scene, rng: np.random.Generator) -> Scene:
        """``scene`` with each object's orientation replaced by the one it comes to rest in when dropped on a
        plane from its drawn orientation, tilted towards the camera by ``U[10, 40]`` degrees."""
        if self._physics is None:
            self._physics = p.connect(p.DIRECT)
        client = self._physics
        tilts = rng.uniform(10, 40, size=len(scene.classes))
        orientations = []
        for label, q, tilt in zip(scene.classes, scene.orientations, tilts, strict=True):
            p.resetSimulation(physicsClientId=client)
            p.setGravity(0, 0, -9.81, physicsClientId=client)
            p.loadURDF(str(self._root / "plane.urdf"), physicsClientId=client)
            body, _ = self._load(int(label), client)
            p.resetBasePositionAndOrientation(
                body, [0, 0, 1.5], [float(v) for v in q], physicsClientId=client
            )
            for _ in range(SETTLE_STEPS):
                p.stepSimulation(physicsClientId=client)
            _, rest = p.getBasePositionAndOrientation(body, physicsClientId=client)
            # a rotation about x by +tilt turns the up axis towards the camera (-y): seen from above
            tilt_q = p.getQuaternionFromEuler([math.radians(float(tilt)), 0, 0])
            orientations.append(p.multiplyTransforms([0, 0, 0], tilt_q, [0, 0, 0], rest)[1])
        return Scene(**{**scene.__dict__, "orientations": np.asarray(orientations, dtype=np.float64)})

    def position(self, center: np.ndarray, scale: float) -> np.ndarray:
        """`(3,)` world position of an object centre at image position ``center`` and ``scale``."""
        c = self.config
        t = math.tan(math.radians(c.fov) / 2)
        z = c.ref_depth / float(scale)
        u, v = float(center[0]), float(center[1])
        return np.array([(2 * u - 1) * t * z, z, -(2 * v - 1) * t * z])

    def render(self, scene: Scene) -> Shot:
        """Render ``scene`` over its background (image, mask, visible pixels per object, depth buffer)."""
        c, client = self.config, self._client
        for body in self._bodies:
            p.removeBody(body, physicsClientId=client)
        self._bodies = bodies = []
        for label, center, scale, q in zip(
            scene.classes, scene.centers, scene.scales, scene.orientations, strict=True
        ):
            body, offset = self._load(int(label), client)
            pos = self.position(center, scale) - _rotation(q) @ offset
            p.resetBasePositionAndOrientation(
                body, pos.tolist(), [float(v) for v in q], physicsClientId=client
            )
            bodies.append(body)
        light = scene.light
        _, _, rgba, depth, seg = p.getCameraImage(
            c.size,
            c.size,
            self._view,
            self._proj,
            renderer=p.ER_TINY_RENDERER,
            lightDirection=[float(v) for v in light[:3]],
            lightAmbientCoeff=float(light[3]),
            lightDiffuseCoeff=float(light[4]),
            lightSpecularCoeff=float(light[5]),
            shadow=0,
            physicsClientId=client,
        )
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(c.size, c.size, 4)[..., :3]
        seg = np.asarray(seg).reshape(c.size, c.size)
        lut = np.zeros(max(bodies) + 2, dtype=np.uint8)  # seg is -1 where no body is: lut[-1] = 0
        lut[np.asarray(bodies)] = np.asarray(scene.classes, dtype=np.uint8)
        mask = lut[seg]
        visible = (mask[None] == np.asarray(scene.classes, dtype=np.uint8)[:, None, None]).sum(axis=(1, 2))
        background = self.backgrounds.crop(scene.background, scene.crop, scene.flip, c.size)
        image = np.where(mask[..., None] > 0, rgb, background)
        return Shot(image, mask, visible, np.asarray(depth, dtype=np.float32).reshape(c.size, c.size))


def generate_scene(renderer: Renderer, index: int) -> RenderedScene:
    """Draw and render scene ``index`` of the renderer's split and its distance variants (deterministic in
    ``(seed, stream, index)``; see the module docstring)."""
    c = renderer.config
    rng = np.random.default_rng([c.seed, c.stream, index])
    sampler = renderer.sampler()
    least = c.min_visible * c.size * c.size
    for redraws in range(MAX_REDRAWS):
        scene, variant_scales = sampler.sample(rng, c.variants)
        if c.settle:
            scene = renderer.settle(scene, rng)
        shot = renderer.render(scene)
        if np.any(shot.visible < least):
            continue
        shots = [renderer.render(scene.with_scales(s)) for s in variant_scales]
        if any(np.any(s.visible < least) for s in shots):
            continue
        h = w = c.size
        return RenderedScene(
            index=index,
            scene=scene,
            image=shot.image,
            mask=shot.mask,
            visible=shot.visible,
            variant_scales=variant_scales,
            variant_images=np.stack([s.image for s in shots]) if shots else np.zeros((0, h, w, 3), np.uint8),
            variant_masks=np.stack([s.mask for s in shots]) if shots else np.zeros((0, h, w), np.uint8),
            redraws=redraws,
        )
    raise RuntimeError(
        f"scene {index}: no draw in {MAX_REDRAWS} kept every object visible over min_visible {c.min_visible} "
        "of the image; lower data.min_visible or raise data.object_size"
    )


_WORKER: Renderer | None = None


def _init_worker(config: RenderConfig) -> None:
    global _WORKER
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER = Renderer(config)


def _work(index: int) -> RenderedScene:
    assert _WORKER is not None, "worker not initialised"
    return generate_scene(_WORKER, index)


def render_scenes(
    config: RenderConfig, indices: Sequence[int], *, workers: int = 1, chunksize: int = 4
) -> Iterator[RenderedScene]:
    """Render the scenes ``indices`` of a split, in order.

    Args:
        config: the split's settings.
        indices: scene indices.
        workers: processes (1: in this process; each worker holds its own pybullet client).
        chunksize: scenes handed to a worker at a time.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1 or len(indices) <= chunksize:
        with Renderer(config) as renderer:
            for i in indices:
                yield generate_scene(renderer, int(i))
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(config,)) as pool:
        yield from pool.imap(_work, [int(i) for i in indices], chunksize=chunksize)


def benchmark_render(config: RenderConfig, *, scenes: int = 50, workers: int = 1) -> float:
    """Scenes rendered per second (images, not counting distance variants) with ``workers`` processes."""
    cfg = RenderConfig(**{**config.__dict__, "variants": 0})
    start = None
    n = 0
    for _ in render_scenes(cfg, range(scenes), workers=workers):
        if start is None:  # leave out start-up (worker spawn, background loading)
            start = time.perf_counter()
        else:
            n += 1
    elapsed = time.perf_counter() - start if start is not None else 0.0
    return n / elapsed if elapsed > 0 else float("nan")
