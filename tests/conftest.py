"""Shared fixtures. Reference data comes from $TF_SHARED (the folder holding convnet_transfer/)."""
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from transferfeat.study import Study

REFERENCE_NETS = ["half0A", "netbase", "reduced-0010", "transfer0A0B_1_1", "transfer0A0B_1_3",
                  "transfer0A0B_1_7", "transfer-ft0A0B_1_2", "transfer-ft0A0B_1_6", "nolearn_1_4"]


def shared_dir():
    value = os.environ.get("TF_SHARED")
    return Path(value) if value and (Path(value) / "convnet_transfer").is_dir() else None


def pytest_collection_modifyitems(items):
    """Tests that use the reference data carry the `shared` marker (-m 'not shared' leaves them out)."""
    for item in items:
        if "shared" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared)


def tf(*args, **kw):
    """The tf CLI in-process (click's CliRunner), exceptions raised, not caught."""
    from click.testing import CliRunner
    from transferfeat.cli import main
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kw)


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


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic ILSVRC-layout data set (20 classes, 32 px), made once per session."""
    from transferfeat.synth import synthesize
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, classes=20, train_per_class=12, valid_per_class=3, size=(32, 32), seed=1)
    return out


@pytest.fixture(scope="session")
def caffe_bin():
    """The real caffe; skips only where Caffe is absent (never in CI, which installs it)."""
    from transferfeat.engines.caffe import CaffeNotFound, find_tool
    try:
        return find_tool("caffe")
    except CaffeNotFound as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have Caffe: {e}")
        pytest.skip(str(e))


def paper_size_valid(tmp_path, dataset: str, valid_per_class: int):
    """256x256 synthetic images (4 classes) and an LMDB of them as ``dataset`` under tmp_path/data,
    for running the paper's own CaffeNet: (image folder, data root, the dataset's folder)."""
    from transferfeat.datasets import build_db
    from transferfeat.synth import synthesize
    img = tmp_path / "img"
    synthesize(img, classes=4, train_per_class=1, valid_per_class=valid_per_class, size=(256, 256), seed=3)
    valid = tmp_path / "data" / dataset
    valid.mkdir(parents=True)
    (valid / "files.txt").write_text((img / "whole_valid" / "files.txt").read_text())
    build_db(valid / "files.txt", img / "val", valid / "lmdb", classes=1000, shuffle=False, progress=False)
    return img, tmp_path / "data", valid


def tiny_study_file(tmp_path, max_iter=30, snapshot=10, test_interval=10):
    """The mini study with a short schedule and less data (120 + 30 images a class), written to ``tmp_path/tiny.yaml``."""
    import re
    text = Study.load("mini").path.read_text()
    text = re.sub(r"\n  train_per_class: \d+\n  valid_per_class: \d+\n  reduced_per_class: \[[\d, ]+\]",
                  "\n  train_per_class: 120\n  valid_per_class: 30\n  reduced_per_class: [1, 2, 5, 10, 20, 40, 60, 80, 100, 110, 115, 120]",
                  text)
    for key, value in (("max_iter", max_iter), ("snapshot", snapshot), ("test_interval", test_interval),
                       ("stepsize", max(1, max_iter // 2)), ("test_iter", 2), ("display", 5)):
        text = re.sub(rf"(\n    {key}:) \d+", rf"\1 {value}", text)
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def torch_engine():
    """PyTorch for the torch engine; skips only where it is absent (never in CI, which installs it)."""
    try:
        import torch
        return torch
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI must have torch (pip install 'transferfeat[torch]')")
        pytest.skip("torch is not installed: pip install 'transferfeat[torch]'")


@pytest.fixture
def fake_caffe(tmp_path):
    """An executable `caffe` that runs tests/fake_caffe.py (the subprocess boundary)."""
    import sys
    script = Path(__file__).parent / "fake_caffe.py"
    exe = tmp_path / "bin" / "caffe"
    exe.parent.mkdir()
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    exe.chmod(0o755)
    return exe


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A real one-node SLURM cluster; skips only where SLURM is absent (never in CI, which installs it)."""
    from slurm_cluster import Cluster, available
    why = available()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the SLURM tests: {why}")
        pytest.skip(why)
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="tf-slurm-"))).start()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    cluster.stop()
    shutil.rmtree(cluster.dir, ignore_errors=True)
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old
