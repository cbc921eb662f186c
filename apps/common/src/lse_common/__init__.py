"""What the apps share: training engine (DDP), checkpoints with exact resume, configs, seeding.

- `lse_common.engine.Trainer`: the training loop on DistributedDataParallel (torchrun), mixed precision on
  CUDA, progress bars, a CSV log, atomic checkpoints, exact resume.
- `lse_common.checkpoint`: atomic writes, safetensors weights plus a small state file.
- `lse_common.config`: options dataclasses <-> argparse <-> YAML.
- `lse_common.distributed`: process-group set-up from torchrun's environment, small collectives.
- `lse_common.seeding`: seeding, random-state capture, per-index generators.
"""

from __future__ import annotations

import logging
import sys

from .checkpoint import atomic_path, atomic_write_bytes, find_latest, load_checkpoint, save_checkpoint
from .config import add_dataclass_options, load_yaml, options_to_dict, resolve_options, save_options
from .distributed import (
    DistInfo,
    all_gather_objects,
    barrier,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
    is_main_process,
    reduce_mean,
)
from .engine import Trainer, move_to_device, unwrap_model
from .metrics_log import CSVLogger, read_csv_log
from .sampler import ResumableBatchSampler
from .seeding import get_rng_state, index_uniform, seed_everything, set_rng_state

__all__ = [
    "CSVLogger",
    "DistInfo",
    "ResumableBatchSampler",
    "Trainer",
    "add_dataclass_options",
    "all_gather_objects",
    "atomic_path",
    "atomic_write_bytes",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "find_latest",
    "get_rng_state",
    "index_uniform",
    "init_distributed",
    "is_main_process",
    "load_checkpoint",
    "load_yaml",
    "move_to_device",
    "options_to_dict",
    "read_csv_log",
    "reduce_mean",
    "resolve_options",
    "save_checkpoint",
    "save_options",
    "seed_everything",
    "set_rng_state",
    "setup_logging",
    "unwrap_model",
]

__version__ = "0.1.0"


def setup_logging(level: int = logging.INFO, *, main_process: bool = True) -> None:
    """Log INFO messages of the apps to stderr on the main process (warnings only elsewhere)."""
    logging.basicConfig(
        level=level if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
