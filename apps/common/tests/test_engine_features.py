"""Engine features: timm schedulers, per-group clipping, option checks, resume logging, new hyper-params."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch
from timm.scheduler import create_scheduler_v2
from torch import nn

from lse_common import Trainer, read_csv_log

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import tiny_run  # noqa: E402

STEPS_PER_EPOCH = 6  # 48 samples, batch 8


class _Recorder:
    """A step function that records the learning rate each step uses."""

    def __init__(self, opt_ref: list, raise_at: int | None = None) -> None:
        self.opt_ref, self.raise_at, self.lrs = opt_ref, raise_at, {}
        self.calls = 0

    def __call__(self, model, batch):
        trainer = self.opt_ref[0]
        step = trainer.global_step + 1
        if step == self.raise_at:
            raise RuntimeError("simulated interruption")
        self.lrs[step] = [g["lr"] for g in trainer.optimizer.param_groups]
        return tiny_run.deterministic_step_fn(model, batch)


def _timm_trainer(out, *, step_on_epochs: bool, lr: float = 1e-2, raise_at=None, **kw):
    model = tiny_run.make_model(deterministic=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched, _ = create_scheduler_v2(
        opt,
        "cosine",
        num_epochs=3,
        warmup_epochs=1,
        warmup_lr=1e-4,
        min_lr=1e-5,
        step_on_epochs=step_on_epochs,
        updates_per_epoch=STEPS_PER_EPOCH,
    )
    ref: list = []
    rec = _Recorder(ref, raise_at)
    trainer = Trainer(
        model, opt, rec, out_dir=out, scheduler=sched, log_every=1, checkpoint_every=2, progress=False, **kw
    )
    ref.append(trainer)
    return trainer, rec, sched


def _timm_reference(step_on_epochs: bool, epochs: int = 3) -> dict[int, float]:
    """The learning rate of every update as timm's own training loop sets it."""
    opt = torch.optim.AdamW(nn.Linear(1, 1).parameters(), lr=1e-2)
    sched, _ = create_scheduler_v2(
        opt,
        "cosine",
        num_epochs=3,
        warmup_epochs=1,
        warmup_lr=1e-4,
        min_lr=1e-5,
        step_on_epochs=step_on_epochs,
        updates_per_epoch=STEPS_PER_EPOCH,
    )
    lrs, num_updates = {}, 0
    for epoch in range(epochs):
        for _ in range(STEPS_PER_EPOCH):
            lrs[num_updates + 1] = opt.param_groups[0]["lr"]
            num_updates += 1
            sched.step_update(num_updates=num_updates)
        sched.step(epoch + 1, None)
    return lrs


@pytest.mark.parametrize("step_on_epochs", [False, True])
def test_timm_scheduler_is_driven_like_timms_loop(tmp_path, step_on_epochs):
    trainer, rec, sched = _timm_trainer(tmp_path, step_on_epochs=step_on_epochs)
    trainer.fit(tiny_run.make_data(), epochs=3, batch_size=8, seed=1)
    expected = _timm_reference(step_on_epochs)
    got = {k: v[0] for k, v in rec.lrs.items()}
    assert got == pytest.approx(expected, rel=1e-12, abs=0)
    for step, lr in got.items():  # the scheduler's own formula, per update or per epoch
        t = step - 1 if not step_on_epochs else (step - 1) // STEPS_PER_EPOCH
        assert lr == pytest.approx(sched._get_lr(t)[0], rel=1e-12)
    assert got[1] == pytest.approx(1e-4) and max(got.values()) > 5e-3  # warm-up, then near the base lr
    rows = [r for r in read_csv_log(tmp_path / "metrics.csv") if r["split"] == "train"]
    assert [float(r["lr"]) for r in rows] == pytest.approx([got[s] for s in sorted(got)])
    state = torch.load(tmp_path / "checkpoints" / "step-000000018.state.pt", weights_only=True)
    assert state["scheduler"]["t_initial"] == (3 if step_on_epochs else 18)


