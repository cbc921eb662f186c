r"""The group interface of monotone scalings and its lazy elements: inverse and composition.

`ScalingMap` is what every element offers: the map $l: [0, 1]^2 \to [0, 1]^2$ and its exact inverse at
points and on pixel grids, local scales (Jacobians), an exact invertibility test and the group operations.
Composition (eq. 9) and inverse leave the knot family of `monowarp.MonotoneScale`; they are represented
exactly by lazy objects (`InverseScaling`, `ScalingChain`) that share the interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch

from ._utils import check_size, check_tensor, pixel_coordinates

__all__ = ["InverseScaling", "ScalingChain", "ScalingMap"]


# ================================================================================================ base class
class ScalingMap(ABC):
    r"""A batch of elements of the 2-D monotone scaling group: maps $l: [0, 1]^2 \to [0, 1]^2$.

    Points are `(B, P, 2)` tensors of $(x, y)$ in $[0, 1]^2$, x horizontal, y vertical. The group product is
    composition (eq. 9): ``a.compose(b)`` maps $p$ to $a(b(p))$.
    """

    # ----------------------------------------------------------------------------------- abstract interface
    @property
    @abstractmethod
    def batch_size(self) -> int:
        """Number of elements ``B`` in the batch."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Device of the tensors the map is built from."""

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype:
        """Floating point dtype of the map."""

    @abstractmethod
    def forward_map(self, points: torch.Tensor) -> torch.Tensor:
        """$l(p)$ for points `(B, P, 2)` -> `(B, P, 2)`."""

    @abstractmethod
    def inverse_map(self, points: torch.Tensor) -> torch.Tensor:
        """$l^{-1}(p)$ for points `(B, P, 2)` in $[0, 1]^2$ -> `(B, P, 2)`."""

    @abstractmethod
    def local_scale(self, points: torch.Tensor) -> torch.Tensor:
        r"""Jacobian $\partial l / \partial p$ at points `(B, P, 2)` -> `(B, P, 2, 2)`.

        Rows are the output coordinates $(l_X, l_Y)$, columns the derivatives $\partial/\partial x$,
        $\partial/\partial y$.
        """

    @abstractmethod
    def is_invertible(self) -> torch.Tensor:
        """`(B,)` bool: whether each element is a bijection of $[0, 1]^2$ (exact test)."""

    @abstractmethod
    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> ScalingMap:
        """The same map with ``fn`` applied to every tensor it is built from."""

    # --------------------------------------------------------------------------------------- group operations
    def inverse(self) -> ScalingMap:
        """The inverse element $l^{-1}$ (lazy: its ``forward_map`` is this map's ``inverse_map``)."""
        return InverseScaling(self)

    def compose(self, other: ScalingMap) -> ScalingMap:
        r"""The product ``self . other`` of eq. 9: the map $p \mapsto$ ``self(other(p))`` (lazy, exact).

        Raises:
            TypeError: ``other`` is not a `ScalingMap` or has another dtype.
            ValueError: batch sizes or devices differ.
        """
        if not isinstance(other, ScalingMap):
            raise TypeError(f"other must be a ScalingMap, got {type(other).__name__}")
        if other.batch_size != self.batch_size:
            raise ValueError(f"other must have batch size {self.batch_size}, got {other.batch_size}")
        if other.device != self.device:
            raise ValueError(f"other must be on device {self.device}, got {other.device}")
        if other.dtype != self.dtype:
            raise TypeError(f"other must have dtype {self.dtype}, got {other.dtype}")
        return ScalingChain([self, other])

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        return self.forward_map(points)

    # ------------------------------------------------------------------------------------------ dense maps
    def dense_map(self, size: Sequence[int], align_corners: bool = True) -> torch.Tensor:
        """$l$ at every pixel of an image of ``size`` $(H, W)$ -> `(B, H, W, 2)` points in $[0, 1]^2$.

        Pixel $(r, c)$ sits at $(c / (W - 1), r / (H - 1))$ with ``align_corners=True`` and at
        $((c + 1/2) / W, (r + 1/2) / H)$ otherwise.
        """
        h, w = check_size(size)
        pts = self._pixel_points(h, w, align_corners)
        return self.forward_map(pts).reshape(self.batch_size, h, w, 2)

    def dense_inverse_map(self, size: Sequence[int], align_corners: bool = True) -> torch.Tensor:
        """$l^{-1}$ at every pixel of an image of ``size`` $(H, W)$, `(B, H, W, 2)`; see `dense_map`."""
        h, w = check_size(size)
        pts = self._pixel_points(h, w, align_corners)
        return self.inverse_map(pts).reshape(self.batch_size, h, w, 2)

    def _pixel_points(self, h: int, w: int, align_corners: bool) -> torch.Tensor:
        xs = pixel_coordinates(w, align_corners=align_corners, device=self.device, dtype=self.dtype)
        ys = pixel_coordinates(h, align_corners=align_corners, device=self.device, dtype=self.dtype)
        pts = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(1, h * w, 2)
        return pts.expand(self.batch_size, h * w, 2)

    # -------------------------------------------------------------------------------------------- plumbing
    def to(self, *args, **kwargs) -> ScalingMap:
        """Move/cast every tensor like `torch.Tensor.to`."""
        return self._apply(lambda t: t.to(*args, **kwargs))

    def detach(self) -> ScalingMap:
        """The same map with every tensor detached from the autograd graph."""
        return self._apply(torch.Tensor.detach)

    def __getitem__(self, index: int | slice | torch.Tensor | list[int]) -> ScalingMap:
        """Batch indexing (int, slice, index list/tensor, bool mask); an int keeps the batch axis."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self._apply(lambda t: t[index])

    def __len__(self) -> int:
        return self.batch_size

    def _check_points(self, points: object, name: str = "points") -> torch.Tensor:
        points = check_tensor(points, name, [(self.batch_size, "P", 2)], finite=False, nonempty=False)
        if points.device != self.device:
            raise ValueError(f"{name} must be on device {self.device}, got {points.device}")
        if points.dtype != self.dtype:
            raise TypeError(f"{name} must have dtype {self.dtype}, got {points.dtype}")
        return points


# ======================================================================================== lazy group elements
class InverseScaling(ScalingMap):
    """The inverse $l^{-1}$ of a `ScalingMap`, evaluated lazily and exactly.

    ``forward_map`` is the parent's ``inverse_map`` and vice versa; its Jacobian at $p$ is the inverse of the
    parent's Jacobian at $l^{-1}(p)$. ``inverse()`` returns the parent.

    Examples:
        >>> from monowarp import sample_monotone_scale
        >>> g = sample_monotone_scale(2, generator=torch.Generator().manual_seed(0))
        >>> h = g.inverse()
        >>> p = torch.rand(2, 5, 2)
        >>> bool((h.forward_map(g.forward_map(p)) - p).abs().max() < 1e-5)
        True
    """

    def __init__(self, parent: ScalingMap) -> None:
        if not isinstance(parent, ScalingMap):
            raise TypeError(f"parent must be a ScalingMap, got {type(parent).__name__}")
        self.parent = parent

    @property
    def batch_size(self) -> int:
        return self.parent.batch_size

    @property
    def device(self) -> torch.device:
        return self.parent.device

    @property
    def dtype(self) -> torch.dtype:
        return self.parent.dtype

    def __repr__(self) -> str:
        return f"InverseScaling({self.parent!r})"

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> InverseScaling:
        return InverseScaling(self.parent._apply(fn))

    def inverse(self) -> ScalingMap:
        return self.parent

    def forward_map(self, points: torch.Tensor) -> torch.Tensor:
        return self.parent.inverse_map(points)

    def inverse_map(self, points: torch.Tensor) -> torch.Tensor:
        return self.parent.forward_map(points)

    def dense_map(self, size: Sequence[int], align_corners: bool = True) -> torch.Tensor:
        return self.parent.dense_inverse_map(size, align_corners)

    def dense_inverse_map(self, size: Sequence[int], align_corners: bool = True) -> torch.Tensor:
        return self.parent.dense_map(size, align_corners)

    def local_scale(self, points: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(self.parent.local_scale(self.parent.inverse_map(points)))

    def is_invertible(self) -> torch.Tensor:
        return self.parent.is_invertible()


class ScalingChain(ScalingMap):
    """The composition ``maps[0] o maps[1] o ... o maps[-1]`` (evaluated right to left), lazily and exactly.

    Built by `ScalingMap.compose`; nested chains are flattened. Its Jacobian follows the chain rule,
    its inverse is the chain of the inverses in reverse order.

    Examples:
        >>> from monowarp import MonotoneScale
        >>> a = MonotoneScale.from_params(torch.randn(2, 40) * 0.3)
        >>> b = MonotoneScale.from_params(torch.randn(2, 40) * 0.3)
        >>> ab = a.compose(b)
        >>> p = torch.rand(2, 5, 2)
        >>> bool((ab.forward_map(p) - a.forward_map(b.forward_map(p))).abs().max() == 0)
        True
    """

    def __init__(self, maps: Sequence[ScalingMap]) -> None:
        flat: list[ScalingMap] = []
        for mp in maps:
            if not isinstance(mp, ScalingMap):
                raise TypeError(f"maps must be ScalingMap objects, got {type(mp).__name__}")
            flat.extend(mp.maps if isinstance(mp, ScalingChain) else (mp,))
        if not flat:
            raise ValueError("maps must contain at least one ScalingMap")
        first = flat[0]
        for mp in flat[1:]:
            if mp.batch_size != first.batch_size:
                raise ValueError(
                    f"maps must share one batch size, got {first.batch_size} and {mp.batch_size}"
                )
            if mp.device != first.device or mp.dtype != first.dtype:
                raise ValueError("maps must share one device and dtype")
        self.maps: tuple[ScalingMap, ...] = tuple(flat)

    @property
    def batch_size(self) -> int:
        return self.maps[0].batch_size

    @property
    def device(self) -> torch.device:
        return self.maps[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.maps[0].dtype

    def __repr__(self) -> str:
        return "ScalingChain([" + ", ".join(repr(mp) for mp in self.maps) + "])"

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> ScalingChain:
        return ScalingChain([mp._apply(fn) for mp in self.maps])

    def inverse(self) -> ScalingMap:
        return ScalingChain([mp.inverse() for mp in reversed(self.maps)])

    def forward_map(self, points: torch.Tensor) -> torch.Tensor:
        for mp in reversed(self.maps):
            points = mp.forward_map(points)
        return points

    def inverse_map(self, points: torch.Tensor) -> torch.Tensor:
        for mp in self.maps:
            points = mp.inverse_map(points)
        return points

    def dense_map(self, size: Sequence[int], align_corners: bool = True) -> torch.Tensor:
        h, w = check_size(size)
        pts = self.maps[-1].dense_map((h, w), align_corners).reshape(self.batch_size, h * w, 2)
        for mp in reversed(self.maps[:-1]):
            pts = mp.forward_map(pts)
        return pts.reshape(self.batch_size, h, w, 2)

    def dense_inverse_map(self, size: Sequence[int], align_corners: bool = True) -> torch.Tensor:
        h, w = check_size(size)
        pts = self.maps[0].dense_inverse_map((h, w), align_corners).reshape(self.batch_size, h * w, 2)
        for mp in self.maps[1:]:
            pts = mp.inverse_map(pts)
        return pts.reshape(self.batch_size, h, w, 2)

    def local_scale(self, points: torch.Tensor) -> torch.Tensor:
        jac = None
        for mp in reversed(self.maps):
            j = mp.local_scale(points)
            jac = j if jac is None else j @ jac
            points = mp.forward_map(points)
        assert jac is not None
        return jac

    def is_invertible(self) -> torch.Tensor:
        out = self.maps[0].is_invertible()
        for mp in self.maps[1:]:
            out = out & mp.is_invertible()
        return out
