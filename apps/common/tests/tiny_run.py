"""A tiny training run used by the engine tests (in-process and as a torchrun / subprocess script).

Usage as a script: ``python tiny_run.py OUT_DIR EPOCHS [--kill-at STEP] [--resume] [--deterministic]
[--batch-size B] [--frozen-epochs K]``. ``--deterministic`` drops dropout and the random noise, so that
two processes with half batches take the same steps as one process with the whole batch.
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lse_common import Trainer, cleanup_distributed, init_distributed, seed_everything


def make_data(n: int = 48) -> TensorDataset:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y)


def make_model(*, deterministic: bool = False, batch_norm: bool = False) -> nn.Module:
    with torch.random.fork_rng():  # the same initial weights without touching the global state
        torch.manual_seed(7)
        first = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16)) if batch_norm else nn.Linear(6, 16)
        middle = nn.Identity() if deterministic else nn.Dropout(0.3)
        return nn.Sequential(first, nn.ReLU(), middle, nn.Linear(16, 2))


def step_fn(model: nn.Module, batch):
    x, y = batch
    # randomness from every global generator, as augmentation would draw
    noise = torch.randn_like(x) * 0.1 + float(np.random.rand()) * 0.01  # noqa: NPY002
    loss = nn.functional.cross_entropy(model(x + noise), y)
    return loss, {"acc": float((model(x).argmax(1) == y).float().mean())}


def deterministic_step_fn(model: nn.Module, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def eval_fn(model: nn.Module) -> dict[str, float]:
    ds = make_data()
    x, y = ds.tensors
    return {"val_acc": float((model(x).argmax(1) == y).float().mean())}


def run(
    out_dir,
    epochs: int,
    *,
    kill_at: int | None = None,
    resume: bool = False,
    raise_at=None,
    checkpoint_every: int | None = 2,
    batch_size: int = 8,
    deterministic: bool = False,
    frozen_epochs: int = 0,
    **trainer_kwargs,
):
    info = init_distributed("cpu")
    seed_everything(0, rank=info.rank)
    model = make_model(deterministic=deterministic, batch_norm=frozen_epochs > 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    def on_step_end(step: int) -> None:
        if kill_at is not None and step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if raise_at is not None and step == raise_at:
            raise RuntimeError("simulated interruption")

    kwargs = dict(
        dist=info,
        scheduler=sched,
        grad_clip=1.0,
        log_every=1,
        checkpoint_every=checkpoint_every,
        progress=False,
        on_step_end=on_step_end,
    )
    if frozen_epochs:
        kwargs.update(frozen_epochs=frozen_epochs, frozen_modules=lambda m: [m[0]])
    kwargs.update(trainer_kwargs)
    trainer = Trainer(
        model, opt, deterministic_step_fn if deterministic else step_fn, out_dir=out_dir, **kwargs
    )
    summary = trainer.fit(
        make_data(), epochs=epochs, batch_size=batch_size, seed=3, eval_fn=eval_fn, resume=resume
    )
    return trainer, summary, info


def _arg(name: str, default: int | None) -> int | None:
    return int(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


if __name__ == "__main__":
    out, epochs = sys.argv[1], int(sys.argv[2])
    trainer, summary, info = run(
        out,
        epochs,
        kill_at=_arg("--kill-at", None),
        resume="--resume" in sys.argv,
        batch_size=_arg("--batch-size", 8),
        deterministic="--deterministic" in sys.argv,
        frozen_epochs=_arg("--frozen-epochs", 0),
    )
    from safetensors.torch import save_model

    save_model(trainer.module, os.path.join(out, f"final-rank{info.rank}.safetensors"))
    cleanup_distributed()
