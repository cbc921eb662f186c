"""Run folders that own their run: a lock, a stored configuration, and a resume that never loses work.

A run folder holds one training run: ``config.yaml`` (the configuration it was started with),
``checkpoints/`` (see `lse_common.checkpoint`), ``metrics.csv``, ``tensorboard/``, ``final.safetensors``,
``train_summary.json`` and ``eval*.json``. `RunFolder.open` checks, before it changes anything, that
the folder may be used the way it is asked to:

- an exclusive lock (``fcntl.flock`` on ``<run>/.lock``, held until `RunFolder.close`): a second process
  using the same folder is refused with the pid of the first;
- a fresh run (``resume=False``) in a folder that already holds a run is refused, unless ``overwrite=True``
  removes that run's files first;
- a resume compares the stored ``config.yaml`` with the new configuration and refuses any difference
  (each key listed as ``stored -> new``; an option the stored file lacks is no difference at its default)
  unless ``allow_config_change=True``; it then locates the newest
  intact checkpoint (`lse_common.checkpoint.find_latest`), or starts from step 0 when there is none.

Only then is ``config.yaml`` written (atomically), so a refused run leaves the folder as it was. Rank 0
does the file work; when a process group is open, its outcome (the checkpoint to resume from, or the
error) is broadcast, so every rank resumes from the same checkpoint or raises the same error.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from .checkpoint import atomic_write_bytes, check_checkpoint, find_latest, list_checkpoints

__all__ = ["RunFolder", "RunFolderError"]

logger = logging.getLogger(__name__)

_RUN_FILES = ("config.yaml", "final.safetensors", "metrics.csv", "train_summary.json")
_RUN_DIRS = ("checkpoints", "tensorboard")
_MISSING = object()


class RunFolderError(RuntimeError):
    """A run folder cannot be used: locked by another process, read-only, or impossible to create."""


def _plain(value: Any) -> Any:
    """A configuration as YAML-safe built-in types (mappings, lists, paths as strings)."""
    if hasattr(value, "as_dict") and callable(value.as_dict):
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(cfg, Mapping) and cfg:
        out: dict[str, Any] = {}
        for k, v in cfg.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: cfg}


def _ignored(key: str, ignore: Collection[str]) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in ignore)


def config_differences(
    stored: Mapping[str, Any],
    new: Mapping[str, Any],
    ignore_keys: Collection[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> list[str]:
    """``"key: stored -> new"`` for every (dotted) key whose value differs, ``ignore_keys`` left out.

    A key the stored configuration lacks whose new value is its entry in ``defaults`` (dotted keys) is no
    difference: an option added after the run was started, at the value that computes what it computed.
    """
    a, b = _flatten(_plain(stored)), _flatten(_plain(new))
    defaults = _plain(dict(defaults or {}))
    out = []
    for key in list(a) + [k for k in b if k not in a]:
        if _ignored(key, ignore_keys):
            continue
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if va is _MISSING and key in defaults and vb == defaults[key]:
            continue
        if va != vb:
            show = lambda v: "<absent>" if v is _MISSING else repr(v)  # noqa: E731
            out.append(f"{key}: {show(va)} -> {show(vb)}")
    return out


class RunFolder:
    """One run's folder, locked while in use; see the module docstring.

    Args:
        path: the run folder (created by `open` if missing).
        is_main: whether this process does the file work (rank 0); the others only record paths.

    Attributes:
        path: the run folder.
        checkpoints: ``path / "checkpoints"``.
        resumed_from: the checkpoint a resume continues from (``None`` for a fresh start).
        start_step: the global step the run continues from (0 for a fresh start).

    Example:
        >>> import tempfile
        >>> with RunFolder(tempfile.mkdtemp()).open({"lr": 0.1}) as run:
        ...     (run.path / "config.yaml").read_text(), run.start_step
        ('lr: 0.1\\n', 0)
    """

    def __init__(self, path: str | os.PathLike, *, is_main: bool = True) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.is_main = is_main
        self.resumed_from: Path | None = None
        self.start_step = 0
        self._lock_fd: int | None = None

    # -- lock ----------------------------------------------------------------------------------------
    def _lock(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderError(f"run folder {self.path} cannot be created: {err.strerror or err}") from None
        lock = self.path / ".lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunFolderError(f"run folder {self.path} is not writable: {err.strerror or err}") from None
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunFolderError(f"run folder {self.path} cannot be locked: {err.strerror}") from None
            where = "this process" if holder == str(os.getpid()) else f"another process (pid {holder})"
            raise RunFolderError(f"run folder {self.path} is in use by {where}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        """Release the lock (idempotent)."""
        if self._lock_fd is not None:
            import fcntl

            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- open ----------------------------------------------------------------------------------------
    def holds_run(self) -> list[str]:
        """The files that show a run in this folder (``config.yaml``, checkpoints, final weights)."""
        found = [n for n in ("config.yaml", "final.safetensors") if (self.path / n).is_file()]
        if list_checkpoints(self.checkpoints) or (self.checkpoints / "latest").is_file():
            found.append("checkpoints/")
        return found

    def open(
        self,
        config: Mapping[str, Any],
        *,
        resume: bool = False,
        overwrite: bool = False,
        allow_config_change: bool = False,
        ignore_keys: Collection[str] = (),
        defaults: Mapping[str, Any] | None = None,
    ) -> RunFolder:
        """Lock the folder, check it against the request, then store ``config``; see the module docstring.

        Args:
            config: the run's configuration (a mapping, or an object with ``as_dict()``); stored as
                ``config.yaml`` in the given key order.
            resume: continue the run in the folder (from its newest intact checkpoint, if any).
            overwrite: for a fresh run, remove a previous run's files first instead of refusing.
            allow_config_change: on resume, accept a configuration that differs from the stored one.
            ignore_keys: (dotted) keys whose differences never matter (e.g. ``resume``, ``progress``).
            defaults: (dotted) key -> default of options a stored configuration may lack (options added
                since the run started): absent there and at this value here, they are no change.

        Returns:
            ``self``, with `resumed_from` and `start_step` set.

        Raises:
            RunFolderError: if the folder is in use, read-only or cannot be created.
            ValueError: if a fresh run would reuse a folder holding a run, a resume's configuration
                differs from the stored one, or the folder has checkpoints none of which is intact.
        """
        if resume and overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the run or start it clean")
        outcome: tuple[Any, ...]
        if self.is_main:
            try:
                self._lock()
                try:
                    outcome = (
                        "ok",
                        *self._prepare(config, resume, overwrite, allow_config_change, ignore_keys, defaults),
                    )
                except OSError as err:
                    self.close()
                    raise RunFolderError(f"run folder {self.path}: {err}") from None
                except BaseException:
                    self.close()
                    raise
            except (ValueError, RunFolderError) as err:
                outcome = ("error", type(err).__name__, str(err))
                if not _distributed():
                    raise
        else:
            outcome = ("ok", None, 0)
        if _distributed():
            box = [outcome]
            torch.distributed.broadcast_object_list(box, src=0)
            outcome = box[0]
        if outcome[0] == "error":
            raise (ValueError if outcome[1] == "ValueError" else RunFolderError)(outcome[2])
        self.resumed_from = Path(outcome[1]) if outcome[1] is not None else None
        self.start_step = int(outcome[2])
        return self

    def _prepare(
        self,
        config: Mapping[str, Any],
        resume: bool,
        overwrite: bool,
        allow_config_change: bool,
        ignore_keys: Collection[str],
        defaults: Mapping[str, Any] | None = None,
    ) -> tuple[str | None, int]:
        plain = _plain(config)
        cfg_file = self.path / "config.yaml"
        resumed_from, start_step = None, 0
        if not resume:
            held = self.holds_run()
            if held and not overwrite:
                raise ValueError(
                    f"run folder {self.path} already holds a run ({', '.join(held)}); "
                    "pass --train.resume true to continue it or --train.overwrite true to start clean"
                )
            if held or overwrite:
                self._remove_run_files()
        else:
            if cfg_file.is_file():
                try:
                    stored = yaml.safe_load(cfg_file.read_text()) or {}
                except yaml.YAMLError as err:
                    raise ValueError(f"run folder {self.path}: config.yaml does not parse: {err}") from None
                diff = config_differences(stored, plain, ignore_keys, defaults)
                if diff and not allow_config_change:
                    raise ValueError(
                        f"run folder {self.path} was started with another configuration ({'; '.join(diff)}); "
                        "resume with the stored one or pass --train.allow_config_change true"
                    )
                if diff:
                    logger.warning(
                        "run folder %s: resuming with a changed configuration: %s", self.path, diff
                    )
            elif self.holds_run():
                logger.warning(
                    "run folder %s has no config.yaml to compare the configuration with", self.path
                )
            latest = find_latest(self.checkpoints)
            if latest is None and list_checkpoints(self.checkpoints):
                raise ValueError(
                    f"run folder {self.path} has checkpoints but none is intact (see the warning above); "
                    "remove them or pass --train.overwrite true to start clean"
                )
            if latest is None:
                logger.info("run folder %s has no checkpoint: starting from step 0", self.path)
            else:
                state = check_checkpoint(latest)
                resumed_from = str(latest)
                start_step = int(state.get("global_step", state.get("step", 0)))
                logger.info("run folder %s: resuming from %s at step %d", self.path, latest.name, start_step)
        try:
            atomic_write_bytes(cfg_file, yaml.safe_dump(plain, sort_keys=False).encode())
        except OSError as err:
            raise RunFolderError(f"run folder {self.path} is not writable: {err.strerror or err}") from None
        return resumed_from, start_step

    def _remove_run_files(self) -> None:
        logger.info("run folder %s: removing the previous run's files (overwrite)", self.path)
        for name in _RUN_FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        for p in self.path.glob("eval*.json"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        for name in _RUN_DIRS:
            if (self.path / name).is_dir():
                shutil.rmtree(self.path / name)


def _distributed() -> bool:
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and (torch.distributed.get_world_size() > 1)
    )
