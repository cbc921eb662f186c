"""Checkpoints that are never half written, that resume a run exactly, and that only ever prune their own run.

Every file is written to a temporary file in its final folder, flushed to disk, then moved over the
final name with `os.replace` (atomic on POSIX and Windows): a reader sees the old file or the new one,
never a partial one. A temporary file is named after the process writing it
(``.<name>.<pid>.<random>.tmp``); an exception removes it, and a kill leaves it behind until a later
`save_checkpoint` in that folder finds that its process is gone (`remove_stale_temporaries`). Temporaries
of living processes are never touched, so two writers in one folder do not break each other's writes.

A checkpoint of step ``k`` is two files in ``<dir>``:

- ``step-<k>.safetensors``: the model weights (`safetensors.torch.save_model`, shared tensors handled;
  the header's metadata holds the step and the run id);
- ``step-<k>.state.pt``: a small ``torch.save`` dictionary loadable with ``weights_only=True``: optimizer,
  scheduler, gradient scaler, the random states of every process, epoch and step counters, the run id
  (``run_id``, a uuid made when a run starts afresh and kept across resumes) and whatever the caller adds.

Then the pointer file ``latest`` (one line: ``step-<k>``) is replaced. Retention (``keep``) deletes only
checkpoints of the same ``run_id`` with a lower step: never another run's files, never a higher step, never
the checkpoint just written. `find_latest` follows ``latest`` and checks that both files are intact (the
state file loads with ``weights_only=True``, the safetensors header parses and covers the file); when the
pointer is missing or broken, or the files it names are damaged, it falls back to the newest intact
checkpoint and logs a warning naming what it skipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
import secrets
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "check_checkpoint",
    "find_latest",
    "list_checkpoints",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

_STEP_RE = re.compile(r"^step-(\d+)\.state\.pt$")
_TMP_RE = re.compile(r"^\..+\.(\d+)\.[0-9a-f]+\.tmp$")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The temporary file is named ``.<name>.<pid>.<random>.tmp``; on an exception it is removed and ``path``
    is left untouched.

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
    tmp = final.parent / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.close(fd)
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


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of `atomic_path` in ``directory`` whose writing process is gone.

    Only files named ``.<name>.<pid>.<random>.tmp`` with a pid that no longer runs on this machine are
    removed; those of living processes (another writer in the same folder) are left alone.

    Returns:
        The removed paths.
    """
    removed = []
    folder = Path(directory)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP_RE.match(p.name)
        if m and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


def _short_reason(err: BaseException) -> str:
    """One line about why a file did not load, without torch's advice to load it unsafely."""
    text = str(err)
    if isinstance(err, pickle.UnpicklingError):
        detail = next((ln.strip() for ln in text.splitlines() if "WeightsUnpickler error" in ln), "")
        return "it holds objects other than tensors and plain containers" + (f" ({detail})" if detail else "")
    if isinstance(err, EOFError):
        return "the file ends early"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return first.split(". ")[0].rstrip(".")


def _damaged(path: Path, reason: str) -> ValueError:
    return ValueError(f"checkpoint {path} is damaged or not a checkpoint state file: {reason}")


