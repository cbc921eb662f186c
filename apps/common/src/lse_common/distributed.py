"""PyTorch's own distributed engine, as launched by ``torchrun``, on one machine or several.

``torchrun --nproc_per_node N <app> train ...`` starts the processes and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; `init_distributed` reads them and opens the process
group (``nccl`` when the processes own CUDA devices, ``gloo`` on the CPU). Without those variables the run
is a single process and nothing is initialised. No process is started or managed here.

Past one machine, start the same command on every node; the nodes meet at one rendezvous endpoint::

    # on each of the N nodes (HOST:PORT reachable from all of them, e.g. the first node)
    torchrun --nnodes N --nproc-per-node GPUS --rdzv-backend c10d --rdzv-endpoint HOST:PORT \
        --rdzv-id RUN <app> train ...
    # or with a fixed node order: node K of N
    torchrun --nnodes N --node-rank K --nproc-per-node GPUS --master-addr HOST --master-port PORT \
        <app> train ...

Everything that must differ between processes uses the *global* rank (``RANK``, `DistInfo.rank`): the
shard of each batch (`lse_common.sampler.ResumableBatchSampler`), the per-process seeds
(`lse_common.seeding.seed_everything`), who writes files (rank 0 of all nodes; the run folder must be on a
file system that every node sees, or the other nodes only read what they were given). ``LOCAL_RANK``
only chooses the CUDA device of a process on its node. A run on N nodes of P processes with per-process
batch B equals one process with batch N*P*B (up to floating-point summation order, when the loss is a
mean over the batch and nothing random differs between the processes).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "all_gather_objects",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "init_distributed",
    "is_main_process",
    "reduce_mean",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, its ``local_rank`` and ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(
    device: str | None = None, *, backend: str | None = None, timeout_s: float = 1800
) -> DistInfo:
    """Open the process group from torchrun's environment, or describe the single process.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available). Each process takes
            ``cuda:LOCAL_RANK`` (its rank on its own node; the returned ``rank`` is the global one).
        backend: ``"gloo"`` or ``"nccl"``; ``None`` picks nccl for CUDA and gloo for the CPU.
        timeout_s: collective timeout.

    Raises:
        ValueError: for an unknown device or a CUDA request without CUDA.
    """
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or None, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but CUDA is not available")
    use_cuda = torch.cuda.is_available() if device is None else device == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        chosen = backend or ("nccl" if use_cuda else "gloo")
        kwargs: dict[str, Any] = {"backend": chosen, "timeout": datetime.timedelta(seconds=timeout_s)}
        if chosen == "nccl":
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    """Close the process group if one is open."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single-process run)."""
    return not _active() or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    if _active():
        dist.barrier()


def reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over the processes (a copy; unchanged without a process group)."""
    out = value.detach().clone()
    if _active():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= dist.get_world_size()
    return out


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` without a process group)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
