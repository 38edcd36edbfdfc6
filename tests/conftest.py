import shutil
from pathlib import Path

import pytest

from sbpet_bench.testing import lfw3d_path


@pytest.fixture(scope="session")
def lfw3d() -> Path:
    path = lfw3d_path()
    if not (path / "male_names.txt").exists():
        pytest.skip(f"LFW3D not found at {path} (set SBPET_LFW3D)")
    return path


@pytest.fixture(scope="session")
def faceapi_reference() -> Path:
    path = lfw3d_path().parent / "faceapi-reference"
    if not path.exists():
        pytest.skip(f"face-api reference data not found at {path}")
    return path


@pytest.fixture(scope="session")
def small_data(lfw3d, tmp_path_factory) -> Path:
    """A folders-layout copy of 160 LFW3D images (a temporary folder, never the repo)."""
    root = tmp_path_factory.mktemp("faces")
    males = sorted(set((lfw3d / "male_names.txt").read_text().split()) - set((lfw3d / "female_names.txt").read_text().split()))
    females = sorted(set((lfw3d / "female_names.txt").read_text().split()) - set(males))
    for sub, names in (("male", males[::60][:80]), ("female", females[::18][:80])):
        (root / sub).mkdir()
        for name in names:
            shutil.copy(lfw3d / "images" / name.rsplit("_", 1)[0] / name, root / sub / name)
    return root
