"""Atomic writes and checkpoints."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import lse_common.checkpoint as ckpt
from lse_common import atomic_path, atomic_write_bytes, find_latest, load_checkpoint, save_checkpoint
from lse_common.checkpoint import check_checkpoint, list_checkpoints, remove_stale_temporaries


def test_atomic_path_keeps_old_file_and_leaves_no_partial_file(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half-writ")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_atomic_path_new_file_absent_after_failure(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "new.bin") as tmp:
        tmp.write_bytes(b"x")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_save_and_load_round_trip(tmp_path):
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    m(torch.randn(5, 3)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path, 7, m, {"optimizer": opt.state_dict(), "note": "x"})
    assert path.name == "step-000000007.state.pt"
    assert (tmp_path / "step-000000007.safetensors").is_file()
    m2 = _model()
    with torch.no_grad():
        for p in m2.parameters():
            p.add_(1.0)
    state = load_checkpoint(tmp_path, m2)
    assert state["step"] == 7 and state["note"] == "x"
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    opt2 = torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(state["optimizer"])
    assert torch.equal(
        opt2.state_dict()["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"]
    )


def test_keep_deletes_old_checkpoints(tmp_path):
    m = _model()
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, m, {"run_id": "r"}, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "latest",
        "step-000000003.safetensors",
        "step-000000003.state.pt",
        "step-000000004.safetensors",
        "step-000000004.state.pt",
    ]


def test_failure_while_writing_weights_leaves_previous_checkpoint(tmp_path, monkeypatch):
    m = _model()
    save_checkpoint(tmp_path, 1, m, {})

    def broken_save(model, filename, *a, **k):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_model", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, m, {})
    assert find_latest(tmp_path).name == "step-000000001.state.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "latest",
        "step-000000001.safetensors",
        "step-000000001.state.pt",
    ]
    assert load_checkpoint(tmp_path, _model())["step"] == 1


def test_find_latest_and_errors(tmp_path):
    assert find_latest(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(tmp_path, -1, _model(), {})
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint(tmp_path, 1, _model(), {}, keep=0)


def test_load_rejects_mismatched_model(tmp_path):
    save_checkpoint(tmp_path, 1, _model(), {})
    with pytest.raises(RuntimeError):
        load_checkpoint(tmp_path, nn.Linear(3, 3))


def test_retention_never_deletes_another_runs_checkpoints(tmp_path):
    """Regression: an old run's step-900 files made the new run delete its own step-10 checkpoint."""
    m = _model()
    for step in (800, 900):
        save_checkpoint(tmp_path, step, m, {"run_id": "old"}, keep=None)
    path = save_checkpoint(tmp_path, 10, m, {"run_id": "new"}, keep=1)
    assert path.is_file() and (tmp_path / "step-000000010.safetensors").is_file()
    assert find_latest(tmp_path) == path
    assert load_checkpoint(tmp_path, _model())["run_id"] == "new"
    # the other run's checkpoints are all still there
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-000000900.state.pt",
        "step-000000800.state.pt",
        "step-000000010.state.pt",
    ]
    # further saves prune only the new run's own older checkpoints
    save_checkpoint(tmp_path, 20, m, {"run_id": "new"}, keep=1)
    save_checkpoint(tmp_path, 30, m, {"run_id": "new"}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-000000900.state.pt",
        "step-000000800.state.pt",
        "step-000000030.state.pt",
        "step-000000020.state.pt",
    ]
    # safetensors metadata carries the run id and step
    from safetensors import safe_open

    with safe_open(tmp_path / "step-000000030.safetensors", "pt") as f:
        assert f.metadata() == {"step": "30", "run_id": "new"}


def _truncate(path, keep_fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])


def test_find_latest_falls_back_to_newest_intact_checkpoint(tmp_path, caplog):
    m = _model()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, m, {"run_id": "r"}, keep=None)
    _truncate(tmp_path / "step-000000003.safetensors")
    with caplog.at_level(logging.WARNING, logger="lse_common.checkpoint"):
        assert find_latest(tmp_path).name == "step-000000002.state.pt"
    assert "step-000000003.state.pt" in caplog.text and "truncated" in caplog.text
    with pytest.raises(ValueError, match="truncated"):
        check_checkpoint(tmp_path / "step-000000003.state.pt")
    # a truncated state file, a missing pointer, a pointer to missing files
    _truncate(tmp_path / "step-000000002.state.pt")
    assert find_latest(tmp_path).name == "step-000000001.state.pt"
    (tmp_path / "latest").unlink()
    assert find_latest(tmp_path).name == "step-000000001.state.pt"
    (tmp_path / "latest").write_text("step-000000077\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lse_common.checkpoint"):
        assert find_latest(tmp_path).name == "step-000000001.state.pt"
    assert "step-000000077" in caplog.text
    assert load_checkpoint(tmp_path, _model())["step"] == 1
    _truncate(tmp_path / "step-000000001.safetensors", 0.0)
    assert find_latest(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not a torch.save archive"),
        (b"garbage" * 10, "not a torch.save archive"),
        ("pickle", "objects other than tensors"),
        ("list", "without the 'weights' entry"),
    ],
)
def test_corrupt_state_file_gives_a_clear_error(tmp_path, content, reason):
    save_checkpoint(tmp_path, 1, _model(), {"run_id": "r"})
    state = tmp_path / "step-000000001.state.pt"
    if content == "pickle":
        torch.save({"weights": "step-000000001.safetensors", "bad": _Custom()}, state)
    elif content == "list":
        torch.save([1, 2], state)
    else:
        state.write_bytes(content)
    with pytest.raises(ValueError, match="is damaged or not a checkpoint state file") as info:
        load_checkpoint(state, _model())
    msg = str(info.value)
    assert str(state) in msg and reason in msg
    assert "weights_only" not in msg and "\n" not in msg


class _Custom:
    pass


_WRITER = """
import sys, torch
from torch import nn
from lse_common.checkpoint import save_checkpoint
folder, run_id, first, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
m = nn.Linear(64, 64)
for step in range(first, first + n):
    save_checkpoint(folder, step, m, {"run_id": run_id, "pad": torch.zeros(20000)}, keep=2)
"""


def test_two_writers_in_one_folder_do_not_break_each_other(tmp_path):
    """Regression: one writer's clean-up of temporary files deleted the other's file being written."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), rid, str(first), "25"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rid, first in (("a", 1), ("b", 1001))
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    own = {}
    for p in list_checkpoints(tmp_path):
        state = check_checkpoint(p)
        own.setdefault(state["run_id"], []).append(int(state["step"]))
    # each writer kept exactly its own two newest checkpoints, and left the other's alone
    assert own == {"a": [25, 24], "b": [1025, 1024]}
    assert not list(tmp_path.glob(".*.tmp"))


def test_stale_temporaries_of_dead_processes_only(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".step-000000001.safetensors.{dead_pid}.abcd1234.tmp"
    live = tmp_path / f".step-000000001.safetensors.{os.getppid()}.abcd1234.tmp"
    mine = tmp_path / f".latest.{os.getpid()}.00ff.tmp"
    other = tmp_path / ".notes.tmp"
    for p in (stale, live, mine, other):
        p.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, mine, other))
