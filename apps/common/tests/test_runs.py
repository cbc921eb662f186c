"""Run folders: the lock, fresh runs over old ones, resume with another configuration, damaged checkpoints."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lse_common import Trainer, save_checkpoint
from lse_common.runs import RunFolder, RunFolderError, config_differences

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import tiny_run  # noqa: E402

CONFIG = {"method": "dec", "lr": 0.01, "data": {"root": Path("/data"), "sizes": (28, 56)}, "progress": True}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _train(run: RunFolder, lr: float = 0.01, epochs: int = 2, **kw) -> Trainer:
    model = tiny_run.make_model(deterministic=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    trainer = Trainer(
        model, opt, tiny_run.deterministic_step_fn, out_dir=run.path, checkpoint_every=2, progress=False, **kw
    )
    trainer.fit(tiny_run.make_data(), epochs=epochs, batch_size=8, resume=run.resumed_from or False)
    return trainer


def test_fresh_run_stores_its_config_and_releases_the_lock(tmp_path):
    with RunFolder(tmp_path / "run").open(CONFIG) as run:
        assert run.checkpoints == tmp_path / "run" / "checkpoints"
        assert (run.resumed_from, run.start_step) == (None, 0)
        text = (run.path / "config.yaml").read_text()
    assert list(yaml.safe_load(text)) == ["method", "lr", "data", "progress"]  # the given order
    assert yaml.safe_load(text)["data"] == {"root": "/data", "sizes": [28, 56]}
    RunFolder(tmp_path / "run").open(CONFIG, resume=True).close()  # unlocked, and the same config
    assert config_differences(yaml.safe_load(text), CONFIG) == []


def test_retraining_in_a_used_folder_is_refused_or_starts_clean(tmp_path):
    """Regression: a new run in an old folder lost its own checkpoint to the old run's pruning."""
    with RunFolder(tmp_path).open(CONFIG) as run:
        _train(run, epochs=1)
    for name in ("final.safetensors", "train_summary.json", "eval.json", "eval-scales.json", "notes.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "tensorboard").mkdir()
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match="already holds a run") as info:
        RunFolder(tmp_path).open({**CONFIG, "lr": 0.1})
    assert (
        str(tmp_path) in str(info.value)
        and "train.resume" in str(info.value)
        and "train.overwrite" in str(info.value)
    )
    assert "config.yaml" in str(info.value) and "checkpoints/" in str(info.value)
    assert _snapshot(tmp_path) == before  # nothing changed
    with RunFolder(tmp_path).open({**CONFIG, "lr": 0.1}, overwrite=True) as run:
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == [".lock", "config.yaml", "notes.txt"]
        assert yaml.safe_load((tmp_path / "config.yaml").read_text())["lr"] == 0.1
        trainer = _train(run, epochs=1)
        assert trainer.global_step == 6 and run.start_step == 0
    with pytest.raises(ValueError, match="exclude each other"):
        RunFolder(tmp_path).open(CONFIG, resume=True, overwrite=True)


def test_resume_with_another_config_is_refused_unless_allowed(tmp_path, caplog):
    """Regression: --resume rewrote config.yaml first, and the stored optimizer state hid the new lr."""
    with RunFolder(tmp_path).open(CONFIG) as run:
        _train(run, epochs=1)
    before = _snapshot(tmp_path)
    new = {**CONFIG, "lr": 0.1, "data": {"root": "/data", "sizes": [28, 84]}, "extra": 1}
    with pytest.raises(ValueError, match="another configuration") as info:
        RunFolder(tmp_path).open(new, resume=True)
    msg = str(info.value)
    assert "lr: 0.01 -> 0.1" in msg and "data.sizes: [28, 56] -> [28, 84]" in msg
    assert "extra: <absent> -> 1" in msg and "method" not in msg and "\n" not in msg
    assert _snapshot(tmp_path) == before  # config.yaml untouched
    RunFolder(tmp_path).open({**CONFIG, "progress": False}, resume=True, ignore_keys={"progress"}).close()
    with caplog.at_level(logging.INFO, logger="lse_common"):
        run = RunFolder(tmp_path).open(new, resume=True, allow_config_change=True)
    with run:
        assert yaml.safe_load((tmp_path / "config.yaml").read_text())["lr"] == 0.1
        assert run.start_step == 6 and run.resumed_from == run.checkpoints / "step-000000006.state.pt"
        assert "resuming from step-000000006.state.pt at step 6" in caplog.text
        lrs = []
        trainer = _train(run, lr=0.1, epochs=2, override_hparams=True, on_step_end=lambda s: lrs.append(s))
        assert trainer.optimizer.param_groups[0]["lr"] == 0.1
        rows = [r for r in trainer.log.rows if r["split"] == "train" and int(r["step"]) > 6]
        assert {float(r["lr"]) for r in rows} == {0.1} and lrs == list(range(7, 13))


