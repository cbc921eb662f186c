"""Worker of test_distributed.py: one rank of a two-process gloo group on 127.0.0.1.

Each rank updates every metric class of `lsmetrics.metrics` on its half of the data set (in batches of
two), computes the synchronised values and writes them to ``OUT/rank<r>.pt``. A module of its own, found
through `sys.path`, so that processes started with ``spawn`` can import it whatever pytest's import mode.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist


def run(rank: int, world_size: int, data: dict, out: str, port: int) -> None:
    from lsmetrics import DatasetMeanIoU, EquivarianceError, InvarianceError, PerScaleAccuracy

    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        metrics = {
            "inv_paper": InvarianceError(),
            "inv_reference": InvarianceError(variant="reference"),
            "equ_paper": EquivarianceError(),
            "equ_reference": EquivarianceError(variant="reference"),
            "per_scale": PerScaleAccuracy(num_scales=data["num_scales"]),
            "miou": DatasetMeanIoU(num_classes=data["num_classes"], ignore_index=255),
        }
        n = data["reference"].shape[0]
        half = (n + 1) // 2
        shard = torch.arange(n)[:half] if rank == 0 else torch.arange(n)[half:]
        for batch in shard.split(2):
            update(metrics, data, batch)
        results = values(metrics)
        # compute() restores the local state after synchronising: each rank still holds its own shard
        results["local_count"] = metrics["inv_paper"].count.clone()
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def update(metrics: dict, data: dict, batch: torch.Tensor) -> None:
    """Update the metrics of `run` with the samples `batch` of `data`."""
    for name in ("inv_paper", "inv_reference"):
        metrics[name].update(data["reference"][batch], data["transformed"][batch])
    for name in ("equ_paper", "equ_reference"):
        metrics[name].update(data["expected"][batch], data["actual"][batch], data["valid"][batch])
    metrics["per_scale"].update(data["correct"][batch], data["scale_ids"][batch])
    metrics["miou"].update(data["scores"][batch], data["target"][batch])


def values(metrics: dict) -> dict[str, torch.Tensor]:
    """Every computed value of the metrics of `run`, flattened into one dict of tensors."""
    results = {name: metrics[name].compute() for name in ("inv_paper", "inv_reference", "equ_paper")}
    results["equ_reference"] = metrics["equ_reference"].compute()
    for key, value in metrics["per_scale"].compute().items():
        results[f"per_scale_{key}"] = value
    results["miou"] = metrics["miou"].compute()
    for key, value in metrics["miou"].compute_per_class().items():
        results[f"miou_{key}"] = value
    return results
