r"""2-D monotone scalings (appendix A2.2) and the group operations on them.

A `MonotoneScale` with knot grid $x_i = i / N$, $y_j = j / M$ holds per-row functions $l_{y_j}$
(``knots_x[b, j, i]`` $= l_{y_j}(x_i)$) and per-column functions $l_{x_i}$ (``knots_y[b, i, j]``
$= l_{x_i}(y_j)$), each piecewise linear and strictly increasing from 0 to 1 (eqs. A27-A28). The map
$l = (l_X, l_Y)$ blends the row functions bilinearly in $y$ and the column functions in $x$ (eqs. A26, A29).
Equivalently, $l$ is the piecewise-bilinear interpolation of the control mesh

$$P_{j,i} = (\text{knots\_x}[j, i],\ \text{knots\_y}[i, j])$$

over the cells $[x_i, x_{i+1}] \times [y_j, y_{j+1}]$: on a cell with local coordinates $u, v \in [0, 1]$,
$l = a + e\,u + f\,v + g\,uv$ with $a = P_{00}$, $e = P_{10} - P_{00}$, $f = P_{01} - P_{00}$,
$g = P_{11} - P_{10} - P_{01} + P_{00}$.

Facts the implementation rests on:

* The Jacobian determinant on a cell, $(e + g v) \times (f + g u)$, is *affine* in $(u, v)$ (the $uv$ term is
  $g \times g = 0$), so it is positive on the cell iff it is positive at the four corners: an exact
  `MonotoneScale.is_invertible`. With the boundary fixed, a positive determinant everywhere makes $l$ a
  bijection of $[0, 1]^2$.
* The image of the grid line $x = x_i$ is the polyline through $P_{0,i}, \dots, P_{M,i}$, whose y
  coordinates increase, so it is a graph $x = f_i(y)$; for an invertible map the image of the column
  strip $i$ is the region between $f_i$ and $f_{i+1}$. Comparing a point with the $f_i$ (and with the row
  polylines $y = g_j(x)$) finds its cell exactly; the bilinear map of the cell is then inverted in closed
  form (a quadratic, solved without cancellation): an exact inverse, to a few ulps, at the cost of a few
  dozen element-wise operations per point.
* Gradients of the inverse with respect to the knots and the targets are those of one Newton step at the
  (detached) solution with the Jacobian held fixed, which is exactly the implicit-function-theorem gradient.

Composition and inverse leave the knot family; they are represented exactly by lazy objects
(`InverseScaling`, `ScalingChain`) that share the `ScalingMap` interface.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch

from ._utils import (
    check_grid,
    check_same_device_dtype,
    check_size,
    check_tensor,
    hat_weights,
    interp1d,
    knots_from_logits,
    logits_from_knots,
    pixel_coordinates,
    strictly_increasing,
)

__all__ = ["InverseScaling", "MonotoneScale", "ScalingChain", "ScalingMap"]


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
        check_tensor(points, name, (self.batch_size, "P", 2))
        assert isinstance(points, torch.Tensor)
        if points.device != self.device:
            raise ValueError(f"{name} must be on device {self.device}, got {points.device}")
        if points.dtype != self.dtype:
            raise TypeError(f"{name} must have dtype {self.dtype}, got {points.dtype}")
        return points


# ============================================================================================ MonotoneScale
class MonotoneScale(ScalingMap):
    r"""A batch of 2-D monotone scalings on an ``N x M`` knot grid (appendix A2.2, eqs. A26-A29).

    Args:
        knots_x: `(B, M+1, N+1)`; row ``j`` holds the row function $l_{y_j}$ at $x_0, \dots, x_N$, strictly
            increasing from 0 to 1.
        knots_y: `(B, N+1, M+1)`; row ``i`` holds the column function $l_{x_i}$ at $y_0, \dots, y_M$, strictly
            increasing from 0 to 1.
        validate: check shapes, dtype, device, finiteness, monotonicity and end points (synchronises with the
            device). `from_params` and the other constructors that are valid by construction skip it.

    Raises:
        TypeError: non-tensor or non-floating knots, or dtypes differ.
        ValueError: wrong shapes, batch sizes or devices differ, non-finite, not strictly increasing, or end
            points other than 0 and 1.

    Examples:
        >>> params = 0.2 * torch.randn(2, MonotoneScale.num_params((4, 3)))
        >>> g = MonotoneScale.from_params(params, grid=(4, 3))
        >>> g.knots_x.shape, g.knots_y.shape, g.grid
        (torch.Size([2, 4, 5]), torch.Size([2, 5, 4]), (4, 3))
        >>> from monowarp import sample_monotone_scale  # invertible by construction
        >>> g = sample_monotone_scale(2, (4, 3), generator=torch.Generator().manual_seed(0))
        >>> g.is_invertible()
        tensor([True, True])
        >>> p = torch.rand(2, 10, 2)
        >>> bool((g.forward_map(g.inverse_map(p)) - p).abs().max() < 1e-5)
        True
    """

    def __init__(self, knots_x: torch.Tensor, knots_y: torch.Tensor, *, validate: bool = True) -> None:
        if validate:
            _validate_knots(knots_x, knots_y)
        self.knots_x = knots_x
        self.knots_y = knots_y

    # ----------------------------------------------------------------------------------------- constructors
    @classmethod
    def identity(
        cls,
        batch: int,
        grid: Sequence[int] = (4, 4),
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> MonotoneScale:
        """The identity element on a grid ``(N, M)``: every knot at its own position."""
        n, m = check_grid(grid)
        if not isinstance(batch, int) or batch < 0:
            raise ValueError(f"batch must be a non-negative int, got {batch!r}")
        kx = torch.linspace(0, 1, n + 1, device=device, dtype=dtype).expand(batch, m + 1, n + 1).clone()
        ky = torch.linspace(0, 1, m + 1, device=device, dtype=dtype).expand(batch, n + 1, m + 1).clone()
        return cls(kx, ky, validate=False)

    @classmethod
    def from_knots(cls, knots_x: torch.Tensor, knots_y: torch.Tensor) -> MonotoneScale:
        """From knot values (validated); see the class docstring for the shapes."""
        return cls(knots_x, knots_y, validate=True)

    @staticmethod
    def num_params(grid: Sequence[int] = (4, 4)) -> int:
        """Number of parameters $D = (M + 1) N + (N + 1) M$ of a grid ``(N, M)``."""
        n, m = check_grid(grid)
        return (m + 1) * n + (n + 1) * m

    @classmethod
    def from_params(cls, params: torch.Tensor, grid: Sequence[int] | None = None) -> MonotoneScale:
        r"""From unconstrained parameters `(B, D)`, $D$ = `num_params` ``(grid)``.

        The first $(M + 1) N$ entries are the logits of the row functions, `(M+1, N)` row-major, the other
        $(N + 1) M$ those of the column functions, `(N+1, M)`. Per function, the shares of its intervals are a
        softmax of its logits, floored so that every share stays positive,
        $s = (\mathrm{softmax}(z) + \delta) / (1 + K \delta)$ with $\delta = 10^{-6}$, and the knots are the
        cumulative sums of the shares with a leading 0 (the last knot is exactly 1). Any finite tensor gives
        strictly increasing functions; equal logits (e.g. zeros) give the identity.

        Args:
            params: `(B, D)` finite real tensor.
            grid: ``(N, M)``; may be omitted for square grids, where it follows from $D = 2N(N + 1)$.

        Raises:
            TypeError: ``params`` is not a floating point tensor.
            ValueError: wrong shape, ``D`` does not fit ``grid``, or non-finite entries.
        """
        check_tensor(params, "params", ("B", "D"), finite=True)
        d = params.shape[1]
        if grid is None:
            n = (math.isqrt(1 + 2 * d) - 1) // 2
            if n < 1 or 2 * n * (n + 1) != d:
                raise ValueError(
                    f"params of shape (B, D) with D = {d} does not fit a square grid (D = 2N(N+1)); pass grid"
                )
            grid = (n, n)
        n, m = check_grid(grid)
        if d != cls.num_params((n, m)):
            raise ValueError(
                f"params must have shape (B, D) with D = (M+1)*N + (N+1)*M = {cls.num_params((n, m))} "
                f"for grid {(n, m)}, got {tuple(params.shape)}"
            )
        b = params.shape[0]
        zx = params[:, : (m + 1) * n].reshape(b, m + 1, n)
        zy = params[:, (m + 1) * n :].reshape(b, n + 1, m)
        return cls(knots_from_logits(zx), knots_from_logits(zy), validate=False)

    def to_params(self) -> torch.Tensor:
        """Zero-mean logits `(B, D)` that `from_params` maps back to this element (up to rounding)."""
        b = self.batch_size
        return torch.cat(
            [logits_from_knots(self.knots_x).reshape(b, -1), logits_from_knots(self.knots_y).reshape(b, -1)],
            dim=1,
        )

    # ------------------------------------------------------------------------------------------ properties
    @property
    def grid(self) -> tuple[int, int]:
        """``(N, M)``: number of knot intervals along x and along y."""
        return self.knots_x.shape[2] - 1, self.knots_x.shape[1] - 1

    @property
    def batch_size(self) -> int:
        return self.knots_x.shape[0]

    @property
    def device(self) -> torch.device:
        return self.knots_x.device

    @property
    def dtype(self) -> torch.dtype:
        return self.knots_x.dtype

    def __repr__(self) -> str:
        return f"MonotoneScale(batch_size={self.batch_size}, grid={self.grid}, dtype={self.dtype})"

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> MonotoneScale:
        return MonotoneScale(fn(self.knots_x), fn(self.knots_y), validate=False)

    def mesh(self) -> torch.Tensor:
        """The control mesh $P_{j,i}$ = (``knots_x[j, i]``, ``knots_y[i, j]``), `(B, M+1, N+1, 2)`."""
        return torch.stack([self.knots_x, self.knots_y.transpose(1, 2)], dim=-1)

    # --------------------------------------------------------------------------------------------- forward
    def forward_map(self, points: torch.Tensor) -> torch.Tensor:
        """$l(p)$, `(B, P, 2)` -> `(B, P, 2)`; outside $[0, 1]^2$ the boundary cells are extended bilinearly.

        Examples:
            >>> g = MonotoneScale.identity(1, grid=(2, 2))
            >>> g.forward_map(torch.tensor([[[0.3, 0.8]]]))
            tensor([[[0.3000, 0.8000]]])
        """
        points = self._check_points(points)
        n, m = self.grid
        cell, u, v = _locate(points, n, m)
        a, e, f, g = _gather(_cell_coefficients(self.mesh()), cell).split(2, dim=-1)
        return a + e * u + f * v + g * (u * v)

    def dense_map(self, size: Sequence[int], align_corners: bool = True) -> torch.Tensor:
        """$l$ at every pixel, `(B, H, W, 2)` (see `ScalingMap.dense_map`).

        Separable fast path: interpolate the mesh along y with a `(H, M+1)` weight matrix, then along x with
        one matrix product; the cost is a few multiply-adds per output coordinate.
        """
        h, w = check_size(size)
        return _dense_bilinear(self.mesh(), h, w, align_corners)

    # --------------------------------------------------------------------------------------------- inverse
    def inverse_map(self, points: torch.Tensor) -> torch.Tensor:
        """$l^{-1}(p)$ to float precision, `(B, P, 2)` -> `(B, P, 2)`, differentiable in the knots and points.

        The cell of each point is found exactly from the images of the grid lines (see the module docstring)
        and its bilinear map inverted in closed form. Meaningful for invertible elements
        (`is_invertible`) and points in $[0, 1]^2$; otherwise the result is finite but unspecified.

        Examples:
            >>> g = MonotoneScale.from_knots(
            ...     torch.tensor([[[0.0, 0.3, 1.0], [0.0, 0.6, 1.0], [0.0, 0.5, 1.0]]]),
            ...     torch.tensor([[[0.0, 0.5, 1.0], [0.0, 0.4, 1.0], [0.0, 0.5, 1.0]]]))
            >>> q = g.inverse_map(torch.tensor([[[0.5, 0.5]]]))
            >>> (g.forward_map(q) - 0.5).abs().max() < 1e-6
            tensor(True)
        """
        points = self._check_points(points)
        n, m = self.grid
        b, p, _ = points.shape
        qx, qy = points[..., 0], points[..., 1]
        with torch.no_grad():
            kx, ky = self.knots_x.detach(), self.knots_y.detach()
            # Column: number of interior column polylines x = f_i(y) at or left of the point; rows alike.
            col = _count_below(ky[:, 1:n, :], kx[:, :, 1:n].transpose(1, 2), qy.detach(), qx.detach())
            row = _count_below(kx[:, 1:m, :], ky[:, :, 1:m].transpose(1, 2), qx.detach(), qy.detach())
            col, row = col.to(self.dtype), row.to(self.dtype)
            cells = torch.stack([(col + 0.5) * (2 / n) - 1, (row + 0.5) * (2 / m) - 1], dim=-1)
        return self._solve(cells[:, :, None], qx[:, :, None], qy[:, :, None]).reshape(b, p, 2)

    def dense_inverse_map(self, size: Sequence[int], align_corners: bool = True) -> torch.Tensor:
        """$l^{-1}$ at every pixel, `(B, H, W, 2)`, exact (see `inverse_map`).

        Fast path for the pixel grid: the column polylines are evaluated once per image row and the row
        polylines once per image column; the cell of every pixel then follows from cumulative sums over the
        positions where the polylines cross the pixel rows/columns.
        """
        h, w = check_size(size)
        n, m = self.grid
        b = self.batch_size
        dev, dt = self.device, self.dtype
        xs = pixel_coordinates(w, align_corners=align_corners, device=dev, dtype=dt)
        ys = pixel_coordinates(h, align_corners=align_corners, device=dev, dtype=dt)
        with torch.no_grad():
            kx, ky = self.knots_x.detach(), self.knots_y.detach()
            # Cell centres in grid_sample coordinates, (col + 1/2) 2/N - 1, where col[b, r, c] is the number
            # of interior column polylines with f_i(y_r) <= x_c: a cumulative sum over the first pixel at or
            # right of each crossing. Rows alike.
            cx = torch.zeros(b, h, w + 1, device=dev, dtype=dt)
            cx[:, :, 0] = 1 / n - 1
            if n > 1:
                f = interp1d(ky[:, 1:n, :], kx[:, :, 1:n].transpose(1, 2), ys.expand(b, n - 1, h))
                thr = torch.searchsorted(xs, f.transpose(1, 2).contiguous())
                cx.scatter_add_(2, thr, torch.full(thr.shape, 2 / n, device=dev, dtype=dt))
            cy = torch.zeros(b, h + 1, w, device=dev, dtype=dt)
            cy[:, 0, :] = 1 / m - 1
            if m > 1:
                g = interp1d(kx[:, 1:m, :], ky[:, :, 1:m].transpose(1, 2), xs.expand(b, m - 1, w))
                thr = torch.searchsorted(ys, g.contiguous())
                cy.scatter_add_(1, thr, torch.full(thr.shape, 2 / m, device=dev, dtype=dt))
            cells = torch.stack(
                [torch.cumsum(cx[:, :, :w], dim=2), torch.cumsum(cy[:, :h, :], dim=1)], dim=-1
            )
        return self._solve(cells, xs, ys[:, None])

    def _solve(self, cells: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor) -> torch.Tensor:
        """Invert the bilinear map of the given cells at the targets ``(qx, qy)``.

        Args:
            cells: `(B, S1, S2, 2)` centres of the cells in ``grid_sample`` coordinates (a cell table is read
                with nearest-neighbour ``grid_sample``, a fast gather that returns contiguous planes).
            qx, qy: targets, broadcastable to `(B, S1, S2)`.

        Returns:
            `(B, S1, S2, 2)` points. The solution is computed without autograd. When autograd is on and a knot
            or a target requires grad, it is wrapped in an autograd node whose backward pass is that of one
            Newton step $p - J^{-1}(l(p) - q)$ at the detached solution with $J$ held fixed: exactly the
            implicit-function-theorem gradient (see `_NewtonStep`).
        """
        n, m = self.grid
        mesh = self.mesh()
        with torch.no_grad():
            coef = _read_cells(_cell_image(mesh.detach()), cells).unbind(1)
            u, v = _invert_bilinear(coef[:8], qx, qy)
            x = coef[8] + u / n
            y = coef[9] + v / m
        needs_grad = torch.is_grad_enabled() and (
            mesh.requires_grad or (isinstance(qx, torch.Tensor) and (qx.requires_grad or qy.requires_grad))
        )
        if not needs_grad:
            return torch.stack([x, y], dim=-1)
        with torch.no_grad():
            _, _, ex, ey, fx, fy, gx, gy = coef[:8]
            lux, luy = ex + gx * v, ey + gy * v
            lvx, lvy = fx + gx * u, fy + gy * u
            det = lux * lvy - luy * lvx
            det = torch.where(det.abs() > 0, det, torch.ones_like(det))
            flat = coef[10].round().long().reshape(-1)  # cell index over the batch, for the backward pass
        jac = (lux, luy, lvx, lvy, det)
        value = torch.stack([x, y], dim=-1)
        return _NewtonStep.apply(_cell_coefficients(mesh), qx, qy, value, flat, u, v, jac, (n, m))

    # ---------------------------------------------------------------------------------------- local scale
    def local_scale(self, points: torch.Tensor) -> torch.Tensor:
        """Jacobian of $l$ at points `(B, P, 2)` -> `(B, P, 2, 2)` (one-sided on cell edges: the cell
        ``floor(x N), floor(y M)``).

        Examples:
            >>> MonotoneScale.identity(1).local_scale(torch.full((1, 1, 2), 0.5))
            tensor([[[[1., 0.],
                      [0., 1.]]]])
        """
        points = self._check_points(points)
        n, m = self.grid
        cell, u, v = _locate(points, n, m)
        _, e, f, g = _gather(_cell_coefficients(self.mesh()), cell).split(2, dim=-1)
        dx = (e + g * v) * n
        dy = (f + g * u) * m
        return torch.stack([dx, dy], dim=-1)

    def is_invertible(self) -> torch.Tensor:
        """`(B,)` bool, exact: the Jacobian determinant is positive at the four corners of every cell.

        The determinant is affine on each cell, so this is equivalent to positivity everywhere, which, with
        the boundary mapped onto itself, makes the map a bijection of $[0, 1]^2$.

        Examples:
            >>> MonotoneScale.identity(3).is_invertible()
            tensor([True, True, True])
        """
        coef = _cell_coefficients(self.mesh().detach())
        _, e, f, g = coef.split(2, dim=-1)
        cef = _cross(e, f)
        ceg = _cross(e, g)
        cgf = _cross(g, f)
        corners = torch.stack([cef, cef + ceg, cef + cgf, cef + ceg + cgf], dim=-1)
        return (corners > 0).flatten(1).all(dim=1)


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


# ============================================================================================ private helpers
def _validate_knots(knots_x: object, knots_y: object) -> None:
    check_tensor(knots_x, "knots_x", ("B", "M+1", "N+1"), finite=True)
    check_tensor(knots_y, "knots_y", ("B", "N+1", "M+1"), finite=True)
    assert isinstance(knots_x, torch.Tensor) and isinstance(knots_y, torch.Tensor)
    check_same_device_dtype(knots_x, "knots_x", knots_y, "knots_y")
    b, m1, n1 = knots_x.shape
    if m1 < 2 or n1 < 2:
        raise ValueError(f"knots_x must have shape (B, M+1, N+1) with M, N >= 1, got {tuple(knots_x.shape)}")
    if tuple(knots_y.shape) != (b, n1, m1):
        raise ValueError(
            f"knots_y must have shape (B, N+1, M+1) = {(b, n1, m1)} to match knots_x of shape "
            f"(B, M+1, N+1) = {tuple(knots_x.shape)}, got {tuple(knots_y.shape)}"
        )
    tol = 1e-9 if knots_x.dtype == torch.float64 else 1e-5
    for name, k in (("knots_x", knots_x), ("knots_y", knots_y)):
        if not bool(strictly_increasing(k).all()):
            raise ValueError(
                f"{name} must be strictly increasing along its last axis (every row/column function)"
            )
        if not bool(((k[..., 0].abs() <= tol) & ((k[..., -1] - 1).abs() <= tol)).all()):
            raise ValueError(f"{name} must start at 0 and end at 1 along its last axis")


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _cell_coefficients(mesh: torch.Tensor) -> torch.Tensor:
    """Bilinear coefficients ``(a, e, f, g)`` of every cell, `(B, M, N, 8)` (each a 2-vector)."""
    p00 = mesh[:, :-1, :-1]
    p10 = mesh[:, :-1, 1:]
    p01 = mesh[:, 1:, :-1]
    p11 = mesh[:, 1:, 1:]
    return torch.cat([p00, p10 - p00, p01 - p00, p11 - p10 - p01 + p00], dim=-1)


class _NewtonStep(torch.autograd.Function):
    """The gradient of one Newton step $p = p_0 - J^{-1}(l(p_0) - q)$ at a detached solution $p_0$.

    The value is the solution $p_0$ itself (computed by the caller; at the solution the step's value is $p_0$
    up to rounding, the closed form being accurate to a few ulps). The backward pass treats $p_0$ and $J$ as
    constants, which gives exactly the implicit-function-theorem gradient at the solution: with respect to the
    cell coefficients ``(a, e, f, g)`` through $l(p_0) = a + e u + f v + g u v$, summed per cell, and with
    respect to the targets $q$ as $J^{-1}$. Written by hand (instead of autograd through a per-pixel gather)
    because the per-cell sums then become one segment reduction over runs of pixels that share a cell.
    Second derivatives through this node are those of the step with $p_0$ and $J$ fixed.
    """

    @staticmethod
    def forward(ctx, table, qx, qy, value, flat, u, v, jac, grid):  # type: ignore[override]
        ctx.save_for_backward(flat, u, v, *jac)
        ctx.grid = grid
        ctx.table_shape = table.shape
        ctx.q_shapes = (
            qx.shape if isinstance(qx, torch.Tensor) else None,
            qy.shape if isinstance(qy, torch.Tensor) else None,
        )
        return value

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        flat, u, v, lux, luy, lvx, lvy, det = ctx.saved_tensors
        n, m = ctx.grid
        gpx = grad[..., 0] / n
        gpy = grad[..., 1] / m
        # d loss / d r with r = l(p0) - q and p = p0 - J^-1 r (J^-1 = [[lvy, -lvx], [-luy, lux]] / det).
        wrx = (gpy * luy - gpx * lvy) / det
        wry = (gpx * lvx - gpy * lux) / det
        grad_table = qx_grad = qy_grad = None
        if ctx.needs_input_grad[0]:
            # Weights of the coefficients (a, e, f, g) x (x, y) of each point: (1, u, v, uv) x (wrx, wry).
            basis = torch.stack([torch.ones_like(u), u, v, u * v]).reshape(4, 1, -1)
            wr = torch.stack([wrx, wry]).reshape(1, 2, -1)
            weights = (basis * wr).reshape(8, -1)  # rows: ax, ay, ex, ey, fx, fy, gx, gy
            sums = _segment_sums(flat, weights, ctx.table_shape[:-1].numel())  # (8, B*M*N)
            grad_table = sums.t().reshape(ctx.table_shape)
        if ctx.needs_input_grad[1]:
            qx_grad = _sum_to(-wrx, ctx.q_shapes[0])
        if ctx.needs_input_grad[2]:
            qy_grad = _sum_to(-wry, ctx.q_shapes[1])
        return grad_table, qx_grad, qy_grad, None, None, None, None, None, None


def _segment_sums(index: torch.Tensor, weights: torch.Tensor, size: int) -> torch.Tensor:
    """Per-index sums ``out[:, k] = weights[:, index == k].sum(1)``, `(C, size)`, for ``index`` `(L,)` and
    ``weights`` `(C, L)`.

    Equivalent to ``index_add``, but scatters once per *run* of equal consecutive indices (the pixels of an
    image row mostly share their cell), after a contiguous segment reduction. Differentiable in ``weights``.
    """
    c = weights.shape[0]
    if index.numel() == 0:
        return weights.new_zeros(c, size)
    starts = torch.cat([index.new_zeros(1), torch.nonzero(index[1:] != index[:-1]).flatten() + 1])
    lengths = torch.diff(starts, append=starts.new_full((1,), index.numel()))
    runs = torch.segment_reduce(weights, "sum", lengths=lengths.expand(c, -1).contiguous(), axis=1)
    return weights.new_zeros(c, size).index_add(1, index[starts], runs)


def _sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a broadcast gradient back to ``shape``."""
    lead = t.dim() - len(shape)
    dims = tuple(range(lead)) + tuple(
        lead + k for k, s in enumerate(shape) if s == 1 and t.shape[lead + k] != 1
    )
    return t.sum(dim=dims, keepdim=True).reshape(shape) if dims else t


