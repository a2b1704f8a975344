""""Done" means whole: verified final snapshots, resume points checked, failures shown by their cause,
full disks, concurrent runs and signals whatever the parent did. Snapshot cases run real Caffe; the
scheduling cases a fake caffe at the subprocess boundary; disk-full cases a small tmpfs (root only)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import tiny_study_file, tf
from transferfeat.caffeproto import _read_varint
from transferfeat.cli import main
from transferfeat.datasets import build_db
from transferfeat.errors import Error
from transferfeat.folder import StudyFolder
from transferfeat.logs import parse_files
from transferfeat.render import Renderer
from transferfeat.study import Study



def field_ends(path) -> list[int]:
    """Byte offsets where each top-level protobuf field of a file ends."""
    data, pos, ends = Path(path).read_bytes(), 0, []
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        if key & 7 == 0:
            _, pos = _read_varint(data, pos)
        else:
            size, pos = _read_varint(data, pos)
            pos += size
        ends.append(pos)
    return ends


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
            pytest.skip(f"cannot mount a tmpfs here: {out.stderr.decode().strip()}")
        mounts.append(path)
        return path
    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def resize_tmpfs(path, size: str):
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True)


# ------------------------------------------------------------------ real Caffe: snapshots

@pytest.fixture(scope="module")
def caffe_data(tmp_path_factory):
    from transferfeat.demo import prepare_data
    tmp = tmp_path_factory.mktemp("rel")
    study = Study.load(tiny_study_file(tmp, max_iter=60, snapshot=20, test_interval=20))
    data = prepare_data(study, tmp, study.select(["half0A", "half0B", "transfer0A0B_1_2"]), echo=lambda *_: None)
    return study, data


def fresh(study, data, tmp_path, names=("half0A",), root=None):
    root = root or tmp_path / "results"
    Renderer(study).render_all(study.select(list(names)), root, data)
    return StudyFolder(root, study)


def trained(study, data, tmp_path, caffe_bin):
    folder = fresh(study, data, tmp_path, ("half0A", "transfer0A0B_1_2"))
    r = tf("train", "half0A", "--root", folder.root)
    assert r.exit_code == 0, r.output
    assert folder.is_done("half0A") and folder.net("half0A").read_done()["caffemodel"]["sha256"]
    return folder


def finishes_from(folder, name, iteration, output):
    """The rerun resumed from ``iteration``, finished, was verified, and its log has the final test."""
    assert f"resuming from iteration {iteration}" in output, output
    assert folder.is_done(name)
    log = parse_files(folder.net(name).logs())
    assert log.iterations == 60 and 60 in log.accuracy and 0 <= log.accuracy[60] <= 1


@pytest.mark.caffe
@pytest.mark.parametrize("cut", ["byte offset", "layer boundary"])
def test_final_caffemodel_cut_is_not_done_and_rerun_completes(caffe_data, tmp_path, caffe_bin, cut):
    """Killed while writing the final snapshot (before tf recorded it): cut at a byte offset, or at a
    layer boundary where the file still parses but lacks fc8."""
    study, data = caffe_data
    folder = trained(study, data, tmp_path, caffe_bin)
    d = folder.net("half0A")
    final = d.snapshot_at(60)
    ends = field_ends(final)
    size = ends[-1] - 1000 if cut == "byte offset" else ends[-3]      # the last two layers, fc8 and loss, missing
    with open(final, "r+b") as f:
        f.truncate(size)
    d.done_record.unlink()
    status = json.loads(tf("status", "half0A", "--root", folder.root, "--format", "json").output)[0]
    assert status["state"] == "unverified"
    r = tf("train", "transfer0A0B_1_2", "--root", folder.root)          # a dependant refuses the cut weights
    assert r.exit_code == 1 and "its final snapshot is not whole" in r.output
    assert ("fc8 is missing" if cut == "layer boundary" else "cannot be read whole") in r.output
    r = tf("train", "half0A", "--root", folder.root)
    assert r.exit_code == 0, r.output
    assert "passing over the snapshot at iteration 60" in r.output
    finishes_from(folder, "half0A", 40, r.output)


@pytest.mark.caffe
def test_recorded_final_snapshot_changed_later_is_reported_never_used(caffe_data, tmp_path, caffe_bin):
    study, data = caffe_data
    folder = trained(study, data, tmp_path, caffe_bin)
    final = folder.net("half0A").snapshot_at(60)
    blob = bytearray(final.read_bytes())
    blob[-5] ^= 0xFF                                                     # same size, other bytes
    final.write_bytes(bytes(blob))
    row = json.loads(tf("status", "half0A", "--root", folder.root, "--format", "json").output)[0]
    assert row["state"] == "damaged" and "changed since it was verified" in row["problem"]
    r = tf("train", "transfer0A0B_1_2", "--root", folder.root)
    assert r.exit_code == 1 and "needs its base net half0A to finish first" in r.output


@pytest.mark.caffe
def test_solverstate_cut_at_a_field_boundary_is_passed_over(caffe_data, tmp_path, caffe_bin):
    study, data = caffe_data
    folder = fresh(study, data, tmp_path)
    d = folder.net("half0A")
    env = dict(os.environ, TF_STUDY=str(folder.study_copy))
    proc = subprocess.Popen([sys.executable, "-m", "transferfeat.cli", "train", "half0A", "--root", str(folder.root)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while len(d.solverstates()) < 2 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    newest = max(d.solverstates())
    assert newest < 60
    state = d.solverstates()[newest]
    with open(state, "r+b") as f:
        f.truncate(field_ends(state)[4])          # iter, learned_net and two of the sixteen history blobs
    older = max(i for i in d.solverstates() if i < newest)
    assert folder.resume_point("half0A") == older
    row = json.loads(tf("status", "half0A", "--root", folder.root, "--format", "json").output)[0]
    assert row["status"] == f"pending (resumes at {older})"
    r = tf("train", "half0A", "--root", folder.root)
    assert r.exit_code == 0, r.output
    assert f"passing over the snapshot at iteration {newest}" in r.output and "history blobs" in r.output
    finishes_from(folder, "half0A", older, r.output)


@pytest.mark.caffe
def test_disk_full_during_training_stops_cleanly_then_resumes(caffe_data, tmp_path, caffe_bin, tmpfs):
    """The results folder on a 3.5 MB tmpfs: a mini snapshot pair takes ~1.1 MB, so after two pairs
    there is no room for two more: tf stops Caffe with a snapshot and says so; with room, a rerun
    finishes from that snapshot."""
    study, data = caffe_data
    disk = tmpfs("3500k")
    folder = fresh(study, data, tmp_path, root=disk / "results")
    (folder.net("half0A").solver).write_text(folder.net("half0A").solver.read_text().replace("snapshot: 20", "snapshot: 10"))
    r = tf("run", "half0A", "--root", folder.root, "--parallel", "1", "--interval", "0.1")
    assert r.exit_code == 130, r.output
    assert "training needs room for two snapshot pairs" in r.output and "free space, then run again" in r.output
    assert not folder.is_done("half0A")
    stopped = folder.resume_point("half0A")
    assert stopped is not None and stopped < 60
    resize_tmpfs(disk, "32m")
    r = tf("run", "half0A", "--root", folder.root, "--parallel", "1")
    assert r.exit_code == 0, r.output
    assert folder.is_done("half0A") and parse_files(folder.net("half0A").logs()).iterations == 60


def test_training_refuses_to_start_without_room(tmp_path, fake_caffe, tmpfs, monkeypatch):
    monkeypatch.setenv("TF_CAFFE", str(fake_caffe))
    study = Study.load(tiny_study_file(tmp_path))
    disk = tmpfs("1m")
    Renderer(study).render_all(study.select(["half0A"]), disk / "results", tmp_path / "data")
    r = tf("train", "half0A", "--root", disk / "results")
    assert r.exit_code == 1 and "not started" in r.output and "room for two snapshot pairs" in r.output
    assert "Traceback" not in r.output


# ------------------------------------------------------------------ fake caffe: scheduling, reports, signals

@pytest.fixture
def results(tmp_path, fake_caffe, monkeypatch):
    monkeypatch.setenv("TF_CAFFE", str(fake_caffe))
    study = Study.load(tiny_study_file(tmp_path))
    Renderer(study).render_all(study.nets.values(), tmp_path / "results")
    return study, StudyFolder(tmp_path / "results", study)


def calls(folder, name):
    path = folder.net(name).path / "fake-caffe-calls.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def test_failure_report_shows_the_cause_not_the_stack(results, monkeypatch):
    study, folder = results
    monkeypatch.setenv("FAKE_CAFFE_CRASH_AT", "15")
    r = tf("run", "half0A", "--root", folder.root, "--parallel", "1", "--retries", "0")
    assert r.exit_code == 1
    assert "Check failed: error == cudaSuccess (2 vs. 0)  out of memory" in r.output
    assert "@ " not in r.output and "stack trace" not in r.output
    r = CliRunner().invoke(main, ["train", "half0A", "--root", str(folder.root)])
    assert "Check failed" in r.output and "google::LogMessage" not in r.output


def test_a_retry_that_crashes_from_a_snapshot_falls_back_to_the_one_before(results, monkeypatch, tmp_path):
    study, folder = results
    monkeypatch.setenv("FAKE_CAFFE_CRASH_AT", "25")
    monkeypatch.setenv("FAKE_CAFFE_CRASH_ONCE", str(tmp_path / "crashed"))
    monkeypatch.setenv("FAKE_CAFFE_BAD_SNAPSHOT", "20")
    r = tf("run", "half1A", "--root", folder.root, "--parallel", "1", "--retries", "1")
    assert r.exit_code == 1                                  # crash at 25, then the retry from 20 crashes
    assert folder.net("half1A").read_state()["bad_snapshots"] == [20]
    row = json.loads(tf("status", "half1A", "--root", folder.root, "--format", "json").output)[0]
    assert row["status"] == "failed"
    assert folder.resume_point("half1A") == 10
    r = tf("run", "half1A", "--root", folder.root, "--parallel", "1")
    assert r.exit_code == 0, r.output
    assert "passing over the snapshot at iteration 20: a retry from it crashed" in r.output
    argv = calls(folder, "half1A")[-1]["argv"]
    assert argv[argv.index("-snapshot") + 1] == "caffe_imagenet_train_iter_10.solverstate"
    assert folder.is_done("half1A")


def test_a_net_running_elsewhere_is_waited_for_not_failed(results, fake_caffe):
    study, folder = results
    (folder.net("half0A").path / "fake-caffe-delay").write_text("0.05")
    env = dict(os.environ, TF_STUDY=str(folder.study_copy))
    other = subprocess.Popen([sys.executable, "-m", "transferfeat.cli", "train", "half0A", "--root",
                              str(folder.root)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not calls(folder, "half0A") and not list(folder.net("half0A").path.glob("tf-train-*.log")) \
            and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    r = tf("run", "half0A", "transfer0A0B_1_1", "--root", folder.root, "--parallel", "2", "--interval", "0.2")
    other.wait(60)
    assert r.exit_code == 0, r.output
    assert "wait   half0A: running elsewhere" in r.output and "done   half0A (elsewhere)" in r.output
    assert "0 failed" in r.output and folder.is_done("transfer0A0B_1_1")
    assert calls(folder, "transfer0A0B_1_1")[0]["start"] >= calls(folder, "half0A")[0]["end"]


def test_two_db_builds_on_one_output(tmp_path, synth_dir):
    from transferfeat.datasets import _build_lock
    out = tmp_path / "db"
    with _build_lock(out):
        r = CliRunner().invoke(main, ["db", "--list", str(synth_dir / "whole_train" / "files.txt"), "--images",
                                      str(synth_dir / "train"), "--out", str(out)])
    assert r.exit_code == 1 and "another tf db is building" in r.output and str(out) in r.output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("command", ["run", "train"])
def test_signals_stop_cleanly_even_when_the_parent_ignored_sigint(results, fake_caffe, command, sig):
    """Started as a background job of a script (SIGINT ignored), or under nohup: still a clean stop."""
    study, folder = results
    name = "half2B"
    env = dict(os.environ, TF_STUDY=str(folder.study_copy), FAKE_CAFFE_DELAY="0.05")
    cmd = [sys.executable, "-m", "transferfeat.cli", command, name, "--root", str(folder.root)]
    cmd += ["--parallel", "1", "--interval", "0.2"] if command == "run" else []

    def ignore():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=ignore)
    deadline = time.time() + 30
    while not folder.net(name).solverstates() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    call = calls(folder, name)[0]
    assert call["exit"] == 0 and call["last_iter"] < 30 and call["last_iter"] in folder.net(name).solverstates()


def test_status_and_results_need_a_results_folder(tmp_path):
    for cmd in ("status", "results"):
        r = CliRunner().invoke(main, [cmd, "--root", str(tmp_path / "nowhere")])
        assert r.exit_code == 1 and "does not exist" in r.output
        (tmp_path / "empty").mkdir(exist_ok=True)
        r = CliRunner().invoke(main, [cmd, "--root", str(tmp_path / "empty")])
        assert r.exit_code == 1 and "no rendered net" in r.output


# ------------------------------------------------------------------ databases: disk, retries

def test_db_refuses_without_room_and_fails_cleanly_when_the_disk_fills(tmp_path, synth_dir, tmpfs):
    lst = synth_dir / "whole_train" / "files.txt"                  # 240 images
    disk = tmpfs("400k")
    args = ["db", "--list", str(lst), "--images", str(synth_dir / "train"), "--resize", "64x64"]
    r = CliRunner().invoke(main, args + ["--out", str(disk / "db")])
    assert r.exit_code == 1 and "MiB more are needed" in r.output and "--no-space-check" in r.output
    r = CliRunner().invoke(main, args + ["--out", str(disk / "db"), "--no-space-check"])
    assert r.exit_code == 1, r.output
    assert "the disk is full" in r.output and "run again to resume" in r.output and "Traceback" not in r.output
    assert not (disk / "db").exists() and (disk / "db.partial").exists()
    resize_tmpfs(disk, "8m")
    r = CliRunner().invoke(main, args + ["--out", str(disk / "db")])
    assert r.exit_code == 0, r.output
    assert "240 records, 0 skipped" in r.output


def test_resumed_build_retries_what_it_skipped(tmp_path, synth_dir):
    imgs = tmp_path / "imgs"
    shutil.copytree(synth_dir / "train", imgs)
    lines = (synth_dir / "whole_train" / "files.txt").read_text().splitlines()[:40]
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(lines) + "\n")
    broken = [imgs / lines[i].split()[0] for i in (3, 17)]
    good = [p.read_bytes() for p in broken]
    for p in broken:
        p.write_bytes(b"not a jpeg")
    with pytest.raises(Error, match="2 of 40 images could not be read"):
        build_db(lst, imgs, tmp_path / "db", classes=20, progress=False, max_skip=0.01)
    broken[0].write_bytes(good[0])                                  # one is fixed
    r = build_db(lst, imgs, tmp_path / "db", classes=20, progress=False, max_skip=0.05)
    assert r.written == 39 and [s[1] for s in r.skipped] == [lines[17].split()[0]]
    report = json.loads((tmp_path / "db" / "tf-report.json").read_text())
    assert [s["file"] for s in report["skipped"]] == [lines[17].split()[0]]
    broken[1].write_bytes(good[1])
    build_db(lst, imgs, tmp_path / "whole", classes=20, progress=False)
    from transferfeat.datasets import iter_db
    fixed = dict(iter_db(tmp_path / "db"))
    assert all(fixed[k] == v for k, v in iter_db(tmp_path / "whole") if k in fixed)   # same keys, same records
    assert len(fixed) == 39


@pytest.mark.parametrize("old,new,expect", [
    ("    max_iter: 1500", "    max_iter: 0", "solvers.default.max_iter: 0 must be positive"),
    ("num_output: 16,", "num_output: -3,", "architecture.layers[0].num_output: -3 is not a positive integer"),
    ("    base_lr: 0.01", "    base_lr: -0.01", "solvers.default.base_lr: -0.01 must be a positive number"),
    ("  crop: 28", "  crop: 0", "input.crop: 0 must be positive"),
    ("half: {seeds: [0, 1, 2, 3]}", "half: {seeds: [0, -1]}", "families.half.seeds[1]: -1 is not a seed"),
])
def test_study_numbers_in_range(tmp_path, old, new, expect):
    text = Study.load("mini").path.read_text()
    assert old in text
    path = tmp_path / "s.yaml"
    path.write_text(text.replace(old, new, 1))
    r = CliRunner().invoke(main, ["--study", str(path), "list"])
    assert r.exit_code == 1 and expect in r.output and "s.yaml" in r.output
