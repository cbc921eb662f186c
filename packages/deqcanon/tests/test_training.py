"""Short training runs on a toy task: randomly scaled copies of a few templates.

Each canonicalizer is trained to map a scaled copy back to its template (MSE between the canonical
input and the template). Afterwards, canonicalized copies of one template at different scales must
be measurably closer to each other than the raw copies, and closer to the template (which rules out
the trivial way of making copies similar: shrinking everything).
"""

from __future__ import annotations

import math

import pytest
import torch

from deqcanon import (
    DEQCanonicalizer,
    DiscreteCanonicalizer,
    EnergyNet,
    GlobalScaleGroup,
    MonotoneScaleGroup,
    OptimCanonicalizer,
    ParamNet,
    SolveConfig,
)

SIZE = 32


def build(kind: str, group, view: int = 16):
    if kind == "dec":
        net = ParamNet(group, 1, widths=(4, 8), view_size=view)
        return DEQCanonicalizer(group, net, solve=SolveConfig(max_iter=20, tol=1e-4, stop_mode="abs")), 2e-2
    if kind == "discrete":
        return DiscreteCanonicalizer(group, EnergyNet(1, width=8, view_size=view), num_elements=32), 1e-2
    return OptimCanonicalizer(group, EnergyNet(1, width=8, view_size=view), steps=5, step_size=0.5), 1e-2


def spreads(canonicalize, group, templates, params):
    """Mean pairwise MSE between copies of each template (raw, canonical) and their MSE to the template."""
    raw_spread, can_spread, raw_err, can_err = [], [], [], []
    n = params.shape[0]
    for t in templates:
        t = t[None].expand(n, -1, -1, -1)
        x = group.act(t, params)
        with torch.no_grad():
            c = canonicalize(x).canonical

        def pairwise(z: torch.Tensor) -> torch.Tensor:
            z = z.flatten(1)
            return (z[:, None] - z[None]).pow(2).mean(-1).sum() / (n * (n - 1))

        raw_spread.append(pairwise(x))
        can_spread.append(pairwise(c))
        raw_err.append((x - t).pow(2).mean())
        can_err.append((c - t).pow(2).mean())
    mean = lambda v: float(torch.stack(v).mean())  # noqa: E731
    return mean(raw_spread), mean(can_spread), mean(raw_err), mean(can_err)


def train(
    model, lr, group, templates, sample, steps: int, *, batch: int = 16, seed: int = 0, long: bool = False
):
    """Adam on the MSE to the template; long runs anneal the learning rate and clip the gradients."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if long else None
    for _ in range(steps):
        idx = torch.randint(0, templates.shape[0], (batch,), generator=gen)
        t = templates[idx]
        x = group.act(t, sample(batch, gen))
        result = model(x)
        loss = (result.canonical - t).pow(2).mean()
        if isinstance(model, DEQCanonicalizer):  # keep the learned map solvable within max_iter
            loss = loss + 0.1 * model.residual_loss(result)
        optimizer.zero_grad()
        loss.backward()
        if long:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if schedule is not None:
            schedule.step()
    return model.eval()


def run_global_scale(kind: str, templates, steps: int, seed: int = 0):
    torch.manual_seed(seed)
    group = GlobalScaleGroup()
    log_range = math.log(1.6)

    def sample(n, gen):
        return (2 * torch.rand(n, 1, generator=gen) - 1) * log_range

    model, lr = build(kind, group)
    train(model, lr, group, templates, sample, steps, seed=seed, long=steps > 100)
    test_params = torch.linspace(-log_range, log_range, 6)[:, None]
    raw, can, raw_err, can_err = spreads(model, group, templates, test_params)
    # the predicted log scale should follow the true one
    gen = torch.Generator().manual_seed(123)
    idx = torch.randint(0, templates.shape[0], (64,), generator=gen)
    a = sample(64, gen)
    with torch.no_grad():
        p = model(group.act(templates[idx], a)).params
    residual_ratio = float((a - p).std() / a.std())
    return raw, can, raw_err, can_err, residual_ratio


@pytest.mark.parametrize("kind", ["dec", "discrete", "optim"])
def test_toy_training_fast(kind, templates):
    raw, can, raw_err, can_err, ratio = run_global_scale(kind, templates(SIZE), steps=60)
    assert can < 0.6 * raw, (kind, raw, can)
    assert can_err < 0.7 * raw_err, (kind, raw_err, can_err)
    assert ratio < 0.95, (kind, ratio)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dec", "discrete", "optim"])
def test_toy_training_global_scale_long(kind, templates):
    raw, can, raw_err, can_err, ratio = run_global_scale(kind, templates(SIZE), steps=300)
    assert can < 0.35 * raw, (kind, raw, can)
    assert can_err < 0.5 * raw_err, (kind, raw_err, can_err)
    assert ratio < 0.6, (kind, ratio)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dec", "discrete", "optim"])
def test_toy_training_monotone_scale(kind, templates):
    """The same task with local (monotone) scalings, the group of the paper."""
    torch.manual_seed(0)
    group = MonotoneScaleGroup(grid=(2, 2))
    tmpl = templates(SIZE)

    def sample(n, gen):
        return group.sample_params(n, scale_range=(0.6, 1.6), generator=gen)

    model, lr = build(kind, group)
    train(model, lr, group, tmpl, sample, steps=300, long=True)
    test_params = sample(6, torch.Generator().manual_seed(7))
    raw, can, raw_err, can_err = spreads(model, group, tmpl, test_params)
    assert can < 0.7 * raw, (kind, raw, can)
    assert can_err < 0.8 * raw_err, (kind, raw_err, can_err)
