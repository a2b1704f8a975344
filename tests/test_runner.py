"""tf train / run / status against a fake caffe at the subprocess boundary (real Caffe: test_caffe.py)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from conftest import fake_calls as calls, net_state, tiny_study_file, tf, wait_for
from transferfeat.cli import main
from transferfeat.folder import NetFolder as NetDir
from transferfeat.render import Renderer
from transferfeat.engines.caffe import CaffeEngine
from transferfeat.folder import StudyFolder
from transferfeat.schedulers.local import Pool
from transferfeat.state import Lock, read_attempt, status_rows
from transferfeat.study import Study


@pytest.fixture
def setup(tmp_path, fake_caffe, monkeypatch):
    monkeypatch.setenv("TF_CAFFE", str(fake_caffe))
    study = Study.load(tiny_study_file(tmp_path))
    Renderer(study).render_all(study.nets.values(), tmp_path / "results")
    return study, tmp_path / "results"



def test_train_base_then_transfer_with_weights(setup):
    study, root = setup
    r = tf("train", "transfer0A0B_1_3", "--root", root)
    assert r.exit_code == 1 and "needs its base net half0A to finish first" in r.output
    r = tf("train", "half0A", "--root", root)
    assert r.exit_code == 0, r.output
    assert "done (caffe_imagenet_train_iter_30.caffemodel)" in r.output
    assert NetDir(root, "half0A").snapshots().get(30)
    assert json.loads((root / "half0A" / "tf-state.json").read_text())["status"] == "done"
    r = tf("train", "transfer0A0B_1_3", "--root", root)
    assert r.exit_code == 0, r.output
    argv = calls(root, "transfer0A0B_1_3")[0]["argv"]
    assert argv[argv.index("-weights") + 1] == "basenet/caffe_imagenet_train_iter_30.caffemodel"
    assert "-gpu" not in argv and argv[argv.index("-sigint_effect") + 1] == "stop"
    assert "already done" in tf("train", "half0A", "--root", root).output


def v1_caffemodel(train_prototxt, cut: int = 0) -> bytes:
    """2014 Caffe's format: V1 ``layers`` (field 2) with 4-D num/channels/height/width blobs."""
    import numpy as np
    from transferfeat.caffeproto import BlobProto, int_field, len_field
    from transferfeat.netspec import read
    out = b""
    for layer in read(train_prototxt).layers:
        if layer.params:
            body = len_field(4, layer.name.encode()) + int_field(5, 4 if layer.type == "Convolution" else 14)
            for shape in layer.params:
                dims = (1,) * (4 - len(shape)) + tuple(shape)
                body += len_field(6, BlobProto(np.zeros(int(np.prod(shape)), np.float32), *dims).to_bytes())
            out += len_field(2, body)
    return out[: len(out) - cut]


def test_2014_snapshot_names_are_base_weights(setup):
    study, root = setup
    final = root / "half1B" / "caffe_imagenet_train_iter_30"
    final.write_bytes(v1_caffemodel(root / "half1B" / "imagenet_train.prototxt", cut=100))
    r = tf("train", "transfer1B1A_1_5", "--root", root, "--gpu", "2")
    assert r.exit_code == 1 and "final snapshot is not whole" in r.output and "cannot be read whole" in r.output
    final.write_bytes(v1_caffemodel(root / "half1B" / "imagenet_train.prototxt"))
    r = tf("train", "transfer1B1A_1_5", "--root", root, "--gpu", "2")
    assert r.exit_code == 0, r.output
    assert "half1B: its final snapshot was verified whole and recorded" in r.output
    argv = calls(root, "transfer1B1A_1_5")[0]["argv"]
    assert argv[argv.index("-weights") + 1] == "basenet/caffe_imagenet_train_iter_30"
    assert argv[argv.index("-gpu") + 1] == "2"


def test_crash_then_resume_from_latest_solverstate(setup, monkeypatch):
    study, root = setup
    monkeypatch.setenv("FAKE_CAFFE_CRASH_AT", "25")
    r = CliRunner().invoke(main, ["train", "half0B", "--root", str(root)])
    assert r.exit_code == 1
    assert "caffe failed with exit code 134" in r.output and "Check failed" in r.output
    state = json.loads((root / "half0B" / "tf-state.json").read_text())
    assert state["status"] == "failed" and state["exit_code"] == 134
    assert sorted(NetDir(root, "half0B").solverstates()) == [10, 20]
    monkeypatch.delenv("FAKE_CAFFE_CRASH_AT")
    r = tf("train", "half0B", "--root", root)
    assert r.exit_code == 0 and "resuming from iteration 20" in r.output
    argv = calls(root, "half0B")[-1]["argv"]
    assert argv[argv.index("-snapshot") + 1] == "caffe_imagenet_train_iter_20.solverstate"
    logs = NetDir(root, "half0B").logs()
    assert len(logs) == 2 and all(p.name.startswith("tf-train-") for p in logs)
    from transferfeat.logs import parse_files
    log = parse_files(logs)
    assert log.iterations == 30 and sorted(log.accuracy) == [10, 20, 30]


