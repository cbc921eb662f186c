"""On-disk caches that are never half written: large arrays filled chunk by chunk, and their metadata.

`cached_array` returns a memory-mapped ``.npy`` array, filling it first when it is missing or has another
shape: the array is written into a temporary file chunk by chunk (a progress bar counts the items) and moved
over the final name only when complete (`lse_common.checkpoint.atomic_path`), so a killed writer leaves no
file a reader could take for finished. `read_meta` / `write_meta` keep a JSON description next to a cache,
so that a cache made from other settings is recognised and rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .checkpoint import atomic_path, atomic_write_bytes

__all__ = ["cached_array", "read_meta", "write_meta"]

logger = logging.getLogger(__name__)

Fill = Callable[[int, int, np.ndarray], None]


def cached_array(
    path: str | os.PathLike,
    shape: tuple[int, ...],
    dtype: np.dtype | type,
    fill: Fill,
    *,
    chunk: int = 1024,
    progress: bool = True,
    desc: str = "",
) -> np.ndarray:
    """The array at ``path`` (memory-mapped, read-only), made with ``fill`` if absent or of another shape.

    Args:
        path: the ``.npy`` file.
        shape: the array's shape; the first axis is filled in chunks.
        dtype: its dtype.
        fill: ``fill(start, end, out)`` writes items ``start..end-1`` into ``out`` (a view of that chunk).
        chunk: items per ``fill`` call.
        progress: show a progress bar while filling.
        desc: the bar's label.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    p = Path(path)
    dtype = np.dtype(dtype)
    if p.is_file():
        try:
            existing = np.load(p, mmap_mode="r")
        except (OSError, ValueError) as err:
            logger.warning("cache %s is unreadable (%s): rebuilding it", p, err)
        else:
            if existing.shape == tuple(shape) and existing.dtype == dtype:
                return existing
            logger.info("cache %s has shape %s, not %s: rebuilding it", p, existing.shape, tuple(shape))
    n = int(shape[0])
    with atomic_path(p) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        with tqdm(total=n, desc=desc or p.name, unit="item", disable=not progress, leave=False) as bar:
            for s in range(0, n, chunk):
                e = min(n, s + chunk)
                fill(s, e, out[s:e])
                bar.update(e - s)
        out.flush()
        del out
    return np.load(p, mmap_mode="r")


def read_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON mapping at ``path``, or ``None`` when it is missing or unreadable."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_meta(path: str | os.PathLike, meta: Mapping[str, Any]) -> Path:
    """Write ``meta`` as JSON, atomically."""
    return atomic_write_bytes(path, json.dumps(dict(meta), indent=1).encode())
