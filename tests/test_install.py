"""What users install: the sdist and the wheel built from the repository's files carry
every file of the package, not only its Python modules.

A wheel without `ui/app.tcss` crashed every `pip install .` / `pipx install` user at start
while the editable install the tests used worked; this builds both distributions from a
copy of what git holds (the working tree's stale egg-info cannot help) and compares.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.server


def _git_files(*paths: str) -> list[str]:
    """Files git tracks, and new ones it does not ignore (a change not yet committed)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing says which files the package has")
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [f for f in out.splitlines() if (REPO / f).is_file()]


@pytest.fixture(scope="module")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist, and the wheel built from that sdist (as `pip install` from PyPI does)."""
    src = tmp_path_factory.mktemp("clone")
    for name in _git_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    out = src / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        check=True,
        timeout=120,
    )
    return next(out.glob("*.tar.gz")), next(out.glob("*.whl"))


def test_the_wheel_carries_every_file_of_the_package(distributions: tuple[Path, Path]) -> None:
    with zipfile.ZipFile(distributions[1]) as wheel:
        shipped = set(wheel.namelist())
    wanted = set(_git_files("pairs_tui"))
    assert any(not f.endswith(".py") for f in wanted), "the package has data files to check"
    assert wanted - shipped == set()
    assert not [f for f in shipped if "__pycache__" in f or f.endswith(".pyc")]


def test_the_sdist_carries_every_file_of_the_package(distributions: tuple[Path, Path]) -> None:
    with tarfile.open(distributions[0]) as sdist:
        root = sdist.getnames()[0].split("/")[0]
        shipped = {n.removeprefix(f"{root}/") for n in sdist.getnames()}
    assert set(_git_files("pairs_tui")) - shipped == set()
