r"""The piecewise-bilinear kernel behind `monowarp.MonotoneScale`: evaluation and exact inversion.

The map is the bilinear interpolation of a control mesh `(B, M+1, N+1, 2)` over the cells
$[x_i, x_{i+1}] \times [y_j, y_{j+1}]$: on a cell with local coordinates $u, v \in [0, 1]$,
$l = a + e\,u + f\,v + g\,uv$ (appendix A2.2, eqs. A26-A29). Inverting it at a target $q$ takes two steps:

* locate the cell: the images of the grid lines are polylines that are graphs over the other axis
  (column lines $x = f_i(y)$, row lines $y = g_j(x)$), so counting the polylines at or left of (below) $q$
  gives the cell index exactly. On a pixel grid each column polyline crosses every pixel row once and each
  row polyline every pixel column once: the counts are cumulative sums of one scatter per polyline;
* solve the cell: with $h = q - a$, $v$ solves $k_2 v^2 + k_1 v + k_0 = 0$ with $k_2 = g \times f$,
  $k_1 = h \times g + e \times f$, $k_0 = h \times e$; the root is $v = -2 k_0 / (k_1 + \sqrt{\Delta})$, a
  form without cancellation whose denominator is twice the (positive) Jacobian determinant at $(u, 0)$; then
  $u = (h_x - f_x v) / (e_x + g_x v)$. $k_0$ and $k_1$ are affine in $q$, so a per-cell table holds their
  coefficients and each target reads eleven numbers of its cell (one gather each), then runs about twenty
  element-wise operations. The result is accurate to a few ulps (measured: < 1e-6 in float32, < 2e-15 in
  float64 for slopes in [0.1, 10]); no iteration is needed.

Gradients of the inverse with respect to the mesh and the targets are those of one Newton step at the
(detached) solution with the Jacobian held fixed, which is exactly the implicit-function-theorem gradient
(`NewtonStep`).
"""

from __future__ import annotations

import torch

from ._utils import hat_weights, interp1d, pixel_coordinates

__all__ = [
    "NewtonStep",
    "cell_coefficients",
    "count_below",
    "cross",
    "dense_bilinear",
    "dense_cells",
    "gather_cells",
    "locate",
    "solve_cells",
]


def cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """2-D cross product of `(..., 2)` vectors, `(...)`."""
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def cell_coefficients(mesh: torch.Tensor) -> torch.Tensor:
    """Bilinear coefficients ``(a, e, f, g)`` of every cell, `(B, M, N, 8)` (each a 2-vector)."""
    p00 = mesh[:, :-1, :-1]
    p10 = mesh[:, :-1, 1:]
    p01 = mesh[:, 1:, :-1]
    p11 = mesh[:, 1:, 1:]
    return torch.cat([p00, p10 - p00, p01 - p00, p11 - p10 - p01 + p00], dim=-1)