def _read_state(
    path: Path, map_location: str | torch.device = "cpu", *, mmap: bool = False
) -> dict[str, Any]:
    if not zipfile.is_zipfile(path):
        raise _damaged(path, "not a torch.save archive (truncated, or some other file)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise _damaged(path, _short_reason(err)) from None
    if not isinstance(state, dict) or "weights" not in state:
        raise _damaged(path, f"it holds a {type(state).__name__} without the 'weights' entry")
    return state


def _check_safetensors(path: Path) -> dict[str, str]:
    """Parse the header of a safetensors file and check that its tensors cover the file exactly."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError(f"weights file {path} is truncated (no header)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ValueError(f"weights file {path} is truncated (header of {n} bytes, file of {size})")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"weights file {path} has a damaged header: {err}") from None
    if not isinstance(header, dict):
        raise ValueError(f"weights file {path} has a damaged header")
    meta = header.pop("__metadata__", None) or {}
    end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
    if 8 + n + end != size:
        raise ValueError(
            f"weights file {path} is truncated or damaged ({size} bytes, expected {8 + n + end})"
        )
    return meta


def check_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Check that a checkpoint's state file and its weights file are intact; return the state.

    The state file must load with ``weights_only=True`` (memory-mapped, so large optimizer states are not
    read) and name its weights file; the weights file's header must parse and cover the file exactly.

    Args:
        path: a ``step-*.state.pt`` file.

    Returns:
        The state dictionary (its tensors memory-mapped).

    Raises:
        FileNotFoundError: if either file is missing.
        ValueError: if either file is damaged.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    state = _read_state(p, mmap=True)
    weights = p.parent / str(state["weights"])
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint {p} names the weights file {weights}, which is missing")
    _check_safetensors(weights)
    return state


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """The state files ``step-*.state.pt`` in ``directory``, newest (highest step) first, unchecked."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


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
        state: everything else, as tensors, numbers, strings, lists, tuples and dicts; its ``"run_id"``
            (a string, or absent) names the run for retention.
        keep: how many checkpoints of this run to keep: older ones (same ``run_id``, lower step) are
            deleted; ``None`` keeps all. Checkpoints of other runs are never deleted.

    Returns:
        The path of the state file.

    Raises:
        ValueError: if ``step`` is negative or ``keep`` is smaller than 1.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> m = torch.nn.Linear(2, 1)
        >>> for s in (1, 2, 3):
        ...     _ = save_checkpoint(d, s, m, {"run_id": "a"}, keep=2)
        >>> [p.name for p in list_checkpoints(d)], find_latest(d).name
        (['step-000000003.state.pt', 'step-000000002.state.pt'], 'step-000000003.state.pt')
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be >= 1 or None, got {keep}")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)  # left by a kill during an earlier write
    run_id = state.get("run_id")
    name = f"step-{step:09d}"
    meta = {"step": str(step), **({"run_id": str(run_id)} if run_id is not None else {})}
    with atomic_path(folder / f"{name}.safetensors") as tmp:
        save_model(_unwrap(model), str(tmp), metadata=meta)
    with atomic_path(folder / f"{name}.state.pt") as tmp:
        torch.save({**state, "step": step, "weights": f"{name}.safetensors"}, tmp)
    atomic_write_bytes(folder / "latest", (name + "\n").encode())
    if keep is not None:
        _prune(folder, step, run_id, keep)
    return folder / f"{name}.state.pt"


def _prune(folder: Path, step: int, run_id: Any, keep: int) -> None:
    """Delete this run's checkpoints below ``step`` beyond the newest ``keep`` (the new one included)."""
    own = []
    for p in list_checkpoints(folder):
        s = int(_STEP_RE.match(p.name).group(1))  # type: ignore[union-attr]
        if s >= step:
            continue
        try:
            other = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # unreadable or vanished: not provably ours, leave it
            continue
        if isinstance(other, dict) and other.get("run_id") == run_id:
            own.append(p)
    for p in own[keep - 1 :]:
        stem = p.name[: -len(".state.pt")]
        for suffix in (".state.pt", ".safetensors"):
            with contextlib.suppress(FileNotFoundError):
                (folder / f"{stem}{suffix}").unlink()


def find_latest(directory: str | os.PathLike) -> Path | None:
    """The newest intact checkpoint's state file in ``directory``, or ``None`` when there is none.

    ``latest`` names the checkpoint to use; when it is missing, names missing files, or its files are
    damaged (see `check_checkpoint`), the newest intact ``step-*`` checkpoint is used instead and a warning
    names what was skipped.
    """
    folder = Path(directory)
    skipped: list[str] = []
    pointer = folder / "latest"
    candidates = list_checkpoints(folder)
    if pointer.is_file():
        name = pointer.read_text().strip()
        named = folder / f"{name}.state.pt"
        candidates = [named] + [p for p in candidates if p != named]
    elif candidates:
        skipped.append(f"{pointer} (missing)")
    for p in candidates:
        try:
            check_checkpoint(p)
        except (FileNotFoundError, ValueError) as err:
            skipped.append(f"{p.name} ({err})")
            continue
        if skipped:
            logger.warning("checkpoint folder %s: using %s, skipped %s", folder, p.name, "; ".join(skipped))
        return p
    if skipped:
        logger.warning("checkpoint folder %s has no intact checkpoint: %s", folder, "; ".join(skipped))
    return None


def load_checkpoint(
    path: str | os.PathLike, model: torch.nn.Module | None = None, *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a state file (and, when ``model`` is given, its weights into ``model``, strictly).

    Args:
        path: a ``step-*.state.pt`` file, a ``.safetensors`` file (weights only), or a checkpoint folder
            (its newest intact checkpoint, see `find_latest`).
        model: receives the weights; a DDP wrapper is unwrapped.
        map_location: where the state's tensors go.

    Returns:
        The state dictionary (``{}`` for a bare ``.safetensors`` file).

    Raises:
        FileNotFoundError: if nothing loadable is there.
        ValueError: if the state or weights file is damaged or not a checkpoint file.
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
            _check_safetensors(p)
            load_model(_unwrap(model), str(p), strict=True)
        return {}
    state = _read_state(p, map_location)
    if model is not None:
        weights = p.parent / str(state["weights"])
        if not weights.is_file():
            raise FileNotFoundError(f"checkpoint {p} names the weights file {weights}, which is missing")
        _check_safetensors(weights)
        load_model(_unwrap(model), str(weights), strict=True)
    return state