@pytest.mark.parametrize("step_on_epochs", [False, True])
@pytest.mark.parametrize("raise_at", [5, 8])
def test_timm_scheduler_after_exact_resume(tmp_path, step_on_epochs, raise_at):
    ref, _, _ = _timm_trainer(tmp_path / "ref", step_on_epochs=step_on_epochs)
    ref.fit(tiny_run.make_data(), epochs=3, batch_size=8, seed=1)
    cut, _, _ = _timm_trainer(tmp_path / "cut", step_on_epochs=step_on_epochs, raise_at=raise_at)
    with pytest.raises(RuntimeError, match="simulated"):
        cut.fit(tiny_run.make_data(), epochs=3, batch_size=8, seed=1)
    resumed, rec, _ = _timm_trainer(tmp_path / "cut", step_on_epochs=step_on_epochs, lr=5.0)
    resumed.fit(tiny_run.make_data(), epochs=3, batch_size=8, seed=1, resume=True)
    expected = _timm_reference(step_on_epochs)
    first = (raise_at - 1) // 2 * 2 + 1  # the step after the last checkpoint
    assert sorted(rec.lrs) == list(range(first, 19))
    assert {k: v[0] for k, v in rec.lrs.items()} == pytest.approx(
        {k: expected[k] for k in rec.lrs}, rel=1e-12
    )
    for a, b in zip(ref.module.state_dict().values(), resumed.module.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def _grouped(model: nn.Module, lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        [
            {"params": [model[0].weight], "name": "backbone"},
            {"params": [model[0].bias], "name": "backbone"},
            {"params": list(model[3].parameters()), "name": "head"},
        ],
        lr=lr,
    )


def test_per_group_gradient_clipping(tmp_path):
    model = tiny_run.make_model(deterministic=True)
    before = [p.detach().clone() for p in model.parameters()]
    # the reference gradient of the one full batch
    x, y = tiny_run.make_data().tensors
    ref_model = tiny_run.make_model(deterministic=True)
    nn.functional.cross_entropy(ref_model(x), y).backward()
    grads = [p.grad.clone() for p in ref_model.parameters()]
    backbone_norm = torch.sqrt(grads[0].square().sum() + grads[1].square().sum())
    head_norm = torch.sqrt(grads[2].square().sum() + grads[3].square().sum())
    trainer = Trainer(
        model,
        _grouped(model),
        tiny_run.deterministic_step_fn,
        out_dir=tmp_path,
        grad_clip={"backbone": 1e-3, "head": 1e3},
        log_every=1,
        progress=False,
    )
    trainer.fit(tiny_run.make_data(), epochs=1, batch_size=48, seed=0)
    deltas = [b - p.detach() for b, p in zip(before, model.parameters(), strict=True)]  # SGD, lr 1: the grads
    clipped_norm = torch.sqrt(deltas[0].square().sum() + deltas[1].square().sum())
    assert float(clipped_norm) == pytest.approx(1e-3, rel=1e-3)  # the two backbone groups clipped together
    assert float(backbone_norm) > 1e-2
    torch.testing.assert_close(deltas[0], grads[0] * (1e-3 / backbone_norm))
    torch.testing.assert_close(deltas[2], grads[2])  # the head's norm is far below its limit
    row = read_csv_log(tmp_path / "metrics.csv")[0]
    assert float(row["grad_norm/backbone"]) == pytest.approx(float(backbone_norm), rel=1e-4)
    assert float(row["grad_norm/head"]) == pytest.approx(float(head_norm), rel=1e-4)
    assert "grad_norm" not in row and float(row["lr/backbone"]) == 1.0


def test_option_errors(tmp_path):
    model = tiny_run.make_model(deterministic=True)
    opt = _grouped(model)
    make = lambda **kw: Trainer(model, opt, tiny_run.deterministic_step_fn, out_dir=tmp_path, **kw)  # noqa: E731
    with pytest.raises(
        ValueError, match=r"grad_clip names param groups \['canonicalizers'\].*'backbone', 'head'"
    ):
        make(grad_clip={"canonicalizers": 1.0})
    with pytest.raises(ValueError, match=r"grad_clip\['head'\] must be a positive"):
        make(grad_clip={"head": -1.0})
    with pytest.raises(ValueError, match="grad_clip must be a positive"):
        make(grad_clip=float("inf"))
    with pytest.raises(ValueError, match="frozen_epochs must be"):
        make(frozen_epochs=-1)
    with pytest.raises(ValueError, match="needs frozen_modules"):
        make(frozen_epochs=1)
    trainer = make(progress=False)
    for bad in (0, -3):
        with pytest.raises(ValueError, match=f"max_steps must be >= 1 or None, got {bad}"):
            trainer.fit(tiny_run.make_data(), epochs=1, batch_size=8, max_steps=bad)
    assert trainer.global_step == 0 and not (tmp_path / "metrics.csv").exists()


def test_resume_logs_its_step(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="lse_common.engine"):
        tiny_run.run(tmp_path, 1, resume=True)
    assert "starting from step 0" in caplog.text
    with pytest.raises(RuntimeError, match="simulated"):
        tiny_run.run(tmp_path / "cut", 1, raise_at=5)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lse_common.engine"):
        tiny_run.run(tmp_path / "cut", 1, resume=True)
    assert "step-000000004.state.pt at step 4 (epoch 1, batch 4)" in caplog.text


def test_override_hparams_takes_the_new_learning_rate(tmp_path):
    def make(lr: float, override: bool, gamma: float = 0.5):
        model = tiny_run.make_model(deterministic=True)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=gamma)
        return Trainer(
            model,
            opt,
            tiny_run.deterministic_step_fn,
            out_dir=tmp_path,
            scheduler=sched,
            progress=False,
            override_hparams=override,
        )

    first = make(1e-2, False)
    first.fit(tiny_run.make_data(), epochs=2, batch_size=8)
    stored = first.optimizer.state_dict()["state"]
    exact = make(1e-3, False)
    assert exact.load()
    assert exact.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.25)
    assert exact.optimizer.param_groups[0]["weight_decay"] == 0.05
    new = make(1e-3, True, gamma=0.1)
    new.optimizer.param_groups[0]["weight_decay"] = 0.2
    new._initial_hparams[0]["weight_decay"] = 0.2  # as if built with it
    assert new.load()
    # the new base lr, with the new schedule brought to epoch 2; moments and counters kept
    assert new.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.01)
    assert new.optimizer.param_groups[0]["initial_lr"] == 1e-3
    assert new.optimizer.param_groups[0]["weight_decay"] == 0.2
    assert torch.equal(new.optimizer.state_dict()["state"][0]["exp_avg"], stored[0]["exp_avg"])
    assert new.global_step == 12 and new.epoch == 2


def test_override_hparams_with_a_timm_scheduler(tmp_path):
    trainer, _, _ = _timm_trainer(tmp_path, step_on_epochs=False, raise_at=8)
    with pytest.raises(RuntimeError, match="simulated"):
        trainer.fit(tiny_run.make_data(), epochs=3, batch_size=8, seed=1)
    resumed, rec, sched = _timm_trainer(tmp_path, step_on_epochs=False, lr=3e-2, override_hparams=True)
    resumed.fit(tiny_run.make_data(), epochs=3, batch_size=8, seed=1, resume=True)
    assert sorted(rec.lrs) == list(range(7, 19))
    for step, lrs in rec.lrs.items():  # the new schedule (base lr 3e-2) at each update
        assert lrs[0] == pytest.approx(sched._get_lr(step - 1)[0], rel=1e-12)
    assert rec.lrs[9][0] > 1.5e-2  # past the warm-up, above anything the old schedule (1e-2) reaches
