"""The faults a long study meets, each ending in a clear line or a documented state: a net that
diverges (never "done"), kills at any moment (no progress lost), hostile study files (no injection,
no explosion), and the small ones: a full disk between snapshots, an early signal, a crafted log
cache, bad option values. A fake caffe stands at the subprocess boundary; the torch engine runs."""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from conftest import (fake_calls, net_state, rendered, run_trainer, set_fields, tf, tiny_study_file, wait_for,
                      write_study)
from transferfeat.cli import main
from transferfeat.folder import StudyFolder
from transferfeat.render import Renderer
from transferfeat.snapshots import SnapshotError, check_pair
from transferfeat.state import read_attempt
from transferfeat.study import Study, StudyError


@pytest.fixture
def setup(tmp_path, fake_caffe, monkeypatch):
    monkeypatch.setenv("TF_CAFFE", str(fake_caffe))
    study = Study.load(tiny_study_file(tmp_path))
    Renderer(study).render_all(study.select(["half0*", "transfer0A0B_1_*"]), tmp_path / "results")
    return study, StudyFolder(tmp_path / "results", study)


# ------------------------------------------------------------------ 1. divergence is a state

def test_a_diverged_net_is_never_done_and_blocks_its_dependants(setup, monkeypatch, tmp_path):
    """Loss nan from iteration 12 on (Caffe then scores every test 1.0): not done, its trainer stopped,
    dependants blocked with the reason, every report says so, JSON stays JSON."""
    study, folder = setup
    monkeypatch.setenv("FAKE_CAFFE_NAN_AT", "12")
    monkeypatch.setenv("FAKE_CAFFE_DELAY", "0.05")
    r = tf("run", "half0A", "transfer0A0B_1_1", "--root", folder.root, "--parallel", "2", "--interval", "0.2")
    assert r.exit_code == 1, r.output
    assert "half0A: diverged at iteration 15: the training loss is nan" in r.output.replace("FAIL   ", "")
    assert "block  transfer0A0B_1_1: its base net half0A diverged" in r.output
    s = net_state(folder, "half0A")
    assert s.kind == "diverged" and not folder.net("half0A").done_record.exists()
    assert fake_calls(folder.root, "half0A")[0]["last_iter"] < 30          # stopped, not run to the end
    rows = {x["name"]: x for x in json.loads(tf("status", "--root", folder.root, "--format", "json").output)}
    assert rows["half0A"]["status"] == "diverged at 15" and rows["transfer0A0B_1_1"]["status"] == "blocked on half0A"
    text = tf("results", "--root", folder.root, "--format", "json").output
    assert "NaN" not in text and "Infinity" not in text
    net = json.loads(text)["nets"]["half0A"]
    assert net["health"] == "diverged" and net["diverged_at"] == 15 and net["top1_best"] < 1.0   # tests before it
    assert "baseB" not in json.loads(text)["series"]                       # left out of every series
    out = tmp_path / "figures"
    assert tf("plot", "--root", folder.root, "--out", out).exit_code == 0
    drawn = [l for l in (out / "fig2_top.csv").read_text().splitlines() if not l.startswith("#")][1:]
    assert "half0A" not in ";".join(drawn)                                 # not drawn (a note on the figure says so)
    assert not [l for l in drawn if l.split(",")[3] == "0" and "half0A" in l]
    assert tf("report", "--root", folder.root, "--out", tmp_path / "r.html").exit_code == 0
    page = (tmp_path / "r.html").read_text()
    attention = page[page.index('id="attention"'):page.index("Nets without logs")]
    assert "half0A</b>: diverged at 15" in attention and "transfer0A0B_1_1</b>: blocked on half0A" in attention
    # the snapshots written after the divergence are not resumed from
    monkeypatch.delenv("FAKE_CAFFE_NAN_AT")
    r = tf("train", "half0A", "--root", folder.root)
    assert r.exit_code == 0 and "resuming from iteration 10" in r.output, r.output
    assert "written after the net diverged at 15" in r.output and net_state(folder, "half0A").done


