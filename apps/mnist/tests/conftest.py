"""The app's tests see no MNIST the machine happens to have: an empty digit cache and no user folder."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _hermetic_digit_sources(tmp_path_factory):
    saved = {k: os.environ.get(k) for k in ("LSE_MNIST_CACHE", "LSE_MNIST_DIR")}
    os.environ["LSE_MNIST_CACHE"] = str(tmp_path_factory.mktemp("lse-mnist-cache"))
    os.environ.pop("LSE_MNIST_DIR", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
