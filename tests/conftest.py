"""Shared fixtures. Reference data comes from $TF_SHARED (the folder holding convnet_transfer/)."""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from transferfeat.study import Study

REFERENCE_NETS = ["half0A", "netbase", "reduced-0010", "transfer0A0B_1_1", "transfer0A0B_1_3",
                  "transfer0A0B_1_7", "transfer-ft0A0B_1_2", "transfer-ft0A0B_1_6", "nolearn_1_4"]


SYSTEM_TMP = Path(tempfile.gettempdir())          # before the session moves temporary files into pytest's folder
_before: set = set()


def pytest_sessionstart(session):
    _before.update(p.name for p in SYSTEM_TMP.iterdir())


@pytest.fixture(scope="session", autouse=True)
def contained_temp(tmp_path_factory):
    """Every temporary file of the session (tools' glog files, Chromium's, SLURM's) and the log cache
    land in pytest's folder: TMPDIR and XDG_CACHE_HOME there (Caffe kept by TF_CAFFE), tempfile's
    default too, and glog to stderr."""
    folder = tmp_path_factory.mktemp("tmp")
    saved = {k: os.environ.get(k) for k in ("TMPDIR", "GLOG_logtostderr", "XDG_CACHE_HOME", "TF_CAFFE")}
    from transferfeat.engines.caffe import CaffeNotFound, find_tool
    try:                                  # the installed Caffe stays found when the cache folder moves
        os.environ.setdefault("TF_CAFFE", str(find_tool("caffe")))
    except CaffeNotFound:
        pass
    os.environ.update(TMPDIR=str(folder), GLOG_logtostderr="1", XDG_CACHE_HOME=str(tmp_path_factory.mktemp("cache")))
    tempfile.tempdir = str(folder)
    yield folder
    tempfile.tempdir = None
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Skips are loud: each group of skipped tests and why, at the end, in CI and out of it; then
    anything the session left in the system temp folder."""
    groups = {}
    for rep in terminalreporter.stats.get("skipped", []):
        reason = str(rep.longrepr[2] if isinstance(rep.longrepr, tuple) else rep.longrepr).removeprefix("Skipped: ")
        groups.setdefault(reason, []).append(rep.nodeid)
    if groups:
        terminalreporter.section("checks that did not run (skipped)", yellow=True, bold=True)
        for reason, ids in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            files = sorted({i.split("::")[0] for i in ids})
            terminalreporter.line(f"{len(ids):4d} skipped: {reason}  ({', '.join(files)})", yellow=True)
    left = getattr(config, "_tf_left_in_tmp", [])
    if left:
        terminalreporter.section("left in the system temp folder", red=True, bold=True)
        terminalreporter.line(f"{SYSTEM_TMP}: {', '.join(left[:20])}" + (" …" if len(left) > 20 else ""), red=True)
        if os.environ.get("CI"):
            terminalreporter.line("the test suite must leave nothing there: the run fails", red=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """After every fixture is torn down: in CI, a run that left anything in the system temp folder
    fails. Kept folders of failed tests lose what a failure report does not need: databases and
    snapshots over 1 MiB (named in PRUNED.txt beside them)."""
    left = sorted(p.name for p in SYSTEM_TMP.iterdir() if p.name not in _before and not p.name.startswith("pytest-of-"))
    session.config._tf_left_in_tmp = left
    if left and os.environ.get("CI") and session.exitstatus == 0:
        session.exitstatus = 1
    factory = getattr(session.config, "_tmp_path_factory", None)
    base = factory.getbasetemp() if factory else None
    if not base or not base.is_dir():
        return
    for path in base.rglob("*"):
        try:
            big = path.is_file() and not path.is_symlink() and path.stat().st_size > 1 << 20
        except OSError:
            continue
        if big and (path.name in ("data.mdb", "lock.mdb") or path.suffix in (".caffemodel", ".solverstate")
                    or "_iter_" in path.name):
            with open(path.parent / "PRUNED.txt", "a") as f:
                f.write(f"{path.name} ({path.stat().st_size} bytes): removed after the session\n")
            path.unlink()


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
        pytest.skip("reference data: not found (set TF_SHARED to the shared/ folder)")
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
        pytest.skip(f"Caffe: {e}")


def paper_size_valid(tmp_path, dataset: str, valid_per_class: int):
    """256x256 synthetic images (4 classes) and an LMDB of them as ``dataset`` under tmp_path/data,
    for running the paper's own CaffeNet: (image folder, data root, the dataset's folder)."""
    from transferfeat.databases import build_db
    from transferfeat.synth import synthesize
    img = tmp_path / "img"
    synthesize(img, classes=4, train_per_class=1, valid_per_class=valid_per_class, size=(256, 256), seed=3)
    valid = tmp_path / "data" / dataset
    valid.mkdir(parents=True)
    (valid / "files.txt").write_text((img / "whole_valid" / "files.txt").read_text())
    build_db(valid / "files.txt", img / "val", valid / "lmdb", classes=1000, shuffle=False, progress=False)
    return img, tmp_path / "data", valid


def class_folder(root, classes: int = 4, per_class: int = 10, val_per_class: int = 0, size=(32, 32)) -> Path:
    """A user's image folder: ``root/<class>/*.jpg`` (``tf synth``'s learnable strokes, class names
    out of label order) and, with ``val_per_class``, ``root/val/<class>/*.jpg``."""
    import numpy as np
    from PIL import Image
    from transferfeat.synth import class_strokes, draw
    rng = np.random.RandomState(5)
    strokes = class_strokes(classes, rng)
    names = [f"{animal}_{c}" for c, animal in zip(range(classes), ["zebra", "ant", "owl", "cat", "emu", "yak"] * 9)]
    for c, name in enumerate(names):
        for sub, n in (("", per_class), ("val", val_per_class)):
            d = Path(root) / sub / name
            for i in range(n):
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(draw(strokes[c], size, rng)).save(d / f"img{i:03d}.jpg", quality=90)
    return Path(root)


def folder_study(tmp_path, classes: int = 4, max_iter: int = 20) -> Path:
    """The mini study for a ``class_folder`` data set: ``classes`` classes, the half family with one
    seed and its transfer nets, a short schedule; written to ``tmp_path/folder.yaml``."""
    def edit(s):
        s["datasets"].update(classes=classes, natural=list(range(classes // 2)), train_per_class=8, valid_per_class=2,
                             reduced_per_class=[1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 8][:len(s["datasets"]["reduced_per_class"])])
        s["families"] = {"half": {"seeds": [0]}, "transfer": {"seeds": [0], "directions": ["AB"], "depths": [1, 2]}}
        s["input"].update(train_batch=4, val_batch=2)
        for solver in s["solvers"].values():
            solver.update(max_iter=max_iter, snapshot=max_iter // 2, test_interval=max_iter // 2, stepsize=max_iter,
                          test_iter=2, display=5)
    return write_study(tmp_path, edit, name="folder.yaml")


def write_study(tmp_path, edit=None, base: str = "mini", name: str = "study.yaml") -> Path:
    """A study file made from a shipped study: its YAML parsed, changed by ``edit(data)`` (a dict),
    written to ``tmp_path/name``."""
    data = yaml.safe_load(Study.load(base).path.read_text())
    if edit:
        edit(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def set_key(data: dict, dotted: str, value) -> None:
    """Set ``data[a][b][c] = value`` for ``dotted`` = "a.b.c" (list indices as numbers)."""
    *path, last = dotted.split(".")
    for key in path:
        data = data[int(key)] if isinstance(data, list) else data[key]
    data[int(last) if isinstance(data, list) else last] = value


def tiny_study_file(tmp_path, max_iter=30, snapshot=10, test_interval=10, test_iter=2, base="mini",
                    name="tiny.yaml"):
    """A shipped study (the mini one by default) with a short schedule and less data (120 + 30 images a
    class), written to ``tmp_path/name``."""
    def edit(s):
        s["datasets"].update(train_per_class=120, valid_per_class=30,
                             reduced_per_class=[1, 2, 5, 10, 20, 40, 60, 80, 100, 110, 115, 120])
        for solver in s["solvers"].values():
            solver.update(max_iter=max_iter, snapshot=snapshot, test_interval=test_interval,
                          stepsize=max(1, max_iter // 2), test_iter=test_iter, display=5)
    return write_study(tmp_path, edit, base=base, name=name)


def edit_prototxt(path, edit) -> None:
    """Change a prototxt through its parsed form: ``edit(msg)`` on the Message, then written back."""
    from transferfeat.prototxt import dump, parse
    msg = parse(Path(path).read_text(), str(path))
    edit(msg)
    Path(path).write_text(dump(msg))


def set_fields(path, **fields) -> None:
    """Set top-level fields of a prototxt (a solver's max_iter, snapshot, …)."""
    edit_prototxt(path, lambda msg: msg.update({k: [v] for k, v in fields.items()}))


def run_trainer(netdir, *args, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """The torch engine's trainer (``python -m transferfeat.engines.torchnet``) run in a net's folder,
    as tf runs it: this checkout's transferfeat, output captured."""
    from transferfeat.engines.pytorch import PROGRAM, TorchEngine
    out = subprocess.run([sys.executable, "-m", PROGRAM, *map(str, args)], cwd=netdir, capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, **TorchEngine().environment()})
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def without_torch(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    """tf in a fresh interpreter where `import torch` fails; stdout and stderr together."""
    code = "import sys; sys.modules['torch'] = None; from transferfeat.cli import main; main(sys.argv[1:], prog_name='tf')"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def torch_engine():
    """PyTorch for the torch engine; skips only where it is absent (never in CI, which installs it)."""
    try:
        import torch
        return torch
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI must have torch (pip install 'transferfeat[torch]')")
        pytest.skip("torch: not installed (pip install 'transferfeat[torch]')")


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
        pytest.skip(f"SLURM: {why}")
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


def fake_calls(root, name) -> list[dict]:
    """The calls tests/fake_caffe.py recorded in net ``name``'s folder under ``root``."""
    import json
    path = Path(root) / name / "fake-caffe-calls.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def net_state(folder, name: str):
    """A net's state, as tf status reads it."""
    from transferfeat.state import state_of
    return state_of(folder, folder.study.net(name))


def wait_for(condition, timeout: float = 60, what: str = "the condition"):
    """Until ``condition()`` holds (polled), or fail after ``timeout`` seconds."""
    import time
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (root only; skipped cleanly elsewhere); yields a function (size) -> path."""
    mounts = []

    def mount(size: str) -> Path:
        path = tmp_path / f"tmpfs{len(mounts)}"
        path.mkdir()
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
        if out.returncode:
            if os.environ.get("CI"):
                pytest.fail(f"CI must be able to mount a tmpfs: {out.stderr.decode()}")
            pytest.skip(f"tmpfs: cannot mount one here ({out.stderr.decode().strip()})")
        mounts.append(path)
        return path
    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def resize_tmpfs(path, size: str):
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """The tiny study (60 iterations, snapshots every 20) and data for half0A, half0B, transfer0A0B_1_2."""
    from transferfeat.demo import prepare_data
    tmp = tmp_path_factory.mktemp("tiny60")
    study = Study.load(tiny_study_file(tmp, max_iter=60, snapshot=20, test_interval=20))
    data = prepare_data(study, tmp, study.select(["half0A", "half0B", "transfer0A0B_1_2"]), echo=lambda *_: None)
    return study, data


def rendered(study, data, root, names=("half0A",)):
    """``names`` rendered into results folder ``root``: its StudyFolder."""
    from transferfeat.folder import StudyFolder
    from transferfeat.render import Renderer
    Renderer(study).render_all(study.select(list(names)), root, data)
    return StudyFolder(root, study)
