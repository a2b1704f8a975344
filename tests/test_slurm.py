"""tf submit / cancel / status against a real one-node SLURM (fixture `slurm`); job scripts golden-tested."""
import json
import os
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import fake_calls as calls, tiny_study_file, tf
from transferfeat.cli import main
from transferfeat.errors import Error
from transferfeat.folder import NetFolder as NetDir
from transferfeat.render import Renderer
from transferfeat.engines.caffe import CaffeEngine
from transferfeat.folder import StudyFolder
from transferfeat.schedulers.slurm import Resources, job_script, read_job
from transferfeat.study import Study

FIXTURES = Path(__file__).parent / "fixtures"


def test_job_script_golden():
    study = Study.load()
    res = Resources(partition="gpu", gres="gpu:1", time="10-00:00:00", account="lab", cpus_per_task=4, mem="32G",
                    extra=("--qos=long", "--comment=two words"))
    text = job_script(study.net("transfer0A0B_1_3"), StudyFolder(Path("/data/my results"), study), res,
                      ["/opt/venv/bin/python", "-m", "transferfeat.cli"], CaffeEngine("/opt/caffe/bin/caffe").job_args())
    golden = FIXTURES / "job_script.golden"
    if os.environ.get("TF_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("extra", ["qos=long", '--comment=say "hi"', "--bad opt=1"])
def test_bad_sbatch_options_are_refused(extra):
    study = Study.load()
    with pytest.raises(Error):
        job_script(study.net("half0A"), StudyFolder(Path("/r"), study), Resources(extra=(extra,)), ["tf"])


@pytest.fixture
def results(tmp_path, fake_caffe):
    study = Study.load(tiny_study_file(tmp_path))
    Renderer(study).render_all(study.nets.values(), tmp_path / "results")
    return study, tmp_path / "results", fake_caffe



def test_dry_run_touches_nothing(results, monkeypatch):
    study, root, caffe = results
    monkeypatch.setenv("PATH", "/nonexistent")                     # no sbatch, squeue: never called
    r = tf("submit", "half0A", "transfer0A0B_1_*", "--root", root, "--dry-run", "--gres", "gpu:1")
    assert r.exit_code == 0, r.output
    assert r.output.count("#!/bin/bash") == 8
    assert re.search(r"\ntransfer0A0B_1_7 +<transfer0A0B_1_7> afterok <half0A> \(half0A\)\n", r.output)
    assert "8 would be submitted" in r.output
    assert not list(root.glob("*/tf-job.sbatch")) and not list(root.glob("*/tf-slurm.json"))


def test_submit_fails_when_sbatch_refuses(results, monkeypatch, tmp_path):
    """A refused submission is a failure (exit 1) naming the net and sbatch's reason, not a skip."""
    study, root, caffe = results
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "sbatch").write_text('#!/bin/sh\necho "sbatch: error: invalid partition specified: gpu" >&2\nexit 1\n')
    (fake / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    r = CliRunner().invoke(main, ["submit", "half0A", "--root", str(root), "--partition", "gpu"])
    assert r.exit_code == 1, r.output
    assert "0 submitted, 0 skipped, 1 failed" in r.output
    assert "sbatch refused half0A: sbatch failed: sbatch: error: invalid partition specified: gpu" in r.output
    assert not read_job(NetDir(root, "half0A"))


@pytest.mark.slurm
def test_base_then_transfer_nets_in_order_and_no_duplicates(slurm, results, monkeypatch):
    study, root, caffe = results
    monkeypatch.setenv("FAKE_CAFFE_DELAY", "0.02")
    r = tf("submit", "half0A", "transfer0A0B_1_1", "transfer0A0A_1_2", "--root", root, "--caffe", caffe)
    assert r.exit_code == 0, r.output
    assert "3 submitted" in r.output
    jobs = {n: read_job(NetDir(root, n))["job_id"] for n in ("half0A", "transfer0A0B_1_1", "transfer0A0A_1_2")}
    assert f"after job {jobs['half0A']} (half0A)" in r.output
    again = tf("submit", "half0A", "transfer0A0B_1_1", "transfer0A0A_1_2", "--root", root, "--caffe", caffe)
    assert "0 submitted, 3 skipped" in again.output and "already queued as job" in again.output
    slurm.wait_idle()
    base_end = calls(root, "half0A")[0]["end"]
    for t in ("transfer0A0B_1_1", "transfer0A0A_1_2"):
        call = calls(root, t)[0]
        assert call["start"] >= base_end
        assert call["argv"][call["argv"].index("-weights") + 1] == "basenet/caffe_imagenet_train_iter_30.caffemodel"
        assert read_job(NetDir(root, t))["state"] == "COMPLETED"
        assert NetDir(root, t).snapshots().get(30)
    done = tf("submit", "half0A", "transfer0A0B_1_1", "--root", root)
    assert "0 submitted, 2 skipped" in done.output and "skipped: done" in done.output
    status = json.loads(tf("status", "half0A", "--root", root, "--format", "json").output)
    assert status[0]["status"] == "done" and status[0]["slurm"] == f"completed (job {jobs['half0A']})"


@pytest.mark.slurm
def test_base_already_done_gets_no_dependency(slurm, results):
    study, root, caffe = results
    assert tf("train", "half1B", "--root", root, "--caffe", caffe).exit_code == 0
    r = tf("submit", "transfer1B1A_1_4", "--root", root, "--caffe", caffe)
    assert "submitted transfer1B1A_1_4 as job" in r.output and "after job" not in r.output
    slurm.wait_idle()
    assert NetDir(root, "transfer1B1A_1_4").snapshots().get(30)


@pytest.mark.slurm
def test_cancel_takes_the_dependants_along(slurm, results):
    study, root, caffe = results
    (root / "half2A").mkdir(exist_ok=True)
    (root / "half2A" / "fake-caffe-delay").write_text("0.5")
    r = tf("submit", "half2A", "transfer2A2B_1_1", "transfer2A2B_1_2", "--root", root, "--caffe", caffe)
    assert "3 submitted" in r.output
    r = tf("cancel", "half2A", "--root", root)
    assert r.exit_code == 0, r.output
    assert "cancelled transfer2A2B_1_1" in r.output and "a dependant" in r.output and "3 job(s) cancelled" in r.output
    slurm.wait_idle(30)
    rows = {x["name"]: x for x in json.loads(tf("status", "half2A", "transfer2A2B_1_*", "--root", root,
                                                 "--format", "json").output)}
    assert rows["transfer2A2B_1_1"]["slurm"].startswith("cancelled")
    assert rows["transfer2A2B_1_1"]["status"] == "blocked on half2A"


@pytest.mark.slurm
def test_requeued_job_resumes_from_its_snapshot(slurm, results):
    study, root, caffe = results
    d = NetDir(root, "half3A")
    (d.path / "fake-caffe-delay").write_text("0.1")
    assert "1 submitted" in tf("submit", "half3A", "--root", root, "--caffe", caffe).output
    job = read_job(d)["job_id"]
    deadline = time.time() + 60
    while not d.solverstates() and time.time() < deadline:
        time.sleep(0.2)
    slurm.run("scontrol", "requeue", job)                           # as preemption does: SIGTERM, then requeue
    deadline = time.time() + 60
    while "PENDING" not in slurm.run("squeue", "-h", "-j", job, "-o", "%T") and time.time() < deadline:
        time.sleep(0.2)
    (d.path / "fake-caffe-delay").write_text("0")
    slurm.run("scontrol", "update", f"jobid={job}", "StartTime=now")  # SLURM delays requeued jobs; not here
    slurm.wait_idle()
    first, second = calls(root, "half3A")
    assert first["exit"] == 0 and first["last_iter"] < 30 and first["last_iter"] in d.solverstates()
    argv = second["argv"]
    assert argv[argv.index("-snapshot") + 1] == f"caffe_imagenet_train_iter_{first['last_iter']}.solverstate"
    assert d.snapshots().get(30)
    state = read_job(d)
    assert state["state"] == "COMPLETED" and state["restarts"] == 1


@pytest.mark.slurm
@pytest.mark.caffe
def test_real_caffe_under_slurm(slurm, tmp_path, caffe_bin):
    from transferfeat.demo import prepare_data
    study = Study.load(tiny_study_file(tmp_path, max_iter=40, snapshot=20, test_interval=20))
    nets = study.select(["half0A", "transfer0A0B_1_5"])
    data = prepare_data(study, tmp_path, nets, echo=lambda *_: None)
    root = tmp_path / "results"
    Renderer(study).render_all(nets, root, data)
    out = tf("submit", "half0A", "transfer0A0B_1_5", "--root", root, "--cpus-per-task", "1")
    assert "2 submitted" in out.output, out.output
    slurm.wait_idle(300)
    for n in ("half0A", "transfer0A0B_1_5"):
        assert NetDir(root, n).snapshots().get(40), (root / n).iterdir()
    from transferfeat.logs import parse_files
    base, transfer = (parse_files(NetDir(root, n).logs()) for n in ("half0A", "transfer0A0B_1_5"))
    assert base.iterations == transfer.iterations == 40 and 40 in transfer.accuracy


# ------------------------------------------------------------------ SLURM's outputs, parsed (no cluster needed)

def test_squeue_output_parsed():
    from transferfeat.schedulers.slurm import parse_squeue
    assert parse_squeue("") == {}
    assert parse_squeue("101 RUNNING\n102 PENDING\n\n103_4 COMPLETING\n") == {
        "101": "RUNNING", "102": "PENDING", "103_4": "COMPLETING"}
    assert parse_squeue("  104 PENDING  \nstray\n") == {"104": "PENDING"}


def test_sacct_output_parsed():
    from transferfeat.schedulers.slurm import parse_sacct
    assert parse_sacct("") == {}
    text = "101|COMPLETED\n102|CANCELLED by 0\n103|FAILED\n103|REQUEUED\n104|\nno bar here\n"
    assert parse_sacct(text) == {"101": "COMPLETED", "102": "CANCELLED", "103": "REQUEUED"}


@pytest.mark.parametrize("text, job", [("4242\n", "4242"), ("4242;cluster1\n", "4242"), ("  77 \n", "77"), ("12_3\n", "12_3")])
def test_sbatch_parsable_output_parsed(text, job):
    from transferfeat.schedulers.slurm import parse_sbatch
    assert parse_sbatch(text) == job


@pytest.mark.parametrize("text", ["", "\n", "sbatch: error: Batch job submission failed\n"])
def test_sbatch_output_without_a_job_id_is_an_error(text):
    from transferfeat.errors import Error
    from transferfeat.schedulers.slurm import parse_sbatch
    with pytest.raises(Error, match="sbatch printed no job id"):
        parse_sbatch(text)