def _cell_image(mesh: torch.Tensor) -> torch.Tensor:
    """Per-cell table as a tiny image `(B, 11, M, N)`: ax, ay, ex, ey, fx, fy, gx, gy, the cell's origin
    $x_i$, $y_j$ and its index over the batch, $(b M + j) N + i$."""
    b, m1, n1, _ = mesh.shape
    dev, dt = mesh.device, mesh.dtype
    coef = _cell_coefficients(mesh)  # (B, M, N, 8)
    x0 = torch.arange(n1 - 1, device=dev, dtype=dt) / (n1 - 1)
    y0 = torch.arange(m1 - 1, device=dev, dtype=dt) / (m1 - 1)
    org = torch.stack(torch.meshgrid(x0, y0, indexing="xy"), dim=-1).expand(b, m1 - 1, n1 - 1, 2)
    ids = torch.arange(b * (m1 - 1) * (n1 - 1), device=dev, dtype=dt).reshape(b, m1 - 1, n1 - 1, 1)
    return torch.cat([coef, org, ids], dim=-1).permute(0, 3, 1, 2).contiguous()


def _read_cells(image: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Values of a per-cell image `(B, C, M, N)` at cell centres `(B, S1, S2, 2)` -> `(B, C, S1, S2)`."""
    return torch.nn.functional.grid_sample(
        image, cells, mode="nearest", padding_mode="border", align_corners=False
    )


def _locate(points: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cell index `(B, P)` (row-major over `(M, N)`) and local coordinates `(B, P, 1)` of `(B, P, 2)`."""
    sx = points[..., 0] * n
    sy = points[..., 1] * m
    with torch.no_grad():
        i = sx.detach().floor().clamp_(0, n - 1)
        j = sy.detach().floor().clamp_(0, m - 1)
        cell = (j * n + i).long()
    return cell, (sx - i)[..., None], (sy - j)[..., None]


def _gather(coef: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """Rows of a per-cell table `(B, M, N, C)` at flat cell indices `(B, P)` -> `(B, P, C)`."""
    b, m, n, c = coef.shape
    table = coef.reshape(b, m * n, c)
    return torch.gather(table, 1, cell[..., None].expand(*cell.shape, c))


def _count_below(
    line_t: torch.Tensor, line_s: torch.Tensor, t: torch.Tensor, s: torch.Tensor
) -> torch.Tensor:
    r"""For polylines $s = h_k(t)$ (breakpoints ``line_t``, values ``line_s``, `(B, K, L)`) and points
    ``(t, s)`` `(B, P)`, the number of polylines with $h_k(t) \le s$, `(B, P)` int64."""
    b, k, _ = line_t.shape
    if k == 0:
        return torch.zeros_like(t, dtype=torch.long)
    h = interp1d(line_t, line_s, t[:, None, :].expand(b, k, t.shape[1]))
    return (h <= s[:, None, :]).sum(dim=1)


def _invert_bilinear(
    coef: Sequence[torch.Tensor], qx: torch.Tensor, qy: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Solve $a + e u + f v + g u v = q$ for $(u, v) \in [0, 1]^2$ in closed form, element-wise.

    ``coef`` holds the eight `(L,)` tensors ``ax, ay, ex, ey, fx, fy, gx, gy``. With $h = q - a$ the unknown
    $v$ solves $k_2 v^2 + k_1 v + k_0 = 0$, $k_2 = g \times f$, $k_1 = h \times g + e \times f$,
    $k_0 = h \times e$. The wanted root is the one where the derivative $2 k_2 v + k_1 = +\sqrt{\Delta}$
    equals the (positive) Jacobian determinant, i.e. $v = -2 k_0 / (k_1 + \sqrt{\Delta})$: a form without
    cancellation whose denominator is twice the determinant at $(u, 0)$, bounded away from 0 on an invertible
    cell, and which needs no special case for parallelograms ($k_2 = 0$). Then
    $u = (h_x - f_x v) / (e_x + g_x v)$, where $e_x + g_x v > 0$ is a blend of row-function increments.
    The result is accurate to a few ulps (measured: < 1e-6 in float32, < 2e-15 in float64 for slopes in
    [0.1, 10]), so no Newton polish is needed.
    """
    ax, ay, ex, ey, fx, fy, gx, gy = coef
    hx = qx - ax
    hy = qy - ay
    k2 = gx * fy - gy * fx
    k1 = hx * gy - hy * gx + (ex * fy - ey * fx)
    k0 = hx * ey - hy * ex
    den = k1 + torch.sqrt((k1 * k1 - 4 * k0 * k2).clamp_min_(0))
    v = ((-2 * k0) / den.clamp_min_(torch.finfo(den.dtype).tiny)).clamp_(0, 1)
    u = ((hx - fx * v) / (ex + gx * v)).clamp_(0, 1)
    return u, v


def _dense_bilinear(table: torch.Tensor, h: int, w: int, align_corners: bool) -> torch.Tensor:
    """Bilinear interpolation of a `(B, M+1, N+1, C)` knot table at every pixel, `(B, H, W, C)`."""
    b, m1, n1, c = table.shape
    xs = pixel_coordinates(w, align_corners=align_corners, device=table.device, dtype=table.dtype)
    ys = pixel_coordinates(h, align_corners=align_corners, device=table.device, dtype=table.dtype)
    wx = hat_weights(xs, n1 - 1)  # (W, N+1)
    wy = hat_weights(ys, m1 - 1)  # (H, M+1)
    rows = torch.matmul(wy, table.reshape(b, m1, n1 * c))  # (B, H, (N+1) C)
    kron = torch.kron(wx, torch.eye(c, device=table.device, dtype=table.dtype))  # (W C, (N+1) C)
    out = torch.matmul(rows.reshape(b * h, n1 * c), kron.t())
    return out.reshape(b, h, w, c)
