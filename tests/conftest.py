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
