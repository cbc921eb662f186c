"""Test plumbing shared by every package: device/dtype fixtures and the ``slow`` marker.

Options:
    --device cpu|cuda|all     device(s) the ``device`` fixture runs on (default: cpu)
    --dtype float32|float64|all   dtype(s) the ``dtype`` fixture runs on (default: float32)
    --runslow                 also run tests marked ``slow``
"""

from __future__ import annotations

import os

import pytest

# Two cores on CI: keep each test process from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")

try:  # property tests: a fixed example sequence on CI (a red run is reproducible), fresh examples elsewhere
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        _hypothesis_settings.load_profile("ci")
except ImportError:  # a package tested on its own without hypothesis
    pass


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="cpu, cuda or all")
    parser.addoption("--dtype", default="float32", help="float32, float64 or all")
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def _devices(config: pytest.Config) -> list[str]:
    import torch

    choice = config.getoption("--device")
    if choice == "all":
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    if choice not in ("cpu", "cuda"):
        raise pytest.UsageError(f"--device must be cpu, cuda or all, got {choice!r}")
    return [choice]


def _dtypes(config: pytest.Config) -> list[str]:
    choice = config.getoption("--dtype")
    if choice == "all":
        return ["float32", "float64"]
    if choice not in ("float32", "float64"):
        raise pytest.UsageError(f"--dtype must be float32, float64 or all, got {choice!r}")
    return [choice]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", _devices(metafunc.config), indirect=True)
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", _dtypes(metafunc.config), indirect=True)


@pytest.fixture
def device(request: pytest.FixtureRequest):
    import torch

    name = request.param
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    return torch.device(name)


@pytest.fixture
def dtype(request: pytest.FixtureRequest):
    import torch

    return getattr(torch, request.param)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