def locate(points: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cell index `(B, P)` (row-major over `(M, N)`) and local coordinates `(B, P, 1)` of `(B, P, 2)`."""
    sx = points[..., 0] * n
    sy = points[..., 1] * m
    with torch.no_grad():
        i = sx.detach().floor().clamp_(0, n - 1)
        j = sy.detach().floor().clamp_(0, m - 1)
        cell = (j * n + i).long()
    return cell, (sx - i)[..., None], (sy - j)[..., None]


def gather_cells(coef: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """Rows of a per-cell table `(B, M, N, C)` at flat cell indices `(B, P)` -> `(B, P, C)`."""
    b, m, n, c = coef.shape
    table = coef.reshape(b, m * n, c)
    return torch.gather(table, 1, cell[..., None].expand(*cell.shape, c))


def count_below(line_t: torch.Tensor, line_s: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    r"""For polylines $s = h_k(t)$ (breakpoints ``line_t``, values ``line_s``, `(B, K, L)`) and points
    ``(t, s)`` `(B, P)`, the number of polylines with $h_k(t) \le s$, `(B, P)` int64."""
    b, k, _ = line_t.shape
    if k == 0:
        return torch.zeros_like(t, dtype=torch.long)
    h = interp1d(line_t, line_s, t[:, None, :].expand(b, k, t.shape[1]))
    return (h <= s[:, None, :]).sum(dim=1)


def dense_cells(
    knots_x: torch.Tensor, knots_y: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Cell column and row of $l^{-1}$ at every pixel of the grid ``xs`` `(W,)` x ``ys`` `(H,)`.

    ``col[b, r, c]`` is the number of interior column polylines with $f_i(y_r) \le x_c$: each polyline is
    evaluated once per pixel row and crosses it once, at the first pixel at or right of $f_i(y_r)$; rows
    alike along the pixel columns. The counts are cumulative sums of one increment per crossing. Returns two
    `(B, H, W)` integer tensors (uint8 for grids up to 255 x 255).
    """
    b, m1, n1 = knots_x.shape
    n, m = n1 - 1, m1 - 1
    h, w = ys.shape[0], xs.shape[0]
    dev = xs.device
    kind = torch.uint8 if max(n, m) <= 255 else torch.int32  # small counts: cheap passes
    col = torch.zeros(b, h, w + 1, device=dev, dtype=kind)
    if n > 1:
        f = interp1d(knots_y[:, 1:n, :], knots_x[:, :, 1:n].transpose(1, 2), ys.expand(b, n - 1, h))
        first = torch.searchsorted(
            xs, f.transpose(1, 2).contiguous()
        )  # (B, H, N-1): first column at or right
        col.scatter_add_(2, first, torch.ones(first.shape, device=dev, dtype=kind))
    row = torch.zeros(b, h + 1, w, device=dev, dtype=kind)
    if m > 1:
        g = interp1d(knots_x[:, 1:m, :], knots_y[:, :, 1:m].transpose(1, 2), xs.expand(b, m - 1, w))
        first = torch.searchsorted(ys, g.contiguous())  # (B, M-1, W): first pixel row at or below
        row.scatter_add_(1, first, torch.ones(first.shape, device=dev, dtype=kind))
    col = torch.cumsum(col[:, :, :w], dim=2, dtype=kind)
    row = torch.cumsum(row[:, :h, :], dim=1, dtype=kind)
    return col, row


def solve_cells(
    mesh: torch.Tensor, col: torch.Tensor, row: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor
) -> torch.Tensor:
    """Invert the bilinear map of the cells ``(col, row)`` at the targets ``(qx, qy)``.

    Args:
        mesh: `(B, M+1, N+1, 2)` control mesh (may require grad).
        col: `(B, *S)` integer cell column of every target.
        row: `(B, *S)` integer cell row of every target.
        qx: targets' x, broadcastable to `(B, *S)` (may require grad).
        qy: targets' y, broadcastable to `(B, *S)`.

    Returns:
        `(B, *S, 2)` points. The solution is computed without autograd. When autograd is on and the mesh or a
        target requires grad, it is wrapped in an autograd node whose backward pass is that of one Newton step
        $p - J^{-1}(l(p) - q)$ at the detached solution with $J$ held fixed: exactly the
        implicit-function-theorem gradient (see `NewtonStep`).
    """
    _, m1, n1, _ = mesh.shape
    n, m = n1 - 1, m1 - 1
    needs_grad = torch.is_grad_enabled() and (
        mesh.requires_grad or (isinstance(qx, torch.Tensor) and (qx.requires_grad or qy.requires_grad))
    )
    with torch.no_grad():
        table = _solve_table(cell_coefficients(mesh.detach())).reshape(12, -1)
        qxd, qyd = qx.detach(), qy.detach()
        if not needs_grad:
            x, y, _ = _solve(table, col, row, qxd, qyd, (n, m), jacobian=False)
            return torch.view_as_real(torch.complex(x, y))
        x, y, inv_jac = _solve(table, col, row, qxd, qyd, (n, m), jacobian=True)
        value = torch.view_as_real(torch.complex(x, y))
    return NewtonStep.apply(mesh, qx, qy, value, *inv_jac)


def dense_bilinear(table: torch.Tensor, h: int, w: int, align_corners: bool) -> torch.Tensor:
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


class NewtonStep(torch.autograd.Function):
    r"""The gradient of one Newton step $p = p_0 - J^{-1}(l(p_0) - q)$ at a detached solution $p_0$.

    The value is the solution $p_0$ itself (computed by the caller; at the solution the step's value is $p_0$
    up to rounding, the closed form being accurate to a few ulps). The backward pass treats $p_0$ and $J$ as
    constants, which gives exactly the implicit-function-theorem gradient at the solution: with
    $w = -J^{-\top} \bar p$, the gradient with respect to the targets is $-w$ and the one with respect to the
    control mesh is $w$ spread onto the mesh with the bilinear weights of $p_0$ (the map is the bilinear
    interpolation of the mesh), i.e. the input gradient of ``grid_sample`` at $p_0$: one fused pass instead
    of per-cell sums. Second derivatives through this node are those of the step with $p_0$ and $J$ fixed.

    Inputs: the mesh `(B, M+1, N+1, 2)`, the targets ``qx``, ``qy`` (broadcastable to `(B, *S)`), the
    solution `(B, *S, 2)` and the entries of $J^{-1}$ with respect to the point,
    ``(i_xx, i_xy, i_yx, i_yy)`` (row: coordinate of $p$, column: coordinate of $l$), each `(B, *S)`.
    """

    @staticmethod
    def forward(ctx, mesh, qx, qy, value, iux, iuy, ivx, ivy):  # type: ignore[override]
        ctx.save_for_backward(value, iux, iuy, ivx, ivy)
        ctx.mesh_shape = mesh.shape
        ctx.mesh_dtype = mesh.dtype
        ctx.q_shapes = (
            qx.shape if isinstance(qx, torch.Tensor) else None,
            qy.shape if isinstance(qy, torch.Tensor) else None,
        )
        return value

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        value, ixx, ixy, iyx, iyy = ctx.saved_tensors
        b, m1, n1, _ = ctx.mesh_shape
        gx, gy = grad[..., 0], grad[..., 1]
        # w = d loss / d r for r = l(p0) - q and p = p0 - J^-1 r: w = -J^-T grad, written into one buffer.
        if torch.is_grad_enabled():  # double backward: differentiable in ``grad``
            wrx = -(ixx * gx + iyx * gy)
            wry = -(ixy * gx + iyy * gy)
            w_img = torch.stack([wrx.reshape(b, -1), wry.reshape(b, -1)], dim=1).reshape(b, 2, 1, -1)
        else:
            w_img = torch.empty(b, 2, 1, ixx[0].numel(), device=grad.device, dtype=grad.dtype)
            wrx = w_img[:, 0, 0].view(ixx.shape)
            wry = w_img[:, 1, 0].view(ixx.shape)
            torch.mul(ixx, gx, out=wrx).addcmul_(iyx, gy).neg_()
            torch.mul(ixy, gx, out=wry).addcmul_(iyy, gy).neg_()
        grad_mesh = qx_grad = qy_grad = None
        if ctx.needs_input_grad[0]:
            grid = value.reshape(b, 1, -1, 2) * 2 - 1
            mesh_img = torch.zeros(b, 2, m1, n1, device=grad.device, dtype=ctx.mesh_dtype)
            grad_img, _ = torch.ops.aten.grid_sampler_2d_backward(
                w_img, mesh_img, grid, 0, 1, True, [True, False]
            )  # bilinear, border padding, align_corners=True: the mesh knots sit at the cell corners
            grad_mesh = grad_img.permute(0, 2, 3, 1)
        if ctx.needs_input_grad[1]:
            qx_grad = _sum_to(-wrx, ctx.q_shapes[0])
        if ctx.needs_input_grad[2]:
            qy_grad = _sum_to(-wry, ctx.q_shapes[1])
        return grad_mesh, qx_grad, qy_grad, None, None, None, None, None


# ------------------------------------------------------------------------------------------------- private
def _solve(
    table: torch.Tensor,
    col: torch.Tensor,
    row: torch.Tensor,
    qx: torch.Tensor,
    qy: torch.Tensor,
    grid: tuple[int, int],
    *,
    jacobian: bool,
) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """The closed-form solve of `solve_cells`, without autograd; few large buffers, reused in place.

    Returns ``x, y`` and, with ``jacobian``, the entries of the inverse Jacobian of $l$ with respect to the
    point at the solution, ``(i_xx, i_xy, i_yx, i_yy)``, for `NewtonStep`.
    """
    n, m = grid
    shape = col.shape
    dtype = table.dtype
    offsets = torch.arange(shape[0], device=col.device, dtype=torch.int32) * (n * m)
    cell = row.to(torch.int32).mul_(n).add_(col).add_(offsets.view(-1, *([1] * (col.dim() - 1)))).view(-1)

    def read(k: int, out: torch.Tensor | None = None) -> torch.Tensor:
        if out is None:
            return table[k].index_select(0, cell).view(shape)
        return torch.index_select(table[k], 0, cell, out=out.view(-1)).view(shape)

    # v = k0' / (k1 + sqrt(k1^2 + 2 k0' k2)), k0' = -2 k0 = c0 + c1 qx + c2 qy, k1 = d0 + d1 qx + d2 qy.
    if jacobian:  # keep c1 = -2 e_y, c2 = 2 e_x, d1 = g_y, d2 = -g_x for the Jacobian
        c1, c2, d1, d2 = read(1), read(2), read(4), read(5)
        tmp = read(0)
        k0 = torch.mul(c1, qx).add_(tmp).addcmul_(c2, qy)
        k1 = torch.mul(d1, qx).add_(read(3, tmp)).addcmul_(d2, qy)
    else:
        k0 = read(1).mul_(qx)
        tmp = read(0)
        k0.add_(tmp).addcmul_(read(2, tmp), qy)
        k1 = read(4).mul_(qx).add_(read(3, tmp)).addcmul_(read(5, tmp), qy)
    den = read(6, tmp).mul_(k0).mul_(2).addcmul_(k1, k1).clamp_min_(0).sqrt_().add_(k1)
    v = k0.div_(den.clamp_min_(torch.finfo(dtype).tiny)).clamp_(0, 1)
    # x = x_i + u / N with u = (h_x - f_x v) / (e_x + g_x v), the cell origin folded into the table:
    # x = (q_x - A - F v) / (E + G v) with A = a_x - i e_x, F = f_x - i g_x, E = N e_x, G = N g_x.
    den = read(10, tmp).mul_(v).add_(read(9, k1))
    if jacobian:
        f_col = read(8)
        num = torch.mul(f_col, v).neg_().add_(qx)
    else:
        num = read(8, k1).mul_(v).neg_().add_(qx)
    y = row.to(dtype).add_(v).div_(m)
    x = num.sub_(read(7, None if jacobian else v)).div_(den).clamp_(0, 1)
    if not jacobian:
        return x, y, ()
    # Jacobian in cell units: l_u = e + g v, l_v = f + g u, with f_x = F + i g_x, so that
    # l_v,x = F + g_x (i + u) = F + g_x x N.
    xn = x * n
    u = xn - col
    lux = torch.mul(d2, v).neg_().add_(c2, alpha=0.5)
    luy = torch.mul(d1, v).add_(c1, alpha=-0.5)
    lvx = xn.mul_(d2).neg_().add_(f_col)
    lvy = read(11).addcmul_(d1, u)
    # J^-1 in cell units is [[lvy, -lvx], [-luy, lux]] / det; x = x_i + u / N and y = y_j + v / M scale its
    # rows by 1 / N and 1 / M. A zero determinant (a folded element) gives zeros, not infinities.
    rdet = (lux * lvy).sub_(luy * lvx).reciprocal_().nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    rdx, rdy = rdet * (1 / n), rdet.mul_(1 / m)
    return x, y, (lvy.mul_(rdx), lvx.mul_(rdx).neg_(), luy.mul_(rdy).neg_(), lux.mul_(rdy))


def _solve_table(coef: torch.Tensor) -> torch.Tensor:
    """Per-cell coefficients of the closed-form inverse, `(12, B, M * N)` (one contiguous plane each).

    Planes: ``c0, c1, c2`` of $k_0' = -2 k_0$, ``d0, d1, d2`` of $k_1$ (affine in the target), $k_2$,
    then ``A, F, E, G`` of $x = (q_x - A - F v) / (E + G v)$ (the cell origin folded in), then $f_y$ for the
    Jacobian (its other entries follow from the planes above).
    """
    b, m, n, _ = coef.shape
    ax, ay, ex, ey, fx, fy, gx, gy = coef.unbind(-1)
    i = torch.arange(n, device=coef.device, dtype=coef.dtype)
    planes = [
        -2 * (ay * ex - ax * ey),
        -2 * ey,
        2 * ex,
        ay * gx - ax * gy + ex * fy - ey * fx,
        gy,
        -gx,
        gx * fy - gy * fx,
        ax - i * ex,
        fx - i * gx,
        n * ex,
        n * gx,
        fy,
    ]
    return torch.stack(planes).reshape(len(planes), b, m * n).contiguous()


def _sum_to(t: torch.Tensor, shape: torch.Size | None) -> torch.Tensor:
    """Sum a broadcast gradient back to ``shape``."""
    assert shape is not None
    lead = t.dim() - len(shape)
    dims = tuple(range(lead)) + tuple(
        lead + k for k, s in enumerate(shape) if s == 1 and t.shape[lead + k] != 1
    )
    return t.sum(dim=dims, keepdim=True).reshape(shape) if dims else t
