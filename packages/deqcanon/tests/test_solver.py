from __future__ import annotations

import pytest
import torch

import deqcanon.solver as solver_module
from deqcanon import get_solver, register_solver, solve_fixed_point, solver_names


def linear_map(scale: float = 1.0, dtype=torch.float64):
    """z -> A z + b with a contraction A (spectral radius 0.8), per sample; fixed point (I - A)^-1 b."""
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=torch.float64))
    a = (q @ torch.diag(torch.tensor([0.8, -0.7, 0.5, 0.1], dtype=torch.float64)) @ q.T).to(dtype)
    b = (scale * torch.randn(3, 4, generator=gen, dtype=torch.float64)).to(dtype)
    exact = torch.linalg.solve(torch.eye(4, dtype=dtype) - a, b.T).T
    return (lambda z: z @ a.T + b), exact


@pytest.mark.parametrize("name", ["anderson", "broyden", "fixed_point"])
@pytest.mark.parametrize("stop_mode", ["abs", "rel"])
def test_solvers_converge(name, stop_mode):
    f, exact = linear_map()
    sol = solve_fixed_point(
        f, torch.zeros(3, 4, dtype=torch.float64), solver=name, max_iter=200, tol=1e-10, stop_mode=stop_mode
    )
    torch.testing.assert_close(sol.z, exact, atol=1e-8, rtol=0)
    assert sol.solver == name and sol.fallback is None
    assert 1 <= sol.evaluations <= 201
    assert sol.abs_trace.shape[0] == 3


def test_evaluations_are_counted():
    f, _ = linear_map()
    calls = []

    def counted(z):
        calls.append(1)
        return f(z)

    sol = solve_fixed_point(
        counted, torch.zeros(3, 4, dtype=torch.float64), solver="fixed_point", max_iter=7, tol=1e-30
    )
    assert sol.evaluations == len(calls) == 7


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e4])
def test_anderson_is_scale_invariant(scale):
    """torchdeq's absolute regularisation would stall on tiny residuals; the rescaled solve does not."""
    f, exact = linear_map(scale)
    sol = solve_fixed_point(
        f, torch.zeros(3, 4, dtype=torch.float64), solver="anderson", max_iter=30, tol=1e-9
    )
    torch.testing.assert_close(sol.z, exact, atol=1e-7 * scale, rtol=0)
    assert sol.evaluations < 20
    # absolute residual traces are in the units of the problem
    assert sol.abs_trace[:, 0].max() < 10 * scale


def test_singular_anderson_falls_back(monkeypatch):
    f, exact = linear_map()

    def singular(*args, **kwargs):
        raise torch.linalg.LinAlgError(
            "linalg.solve: The solver failed because the input matrix is singular."
        )

    monkeypatch.setattr(torch.linalg, "solve", singular)
    sol = solve_fixed_point(f, torch.zeros(3, 4, dtype=torch.float64), max_iter=100, tol=1e-10)
    assert sol.solver == "broyden" and "singular" in sol.fallback and "broyden" in sol.fallback
    torch.testing.assert_close(sol.z, exact, atol=1e-8, rtol=0)
    with pytest.raises(torch.linalg.LinAlgError, match="singular"):
        solve_fixed_point(f, torch.zeros(3, 4, dtype=torch.float64), fallback=None)


def test_non_finite_estimate_falls_back():
    """torchdeq's solvers keep their best finite estimate; a solver that returns NaN is replaced."""

    def broken(func, x0, *, max_iter, tol, stop_mode, **kwargs):
        return torch.full_like(x0, float("nan")), [], {}

    register_solver("test_broken", broken)
    try:
        f, exact = linear_map()
        sol = solve_fixed_point(
            f,
            torch.zeros(3, 4, dtype=torch.float64),
            solver="test_broken",
            fallback="anderson",
            max_iter=60,
            tol=1e-10,
        )
        assert sol.solver == "anderson" and "non-finite" in sol.fallback
        torch.testing.assert_close(sol.z, exact, atol=1e-8, rtol=0)
        assert torch.isnan(
            solve_fixed_point(f, torch.zeros(3, 4), solver="test_broken", fallback=None).z
        ).all()
    finally:
        for table in (solver_module._SOLVERS, solver_module._MIN_ITER, solver_module._OPTIONS):
            table.pop("test_broken")


def test_registry():
    assert solver_names()[:3] == ("anderson", "broyden", "fixed_point")
    with pytest.raises(ValueError, match="'anderson', 'broyden', 'fixed_point'"):
        get_solver("newton")

    def halve(func, x0, *, max_iter, tol, stop_mode, **kwargs):
        z = x0
        for _ in range(max_iter):
            z = 0.5 * z + 0.5 * func(z)
        return z, [], {}

    register_solver("test_halving", halve, options={"verbose"})
    try:
        assert get_solver("test_halving") is halve
        f, exact = linear_map()
        sol = solve_fixed_point(
            f, torch.zeros(3, 4, dtype=torch.float64), solver="test_halving", max_iter=300
        )
        torch.testing.assert_close(sol.z, exact, atol=1e-8, rtol=0)
        assert sol.abs_trace.numel() == 0
        with pytest.raises(ValueError, match="already registered"):
            register_solver("test_halving", halve)
        with pytest.raises(ValueError, match="unknown option"):
            solve_fixed_point(f, torch.zeros(3, 4), solver="test_halving", solver_kwargs={"m": 3})
    finally:
        solver_module._SOLVERS.pop("test_halving")
        solver_module._MIN_ITER.pop("test_halving")
        solver_module._OPTIONS.pop("test_halving")
    with pytest.raises(TypeError, match="callable"):
        register_solver("nope", 3)


def test_options_validated():
    f, _ = linear_map()
    z0 = torch.zeros(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="max_iter"):
        solve_fixed_point(f, z0, solver="anderson", max_iter=2)
    with pytest.raises(ValueError, match="stop_mode"):
        solve_fixed_point(f, z0, stop_mode="max")
    with pytest.raises(ValueError, match="tol"):
        solve_fixed_point(f, z0, tol=-1.0)
    with pytest.raises(ValueError, match="unknown option"):
        solve_fixed_point(f, z0, solver_kwargs={"beta": 1.0})
    with pytest.raises(TypeError, match="solver_kwargs"):
        solve_fixed_point(f, z0, solver_kwargs=[("m", 3)])
