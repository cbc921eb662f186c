"""Checkpoints that are never half written, and that resume a run exactly.

Every file is written to a temporary file in its final folder, flushed to disk, then moved over the
final name with `os.replace` (atomic on POSIX and Windows): a reader sees the old file or the new one,
never a partial one; an exception or a kill during the write leaves at most a ``*.tmp`` file, which the
next save removes.

A checkpoint of step ``k`` is two files in ``<dir>``:

- ``step-<k>.safetensors``: the model weights (`safetensors.torch.save_model`, shared tensors handled);
- ``step-<k>.state.pt``: a small ``torch.save`` dictionary loadable with ``weights_only=True``: optimizer,
  scheduler, gradient scaler, the random states of every process, epoch and step counters, and whatever
  the caller adds under ``extra``.

Then the pointer file ``latest`` (one line: ``step-<k>``) is replaced. `find_latest` follows it, so a
checkpoint counts only once both of its files are complete. Older checkpoints beyond ``keep`` are deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "find_latest",
    "load_checkpoint",
    "save_checkpoint",
]

_STEP_RE = re.compile(r"^step-(\d+)\.state\.pt$")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left untouched.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_path(d / "a.txt") as tmp:
        ...     _ = tmp.write_text("hello")
        >>> (d / "a.txt").read_text()
        'hello'
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # make the bytes durable before they become visible
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(final.parent)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


def save_checkpoint(
    directory: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    state: dict[str, Any],
    *,
    keep: int | None = 2,
) -> Path:
    """Write the checkpoint of ``step`` (weights + state), then point ``latest`` at it.

    Args:
        directory: the checkpoint folder (created if missing).
        step: the global optimisation step the checkpoint is taken after.
        model: the model (a DDP wrapper is unwrapped); its weights go to safetensors.
        state: everything else, as tensors, numbers, strings, lists, tuples and dicts.
        keep: how many checkpoints to keep (older ones are deleted); ``None`` keeps all.

    Returns:
        The path of the state file.

    Raises:
        ValueError: if ``step`` is negative or ``keep`` is smaller than 1.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be >= 1 or None, got {keep}")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp"):  # left by a kill during an earlier write
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    name = f"step-{step:09d}"
    with atomic_path(folder / f"{name}.safetensors") as tmp:
        save_model(_unwrap(model), str(tmp))
    with atomic_path(folder / f"{name}.state.pt") as tmp:
        torch.save({**state, "step": step, "weights": f"{name}.safetensors"}, tmp)
    atomic_write_bytes(folder / "latest", (name + "\n").encode())
    if keep is not None:
        steps = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _STEP_RE.match(p.name)))
        for old in steps[:-keep]:
            for suffix in (".state.pt", ".safetensors"):
                with contextlib.suppress(FileNotFoundError):
                    (folder / f"step-{old:09d}{suffix}").unlink()
    return folder / f"{name}.state.pt"


def find_latest(directory: str | os.PathLike) -> Path | None:
    """The state file that ``latest`` points to, or ``None`` when the folder has no complete checkpoint."""
    folder = Path(directory)
    pointer = folder / "latest"
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    state = folder / f"{name}.state.pt"
    if not state.is_file() or not (folder / f"{name}.safetensors").is_file():
        return None
    return state


def load_checkpoint(
    path: str | os.PathLike, model: torch.nn.Module | None = None, *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a state file (and, when ``model`` is given, its weights into ``model``, strictly).

    Args:
        path: a ``step-*.state.pt`` file, a ``.safetensors`` file (weights only), or a checkpoint folder
            (its ``latest``).
        model: receives the weights; a DDP wrapper is unwrapped.
        map_location: where the state's tensors go.

    Returns:
        The state dictionary (``{}`` for a bare ``.safetensors`` file).

    Raises:
        FileNotFoundError: if nothing loadable is there.
    """
    p = Path(path)
    if p.is_dir():
        latest = find_latest(p)
        if latest is None:
            raise FileNotFoundError(f"no complete checkpoint in {p}")
        p = latest
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if p.suffix == ".safetensors":
        if model is not None:
            load_model(_unwrap(model), str(p), strict=True)
        return {}
    state = torch.load(p, map_location=map_location, weights_only=True)
    if model is not None:
        weights = p.parent / state["weights"]
        load_model(_unwrap(model), str(weights), strict=True)
    return state
