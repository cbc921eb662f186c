r"""The 2-D knot family of monotone scalings (appendix A2.2): `MonotoneScale`.

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
  dozen element-wise operations per point (the kernel is in ``_bilinear``).
* Gradients of the inverse with respect to the knots and the targets are those of one Newton step at the
  (detached) solution with the Jacobian held fixed, which is exactly the implicit-function-theorem gradient.

Invertibility by construction. Strictly increasing row and column functions do not make the blend invertible:
in cell units the Jacobian at a cell corner is $\begin{pmatrix} X_u & X_v \\ Y_u & Y_v \end{pmatrix}$ with
$X_u, Y_v > 0$ the increments of the row and column functions along the cell's edges, but $X_v$ (the
difference of two neighbouring row functions at the corner's $x$ knot) and $Y_u$ (of two neighbouring column
functions at its $y$ knot) have any sign, and the determinant $X_u Y_v - X_v Y_u$ turns negative when
neighbouring rows and columns differ more than their slopes allow (ordinary logits of standard deviation 0.5
fold in most draws on a 4 x 4 grid). `MonotoneScale.from_params` therefore enforces the sufficient condition

$$X_v\,Y_u \le (1 - \rho)\,X_u\,Y_v \quad \text{at the four corners of every cell}$$

($\rho$ = `INVERTIBILITY_MARGIN`), which bounds the determinant below by $\rho X_u Y_v > 0$ at the corners
and, the determinant being affine on the cell, everywhere. Elements that violate it have the deviations of
their row functions from the mean row function and of their column functions from the mean column function
shrunk by the largest factor $t < 1$ that satisfies it (`MonotoneScale.shrink_to_invertible`); the condition
at a corner is a quadratic in $t$ that changes sign at most once on $(0, 1]$, so $t$ has a closed form.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ._bilinear import (
    cell_coefficients,
    count_below,
    cross,
    dense_bilinear,
    dense_cells,
    gather_cells,
    locate,
    solve_cells,
)
from ._utils import (
    check_grid,
    check_same_device_dtype,
    check_size,
    check_tensor,
    knots_from_logits,
    logits_from_knots,
    pixel_coordinates,
    strictly_increasing,
)
from .group import ScalingMap

__all__ = ["INVERTIBILITY_MARGIN", "MonotoneScale"]

#: Relative margin $\rho$ of the invertibility condition that `MonotoneScale.from_params` enforces: at every
#: cell corner the Jacobian determinant is at least $\rho$ times the product of the axis slopes.
INVERTIBILITY_MARGIN = 0.1


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
        >>> params = 3.0 * torch.randn(2, MonotoneScale.num_params((4, 3)))  # any finite logits
        >>> g = MonotoneScale.from_params(params, grid=(4, 3))
        >>> g.knots_x.shape, g.knots_y.shape, g.grid
        (torch.Size([2, 4, 5]), torch.Size([2, 5, 4]), (4, 3))
        >>> g.is_invertible()                                              # invertible by construction
        tensor([True, True])
        >>> from monowarp import sample_monotone_scale  # invertible, with local scales in a range
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
        cumulative sums of the shares with a leading 0 (the last knot is exactly 1). The blend of these
        functions can fold over; `shrink_to_invertible` with `INVERTIBILITY_MARGIN` then shrinks the rows
        and columns toward their mean functions until the corner condition of the module docstring holds.
        So any finite tensor gives an invertible element (`is_invertible` is true) with strictly increasing
        row and column functions; equal logits (e.g. zeros) give the identity, and logits whose blend
        satisfies the condition give exactly the knots (and gradients) of the plain blend. The map is
        continuous and piecewise smooth in the parameters (a kink where the binding cell corner changes);
        for extreme logits (near the softmax floor) where rounding defeats the closed form, the separable
        element of the mean functions ($t = 0$) is taken. Vectorised, no host synchronisation.

        Args:
            params: `(B, D)` finite real tensor.
            grid: ``(N, M)``; may be omitted for square grids, where it follows from $D = 2N(N + 1)$.

        Raises:
            TypeError: ``params`` is not a floating point tensor.
            ValueError: wrong shape, ``D`` does not fit ``grid``, or non-finite entries.
        """
        check_tensor(params, "params", [("B", "D")])
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
        kx, ky = _shrink_to_invertible(knots_from_logits(zx), knots_from_logits(zy), INVERTIBILITY_MARGIN)
        return cls(kx, ky, validate=False)

    def shrink_to_invertible(self, margin: float = INVERTIBILITY_MARGIN) -> MonotoneScale:
        r"""This element made invertible by shrinking its rows and columns toward their mean functions.

        Every element that satisfies the corner condition $X_v Y_u \le (1 - \rho) X_u Y_v$ (see the module
        docstring; $\rho$ = ``margin``) is kept as is; the others get the deviations of their row functions
        from the mean row function, and of their column functions from the mean column function, scaled by
        the largest factor $t < 1$ that satisfies it. Differentiable (piecewise smooth) in the knots,
        vectorised, idempotent up to rounding. `from_params` applies it with `INVERTIBILITY_MARGIN`.

        Args:
            margin: $\rho \in [0, 1)$; 0 asks only for a non-negative corner determinant, which rounding
                may leave at zero: keep it positive.

        Raises:
            ValueError: ``margin`` outside $[0, 1)$.

        Examples:
            >>> kx = torch.tensor([[[0.0, 0.5, 1.0], [0.0, 0.95, 1.0], [0.0, 0.5, 1.0]]])
            >>> ky = torch.tensor([[[0.0, 0.5, 1.0], [0.0, 0.05, 1.0], [0.0, 0.5, 1.0]]])
            >>> fold = MonotoneScale(kx, ky, validate=False)
            >>> fold.is_invertible(), fold.shrink_to_invertible().is_invertible()
            (tensor([False]), tensor([True]))
        """
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1:
            raise ValueError(f"margin must be a number in [0, 1), got {margin!r}")
        kx, ky = _shrink_to_invertible(self.knots_x, self.knots_y, float(margin))
        return MonotoneScale(kx, ky, validate=False)

    def to_params(self) -> torch.Tensor:
        """Zero-mean logits `(B, D)` that `from_params` maps back to this element (up to rounding).

        Exact for elements that satisfy the invertibility condition of `from_params` (all elements it
        builds, most sampled ones); others come back shrunk toward their mean functions.
        """
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
        cell, u, v = locate(points, n, m)
        a, e, f, g = gather_cells(cell_coefficients(self.mesh()), cell).split(2, dim=-1)
        return a + e * u + f * v + g * (u * v)

    def dense_map(self, size: Sequence[int], align_corners: bool = True) -> torch.Tensor:
        """$l$ at every pixel, `(B, H, W, 2)` (see `ScalingMap.dense_map`).

        Separable fast path: interpolate the mesh along y with a `(H, M+1)` weight matrix, then along x with
        one matrix product; the cost is a few multiply-adds per output coordinate.
        """
        h, w = check_size(size)
        return dense_bilinear(self.mesh(), h, w, align_corners)

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
        qx, qy = points[..., 0], points[..., 1]
        with torch.no_grad():
            kx, ky = self.knots_x.detach(), self.knots_y.detach()
            # Column: number of interior column polylines x = f_i(y) at or left of the point; rows alike.
            col = count_below(ky[:, 1:n, :], kx[:, :, 1:n].transpose(1, 2), qy.detach(), qx.detach())
            row = count_below(kx[:, 1:m, :], ky[:, :, 1:m].transpose(1, 2), qx.detach(), qy.detach())
        return solve_cells(self.mesh(), col, row, qx, qy)

    def dense_inverse_map(self, size: Sequence[int], align_corners: bool = True) -> torch.Tensor:
        """$l^{-1}$ at every pixel, `(B, H, W, 2)`, exact (see `inverse_map`).

        Fast path for the pixel grid: the column polylines are evaluated once per image row and the row
        polylines once per image column; the cell of every pixel then follows from cumulative sums over the
        positions where the polylines cross the pixel rows/columns, and each pixel reads the closed-form
        coefficients of its cell from a small per-cell table.
        """
        h, w = check_size(size)
        xs = pixel_coordinates(w, align_corners=align_corners, device=self.device, dtype=self.dtype)
        ys = pixel_coordinates(h, align_corners=align_corners, device=self.device, dtype=self.dtype)
        with torch.no_grad():
            col, row = dense_cells(self.knots_x.detach(), self.knots_y.detach(), xs, ys)
        return solve_cells(self.mesh(), col, row, xs, ys[:, None])

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
        cell, u, v = locate(points, n, m)
        _, e, f, g = gather_cells(cell_coefficients(self.mesh()), cell).split(2, dim=-1)
        dx = (e + g * v) * n
        dy = (f + g * u) * m
        return torch.stack([dx, dy], dim=-1)

    def is_invertible(self) -> torch.Tensor:
        """`(B,)` bool, exact: the Jacobian determinant is positive at the four corners of every cell.

        The determinant is affine on each cell, so this is equivalent to positivity everywhere, which, with
        the boundary mapped onto itself, makes the map a bijection of $[0, 1]^2$. The corner determinants are
        evaluated in float64 (except on devices without it, e.g. MPS), where they are exact to rounding
        for knots of lower precision: a float32 evaluation can misjudge knots whose increments are near
        the float32 resolution.

        Examples:
            >>> MonotoneScale.identity(3).is_invertible()
            tensor([True, True, True])
        """
        mesh = self.mesh().detach()
        coef = cell_coefficients(mesh.to(torch.float32 if mesh.device.type == "mps" else torch.float64))
        _, e, f, g = coef.split(2, dim=-1)
        cef = cross(e, f)
        ceg = cross(e, g)
        cgf = cross(g, f)
        corners = torch.stack([cef, cef + ceg, cef + cgf, cef + ceg + cgf], dim=-1)
        return (corners > 0).flatten(1).all(dim=1)