def test_two_runs_in_one_folder(tmp_path):
    """Regression: two runs in one folder broke each other's writes; now the second is refused."""
    code = (
        "import sys, time; from lse_common.runs import RunFolder; "
        "r = RunFolder(sys.argv[1]).open({'a': 1}); print('ready', flush=True); sys.stdin.readline()"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(RunFolderError, match=f"is in use by another process \\(pid {holder.pid}\\)"):
            RunFolder(tmp_path).open({"a": 1}, resume=True)
    finally:
        holder.communicate("\n", timeout=60)
    with (
        RunFolder(tmp_path).open({"a": 1}, resume=True) as run,
        pytest.raises(RunFolderError, match="this process"),
    ):
        RunFolder(run.path).open({"a": 1}, resume=True)


def test_resume_skips_a_truncated_newest_checkpoint(tmp_path):
    """Regression: a truncated newest checkpoint was not skipped in favour of the older intact one."""
    ref = tmp_path / "ref"
    with RunFolder(ref).open(CONFIG) as run:
        reference = _train(run)
    cut = tmp_path / "cut"
    with RunFolder(cut).open(CONFIG) as run:
        _train(run, epochs=1)  # checkpoints at steps 4 and 6 (keep 2)
    weights = cut / "checkpoints" / "step-000000006.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with RunFolder(cut).open(CONFIG, resume=True) as run:
        assert run.resumed_from == run.checkpoints / "step-000000004.state.pt" and run.start_step == 4
        resumed = _train(run)
    for a, b in zip(
        reference.module.state_dict().values(), resumed.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_resume_with_damaged_checkpoints(tmp_path):
    with RunFolder(tmp_path).open(CONFIG) as run:
        _train(run, epochs=1)
    (run.checkpoints / "step-000000006.state.pt").write_bytes(b"not a checkpoint")
    with RunFolder(tmp_path).open(CONFIG, resume=True) as run:
        assert run.start_step == 4
    (run.checkpoints / "step-000000004.state.pt").write_bytes(b"")
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match="has checkpoints but none is intact"):
        RunFolder(tmp_path).open(CONFIG, resume=True)
    assert _snapshot(tmp_path) == before


def test_resume_without_checkpoint_starts_at_zero(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="lse_common.runs"):
        run = RunFolder(tmp_path / "new").open(CONFIG, resume=True)
    with run:
        assert (run.resumed_from, run.start_step) == (None, 0)
        assert (run.path / "config.yaml").is_file()
    assert "has no checkpoint: starting from step 0" in caplog.text


def test_read_only_and_uncreatable_folders(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match=f"run folder {tmp_path / 'file' / 'run'} cannot be created"):
        RunFolder(tmp_path / "file" / "run").open(CONFIG)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root ignores the mode: refuse the write as a read-only mount would
            real_open = os.open

            def read_only(path, flags, *a):
                if str(path).startswith(str(ro)) and flags & (os.O_WRONLY | os.O_RDWR):
                    raise PermissionError(13, "Permission denied", str(path))
                return real_open(path, flags, *a)

            monkeypatch.setattr(os, "open", read_only)
        with pytest.raises(RunFolderError, match=f"run folder {ro} is not writable") as info:
            RunFolder(ro).open(CONFIG)
        assert "\n" not in str(info.value)
    finally:
        ro.chmod(0o755)


def test_other_ranks_only_record_paths(tmp_path):
    run = RunFolder(tmp_path / "r", is_main=False).open(CONFIG, resume=True)
    assert run.checkpoints == tmp_path / "r" / "checkpoints" and run.start_step == 0
    assert not (tmp_path / "r").exists()


def test_old_run_checkpoints_do_not_disturb_a_new_run(tmp_path):
    """Regression: step-900 files of another run in the folder; the new run keeps its own checkpoints."""
    ckpt = tmp_path / "checkpoints"
    for step in (800, 900):
        save_checkpoint(ckpt, step, tiny_run.make_model(deterministic=True), {"run_id": "old"}, keep=None)
    (ckpt / "latest").unlink()
    with RunFolder(tmp_path).open(CONFIG, overwrite=True) as run:
        assert not ckpt.exists()
        trainer = _train(run, epochs=1)
    save_checkpoint(ckpt, 900, tiny_run.make_model(deterministic=True), {"run_id": "old"}, keep=None)
    trainer.save()  # step 6 again, after an old high-numbered checkpoint appeared
    assert (ckpt / "latest").read_text().strip() == "step-000000006"
    assert sorted(p.name for p in ckpt.glob("*.state.pt")) == [
        "step-000000004.state.pt",
        "step-000000006.state.pt",
        "step-000000900.state.pt",
    ]


_DDP_SCRIPT = """
import sys
from lse_common import cleanup_distributed, init_distributed
from lse_common.runs import RunFolder
info = init_distributed("cpu")
path = sys.argv[1]
with RunFolder(path, is_main=info.is_main).open({"lr": 0.01}, resume=True) as run:
    print(f"rank {info.rank}: {run.resumed_from.name} {run.start_step}", flush=True)
try:
    RunFolder(path, is_main=info.is_main).open({"lr": 0.5}, resume=True)
except ValueError as err:
    print(f"rank {info.rank}: refused: {err}", flush=True)
cleanup_distributed()
"""


def test_every_rank_gets_rank_zeros_outcome(tmp_path):
    with RunFolder(tmp_path / "run").open({"lr": 0.01}) as run:
        _train(run, epochs=1)
    script = tmp_path / "open_run.py"
    script.write_text(_DDP_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, str(script), str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rank in (0, 1):
        assert f"rank {rank}: step-000000006.state.pt 6" in proc.stdout
        assert f"rank {rank}: refused: run folder {tmp_path / 'run'} was started with another" in proc.stdout
