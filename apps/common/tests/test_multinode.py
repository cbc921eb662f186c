"""Two "nodes" of one process each (torchrun, gloo, loopback) equal one process with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lse_common import find_latest

HERE = Path(__file__).parent
BATCH_16 = ("--batch-size", "16")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONPATH=os.pathsep.join(sys.path))
    return env


def _two_nodes(out: Path, launch: str) -> None:
    port = _free_port()
    procs = []
    for node in (0, 1):
        if launch == "c10d":
            how = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "t"]
        else:
            how = ["--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port)]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
        cmd += [*how, str(HERE / "tiny_run.py"), str(out), "2", "--deterministic", "--batch-size", "8"]
        procs.append(
            subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]


@pytest.mark.parametrize("launch", ["c10d", pytest.param("static", marks=pytest.mark.slow)])
def test_two_nodes_equal_one_process_with_the_global_batch(tmp_path, launch):
    _two_nodes(tmp_path / "nodes", launch)
    single = subprocess.run(
        [sys.executable, str(HERE / "tiny_run.py"), str(tmp_path / "one"), "2", "--deterministic", *BATCH_16],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    w0 = load_file(tmp_path / "nodes" / "final-rank0.safetensors")
    w1 = load_file(tmp_path / "nodes" / "final-rank1.safetensors")
    ref = load_file(tmp_path / "one" / "final-rank0.safetensors")
    init = {k: v for k, v in zip(ref, _initial_weights(), strict=True)}
    for k in ref:
        assert torch.equal(w0[k], w1[k]), k
        torch.testing.assert_close(w0[k], ref[k], rtol=1e-5, atol=1e-6)
        assert not torch.equal(ref[k], init[k]), k  # it trained
    # 48 samples: 3 steps per epoch in both set-ups; the checkpoints agree on the step count
    for run in ("nodes", "one"):
        state = torch.load(find_latest(tmp_path / run / "checkpoints"), weights_only=True)
        assert state["global_step"] == 6
    assert torch.load(find_latest(tmp_path / "nodes" / "checkpoints"), weights_only=True)["world_size"] == 2


def _initial_weights() -> list[torch.Tensor]:
    sys.path.insert(0, str(HERE))
    import tiny_run

    return list(tiny_run.make_model(deterministic=True).state_dict().values())