def test_caffe_not_found_and_unknown_net(setup, tmp_path):
    study, root = setup
    r = CliRunner().invoke(main, ["train", "half0A", "--root", str(root), "--caffe", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "caffe not found at" in r.output and "--caffe" in r.output
    r = CliRunner().invoke(main, ["train", "hlaf0A", "--root", str(root)])
    assert r.exit_code == 1 and "did you mean half0A" in r.output
    r = CliRunner().invoke(main, ["train", "half0A", "--root", str(tmp_path / "unrendered")])
    assert r.exit_code == 1 and "not rendered" in r.output and "tf render half0A" in r.output


def test_pool_follows_per_net_dependencies(setup, monkeypatch):
    study, root = setup
    monkeypatch.setenv("FAKE_CAFFE_DELAY", "0.01")
    nets = study.select(["half0A", "half0B", "transfer0A0B_1_1", "transfer0B0A_1_1", "transfer0A0A_1_1"])
    s = Pool(StudyFolder(root, study), nets, [None, None], CaffeEngine(), echo=lambda *_: None, interval=0.5).run()
    assert sorted(s.done) == sorted(n.name for n in nets) and not s.failed
    end = {n: calls(root, n)[0]["end"] for n in ("half0A", "half0B")}
    for t in ("transfer0A0B_1_1", "transfer0A0A_1_1"):
        assert calls(root, t)[0]["start"] >= end["half0A"]
    assert calls(root, "transfer0B0A_1_1")[0]["start"] >= end["half0B"]
    run_state = json.loads((root / "tf-run.json").read_text())
    assert sorted(run_state["done"]) == sorted(s.done) and run_state["running"] == {}
    again = Pool(StudyFolder(root, study), nets, [None], CaffeEngine(), echo=lambda *_: None).run()
    assert sorted(again.skipped) == sorted(s.done) and again.done == []


def test_pool_starts_a_dependant_before_other_bases_finish(setup, monkeypatch):
    """Per-net dependencies, not block barriers: half0A's transfer net runs while half0B still trains."""
    study, root = setup
    monkeypatch.setenv("FAKE_CAFFE_DELAY", "0.002")
    (root / "half0B" / "fake-caffe-delay").write_text("0.1")
    nets = study.select(["half0A", "half0B", "transfer0A0B_1_2"])
    result = Pool(StudyFolder(root, study), nets, [None, None], CaffeEngine(), echo=lambda *_: None, interval=0.5).run()
    assert sorted(result.done) == ["half0A", "half0B", "transfer0A0B_1_2"]
    a, b, t = (calls(root, n)[0] for n in ("half0A", "half0B", "transfer0A0B_1_2"))
    assert a["end"] <= t["start"] < b["end"]


def test_retry_then_fail_and_block_dependants(setup, monkeypatch, tmp_path):
    study, root = setup
    monkeypatch.setenv("FAKE_CAFFE_CRASH_AT", "15")
    monkeypatch.setenv("FAKE_CAFFE_CRASH_ONCE", str(tmp_path / "crashed-once"))
    nets = study.select(["half1A"])
    s = Pool(StudyFolder(root, study), nets, [None], CaffeEngine(), retries=1, echo=lambda *_: None, interval=0.5).run()
    assert s.done == ["half1A"] and s.attempts["half1A"] == 2
    argv = calls(root, "half1A")[1]["argv"]
    assert argv[argv.index("-snapshot") + 1] == "caffe_imagenet_train_iter_10.solverstate"
    monkeypatch.delenv("FAKE_CAFFE_CRASH_ONCE")
    monkeypatch.delenv("FAKE_CAFFE_CRASH_AT")
    (root / "half2A" / "fake-caffe-crash-at").write_text("15")   # half2A crashes every time
    nets = study.select(["half2A", "transfer2A2B_1_*", "half2B"])
    lines = []
    s = Pool(StudyFolder(root, study), nets, [None, None], CaffeEngine(), retries=2, echo=lines.append, interval=0.5).run()
    assert s.failed["half2A"]["exit_code"] == 134 and "Check failed" in "\n".join(s.failed["half2A"]["last_lines"])
    assert s.attempts["half2A"] == 3
    assert sorted(s.blocked) == [f"transfer2A2B_1_{n}" for n in range(1, 8)]
    assert "half2B" in s.done                                   # the rest go on
    assert any("block  transfer2A2B_1_1: its base net half2A failed" in l for l in lines)
    rows = {r["name"]: r["status"] for r in status_rows(StudyFolder(root, study), study.select(["half2*", "transfer2A2B_1_1"]), {})}
    assert rows["half2A"] == "failed" and rows["half2B"] == "done"
    assert rows["transfer2A2B_1_1"] == "blocked on half2A"


def test_run_cli_and_status(setup, monkeypatch):
    study, root = setup
    r = tf("run", "half3A", "transfer3A3B_1_7", "--root", root, "--parallel", "2", "--interval", "0.2")
    assert r.exit_code == 0, r.output
    assert "2 done, 0 already done, 0 failed" in r.output
    r = tf("run", "transfer3B3A_1_1", "--root", root, "--parallel", "1")
    assert r.exit_code == 0 and "blocked transfer3B3A_1_1: waits for half3B" in r.output
    r = tf("status", "half3*", "transfer3A3B_1_7", "transfer3B3A_1_1", "--root", root, "--format", "json")
    rows = {x["name"]: x for x in json.loads(r.output)}
    assert rows["half3A"]["status"] == "done" and rows["half3A"]["iteration"] == 30
    assert rows["half3A"]["top1_latest"] == pytest.approx(30 / 31, abs=1e-4)
    assert rows["half3B"]["status"] == "pending" and rows["transfer3B3A_1_1"]["status"] == "blocked on half3B"
    text = tf("status", "half3*", "--root", root).output
    assert "1 done, 1 pending" in text
    assert tf("run", "--root", root).exit_code == 2


def test_ctrl_c_snapshots_and_restart_resumes(setup, fake_caffe):
    study, root = setup
    env = dict(os.environ, TF_CAFFE=str(fake_caffe), FAKE_CAFFE_DELAY="0.1")
    cmd = [sys.executable, "-m", "transferfeat.cli", "run", "half1B", "--root", str(root), "--parallel", "1",
           "--interval", "0.2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    while not NetDir(root, "half1B").solverstates() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    assert "1 interrupted" in out
    states = NetDir(root, "half1B").solverstates()
    stopped_at = max(states)
    assert 10 <= stopped_at < 30
    assert json.loads((root / "half1B" / "tf-state.json").read_text())["status"] == "interrupted"
    env["FAKE_CAFFE_DELAY"] = "0"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    last = calls(root, "half1B")[-1]["argv"]
    assert last[last.index("-snapshot") + 1] == f"caffe_imagenet_train_iter_{stopped_at}.solverstate"
    from transferfeat.logs import parse_files
    assert parse_files(NetDir(root, "half1B").logs()).iterations == 30


def test_killed_tf_stops_its_caffe(setup, fake_caffe):
    """SIGKILL of tf itself: Caffe still snapshots and stops (parent-death signal), so nothing is lost."""
    study, root = setup
    env = dict(os.environ, TF_CAFFE=str(fake_caffe), FAKE_CAFFE_DELAY="0.1")
    cmd = [sys.executable, "-m", "transferfeat.cli", "train", "half2B", "--root", str(root)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not NetDir(root, "half2B").solverstates() and time.time() < deadline:
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    deadline = time.time() + 30
    while not calls(root, "half2B") and time.time() < deadline:
        time.sleep(0.1)
    call = calls(root, "half2B")[0]
    assert call["exit"] == 0 and call["last_iter"] < 30
    assert call["last_iter"] in NetDir(root, "half2B").solverstates()


def test_truncated_latest_snapshot_is_passed_over(setup, monkeypatch):
    """A job killed while Caffe wrote a snapshot leaves a truncated file: resume from the one before."""
    study, root = setup
    monkeypatch.setenv("FAKE_CAFFE_CRASH_AT", "25")
    assert CliRunner().invoke(main, ["train", "halfnatmanA", "--root", str(root)]).exit_code == 1
    d = NetDir(root, "halfnatmanA")
    (d.path / "caffe_imagenet_train_iter_24.caffemodel").write_bytes(b"\x08\x18")
    (d.path / "caffe_imagenet_train_iter_24.solverstate").write_bytes(b"\x0a\x40partial")   # cut mid-field
    assert net_state(StudyFolder(root, study), "halfnatmanA").resumes_at == 20
    monkeypatch.delenv("FAKE_CAFFE_CRASH_AT")
    r = tf("train", "halfnatmanA", "--root", root)
    assert r.exit_code == 0 and "resuming from iteration 20" in r.output


def test_sigterm_makes_tf_train_snapshot_and_stop(setup, fake_caffe):
    study, root = setup
    env = dict(os.environ, TF_CAFFE=str(fake_caffe), FAKE_CAFFE_DELAY="0.1")
    proc = subprocess.Popen([sys.executable, "-m", "transferfeat.cli", "train", "halfnatmanB", "--root", str(root)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    d = NetDir(root, "halfnatmanB")
    deadline = time.time() + 30
    while not d.solverstates() and time.time() < deadline:
        time.sleep(0.1)
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    assert "stopped; snapshot at iteration" in out and "resumes it" in out
    call = calls(root, "halfnatmanB")[0]
    assert call["exit"] == 0 and call["last_iter"] in d.solverstates()


def test_run_reports_progress_lines(setup, monkeypatch):
    study, root = setup
    (root / "netbase" / "fake-caffe-delay").write_text("0.05")
    r = tf("run", "netbase", "--root", root, "--parallel", "1", "--interval", "0.3")
    assert r.exit_code == 0, r.output
    lines = [l for l in r.output.splitlines() if l.strip().startswith("netbase") and " iter " in l]
    assert lines and "/30" in lines[-1] and "val acc" in lines[-1] and "ETA" in lines[-1]


def test_doctor(fake_caffe, tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CAFFE", str(fake_caffe))
    for tool in ("convert_imageset", "compute_image_mean"):
        (fake_caffe.parent / tool).write_text("#!/bin/sh\n")
        (fake_caffe.parent / tool).chmod(0o755)
    info = json.loads(tf("doctor", "--format", "json").output)
    assert info["tools"] == {"caffe": str(fake_caffe), "convert_imageset": str(fake_caffe.parent / "convert_imageset"),
                             "compute_image_mean": str(fake_caffe.parent / "compute_image_mean")}
    assert set(info) >= {"caffe_version", "gpus", "slurm", "missing"}
    monkeypatch.setenv("TF_CAFFE", str(tmp_path / "missing" / "caffe"))
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "nocache"))
    info = json.loads(tf("doctor", "--format", "json").output)
    assert info["tools"]["caffe"] is None and info["caffe_version"] is None
    fixes = {m["what"]: m["fix"] for m in info["missing"]}
    assert "install-caffe.sh" in fixes["caffe"] and "slurm" in fixes
    assert "MISSING" in tf("doctor").output


def test_doctor_checks_the_device_decoder_when_asked_for(torch_engine, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "torchvision", None)
    assert "torchvision" not in {m["what"] for m in json.loads(tf("doctor", "--format", "json").output)["missing"]}
    monkeypatch.setenv("TF_DECODE", "device")
    missing = {m["what"]: m for m in json.loads(tf("doctor", "--format", "json").output)["missing"]}
    assert "needs torchvision built for this PyTorch" in missing["torchvision"]["why"]
    assert "unset TF_DECODE" in missing["torchvision"]["fix"]
    monkeypatch.setenv("TF_DECODE", "nvjpeg")
    assert "TF_DECODE='nvjpeg': not one of cpu, device" in tf("doctor").output
    missing = {m["what"]: m for m in json.loads(tf("doctor", "--format", "json").output)["missing"]}
    assert "torchvision" not in missing and "set TF_DECODE to one of cpu, device" in missing["TF_DECODE"]["fix"]


def test_run_without_globs_takes_the_rendered_nets(tmp_path, fake_caffe, monkeypatch):
    monkeypatch.setenv("TF_CAFFE", str(fake_caffe))
    study = Study.load(tiny_study_file(tmp_path))
    root = tmp_path / "results"
    r = tf("--study", tmp_path / "tiny.yaml", "run", "--root", root, "--parallel", "1")
    assert r.exit_code == 1 and "no rendered net of study" in r.output
    Renderer(study).render_all(study.select(["half1A", "transfer1A1B_1_4"]), root)
    r = tf("run", "--root", root, "--parallel", "2")
    assert r.exit_code == 0 and "2 done, 0 already done, 0 failed" in r.output


def test_training_refuses_to_start_without_room(tmp_path, fake_caffe, tmpfs, monkeypatch):
    monkeypatch.setenv("TF_CAFFE", str(fake_caffe))
    study = Study.load(tiny_study_file(tmp_path))
    disk = tmpfs("1m")
    Renderer(study).render_all(study.select(["half0A"]), disk / "results", tmp_path / "data")
    r = tf("train", "half0A", "--root", disk / "results")
    assert r.exit_code == 1 and "not started" in r.output and "room for two snapshot pairs" in r.output
    assert "Traceback" not in r.output


def test_failure_report_shows_the_cause_not_the_stack(setup, monkeypatch):
    study, root = setup
    monkeypatch.setenv("FAKE_CAFFE_CRASH_AT", "15")
    r = tf("run", "half0A", "--root", root, "--parallel", "1", "--retries", "0")
    assert r.exit_code == 1
    assert "Check failed: error == cudaSuccess (2 vs. 0)  out of memory" in r.output
    assert "@ " not in r.output and "stack trace" not in r.output
    r = CliRunner().invoke(main, ["train", "half0A", "--root", str(root)])
    assert "Check failed" in r.output and "google::LogMessage" not in r.output


def test_a_retry_that_crashes_from_a_snapshot_falls_back_to_the_one_before(setup, monkeypatch, tmp_path):
    study, root = setup
    folder = StudyFolder(root, study)
    monkeypatch.setenv("FAKE_CAFFE_CRASH_AT", "25")
    monkeypatch.setenv("FAKE_CAFFE_CRASH_ONCE", str(tmp_path / "crashed"))
    monkeypatch.setenv("FAKE_CAFFE_BAD_SNAPSHOT", "20")
    r = tf("run", "half1A", "--root", root, "--parallel", "1", "--retries", "1")
    assert r.exit_code == 1                                  # crash at 25, then the retry from 20 crashes
    assert [b["iteration"] for b in read_attempt(folder.net("half1A"))["bad_snapshots"]] == [20]
    row = json.loads(tf("status", "half1A", "--root", root, "--format", "json").output)[0]
    assert row["status"] == "failed"
    assert net_state(folder, "half1A").resumes_at == 10
    r = tf("run", "half1A", "--root", root, "--parallel", "1")
    assert r.exit_code == 0, r.output
    assert "passing over the snapshot at iteration 20: a retry from it crashed" in r.output
    argv = calls(root, "half1A")[-1]["argv"]
    assert argv[argv.index("-snapshot") + 1] == "caffe_imagenet_train_iter_10.solverstate"
    assert net_state(folder, "half1A").done


def test_a_net_running_elsewhere_is_waited_for_not_failed(setup, fake_caffe):
    study, root = setup
    folder = StudyFolder(root, study)
    (folder.net("half0A").path / "fake-caffe-delay").write_text("0.05")
    env = dict(os.environ, TF_STUDY=str(folder.study_copy))
    other = subprocess.Popen([sys.executable, "-m", "transferfeat.cli", "train", "half0A", "--root",
                              str(root)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: Lock(folder.net("half0A")).held_elsewhere(), 30, "the other tf train to hold half0A")
    r = tf("run", "half0A", "transfer0A0B_1_1", "--root", root, "--parallel", "2", "--interval", "0.2")
    other.wait(60)
    assert r.exit_code == 0, r.output
    assert "wait   half0A: running elsewhere" in r.output and "done   half0A (elsewhere)" in r.output
    assert "0 failed" in r.output and net_state(folder, "transfer0A0B_1_1").done
    assert calls(root, "transfer0A0B_1_1")[0]["start"] >= calls(root, "half0A")[0]["end"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("command", ["run", "train"])
def test_signals_stop_cleanly_even_when_the_parent_ignored_sigint(setup, fake_caffe, command, sig):
    """Started as a background job of a script (SIGINT ignored), or under nohup: still a clean stop."""
    study, root = setup
    name = "half2B"
    d = NetDir(root, name)
    env = dict(os.environ, TF_STUDY=str(root / "tf-study.yaml"), FAKE_CAFFE_DELAY="0.05")
    cmd = [sys.executable, "-m", "transferfeat.cli", command, name, "--root", str(root)]
    cmd += ["--parallel", "1", "--interval", "0.2"] if command == "run" else []

    def ignore():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=ignore)
    wait_for(lambda: d.solverstates(), 30, "a first snapshot")
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    call = calls(root, name)[0]
    assert call["exit"] == 0 and call["last_iter"] < 30 and call["last_iter"] in d.solverstates()


def test_status_and_results_need_a_results_folder(tmp_path):
    for cmd in ("status", "results"):
        r = CliRunner().invoke(main, [cmd, "--root", str(tmp_path / "nowhere")])
        assert r.exit_code == 1 and "does not exist" in r.output
        (tmp_path / "empty").mkdir(exist_ok=True)
        r = CliRunner().invoke(main, [cmd, "--root", str(tmp_path / "empty")])
        assert r.exit_code == 1 and "no rendered net" in r.output
