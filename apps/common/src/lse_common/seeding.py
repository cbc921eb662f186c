"""Seeding and random-state capture.

Three random number generators drive a training run: Python's `random`, NumPy's legacy global state and
torch's (CPU and, where present, CUDA) default generators. `seed_everything` seeds all of them;
`get_rng_state` / `set_rng_state` capture and restore all of them as plain tensors and tuples so that the
state fits a ``torch.load(weights_only=True)`` file and a resumed run draws exactly the numbers the
uninterrupted run would have drawn.

Per-index random numbers (`index_uniform`) are a pure function of ``(seed, stream, index)``
(a counter-based generator, vectorised over indices): a sample is the same whatever the number of
data-loader workers, the batch size or the length of the data set it belongs to.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["get_rng_state", "index_uniform", "seed_everything", "set_rng_state"]


def seed_everything(seed: int, *, rank: int = 0) -> int:
    """Seed Python, NumPy and torch (all devices) from one integer.

    Args:
        seed: the run's seed, a non-negative integer.
        rank: the process rank; each rank gets ``seed + rank`` so that random augmentation differs between
            the processes of a distributed run while staying reproducible.

    Returns:
        The seed actually used by this process.

    Raises:
        ValueError: if ``seed`` or ``rank`` is negative.

    Example:
        >>> seed_everything(3)
        3
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank must be a non-negative int, got {rank!r}")
    s = seed + rank
    random.seed(s)
    np.random.seed(s % 2**32)  # noqa: NPY002 - the legacy global state is what we seed
    torch.manual_seed(s)  # seeds every CUDA device too
    return s


def get_rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators, serialisable with ``weights_only``."""
    np_state = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from a `get_rng_state` dictionary.

    Raises:
        ValueError: if a required entry is missing.
    """
    for key in ("python", "numpy", "torch"):
        if key not in state:
            raise ValueError(f"rng state lacks the {key!r} entry; it has {sorted(state)}")
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def index_uniform(seed: int, stream: int, index: np.ndarray | int, num: int) -> np.ndarray:
    """``num`` uniform numbers in ``[0, 1)`` for each sample index, a function of ``(seed, stream, index)``.

    A counter-based generator (SplitMix64 finaliser chained over seed, stream, index and draw number),
    vectorised over ``index``: sample ``i`` gets the same numbers whether it is drawn alone, in a batch,
    in a data set of any length or in any data-loader worker.

    Args:
        seed: the data set's seed (>= 0).
        stream: a small integer naming the use (e.g. 0 for train, 2 for test) (>= 0).
        index: sample indices (>= 0), any shape.
        num: numbers per sample.

    Returns:
        `(*index.shape, num)` float64.

    Example:
        >>> a = index_uniform(0, 1, np.arange(4), 2)
        >>> bool(np.array_equal(a[2], index_uniform(0, 1, 2, 2))), a.shape
        (True, (4, 2))
    """
    idx = np.asarray(index)
    if min(seed, stream) < 0 or (idx.size and idx.min() < 0):
        raise ValueError(
            f"seed, stream and index must be non-negative, got {seed}, {stream}, min {idx.min()}"
        )
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}")
    with np.errstate(over="ignore"):
        key = _splitmix64(_splitmix64(np.asarray(seed, dtype=np.uint64)) + np.uint64(stream))
        h = _splitmix64(key + idx.astype(np.uint64))
        draws = _splitmix64(h[..., None] + _GOLDEN * (np.arange(num, dtype=np.uint64) + np.uint64(1)))
    return (draws >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)