def test_the_torch_trainer_stops_itself_when_its_loss_is_not_finite(tiny_data, tmp_path, torch_engine):
    study, data = tiny_data
    folder = rendered(study, data, tmp_path / "results")
    set_fields(folder.net("half0A").solver, base_lr=1e9, display=1)
    t = time.time()
    r = tf("train", "half0A", "--root", folder.root, "--engine", "torch")
    assert r.exit_code == 1 and time.time() - t < 120
    assert "half0A diverged at iteration" in r.output and "Lower the learning rate" in r.output
    log = folder.net("half0A").logs()[-1].read_text()
    assert "Traceback" not in log and "the net diverged" in log.splitlines()[-1]
    assert net_state(folder, "half0A").kind == "diverged"


def test_nets_at_chance_are_flagged_and_the_authors_never_diverged(shared):
    """The authors' logs: the six nets that ended at chance (at most twice 1/classes) are flagged; none diverged."""
    out = json.loads(CliRunner().invoke(main, ["results", "--root", str(shared / "results"), "--format", "json"]).output)
    health = {n: m["health"] for n, m in out["nets"].items()}
    assert sorted(n for n, h in health.items() if h == "at chance") == [
        "nolearn_1_3", "reduced-0005", "reduced-0010", "reduced-0025", "reduced-0050", "reduced-0100"]
    assert "diverged" not in health.values()


# ------------------------------------------------------------------ 2. a trainer that cannot hang

@pytest.mark.parametrize("fault,expect", [
    ("crop", "crop_size 40 is larger than the 32x32 images"),
    ("mean", "the mean image is 3x40x40, the images 3x32x32"),
])
def test_bad_data_ends_the_torch_trainer_with_one_line(tiny_data, tmp_path, torch_engine, fault, expect):
    from conftest import edit_prototxt
    from transferfeat.caffeproto import mean_blob
    import numpy as np
    study, data = tiny_data
    d = rendered(study, data, tmp_path / "results").net("half0A").path
    if fault == "crop":
        edit_prototxt(d / "imagenet_train.prototxt",
                      lambda m: m["layer"][0].one("transform_param").update(crop_size=[40]))
        set_fields(d / "imagenet_solver.prototxt", max_iter=3)
    else:
        (d / "imagenet_mean.binaryproto").unlink()
        (d / "imagenet_mean.binaryproto").write_bytes(mean_blob(np.zeros((3, 40, 40), np.float32)).to_bytes())
    t = time.time()
    r = run_trainer(d, "train", "-solver", "imagenet_solver.prototxt", check=False, timeout=120)
    assert r.returncode == 1 and time.time() - t < 60
    assert "Traceback" not in r.stderr and expect in r.stderr.strip().splitlines()[-1], r.stderr[-2000:]


def test_shapes_the_val_net_shares_must_be_the_train_nets(tiny_data, tmp_path, torch_engine):
    """The val net's fc7 another width than the train net's (weights are shared by name): refused at
    start, naming the file, line and layer (the engine used to share the train net's silently)."""
    from conftest import edit_prototxt
    study, data = tiny_data
    folder = rendered(study, data, tmp_path / "results")
    d = folder.net("half0A").path
    edit_prototxt(d / "imagenet_val.prototxt", lambda m: next(
        l for l in m["layer"] if l.one("name") == "fc7").one("inner_product_param").update(num_output=[64]))
    r = tf("train", "half0A", "--root", folder.root, "--engine", "torch")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "imagenet_val.prototxt: line" in r.output and "layer 'fc7' has parameters of shape" in r.output


def test_a_runtime_error_at_the_first_test_is_one_line(tiny_data, tmp_path, torch_engine):
    """torch's own error (here one put into the first test) ends the trainer with one F line, exit 1."""
    from transferfeat.engines.pytorch import TorchEngine
    study, data = tiny_data
    d = rendered(study, data, tmp_path / "results").net("half0A").path
    code = ("import sys; import transferfeat.engines.torchnet.__main__ as m\n"
            "def boom(self): raise RuntimeError('mat1 and mat2 shapes cannot be multiplied (50x1 and 2x3)')\n"
            "m.Solver.test_all = boom\nsys.exit(m.main(['train', '-solver', 'imagenet_solver.prototxt']))")
    set_fields(d / "imagenet_solver.prototxt", test_initialization=True)
    r = subprocess.run([sys.executable, "-c", code], cwd=d, capture_output=True, text=True, timeout=300,
                       env={**os.environ, **TorchEngine().environment()})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "Check failed: RuntimeError: mat1 and mat2 shapes cannot be multiplied" in last
    from transferfeat.training import failure_lines
    (d / "t.log").write_text(r.stderr)
    assert any("RuntimeError" in line for line in failure_lines(d / "t.log"))