# ============================================================================================ private helpers
def _validate_knots(knots_x: object, knots_y: object) -> None:
    knots_x = check_tensor(knots_x, "knots_x", [("B", "M+1", "N+1")])
    knots_y = check_tensor(knots_y, "knots_y", [("B", "N+1", "M+1")])
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
    folded = ~MonotoneScale(knots_x, knots_y, validate=False).is_invertible()
    if bool(folded.any()):
        raise ValueError(
            f"knots_x and knots_y blend into a map that folds over (a non-positive Jacobian determinant) for "
            f"batch items {folded.nonzero().flatten().tolist()}; MonotoneScale(..., validate=False)"
            ".shrink_to_invertible() makes them invertible"
        )


def _corner_terms(
    knots_x: torch.Tensor, knots_y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The Jacobian entries at every corner of every cell in cell units, indexed ``[B, v, u, j, i]``.

    At corner $(u, v)$ of cell $(j, i)$: $X_u$ = ``knots_x[j + v, i + 1] - knots_x[j + v, i]``
    `(B, 2, 1, M, N)`, $Y_v$ = ``knots_y[i + u, j + 1] - knots_y[i + u, j]`` `(B, 1, 2, M, N)`, $X_v$ =
    ``knots_x[j + 1, i + u] - knots_x[j, i + u]`` `(B, 1, 2, M, N)` and $Y_u$ =
    ``knots_y[i + 1, j + v] - knots_y[i, j + v]`` `(B, 2, 1, M, N)`.
    """
    ax = knots_x.diff(dim=-1)  # (B, M+1, N): row increments
    cy = knots_y.diff(dim=-1)  # (B, N+1, M): column increments
    bx = knots_x.diff(dim=1)  # (B, M, N+1): neighbouring rows' difference
    dy = knots_y.diff(dim=1)  # (B, N, M+1): neighbouring columns' difference
    xu = torch.stack([ax[:, :-1], ax[:, 1:]], dim=1)[:, :, None]
    yv = torch.stack([cy[:, :-1], cy[:, 1:]], dim=1).transpose(-1, -2)[:, None]
    xv = torch.stack([bx[..., :-1], bx[..., 1:]], dim=1)[:, None]
    yu = torch.stack([dy[..., :-1], dy[..., 1:]], dim=1).transpose(-1, -2)[:, :, None]
    return xu, yv, xv, yu


def _shrink_factor(knots_x: torch.Tensor, knots_y: torch.Tensor, margin: float) -> torch.Tensor:
    r"""The largest $t \in [0, 1]$ for which the shrunk element satisfies the corner condition, `(B,)`.

    Shrinking every row function toward the mean row function $\bar r$ and every column function toward the
    mean column function $\bar c$ by $t$ makes the quantities at a cell corner (see `_corner_terms`)
    $X_u(t) = \bar a + t (a - \bar a)$, $Y_v(t) = \bar c + t (c - \bar c)$, $X_v(t) = t\,b$,
    $Y_u(t) = t\,d$, and the condition $q(t) = (1 - \rho) X_u(t) Y_v(t) - X_v(t) Y_u(t) \ge 0$ a quadratic
    $q_0 + q_1 t + q_2 t^2$ with $q_0 = (1 - \rho) \bar a \bar c > 0$. On $(0, 1]$, $q(t) / t^2$ is a product
    of two positive decreasing functions minus the constant $b d$, so $q$ changes sign at most once there:
    the condition holds exactly on $[0, t^*]$ with $t^*$ the smallest positive root
    $2 q_0 / (\sqrt{q_1^2 - 4 q_0 q_2} - q_1)$ (no cancellation), or on all of $[0, 1]$ when there is none.
    The factor is the minimum over all corners of all cells, clipped to 1: continuous and piecewise smooth
    in the knots.
    """
    s = 1.0 - margin
    xu, yv, xv, yu = _corner_terms(knots_x, knots_y)
    xu0 = knots_x.diff(dim=-1).mean(dim=1)[:, None, None, None, :]  # (B, 1, 1, 1, N): the mean row's
    yv0 = knots_y.diff(dim=-1).mean(dim=1)[:, None, None, :, None]  # (B, 1, 1, M, 1): the mean column's
    du, dv = xu - xu0, yv - yv0
    q0 = s * xu0 * yv0
    q1 = s * (xu0 * dv + yv0 * du)
    q2 = s * du * dv - xv * yu
    disc = q1 * q1 - 4 * q0 * q2
    # sqrt only where it is smooth: a clamp would leave an infinite second derivative at 0 (the identity has
    # disc = 0), which turns unrolled or double-backward gradients (Optim) into NaN
    positive = disc > 0
    den = torch.where(positive, torch.sqrt(torch.where(positive, disc, torch.ones_like(disc))), 0.0) - q1
    has_root = (disc >= 0) & (den > 0)
    root = torch.where(has_root, 2 * q0 / torch.where(has_root, den, torch.ones_like(den)), 2.0)
    return root.flatten(1).amin(dim=1).clamp(max=1.0)


def _shrink_to_invertible(
    knots_x: torch.Tensor, knots_y: torch.Tensor, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Knots of an invertible element, with the deviations from the mean row/column functions shrunk.

    Condition (sufficient for invertibility): at every corner of every knot cell, in cell units,

    $$X_v\,Y_u \le (1 - \rho)\, X_u\, Y_v,$$

    with $X_u > 0$ the increment of the row function along the cell edge, $Y_v > 0$ that of the column
    function, $X_v$ the difference of the two neighbouring row functions at the corner's $x$ knot and $Y_u$
    that of the two neighbouring column functions at its $y$ knot, and $\rho$ = ``margin``. The Jacobian
    determinant $X_u Y_v - X_v Y_u$ is then at least $\rho X_u Y_v > 0$ at the corners, hence positive on
    every cell (it is affine there), which with the fixed boundary makes the map a bijection.

    Elements that satisfy the condition are returned unchanged (same values, same gradients). Others are
    replaced by $\bar r + t (r_j - \bar r)$, $\bar c + t (c_i - \bar c)$ with the largest $t < 1$ that
    satisfies it (`_shrink_factor`); the mean functions, the end points and the monotonicity are kept (a
    convex combination of increasing functions). As a guard against rounding, the result is checked with the
    exact corner test in float64 and, where that fails (only for extreme knots, e.g. increments near the
    floor of `knots_from_logits` in float32), replaced by the separable element $(\bar r(x), \bar c(y))$
    ($t = 0$), which is invertible whenever the mean functions increase. Vectorised, no host
    synchronisation.
    """
    rbar = knots_x.mean(dim=1, keepdim=True)
    cbar = knots_y.mean(dim=1, keepdim=True)
    t = _shrink_factor(knots_x, knots_y, margin).view(-1, 1, 1)
    keep = t >= 1
    kx = torch.where(keep, knots_x, rbar + t * (knots_x - rbar))
    ky = torch.where(keep, knots_y, cbar + t * (knots_y - cbar))
    with torch.no_grad():
        exact = torch.float32 if kx.device.type == "mps" else torch.float64  # MPS has no float64
        xu, yv, xv, yu = _corner_terms(kx.detach().to(exact), ky.detach().to(exact))
        ok = ((xu * yv - xv * yu > 0) & (xu > 0) & (yv > 0)).flatten(1).all(dim=1).view(-1, 1, 1)
    return torch.where(ok, kx, rbar), torch.where(ok, ky, cbar)
