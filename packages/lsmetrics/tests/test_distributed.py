"""Two CPU processes (gloo) over disjoint halves of a data set reproduce the single-process values."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lsmetrics import DatasetMeanIoU, EquivarianceError, InvarianceError, PerScaleAccuracy

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with gloo is unavailable",
)

N, NUM_SCALES, NUM_CLASSES = 9, 3, 4  # 9 samples: shards of 5 and 4

# Forked ranks start in a fraction of a second with torch and torchmetrics already imported; spawned
# ones import both again (15 s and more on a busy machine). Fork on Linux, spawn elsewhere.
START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


def _data() -> dict:
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, NUM_CLASSES, (N, 4, 5), generator=gen)
    target[0, 0, :2] = 255
    return {
        "num_scales": NUM_SCALES,
        "num_classes": NUM_CLASSES,
        "reference": torch.rand(N, 6, generator=gen).softmax(-1),
        "transformed": torch.rand(N, 3, 6, generator=gen).softmax(-1),
        "expected": torch.rand(N, 2, 4, 5, generator=gen),
        "actual": torch.rand(N, 2, 4, 5, generator=gen),
        "valid": torch.rand(N, 4, 5, generator=gen) > 0.25,
        "correct": torch.rand(N, generator=gen) > 0.5,
        "scale_ids": torch.randint(0, NUM_SCALES, (N,), generator=gen),
        "scores": torch.randn(N, NUM_CLASSES, 4, 5, generator=gen),
        "target": target,
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def worker(monkeypatch):
    """The worker module, importable by name here and in spawned processes (they inherit sys.path)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import _lsmetrics_dist_worker

    yield _lsmetrics_dist_worker
    sys.modules.pop("_lsmetrics_dist_worker", None)


def test_two_processes_reproduce_single_process(tmp_path: Path, worker):
    data = _data()
    args = (2, data, str(tmp_path), _free_port())
    context = mp.start_processes(worker.run, args=args, nprocs=2, join=False, start_method=START_METHOD)
    deadline = time.monotonic() + 120.0
    while not context.join(timeout=1.0):  # re-raises a rank's exception
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two ranks did not finish within 120 s")
    single = {
        "inv_paper": InvarianceError(),
        "inv_reference": InvarianceError(variant="reference"),
        "equ_paper": EquivarianceError(),
        "equ_reference": EquivarianceError(variant="reference"),
        "per_scale": PerScaleAccuracy(num_scales=NUM_SCALES),
        "miou": DatasetMeanIoU(num_classes=NUM_CLASSES, ignore_index=255),
    }
    for batch in torch.arange(N).split(3):  # other batches than the ranks': the value is the same
        worker.update(single, data, batch)
    expected = worker.values(single)
    assert expected["per_scale_total"].sum().item() == N
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert set(got) == {*expected, "local_count"}
        for name, value in expected.items():
            if value.dtype.is_floating_point:
                torch.testing.assert_close(got[name], value, equal_nan=True, msg=f"rank {rank}: {name}")
            else:  # counts add exactly
                assert torch.equal(got[name], value), f"rank {rank}: {name}"
        assert got["local_count"].item() == (15 if rank == 0 else 12)  # 5 and 4 samples x 3 transforms
    # the halves alone give other values, so the agreement is not trivial
    half = InvarianceError()
    half.update(data["reference"][:5], data["transformed"][:5])
    assert half.compute().item() != pytest.approx(expected["inv_paper"].item(), rel=1e-4)
    half_acc = PerScaleAccuracy(num_scales=NUM_SCALES)
    half_acc.update(data["correct"][:5], data["scale_ids"][:5])
    assert not torch.equal(half_acc.compute()["total"], expected["per_scale_total"])