# ------------------------------------------------------------------ 3. kills lose no progress

def newest_whole(netdir) -> int:
    for it in sorted(netdir.solverstates(), reverse=True):
        try:
            check_pair(netdir, it)
            return it
        except SnapshotError:
            continue
    return None


def test_kills_at_random_moments_lose_nothing(tmp_path, fake_caffe, monkeypatch):
    """The trainer killed by SIGKILL at random moments (mid-snapshot too: the fake caffe writes them in
    place, as Caffe does), ten times: no pair is ever marked bad, and each rerun resumes from the newest
    whole pair. The moments are drawn in iterations past the attempt's start (2–8, snapshots every 4),
    plus up to one iteration's time, so the test is the same on a fast or a loaded machine."""
    monkeypatch.setenv("TF_CAFFE", str(fake_caffe))
    study = Study.load(tiny_study_file(tmp_path, max_iter=60, snapshot=4))
    Renderer(study).render_all(study.select(["half0B"]), tmp_path / "results")
    folder = StudyFolder(tmp_path / "results", study)
    d = folder.net("half0B")
    set_fields(d.solver, display=1)
    (d.path / "fake-caffe-delay").write_text("0.05")
    rng = random.Random(4)
    env = dict(os.environ, TF_STUDY=str(folder.study_copy))
    resumed = []
    for round_ in range(10):
        want = newest_whole(d)
        proc = subprocess.Popen([sys.executable, "-m", "transferfeat.cli", "train", "half0B", "--root", str(folder.root)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        trainers = lambda: subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        wait_for(lambda: read_attempt(d).get("status") == "running" and read_attempt(d).get("pid") == proc.pid, 30,
                 "the attempt to start")
        state = read_attempt(d)
        log = d.path / state["log"]
        target = (state.get("resumed_from") or 0) + rng.randint(2, 8)
        shown = lambda: [int(i) for i in re.findall(r"\] Iteration (\d+) \(", log.read_text() if log.exists() else "")]
        wait_for(lambda: max(shown(), default=-1) >= target or proc.poll() is not None, 60, f"iteration {target}")
        time.sleep(rng.uniform(0, 0.05))
        for pid in trainers():                                   # the trainer, killed from outside
            os.kill(int(pid), signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
        if proc.returncode == 0:                                 # it finished first: start again
            break
        assert "killed by SIGKILL" in out and "no snapshot is lost" in out, out
        assert not read_attempt(d).get("bad_snapshots")
        assert net_state(folder, "half0B").resumes_at == newest_whole(d)
        if state.get("resumed_from") is not None:
            resumed.append((state["resumed_from"], want))
    for got, want in resumed:
        assert got == want
    assert len(resumed) >= 3, resumed
    r = tf("train", "half0B", "--root", folder.root)
    assert r.exit_code == 0 and net_state(folder, "half0B").done


def test_a_pair_marked_bad_is_known_by_its_content_not_its_iteration(setup, monkeypatch, tmp_path):
    """The retry from 20 crashes by its own error: that pair is bad. Written again at iteration 20 with
    other content, the new pair is resumed from."""
    study, folder = setup
    d = folder.net("half0A")
    monkeypatch.setenv("FAKE_CAFFE_CRASH_AT", "25")
    monkeypatch.setenv("FAKE_CAFFE_CRASH_ONCE", str(tmp_path / "crashed"))
    monkeypatch.setenv("FAKE_CAFFE_BAD_SNAPSHOT", "20")
    assert tf("run", "half0A", "--root", folder.root, "--parallel", "1", "--retries", "1").exit_code == 1
    bad = read_attempt(d)["bad_snapshots"]
    assert [b["iteration"] for b in bad] == [20] and len(bad[0]["sha256"]) == 64
    assert net_state(folder, "half0A").resumes_at == 10
    state = d.solverstates()[20]
    state.write_bytes(state.read_bytes().replace(b"caffe_imagenet_train_iter_20.caffemodel",
                                                 b"caffe_imagenet_train_iter_20.caffemodeL"))
    assert net_state(folder, "half0A").resumes_at == 20


# ------------------------------------------------------------------ 5, 6. study files: names, aliases

@pytest.mark.parametrize("key,value", [
    ("architecture.layers.0.name", 'conv1"\n  type: "Python'),
    ("architecture.layers.0.name", "../../etc"),
    ("architecture.name", 'Net" }\nlayer { name: "x'),
    ("name", "a" * 101),
    ("architecture.layers.2.pool", "MAX\n  pad: 1"),
    ("solvers.default.lr_policy", 'step"\nbase_lr: 100'),
])
def test_names_and_values_cannot_reach_a_prototxt_unchecked(tmp_path, key, value):
    from conftest import set_key
    path = write_study(tmp_path, lambda s: set_key(s, key, value))
    with pytest.raises(StudyError) as e:
        Study.load(path)
    msg = str(e.value)
    assert "study.yaml" in msg and len(msg) < 400 and "\n" not in msg
    assert key.replace(".0.", "[0].").replace(".2.", "[2].").split(".")[-1].split("[")[0] in msg


def test_every_string_in_a_prototxt_is_quoted():
    from transferfeat.prototxt import parse, quote
    for text in ['a"b', "line\nbreak", "back\\slash", "tab\there", "é"]:
        assert parse(f"name: {quote(text)}").one("name") == text.encode("utf-8").decode("latin-1") or text == "é"


def test_nested_yaml_aliases_are_refused_quickly_with_a_short_line(tmp_path):
    """A value of ten lists of ten lists … seven deep (10^7 values) is a few hundred bytes of YAML with
    aliases; shown in an error it was tens of megabytes."""
    def bomb(s):
        value = list(range(10))
        for _ in range(6):
            value = [value] * 10                       # one object, ten times: YAML writes an alias
        s["input"]["crop"] = value
    path = write_study(tmp_path, bomb)
    assert path.stat().st_size < 8000 and "*id" in path.read_text()
    t = time.time()
    r = CliRunner().invoke(main, ["--study", str(path), "list"])
    assert r.exit_code == 1 and time.time() - t < 5
    assert "expands to more than 20000 values" in r.output and len(r.output) < 400
    ok = tmp_path / "anchors.yaml"                                   # ordinary anchors still work
    text = Study.load("mini").path.read_text().replace("  default:\n", "  default: &default\n")
    text = text.replace("  reduced:\n    test_iter: 10", "  reduced:\n    <<: *default\n    test_iter: 10")
    ok.write_text(text)
    assert len(Study.load(ok).nets) == 170


def test_long_values_are_cut_in_error_messages(tmp_path):
    from conftest import set_key
    path = write_study(tmp_path, lambda s: set_key(s, "input.crop", ["x" * 5000] * 1000))
    r = CliRunner().invoke(main, ["--study", str(path), "list"])
    assert r.exit_code == 1 and "input.crop: expected int" in r.output and len(r.output) < 500 and "..." in r.output


# ------------------------------------------------------------------ 7. the smaller ones

def test_a_full_disk_between_polls_stops_the_torch_trainer_with_a_snapshot(tiny_data, tmp_path, tmpfs, torch_engine):
    """Snapshots every iteration on a small disk: the trainer checks before each one and stops with
    the last that fits, instead of crashing in the middle of a write."""
    study, data = tiny_data
    disk = tmpfs("2500k")
    folder = rendered(study, data, disk / "results")
    set_fields(folder.net("half0A").solver, snapshot=1)
    d = folder.net("half0A").path
    r = run_trainer(d, "train", "-solver", "imagenet_solver.prototxt", check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "room for fewer than two snapshot pairs" in r.stderr and "Optimization stopped early" in r.stderr
    last = max(folder.net("half0A").solverstates())
    check_pair(folder.net("half0A"), last)                               # whole


def test_a_signal_while_the_trainer_starts_leaves_no_traceback(tiny_data, tmp_path, torch_engine):
    """SIGTERM to `tf train --engine torch` as soon as its trainer exists (still importing torch, or
    still starting its interpreter): the trainer stops with its usual lines, no traceback."""
    study, data = tiny_data
    folder = rendered(study, data, tmp_path / "results")
    d = folder.net("half0A")
    set_fields(d.solver, max_iter=100000)                      # never done before the signal comes
    env = dict(os.environ, TF_STUDY=str(folder.study_copy))
    for delay in (0.0, 0.05, 0.3, 1.0):
        proc = subprocess.Popen([sys.executable, "-m", "transferfeat.cli", "train", "half0A", "--root", str(folder.root),
                                 "--engine", "torch"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lambda: read_attempt(d).get("status") == "running" and read_attempt(d).get("pid") == proc.pid, 60,
                     "the trainer to start")
            time.sleep(delay)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()                             # its trainer then stops too (tf's death signal)
                proc.wait()
        log = d.logs()[-1].read_text()
        assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-2000:]
        assert proc.returncode == 130 and "Optimization stopped early" in log, (out, log[-2000:])


def test_a_crafted_log_cache_runs_nothing(shared, tmp_path, monkeypatch):
    import pickle
    from transferfeat.logcache import _cache_path
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    path = _cache_path(shared / "results")
    path.parent.mkdir(parents=True)
    for p in (path, path.with_suffix(".pickle")):
        p.write_bytes(pickle.dumps({"version": 5, "segments": Payload()}))
    import numpy as np
    np.savez(path.with_suffix(".tmp.npz"), index=np.array([Payload()], dtype=object))
    path.with_suffix(".tmp.npz").rename(path)
    r = CliRunner().invoke(main, ["results", "--root", str(shared / "results"), "--format", "json"])
    assert r.exit_code == 0 and not marker.exists()
    assert len(json.loads(r.output)["nets"]) == 148


def test_bad_option_values_and_missing_folders(shared, tmp_path):
    r = CliRunner().invoke(main, ["plan", "--days-per-net", "-1"])
    assert r.exit_code == 2 and "-1.0 is not in the range x>0" in r.output
    r = CliRunner().invoke(main, ["report", "--root", str(shared / "results"), "--out", str(tmp_path / "no" / "r.html")])
    assert r.exit_code == 1 and "cannot write r.html: no such folder" in r.output and str(tmp_path / "no") in r.output
    assert ".tmp" not in r.output


def test_a_report_for_nets_that_all_failed_before_their_first_test(setup, monkeypatch, tmp_path):
    study, folder = setup
    monkeypatch.setenv("FAKE_CAFFE_CRASH_AT", "3")
    assert tf("run", "half0*", "--root", folder.root, "--parallel", "2", "--retries", "0").exit_code == 1
    r = tf("report", "--root", folder.root, "--out", tmp_path / "r.html")
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r.html").read_text()
    attention = page[page.index('id="attention"'):page.index("Nets without logs")]
    assert "half0A</b>: failed" in attention and "half0B</b>: failed" in attention


# ------------------------------------------------------------------ a user's own data: options, cut files, two runs

@pytest.mark.parametrize("args, msg", [
    (["plan", "--images-per-second", "nan"], "'nan' is not a finite number"),
    (["plan", "--images-per-second", "inf"], "'inf' is not a finite number"),
    (["plan", "--days-per-net", "nan"], "'nan' is not a finite number"),
    (["db", "--all", "--threads", "-2"], "-2 is not in the range x>=1"),
    (["db", "--all", "--threads", "0"], "0 is not in the range x>=1"),
    (["db", "--all", "--max-skip", "nan"], "'nan' is not a finite number"),
    (["split", "--folder", ".", "--valid-fraction", "nan"], "'nan' is not a finite number"),
    (["split", "--folder", ".", "--seed", "-1"], "-1 is not in the range 0<=x<=4294967295"),
    (["synth", "--classes", "-3", "--out", "x"], "-3 is not in the range x>=2"),
    (["run", "--retries", "-1"], "-1 is not in the range x>=0"),
    (["run", "--interval", "inf"], "'inf' is not a finite number"),
    (["train", "half0A", "--gpu", "-1"], "-1 is not in the range x>=0"),
])
def test_an_option_value_out_of_range_is_a_usage_error(args, msg, tmp_path, monkeypatch):
    """Counts below one, negative seeds and GPUs, nan and infinity: one usage line (exit 2), no traceback,
    no table of nan."""
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, r.output
    assert not r.exception or isinstance(r.exception, SystemExit)


def test_the_library_refuses_what_the_options_refuse(tmp_path, mini):
    """The same checks where the library is called without the CLI."""
    from transferfeat.databases import build_db
    from transferfeat.errors import Error
    from transferfeat.plan import durations
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(Error, match="is not a positive finite number"):
            durations(mini, mini.select(["half0A"]), images_per_second=bad)
    (tmp_path / "l.txt").write_text("a.jpg 0\n")
    with pytest.raises(Error, match="threads: -1 is not a positive number"):
        build_db(tmp_path / "l.txt", tmp_path, tmp_path / "db", classes=2, threads=-1)


def test_a_trainer_dead_of_sigbus_is_named_and_a_cut_database_refused(setup, tiny_data, tmp_path, monkeypatch):
    """Caffe dying of SIGBUS (a read past the end of a memory-mapped LMDB cut under it) is said as such,
    not "exit code -7"; a data link whose data.mdb is cut is refused before any trainer maps it, naming
    the database, and the net's status says failed, not pending."""
    study, data = tiny_data
    folder = rendered(study, data, tmp_path / "cut")
    d = folder.net("half0A")
    monkeypatch.setenv("FAKE_CAFFE_SIGBUS_AT", "3")
    r = tf("train", "half0A", "--root", folder.root)
    assert r.exit_code == 1 and "exit code -7" in r.output and "bus error (SIGBUS)" in r.output, r.output
    assert "its databases look whole now" in r.output
    monkeypatch.delenv("FAKE_CAFFE_SIGBUS_AT")
    db = tmp_path / "copy"
    shutil.copytree((d.path / "imagenet_train_lmdb").resolve(), db)
    with open(db / "data.mdb", "r+b") as f:
        f.truncate(os.path.getsize(db / "data.mdb") // 2)
    (d.path / "imagenet_train_lmdb").unlink()
    (d.path / "imagenet_train_lmdb").symlink_to(db)
    for args in (("train", "half0A"), ("test", "half0A", "--weights", str(d.path / "x.caffemodel"))):
        r = tf(*args, "--root", folder.root)
        assert r.exit_code == 1 and f"data imagenet_train_lmdb: {d.path / 'imagenet_train_lmdb' / 'data.mdb'} is cut" in r.output, r.output
        assert r.output.count("\n") == 1 and "Traceback" not in r.output
    assert net_state(folder, "half0A").kind == "failed"
    assert "failed" in tf("status", "--root", folder.root).output


def test_two_runs_on_one_results_folder_train_each_net_once(setup):
    """Two `tf run` at once on one results folder: each net trained by one of them, once (no second
    attempt, no second log), every completion record whole, and both runs end well."""
    study, folder = setup
    for net in folder.rendered():
        (folder.net(net.name).path / "fake-caffe-delay").write_text("0.02")
    env = dict(os.environ, TF_STUDY=str(folder.study_copy))
    runs = [subprocess.Popen([sys.executable, "-m", "transferfeat.cli", "run", "--root", str(folder.root),
                              "--parallel", "2", "--interval", "1"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], "\n=====\n".join(outs)
    names = [n.name for n in folder.rendered()]
    assert len(names) == 9
    for name in names:
        calls = fake_calls(folder.root, name)
        assert len(calls) == 1 and calls[0]["exit"] == 0, (name, calls)
        assert len(folder.net(name).logs()) == 1, name
        assert net_state(folder, name).done, name
    started = [line.split()[1] for out in outs for line in out.splitlines() if line.startswith("start ")]
    assert sorted(started) == sorted(names)                                # each started by one run only
