"""What every app's ``evaluate`` shares: sharding over processes, batching, and stored results that are
reused only for the weights they were computed from.

Under ``torchrun`` every process evaluates its own contiguous block of the images (`shard`) and
accumulates lsmetrics' / torchmetrics' `Metric` objects; their ``compute()`` sums the states of all
processes, so two processes give the same table as one. A result is stored next to the run
(``eval.json``) with the evaluation settings and the SHA-256 of the weights file it was computed from
(`weights_digest`); `load_stored_result` hands it back only when both match, so retrained weights are
always evaluated again. `load_run_config` reads a run folder's options and weights, and `evaluate_runs` is
an app's ``evaluate`` loop over runs: reuse each stored result that still matches, else evaluate the run
with every process of the job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import atomic_write_bytes, find_latest

__all__ = [
    "batches",
    "evaluate_runs",
    "load_run_config",
    "load_stored_result",
    "run_weights",
    "shard",
    "store_result",
    "weights_digest",
]

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


def load_run_config(app: Any, run_dir: str | os.PathLike, *, data_dir: str | None = None) -> tuple[Any, Path]:
    """The training options of a run folder (its ``config.yaml``, read by ``app``'s ``train`` command) and
    its weights file (`run_weights`).

    Args:
        app: the app whose ``train`` command wrote the run (a `lse_common.cli.App`).
        run_dir: the run folder.
        data_dir: a data folder that replaces the run's ``data.dir`` (evaluating on data stored elsewhere).

    Raises:
        FileNotFoundError: if the folder has no ``config.yaml`` or no weights.
    """
    run = Path(run_dir)
    config = run / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{run} is not a run folder: no config.yaml")
    cfg = app.load("train", config)
    if data_dir:
        cfg.data.dir = data_dir
    return cfg, run_weights(run)


def evaluate_runs(
    runs: Sequence[str],
    runtime: Any,
    evaluate_run: Callable[..., dict[str, Any]],
    *,
    load_config: Callable[[str], Any],
    settings: Callable[[Any], Mapping[str, Any]],
    result_file: str = "eval.json",
    force: bool = False,
) -> list[dict[str, Any]]:
    """Evaluate each run, reusing a stored result computed from the same weights with the same settings.

    Rank 0 reads each run's options (``load_config(run)``) and weights digest, and the stored
    ``<run>/<result_file>`` if it matches ``settings(cfg)`` (`load_stored_result`); it tells every process
    (`lse_common.broadcast_object`), and when there is nothing to reuse all of them run
    ``evaluate_run(run, info=..., digest=...)`` together. The process group is opened from
    ``runtime.device`` (``runtime.threads`` CPU threads, when set) and closed at the end.

    Args:
        runs: the run folders.
        runtime: the `lse_common.options.RuntimeOptions`.
        evaluate_run: evaluates one run and returns its result (which it stores on rank 0).
        load_config: a run folder's training options (e.g. from `load_run_config`).
        settings: what a result depends on besides the weights, from the run's options.
        result_file: the stored result's name in the run folder.
        force: evaluate again even if a stored result matches.

    Returns:
        The results, in the order of ``runs``, on every process.
    """
    import torch

    from .distributed import broadcast_object, cleanup_distributed, init_distributed

    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    info = init_distributed(runtime.device)
    try:
        results = []
        for run in runs:
            stored, digest = None, None
            if info.is_main:
                cfg = load_config(run)
                digest = weights_digest(run_weights(run))
                if not force:
                    stored = load_stored_result(
                        Path(run) / result_file, settings=settings(cfg), digest=digest
                    )
                if stored is not None:
                    logger.info("%s: reusing its %s (same weights and settings)", run, result_file)
            stored, digest = broadcast_object((stored, digest))
            if stored is None:
                stored = evaluate_run(run, info=info, digest=digest)
            results.append(stored)
        return results
    finally:
        cleanup_distributed()


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
