"""Each package builds a wheel and installs alone into a fresh environment with its pinned siblings.

The metadata checks read the `pyproject.toml` files. The install check builds the four wheels with
`pip wheel --no-deps` and installs each package, on its own, into a fresh virtual environment with
`pip install --no-index --find-links <the built wheels>`: the siblings it pins must come from those
wheels, never from an index. The third-party libraries (torch, timm, kornia, torchdeq, torchmetrics and
what they need) are taken from the running environment, read-only: the fresh environment sees them
through a folder of links, without this project's own packages, so nothing is downloaded and the test
works offline. The wheels are built without build isolation when hatchling is importable (offline);
otherwise pip builds them in isolation and needs hatchling from its configured index.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {  # directory: (distribution, import name, siblings it depends on)
    "monowarp": ("monowarp", "monowarp", ()),
    "deqcanon": ("deqcanon", "deqcanon", ("monowarp",)),
    "latentcanon": ("latentcanon", "latentcanon", ("monowarp", "deqcanon")),
    "lsmetrics": ("local-scale-metrics", "lsmetrics", ()),
}
# Distributions of this workspace: hidden from the fresh environments.
_OWN = re.compile(r"^(monowarp|deqcanon|latentcanon|local_scale_metrics|lse_\w+)[-.]|^_?_editable")


def _clean_env() -> dict[str, str]:
    """The environment without PYTHONPATH and the like: the fresh environment sees only itself."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}


def _project(directory: str) -> dict:
    return tomllib.loads((ROOT / "packages" / directory / "pyproject.toml").read_text(encoding="utf-8"))


def _version(directory: str) -> str:
    init = (ROOT / "packages" / directory / "src" / PACKAGES[directory][1] / "__init__.py").read_text()
    found = re.findall(r'^__version__ = "([^"]+)"$', init, re.M)
    assert len(found) == 1, f"packages/{directory}: expected one __version__ line, found {found}"
    return found[0]


def _pin(version: str) -> str:
    """The compatible range of a 0.x sibling: the same minor version (`>=0.1,<0.2`)."""
    major, minor = (int(v) for v in version.split(".")[:2])
    upper = f"{major}.{minor + 1}" if major == 0 else f"{major + 1}"
    return f">={major}.{minor},<{upper}"


# --------------------------------------------------------------------------------------- metadata
@pytest.mark.parametrize("directory", PACKAGES)
def test_version_lives_in_one_place(directory: str):
    project = _project(directory)
    assert "version" not in project["project"], "the version is read from __version__, not repeated"
    assert project["project"]["dynamic"] == ["version"]
    path = project["tool"]["hatch"]["version"]["path"]
    assert path == f"src/{PACKAGES[directory][1]}/__init__.py"
    assert re.fullmatch(r"\d+\.\d+\.\d+", _version(directory))


@pytest.mark.parametrize("directory", PACKAGES)
def test_siblings_are_pinned_to_a_compatible_range(directory: str):
    distribution, _, siblings = PACKAGES[directory]
    project = _project(directory)["project"]
    assert project["name"] == distribution
    requirements = {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0]: r for r in project["dependencies"]}
    for sibling in siblings:
        assert requirements[sibling] == sibling + _pin(_version(sibling)), requirements[sibling]
    # The siblings release together: their versions agree.
    assert _version(directory) == _version("monowarp")


def test_pin_helper():
    assert _pin("0.1.0") == ">=0.1,<0.2"
    assert _pin("0.12.3") == ">=0.12,<0.13"
    assert _pin("1.4.0") == ">=1.4,<2"


@pytest.mark.parametrize("directory", PACKAGES)
def test_metadata_for_the_package_index(directory: str):
    project = _project(directory)["project"]
    assert project["license"] == "MIT"
    assert project["readme"] == "README.md"
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(project["urls"])
    classifiers = project["classifiers"]
    assert "Typing :: Typed" in classifiers
    assert any(c.startswith("Development Status ::") for c in classifiers)
    assert (ROOT / "packages" / directory / "src" / PACKAGES[directory][1] / "py.typed").is_file()
    # PyPI renders the README without the repository: every link must be absolute.
    readme = (ROOT / "packages" / directory / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert links, "the README links the documentation"
    relative = [link for link in links if not link.startswith(("https://", "http://", "#"))]
    assert relative == [], f"packages/{directory}/README.md has relative links"
    assert "$" not in readme.replace("$ ", ""), "PyPI does not render math: write formulas as code"


# ------------------------------------------------------------------------------------ wheels, venvs
@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    for directory in PACKAGES:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "--quiet",
             "--wheel-dir", str(out), str(ROOT / "packages" / directory)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, f"building {directory} failed:\n{done.stdout}\n{done.stderr}"
    return out


@pytest.fixture(scope="module")
def third_party(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of links to the running environment's libraries, without this project's packages."""
    folder = tmp_path_factory.mktemp("third_party")
    site_dirs = {Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])}
    for site in site_dirs:
        for entry in site.iterdir():
            if _OWN.match(entry.name) or entry.suffix == ".pth" or entry.name in ("pip", "__pycache__"):
                continue
            if entry.name.startswith("pip-") and entry.name.endswith(".dist-info"):
                continue
            target = folder / entry.name
            if not target.exists():
                target.symlink_to(entry)
    return folder


def _fresh_environment(path: Path, third_party: Path) -> Path:
    venv.EnvBuilder(with_pip=False, symlinks=True).create(path)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, env=_clean_env(),
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "_third_party.pth").write_text(f"{third_party}\n")
    return python


@pytest.mark.skipif(sys.platform == "win32", reason="the fresh environments use POSIX paths")
@pytest.mark.parametrize("directory", PACKAGES)
def test_wheel_installs_alone_with_its_pinned_siblings(
    directory: str, wheels: Path, third_party: Path, tmp_path: Path
):
    distribution, module, siblings = PACKAGES[directory]
    version = _version(directory)
    wheel = next(wheels.glob(f"{distribution.replace('-', '_')}-{version}-py3-none-any.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(f"{distribution.replace('-', '_')}-{version}.dist-info/METADATA").decode()
    assert f"{module}/__init__.py" in names and f"{module}/py.typed" in names
    assert not any(n.startswith(("tests/", f"{module}/tests/")) for n in names), "tests are not shipped"
    assert f"Version: {version}\n" in metadata
    for sibling in siblings:
        assert re.search(rf"^Requires-Dist: {sibling}(<|>)", metadata, re.M), f"{sibling} is not pinned"

    python = _fresh_environment(tmp_path / "env", third_party)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-index",
         "--find-links", str(wheels), distribution],
        capture_output=True, text=True, timeout=300, env=_clean_env(),
    )  # fmt: skip
    assert done.returncode == 0, f"installing {distribution} failed:\n{done.stdout}\n{done.stderr}"
    probe = "\n".join(
        [
            f"import importlib.metadata as md, json, {module}",
            "own = ('monowarp', 'deqcanon', 'latentcanon', 'local-scale-metrics')",
            "names = sorted(d.metadata['Name'] for d in md.distributions())",
            f"print(json.dumps({{'file': {module}.__file__, 'version': {module}.__version__,",
            "  'installed': [n for n in names if n in own]}))",
        ]
    )
    done = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=300, env=_clean_env()
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["file"].startswith(str(tmp_path / "env")), result["file"]
    assert result["version"] == version
    assert result["installed"] == sorted([distribution, *siblings])
