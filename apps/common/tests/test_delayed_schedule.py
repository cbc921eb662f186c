"""The schedule of a run with a backbone-frozen warm-up starts after the warm-up; models in channels-last
layout."""

from __future__ import annotations

import pytest
import torch
from timm.scheduler import CosineLRScheduler

from lse_common.options import TrainOptions
from lse_common.schedules import DelayedSchedule
from lse_common.training import create_scheduler


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)


def _rates(scheduler, optimizer, epochs: int, updates: int) -> list[float]:
    out, step = [], 0
    for epoch in range(epochs):
        for _ in range(updates):
            out.append(round(optimizer.param_groups[0]["lr"], 4))
            step += 1
            scheduler.step_update(num_updates=step)
        scheduler.step(epoch + 1)
    return out


def test_the_warm_up_keeps_the_start_rate_and_the_schedule_spans_the_rest():
    train = TrainOptions(epochs=4, lr=1.0, sched="cosine", warmup_epochs=0, min_lr=0.0)
    opt = _optimizer()
    delayed, _ = create_scheduler(opt, train, updates_per_epoch=2, delay_epochs=2)
    assert isinstance(delayed, DelayedSchedule)
    rates = _rates(delayed, opt, 4, 2)
    assert rates[:5] == [1.0] * 5  # the warm-up, then the joint phase's first update at the start rate
    plain_opt = _optimizer()
    plain, _ = create_scheduler(plain_opt, TrainOptions(epochs=2, lr=1.0, sched="cosine", warmup_epochs=0), 2)
    assert rates[4:] == pytest.approx(_rates(plain, plain_opt, 2, 2))  # the same cosine, two epochs later
    # state round trip
    state = delayed.state_dict()
    again = DelayedSchedule(CosineLRScheduler(_optimizer(), t_initial=2), 2, 2)
    again.load_state_dict(state)
    assert again.state_dict() == state


def test_the_delay_holds_the_base_rates_and_the_learning_rate_warm_up_follows_it():
    train = TrainOptions(epochs=4, lr=1.0, sched="cosine", warmup_epochs=1, warmup_lr=0.01, min_lr=0.0)
    opt = _optimizer()
    delayed, _ = create_scheduler(opt, train, updates_per_epoch=2, delay_epochs=2)
    rates = _rates(delayed, opt, 4, 2)
    assert rates[:4] == [1.0] * 4  # the frozen warm-up at the base rate, not the warm-up's 0.01
    assert rates[4] == pytest.approx(0.01)  # then the schedule from its start: the lr warm-up first
    assert rates[5] == pytest.approx(0.505)


def test_no_warm_up_and_an_all_warm_up_run_follow_the_plain_schedule():
    train = TrainOptions(epochs=3, lr=1.0, sched="cosine", warmup_epochs=0)
    for delay in (0, 3, 5):
        scheduler, _ = create_scheduler(_optimizer(), train, 2, delay_epochs=delay)
        assert not isinstance(scheduler, DelayedSchedule)
    with pytest.raises(ValueError, match="delay_epochs"):
        create_scheduler(_optimizer(), train, 2, delay_epochs=-1)
    with pytest.raises(TypeError, match="timm scheduler"):
        DelayedSchedule(torch.optim.lr_scheduler.StepLR(_optimizer(), 1), 1, 1)
    with pytest.raises(ValueError, match="delay_epochs"):
        DelayedSchedule(CosineLRScheduler(_optimizer(), t_initial=2), -1, 1)


def test_place_model_keeps_the_results_in_channels_last_layout():
    from torch import nn

    from lse_common.engine import place_model

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.LazyLinear(3))
    x = torch.rand(2, 1, 12, 20)
    expected = model(x)
    assert place_model(model, "cpu") is model and model[0].weight.is_contiguous()
    place_model(model, "cpu", channels_last=True)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(model(x), expected, atol=1e-6)
