"""Drawing the scenes: which objects, how far away, where in the image, how turned, in front of what.

The camera is a pinhole at the origin looking along the world's ``+y`` axis (``+z`` up) with a field of view
of ``fov`` degrees, so the image of a point at depth ``z`` is magnified by ``1 / z``. Every object is
normalised to a bounding sphere of radius 1 (``classes.json``), and its *reference depth* ``z_ref`` is where
that sphere spans ``object_size`` of the image side. An object of *scale* ``s`` sits at depth
``z = z_ref / s`` on the camera ray through its image centre ``(u, v)``: moving along that ray changes its
apparent size by exactly ``s`` and leaves its centre, its silhouette's shape and everything else in the image
where they were. That is the local scaling of the paper (each object is scaled about its own centre by its
own factor, Eq. (9)); the distance variants of a test scene (`SceneSampler.sample`) change only the ``s``
of each object.

Placement keeps every object in view and unoccluded: the bounding circle of radius ``r = object_size s / 2``
(image fractions) may stick out of the image by at most 20 % of ``r`` and two objects' circles overlap by at
most 10 % of the sum of their radii. For a test scene the circles are those of the largest of the scene's own
scale and its variants' scales, so that every variant obeys the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "Scene",
    "SceneSampler",
    "random_quaternions",
]

EDGE = 0.8
"""Centres keep ``EDGE * r`` away from the image border (a fifth of the bounding circle may stick out)."""
SEPARATION = 0.9
"""Two centres are at least ``SEPARATION * (r1 + r2)`` apart."""
CROP_SIDE = (0.5, 1.0)
"""Background crop side, a fraction of the picture's shorter side."""


@dataclass(frozen=True)
class Scene:
    """One scene, without pixels (``K`` objects).

    Args:
        classes: `(K,)` class labels in ``1..num_classes`` (distinct).
        scales: `(K,)` apparent scale of each object relative to the reference depth.
        centers: `(K, 2)` image position ``(u, v)`` of each object's centre, fractions of width and height
            (``(0, 0)`` top left).
        orientations: `(K, 4)` quaternions ``(x, y, z, w)``.
        background: index of the background picture.
        crop: `(3,)` the background crop ``(x, y, side)`` (see `Backgrounds.crop`).
        flip: mirror the background left-right.
        light: `(6,)` light direction ``(x, y, z)`` and the ambient, diffuse and specular coefficients.
    """

    classes: np.ndarray
    scales: np.ndarray
    centers: np.ndarray
    orientations: np.ndarray
    background: int
    crop: np.ndarray
    flip: bool
    light: np.ndarray

    def with_scales(self, scales: np.ndarray) -> Scene:
        """The same scene with other object scales (the objects move along their camera rays)."""
        scales = np.asarray(scales, dtype=np.float64)
        if scales.shape != self.scales.shape:
            raise ValueError(f"scales must have shape {self.scales.shape}, got {scales.shape}")
        return replace(self, scales=scales)


def random_quaternions(rng: np.random.Generator, n: int) -> np.ndarray:
    """`(n, 4)` rotations uniform on SO(3), ``(x, y, z, w)`` quaternions (normalised Gaussian 4-vectors)."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q * np.where(q[:, 3:] < 0, -1.0, 1.0)


@dataclass(frozen=True)
class SceneSampler:
    """Draws scenes and their distance variants (see the module docstring).

    Args:
        num_classes: classes to draw from (labels ``1..num_classes``).
        objects: objects per scene (distinct classes).
        scale_range: object scales ``U[low, high]``.
        object_size: bounding-sphere diameter at scale 1, a fraction of the image side.
        num_backgrounds: size of the background pool.
    """

    num_classes: int
    objects: int
    scale_range: tuple[float, float]
    object_size: float
    num_backgrounds: int

    def __post_init__(self) -> None:
        if self.objects > self.num_classes:
            raise ValueError(f"objects ({self.objects}) must not exceed num_classes ({self.num_classes})")
        if self.num_backgrounds < 1:
            raise ValueError(f"num_backgrounds must be >= 1, got {self.num_backgrounds}")

    def scales(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Scales ``U[scale_range]`` of the given shape."""
        low, high = self.scale_range
        return rng.uniform(low, high, size=shape)

    def place(self, rng: np.random.Generator, radii: np.ndarray, tries: int = 200) -> np.ndarray | None:
        """`(K, 2)` centres for bounding circles of ``radii`` (image fractions) that obey the placement rule,
        or ``None`` when ``tries`` random draws found none."""
        k = len(radii)
        low = EDGE * radii
        if np.any(low >= 1 - low):
            return None
        need = SEPARATION * (radii[:, None] + radii[None, :])
        off_diag = ~np.eye(k, dtype=bool)
        c = low[:, None] + rng.random((tries, k, 2)) * (1 - 2 * low)[:, None]
        dist = np.linalg.norm(c[:, :, None] - c[:, None], axis=-1)
        ok = np.all((dist >= need) | ~off_diag, axis=(1, 2))
        if ok.any():
            return c[int(np.argmax(ok))]
        return None

    def sample(self, rng: np.random.Generator, variants: int = 0) -> tuple[Scene, np.ndarray]:
        """A scene and `(variants, K)` scales of its distance variants (`(0, K)` when ``variants`` is 0).

        Args:
            rng: the scene's random generator (its draws make the scene).
            variants: number of distance variants.
        """
        k = self.objects
        while True:
            scales = self.scales(rng, (1 + variants, k))
            radii = self.object_size * scales.max(axis=0) / 2
            centers = self.place(rng, radii)
            if centers is not None:
                break
        classes = rng.choice(self.num_classes, size=k, replace=False) + 1
        direction = np.array([rng.uniform(-1, 1), rng.uniform(-1, -0.2), rng.uniform(0.3, 1)])
        light = np.concatenate(
            [
                direction / np.linalg.norm(direction),
                [rng.uniform(0.4, 0.7), rng.uniform(0.4, 0.7), rng.uniform(0, 0.4)],
            ]
        )
        scene = Scene(
            classes=classes.astype(np.int64),
            scales=scales[0],
            centers=centers,
            orientations=random_quaternions(rng, k),
            background=int(rng.integers(self.num_backgrounds)),
            crop=np.array([rng.random(), rng.random(), rng.uniform(*CROP_SIDE)]),
            flip=bool(rng.random() < 0.5),
            light=light,
        )
        return scene, scales[1:]
