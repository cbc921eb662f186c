"""Two-process worker for test_distributed.py: ``python _dist_worker.py DATA OUT PORT``.

Each rank (gloo, 127.0.0.1) updates every metric class on its half of the data set (in two batches),
computes the synchronised values and writes them to ``OUT/rank<r>.pt``. Run as a script so that the
spawned processes can import it by path, whatever pytest's import mode.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def run(rank: int, world_size: int, data_path: str, out: str, port: int) -> None:
    from lsmetrics import EquivarianceError, InvarianceError, MeanIoU, PerScaleAccuracy

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        data = torch.load(data_path)
        n = data["reference"].shape[0]
        half = (n + 1) // 2
        shard = slice(0, half) if rank == 0 else slice(half, n)
        metrics = {
            "inv_paper": InvarianceError(),
            "inv_reference": InvarianceError(variant="reference"),
            "equ_paper": EquivarianceError(),
            "equ_reference": EquivarianceError(variant="reference"),
            "per_scale": PerScaleAccuracy(num_scales=data["num_scales"]),
            "miou": MeanIoU(num_classes=data["num_classes"], ignore_index=255),
        }
        index = torch.arange(n)[shard]
        for batch in index.split(2):
            metrics["inv_paper"].update(data["reference"][batch], data["transformed"][batch])
            metrics["inv_reference"].update(data["reference"][batch], data["transformed"][batch])
            metrics["equ_paper"].update(data["expected"][batch], data["actual"][batch], data["valid"][batch])
            metrics["equ_reference"].update(
                data["expected"][batch], data["actual"][batch], data["valid"][batch]
            )
            metrics["per_scale"].update(data["correct"][batch], data["scale_ids"][batch])
            metrics["miou"].update(data["scores"][batch], data["target"][batch])
        results = {
            name: metrics[name].compute()
            for name in ("inv_paper", "inv_reference", "equ_paper", "equ_reference")
        }
        per_scale = metrics["per_scale"].compute()
        results["per_scale_accuracy"] = per_scale.accuracy
        results["per_scale_mean"] = per_scale.mean
        results["per_scale_std"] = per_scale.std
        results["miou"] = metrics["miou"].compute()
        results["miou_per_class"] = metrics["miou"].compute_per_class().iou
        # the local state is restored after compute: a local-only value still sees one shard
        results["local_count"] = metrics["inv_paper"].count.clone()
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    data_path, out, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(run, args=(2, data_path, out, port), nprocs=2, join=True)
