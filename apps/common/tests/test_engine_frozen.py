"""The frozen warm-up phase (alone and under DDP) and TensorBoard logging."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lse_common import Trainer, read_csv_log

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import tiny_run  # noqa: E402


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _frozen_trainer(out, **kw) -> tuple[Trainer, list]:
    model = tiny_run.make_model(batch_norm=True)  # Linear + BatchNorm (frozen), ReLU, Dropout, Linear
    model[0].append(nn.Dropout(0.5))  # dropout inside the frozen part must be off while frozen
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.5)
    seen: list = []

    def step_fn(m, batch):
        seen.append((m[0].training, m[0][1].training, m[3].training, m[0][0].weight.requires_grad))
        return tiny_run.step_fn(m, batch)

    trainer = Trainer(
        model,
        opt,
        step_fn,
        out_dir=out,
        frozen_epochs=1,
        frozen_modules=lambda m: [m[0]],
        log_every=1,
        progress=False,
        **kw,
    )
    return trainer, seen


def test_frozen_phase_keeps_weights_and_statistics_then_trains_them(tmp_path):
    torch.manual_seed(0)
    trainer, seen = _frozen_trainer(tmp_path)
    model = trainer.module
    start_frozen, start_rest = _state(model[0]), _state(model[3])
    trainer.fit(tiny_run.make_data(), epochs=1, batch_size=8)
    after_frozen = _state(model[0])
    for k, v in start_frozen.items():  # weights, BN running stats and counter: bit-identical
        assert torch.equal(v, after_frozen[k]), k
    assert all(not torch.equal(v, model[3].state_dict()[k]) for k, v in start_rest.items())
    assert set(seen) == {(False, False, True, False)}  # frozen part in eval mode without gradients
    assert model[0][0].weight.requires_grad and model[0].training  # given back after fit
    assert not any(id(p) in {id(q) for q in model[0].parameters()} for p in trainer.optimizer.state)
    seen.clear()
    trainer.fit(tiny_run.make_data(), epochs=2, batch_size=8)
    assert set(seen) == {(True, True, True, True)}
    for k in ("0.weight", "1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert not torch.equal(after_frozen[k], model[0].state_dict()[k]), k
    rows = [r for r in read_csv_log(tmp_path / "metrics.csv") if r["split"] == "train"]
    assert [r["phase"] for r in rows] == ["frozen"] * 6 + ["joint"] * 6


@pytest.mark.parametrize("stop_at", [3, 9])
def test_resume_in_and_after_the_frozen_phase_is_exact(tmp_path, stop_at):
    ref, _, _ = tiny_run.run(tmp_path / "ref", 2, frozen_epochs=1)
    with pytest.raises(RuntimeError, match="simulated"):
        tiny_run.run(tmp_path / "cut", 2, frozen_epochs=1, raise_at=stop_at)
    resumed, _, _ = tiny_run.run(tmp_path / "cut", 2, frozen_epochs=1, resume=True)
    for (k, a), b in zip(_state(ref.module).items(), _state(resumed.module).values(), strict=True):
        assert torch.equal(a, b), k
    phases = lambda p: [r["phase"] for r in read_csv_log(p / "metrics.csv")]  # noqa: E731
    assert phases(tmp_path / "ref") == phases(tmp_path / "cut")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    return env


def test_frozen_phase_under_ddp(tmp_path):
    """Two processes: the frozen part stays put for an epoch, then (resumed, re-wrapped) trains."""
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    script = [str(HERE / "tiny_run.py"), str(tmp_path), "1", "--frozen-epochs", "1"]
    proc = subprocess.run(base + script, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    init = tiny_run.make_model(batch_norm=True).state_dict()
    first = load_file(tmp_path / "final-rank0.safetensors")
    assert all(torch.equal(first[k], init[k]) for k in init if k.startswith("0."))
    assert not torch.equal(first["3.weight"], init["3.weight"])
    script[2] = "2"
    proc = subprocess.run(
        [*base, *script, "--resume"], env=_env(), capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    w0 = load_file(tmp_path / "final-rank0.safetensors")
    w1 = load_file(tmp_path / "final-rank1.safetensors")
    for k in w0:  # the parameters agree (DDP syncs buffers before each forward, not after the last)
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(w0[k], w1[k]), k
    assert not torch.equal(w0["0.0.weight"], first["0.0.weight"])
    assert not torch.equal(w0["0.1.running_mean"], first["0.1.running_mean"])


def test_tensorboard_missing_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    model = tiny_run.make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ImportError, match=r"lse-common\[tensorboard\]"):
        Trainer(model, opt, tiny_run.step_fn, out_dir=tmp_path, tensorboard=True)


def test_tensorboard_gets_the_logged_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tiny_run.run(tmp_path, 1, tensorboard=True)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    rows = read_csv_log(tmp_path / "metrics.csv")
    loss = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert loss == [(int(r["step"]), pytest.approx(float(r["loss"]))) for r in rows if r["split"] == "train"]
    assert [e.step for e in acc.Scalars("val/val_acc")] == [6]
    assert {"train/lr", "train/grad_norm", "train/acc"} <= set(acc.Tags()["scalars"])
