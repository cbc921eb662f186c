"""Engine: exact resume after an interruption or a kill, and a two-process DDP run on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lse_common import find_latest, read_csv_log

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import tiny_run  # noqa: E402


def _weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def test_uninterrupted_run_trains_and_checkpoints(tmp_path):
    trainer, summary, _ = tiny_run.run(tmp_path, 2)
    assert summary == {
        "global_step": 12,
        "epoch": 2,
        "last_eval": summary["last_eval"],
        "stopped_early": False,
    }
    assert 0.0 <= summary["last_eval"]["val_acc"] <= 1.0
    assert find_latest(tmp_path / "checkpoints").name == "step-000000012.state.pt"
    rows = read_csv_log(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows if r["split"] == "train"] == list(range(1, 13))
    assert sum(r["split"] == "val" for r in rows) == 2
    # the scheduler was stepped once per epoch
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.25)


@pytest.mark.parametrize("stop_at", [3, 6, 9])
def test_resume_after_interruption_is_exact(tmp_path, stop_at):
    ref, ref_summary, _ = tiny_run.run(tmp_path / "ref", 2)
    with pytest.raises(RuntimeError, match="simulated"):
        tiny_run.run(tmp_path / "cut", 2, raise_at=stop_at)
    resumed, summary, _ = tiny_run.run(tmp_path / "cut", 2, resume=True)
    assert summary["global_step"] == ref_summary["global_step"]
    _assert_same(_weights(ref), _weights(resumed))
    _assert_same({k: v for k, v in _flat_opt(ref).items()}, {k: v for k, v in _flat_opt(resumed).items()})
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731
    assert strip(read_csv_log(tmp_path / "ref" / "metrics.csv")) == strip(
        read_csv_log(tmp_path / "cut" / "metrics.csv")
    )


def _flat_opt(trainer) -> dict[str, torch.Tensor]:
    out = {}
    for pid, st in trainer.optimizer.state_dict()["state"].items():
        for k, v in st.items():
            out[f"{pid}.{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    return out


def test_resume_after_sigkill_is_exact(tmp_path):
    """A process killed with SIGKILL mid-epoch resumes from its last checkpoint to the same weights."""
    out = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, str(HERE / "tiny_run.py"), str(out), "2", "--kill-at", "5"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr
    assert find_latest(out / "checkpoints").name == "step-000000004.state.pt"
    assert not list((out / "checkpoints").glob(".*.tmp"))
    resumed, _, _ = tiny_run.run(out, 2, resume=True)
    ref, _, _ = tiny_run.run(tmp_path / "ref", 2)
    _assert_same(_weights(ref), _weights(resumed))


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    _, summary, _ = tiny_run.run(tmp_path, 1, resume=True)
    assert summary["global_step"] == 6


def test_two_process_ddp_on_cpu(tmp_path):
    """torchrun, 2 processes, gloo: the replicas stay identical and rank 0 writes the checkpoint."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(HERE / "tiny_run.py"),
        str(tmp_path),
        "1",
    ]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    w0 = load_file(tmp_path / "final-rank0.safetensors")
    w1 = load_file(tmp_path / "final-rank1.safetensors")
    _assert_same(w0, w1)
    # 48 samples, 2 processes, batch 8 per process: 3 steps per epoch
    assert find_latest(tmp_path / "checkpoints").name == "step-000000003.state.pt"
    state = torch.load(find_latest(tmp_path / "checkpoints"), weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    # the two processes drew different random numbers (seed + rank)
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    rows = read_csv_log(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows if r["split"] == "train"] == [1, 2, 3]
