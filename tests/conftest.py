"""Shared fixtures. Reference data comes from $TF_SHARED (the folder holding convnet_transfer/)."""
import os
from pathlib import Path

import pytest

from transferfeat.study import Study

REFERENCE_NETS = ["half0A", "netbase", "reduced-0010", "transfer0A0B_1_1", "transfer0A0B_1_3",
                  "transfer0A0B_1_7", "transfer-ft0A0B_1_2", "transfer-ft0A0B_1_6", "nolearn_1_4"]


def shared_dir():
    value = os.environ.get("TF_SHARED")
    return Path(value) if value and (Path(value) / "convnet_transfer").is_dir() else None


@pytest.fixture(scope="session")
def shared():
    """The reference data folder; skips where it is absent (a user's fresh clone). CI sets TF_SHARED."""
    path = shared_dir()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must set TF_SHARED to the shared/ reference folder")
        pytest.skip("reference data not found: set TF_SHARED to the shared/ folder")
    return path / "convnet_transfer"


@pytest.fixture(scope="session")
def paper():
    return Study.load()


@pytest.fixture(scope="session")
def mini():
    return Study.load("mini")
