r"""1-D monotone scalings: piecewise-linear, strictly increasing bijections of $[0, 1]$ (eq. 12).

A `Monotone1d` holds a batch of functions by their breakpoints ``xs``, ``ys`` `(B, K)`:
$l(x_k) = y_k$, linear in between, $x_0 = y_0 = 0$, $x_{K-1} = y_{K-1} = 1$. This family is closed under the
group operations of eq. 9 *exactly*:

* the inverse swaps the roles of ``xs`` and ``ys``;
* the composition $a \circ b$ is piecewise linear with breakpoints at the breakpoints of $b$ and at the
  preimages under $b$ of the breakpoints of $a$; evaluating $a(b(\cdot))$ there gives it exactly.

Breakpoints may repeat (zero-width intervals appear when breakpoints of a composition coincide); the batch
keeps a fixed ``K``. The monotone scaling of a signal is $S(f; l)(x) = f(l^{-1}(x))$ (eq. 8), see
`monowarp.warp1d`.
"""

from __future__ import annotations

import torch

from ._utils import check_same_device_dtype, check_tensor, interp1d, knots_from_logits, logits_from_knots

__all__ = ["Monotone1d"]


class Monotone1d:
    r"""A batch of piecewise-linear strictly increasing maps $[0, 1] \to [0, 1]$ (eq. 12).

    Args:
        xs: `(B, K)` breakpoints, non-decreasing, from 0 to 1, ``K >= 2``.
        ys: `(B, K)` values at the breakpoints, non-decreasing, from 0 to 1; an interval of positive width
            must have a positive rise and a zero-width interval a zero rise (strictly increasing, continuous).
        validate: check the above (synchronises with the device); the constructors of this class that
            produce valid maps by construction skip it.

    Raises:
        TypeError: non-tensor or non-floating input, or dtypes differ.
        ValueError: wrong shapes, non-finite values, end points other than 0 and 1, or a map that is not
            strictly increasing and continuous.

    Examples:
        >>> f = Monotone1d.from_knots(torch.tensor([[0.0, 0.7, 1.0]]))
        >>> f.forward_map(torch.tensor([[0.25, 0.75]]))
        tensor([[0.3500, 0.8500]])
        >>> g = f.compose(f.inverse())
        >>> g.forward_map(torch.tensor([[0.3, 0.9]]))
        tensor([[0.3000, 0.9000]])
    """

    def __init__(self, xs: torch.Tensor, ys: torch.Tensor, *, validate: bool = True) -> None:
        if validate:
            _validate_breakpoints(xs, ys)
        self.xs = xs
        self.ys = ys

    # ----------------------------------------------------------------------------------------- constructors
    @classmethod
    def identity(
        cls,
        batch: int,
        grid: int = 4,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Monotone1d:
        """The identity with ``grid + 1`` uniform breakpoints, `(batch, grid + 1)`."""
        if not isinstance(grid, int) or grid < 1:
            raise ValueError(f"grid must be a positive int (number of intervals), got {grid!r}")
        xs = torch.linspace(0, 1, grid + 1, device=device, dtype=dtype).expand(batch, grid + 1).clone()
        return cls(xs, xs.clone(), validate=False)

    @classmethod
    def from_knots(cls, knots: torch.Tensor) -> Monotone1d:
        """Values `(B, K)` at the uniform breakpoints $k / (K - 1)$ (validated)."""
        check_tensor(knots, "knots", [("B", "K")])
        if knots.shape[1] < 2:
            raise ValueError(f"knots must have shape (B, K) with K >= 2, got {tuple(knots.shape)}")
        xs = torch.linspace(0, 1, knots.shape[1], device=knots.device, dtype=knots.dtype)
        return cls(xs.expand_as(knots).clone(), knots)

    @classmethod
    def from_params(cls, params: torch.Tensor) -> Monotone1d:
        """From unconstrained logits `(B, K - 1)` (one per interval) on uniform breakpoints.

        Shares of the intervals are a floored softmax of the logits, the knots their cumulative sum from 0
        (see `monowarp._utils.knots_from_logits`); zero logits give the identity. Any finite logits
        give a valid map.

        Raises:
            ValueError: wrong shape or non-finite entries.
        """
        check_tensor(params, "params", [("B", "K-1")])
        ys = knots_from_logits(params)
        xs = torch.linspace(0, 1, ys.shape[1], device=ys.device, dtype=ys.dtype).expand_as(ys).clone()
        return cls(xs, ys, validate=False)

    def to_params(self) -> torch.Tensor:
        """Zero-mean logits `(B, K - 1)` that `from_params` maps back to this function.

        Only defined for maps whose breakpoints ``xs`` are uniform (e.g. built by `from_knots` or
        `from_params`).

        Raises:
            ValueError: the breakpoints are not uniform.
        """
        uniform = torch.linspace(0, 1, self.xs.shape[1], device=self.xs.device, dtype=self.xs.dtype)
        if not torch.allclose(self.xs, uniform.expand_as(self.xs), atol=1e-6, rtol=0):
            raise ValueError(
                "to_params needs uniform breakpoints xs; this map has others (e.g. a composition)"
            )
        return logits_from_knots(self.ys)

    # ------------------------------------------------------------------------------------------ properties
    @property
    def batch_size(self) -> int:
        return self.xs.shape[0]

    @property
    def num_knots(self) -> int:
        """Number of breakpoints ``K`` (duplicates included)."""
        return self.xs.shape[1]

    @property
    def device(self) -> torch.device:
        return self.xs.device

    @property
    def dtype(self) -> torch.dtype:
        return self.xs.dtype

    def __len__(self) -> int:
        return self.batch_size

    def __repr__(self) -> str:
        return f"Monotone1d(batch_size={self.batch_size}, num_knots={self.num_knots}, dtype={self.dtype})"

    # ------------------------------------------------------------------------------------------------ maps
    def forward_map(self, t: torch.Tensor) -> torch.Tensor:
        """$l(t)$ for positions ``t`` `(B, P)`; outside $[0, 1]$ the end pieces are extended linearly."""
        check_tensor(t, "t", [(self.batch_size, "P")], finite=False, nonempty=False)
        return interp1d(self.xs, self.ys, t)

    __call__ = forward_map

    def inverse_map(self, t: torch.Tensor) -> torch.Tensor:
        """$l^{-1}(t)$ for positions ``t`` `(B, P)`, exact (piecewise linear as well)."""
        check_tensor(t, "t", [(self.batch_size, "P")], finite=False, nonempty=False)
        return interp1d(self.ys, self.xs, t)

    def inverse(self) -> Monotone1d:
        """The exact inverse $l^{-1}$: the breakpoints with ``xs`` and ``ys`` swapped."""
        return Monotone1d(self.ys, self.xs, validate=False)

    def compose(self, other: Monotone1d) -> Monotone1d:
        """The exact composition ``self o other``, mapping $t$ to ``self(other(t))`` (eq. 9).

        The result has ``self.num_knots + other.num_knots`` breakpoints: those of ``other`` and the
        preimages under ``other`` of those of ``self``, sorted (coinciding ones are kept as duplicates).

        Raises:
            TypeError: ``other`` is not a `Monotone1d` or has another dtype.
            ValueError: batch sizes or devices differ.
        """
        if not isinstance(other, Monotone1d):
            raise TypeError(f"other must be a Monotone1d, got {type(other).__name__}")
        if other.batch_size != self.batch_size:
            raise ValueError(f"other must have batch size {self.batch_size}, got {other.batch_size}")
        check_same_device_dtype(self.xs, "self", other.xs, "other")
        ts = torch.cat([other.xs, interp1d(other.ys, other.xs, self.xs)], dim=1)
        ts, _ = torch.sort(ts, dim=1)
        ys = interp1d(self.xs, self.ys, interp1d(other.xs, other.ys, ts))
        # End points are exact by construction up to rounding; pin them.
        ts = torch.cat([torch.zeros_like(ts[:, :1]), ts[:, 1:-1], torch.ones_like(ts[:, :1])], dim=1)
        ys = torch.cat([torch.zeros_like(ys[:, :1]), ys[:, 1:-1], torch.ones_like(ys[:, :1])], dim=1)
        return Monotone1d(ts, ys, validate=False)

    def slopes(self) -> torch.Tensor:
        """Slopes (local scale factors) of the intervals, `(B, K - 1)`; zero-width intervals report 1."""
        dx = self.xs[:, 1:] - self.xs[:, :-1]
        dy = self.ys[:, 1:] - self.ys[:, :-1]
        pos = dx > 0
        return torch.where(pos, dy / torch.where(pos, dx, torch.ones_like(dx)), torch.ones_like(dx))

    def local_scale(self, t: torch.Tensor) -> torch.Tensor:
        """Derivative $l'(t)$ at positions ``t`` `(B, P)` (the right derivative at breakpoints)."""
        check_tensor(t, "t", [(self.batch_size, "P")], finite=False, nonempty=False)
        k = self.num_knots
        idx = torch.searchsorted(self.xs.detach().contiguous(), t.detach().contiguous(), right=True) - 1
        idx = idx.clamp_(0, k - 2)
        return torch.gather(self.slopes(), 1, idx)

    # -------------------------------------------------------------------------------------------- plumbing
    def to(self, *args, **kwargs) -> Monotone1d:
        """Move/cast the breakpoints like `torch.Tensor.to`."""
        return Monotone1d(self.xs.to(*args, **kwargs), self.ys.to(*args, **kwargs), validate=False)

    def detach(self) -> Monotone1d:
        """The same maps with breakpoints detached from the autograd graph."""
        return Monotone1d(self.xs.detach(), self.ys.detach(), validate=False)

    def __getitem__(self, index: int | slice | torch.Tensor | list[int]) -> Monotone1d:
        """Batch indexing; an int keeps the batch axis (a batch of one)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Monotone1d(self.xs[index], self.ys[index], validate=False)


def _validate_breakpoints(xs: torch.Tensor, ys: torch.Tensor) -> None:
    check_tensor(xs, "xs", [("B", "K")])
    check_tensor(ys, "ys", [("B", "K")])
    check_same_device_dtype(xs, "xs", ys, "ys")
    if xs.shape != ys.shape or xs.shape[1] < 2:
        raise ValueError(
            "xs and ys must have the same shape (B, K) with K >= 2, "
            f"got {tuple(xs.shape)} and {tuple(ys.shape)}"
        )
    tol = 1e-5 if xs.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-9
    for name, v in (("xs", xs), ("ys", ys)):
        if not bool(((v[:, 0].abs() <= tol) & ((v[:, -1] - 1).abs() <= tol)).all()):
            raise ValueError(f"{name} must start at 0 and end at 1 in every row (B, K)")
    dx = xs[:, 1:] - xs[:, :-1]
    dy = ys[:, 1:] - ys[:, :-1]
    if bool((dx < 0).any()) or bool((dy < 0).any()):
        raise ValueError("xs and ys must be non-decreasing along K (a strictly increasing map)")
    if bool(((dx > 0) != (dy > 0)).any()):
        raise ValueError(
            "each interval of xs must have a positive rise in ys and each zero-width interval none "
            "(strictly increasing and continuous)"
        )
