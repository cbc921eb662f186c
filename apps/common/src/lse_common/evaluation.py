"""What every app's ``evaluate`` shares: sharding over processes, batching, and stored results that are
reused only for the weights they were computed from.

Under ``torchrun`` every process evaluates its own contiguous block of the images (`shard`) and
accumulates lsmetrics' / torchmetrics' `Metric` objects; their ``compute()`` sums the states of all
processes, so two processes give the same table as one. A result is stored next to the run
(``eval.json``) with the evaluation settings and the SHA-256 of the weights file it was computed from
(`weights_digest`); `load_stored_result` hands it back only when both match, so retrained weights are
always evaluated again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import atomic_write_bytes, find_latest

__all__ = ["batches", "load_stored_result", "run_weights", "shard", "store_result", "weights_digest"]

logger = logging.getLogger(__name__)


def weights_digest(path: str | os.PathLike, *, chunk: int = 1 << 22) -> str:
    """The SHA-256 (hex) of a weights file, read in chunks.

    Raises:
        FileNotFoundError: if the file does not exist.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    h = hashlib.sha256()
    with p.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def run_weights(run_dir: str | os.PathLike) -> Path:
    """The weights of a run folder: ``final.safetensors``, else its newest intact checkpoint's weights.

    Raises:
        FileNotFoundError: naming the folder, when it has neither.
    """
    run = Path(run_dir)
    final = run / "final.safetensors"
    if final.is_file():
        return final
    latest = find_latest(run / "checkpoints")
    if latest is None:
        raise FileNotFoundError(f"{run} has neither final.safetensors nor an intact checkpoint")
    return latest.with_name(latest.name.replace(".state.pt", ".safetensors"))


def load_stored_result(
    path: str | os.PathLike, *, settings: Mapping[str, Any], digest: str
) -> dict[str, Any] | None:
    """The stored result at ``path`` if it was computed with ``settings`` from the weights ``digest``.

    A missing, unreadable or mismatched file gives ``None`` (and a log line saying why it is not reused).
    """
    p = Path(path)
    if not p.is_file():
        return None
    try:
        stored = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        logger.warning("%s is unreadable (%s): evaluating again", p, err)
        return None
    if stored.get("weights_sha256") != digest:
        logger.info("%s was computed from other weights: evaluating again", p)
        return None
    if stored.get("settings") != json.loads(json.dumps(dict(settings))):
        logger.info("%s was computed with other settings: evaluating again", p)
        return None
    return stored


def store_result(path: str | os.PathLike, result: Mapping[str, Any]) -> Path:
    """Write a result as JSON, atomically (it should hold ``settings`` and ``weights_sha256``)."""
    missing = {"settings", "weights_sha256"} - set(result)
    if missing:
        raise ValueError(f"a stored result needs {sorted(missing)} to be reusable safely")
    return atomic_write_bytes(path, json.dumps(dict(result), indent=1).encode())


def shard(n: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """The indices ``0..n-1`` of process ``rank`` of ``world_size``: contiguous blocks that cover each
    index exactly once (sizes differ by at most one).

    Example:
        >>> [shard(5, r, 2).tolist() for r in range(2)]
        [[0, 1, 2], [3, 4]]
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
    bounds = [(n * r + world_size - 1) // world_size for r in range(world_size + 1)]
    return np.arange(bounds[rank], bounds[rank + 1], dtype=np.int64)


def batches(indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive slices of ``indices`` of at most ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for s in range(0, len(indices), batch_size):
        yield indices[s : s + batch_size]
