"""Atomic writes and checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lse_common.checkpoint as ckpt
from lse_common import atomic_path, atomic_write_bytes, find_latest, load_checkpoint, save_checkpoint


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
        save_checkpoint(tmp_path, step, m, {}, keep=2)
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
