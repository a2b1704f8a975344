"""A net's state, read once (state.py): "done" means whole — verified final snapshots, resume points
checked, a changed final snapshot reported and never used. The snapshot cases run real Caffe; the
rest build a net's files by hand or with a fake caffe at the subprocess boundary."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import net_state, rendered, tf, tiny_study_file, wait_for
from transferfeat import atomic
from transferfeat.caffeproto import _read_varint
from transferfeat.folder import StudyFolder
from transferfeat.logs import parse_files
from transferfeat.render import Renderer
from transferfeat.snapshots import read_record
from transferfeat.state import Lock, adopt, state_of, states, status_rows, write_attempt
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


# ------------------------------------------------------------------ real Caffe: snapshots

def trained(study, data, tmp_path):
    folder = rendered(study, data, tmp_path / "results", ("half0A", "transfer0A0B_1_2"))
    r = tf("train", "half0A", "--root", folder.root)
    assert r.exit_code == 0, r.output
    assert net_state(folder, "half0A").done and read_record(folder.net("half0A"))["caffemodel"]["sha256"]
    return folder


def finishes_from(folder, name, iteration, output):
    """The rerun resumed from ``iteration``, finished, was verified, and its log has the final test."""
    assert f"resuming from iteration {iteration}" in output, output
    assert net_state(folder, name).done
    log = parse_files(folder.net(name).logs())
    assert log.iterations == 60 and 60 in log.accuracy and 0 <= log.accuracy[60] <= 1


@pytest.mark.caffe
@pytest.mark.parametrize("cut", ["byte offset", "layer boundary"])
def test_final_caffemodel_cut_is_not_done_and_rerun_completes(tiny_data, tmp_path, caffe_bin, cut):
    """Killed while writing the final snapshot (before tf recorded it): cut at a byte offset, or at a
    layer boundary where the file still parses but lacks fc8."""
    study, data = tiny_data
    folder = trained(study, data, tmp_path)
    d = folder.net("half0A")
    final = d.snapshots()[60]
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
def test_recorded_final_snapshot_changed_later_is_reported_never_used(tiny_data, tmp_path, caffe_bin):
    study, data = tiny_data
    folder = trained(study, data, tmp_path)
    final = folder.net("half0A").snapshots()[60]
    blob = bytearray(final.read_bytes())
    blob[-5] ^= 0xFF                                                     # same size, other bytes
    final.write_bytes(bytes(blob))
    row = json.loads(tf("status", "half0A", "--root", folder.root, "--format", "json").output)[0]
    assert row["state"] == "damaged" and "changed since it was verified" in row["problem"]
    r = tf("train", "transfer0A0B_1_2", "--root", folder.root)
    assert r.exit_code == 1 and "needs its base net half0A to finish first" in r.output


@pytest.mark.caffe
def test_solverstate_cut_at_a_field_boundary_is_passed_over(tiny_data, tmp_path, caffe_bin):
    study, data = tiny_data
    folder = rendered(study, data, tmp_path / "results")
    d = folder.net("half0A")
    env = dict(os.environ, TF_STUDY=str(folder.study_copy))
    proc = subprocess.Popen([sys.executable, "-m", "transferfeat.cli", "train", "half0A", "--root", str(folder.root)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: len(d.solverstates()) >= 2, 120, "two snapshots")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    newest = max(d.solverstates())
    assert newest < 60
    state = d.solverstates()[newest]
    with open(state, "r+b") as f:
        f.truncate(field_ends(state)[4])          # iter, learned_net and two of the sixteen history blobs
    older = max(i for i in d.solverstates() if i < newest)
    assert net_state(folder, "half0A").resumes_at == older
    row = json.loads(tf("status", "half0A", "--root", folder.root, "--format", "json").output)[0]
    assert row["status"] == f"pending (resumes at {older})"
    r = tf("train", "half0A", "--root", folder.root)
    assert r.exit_code == 0, r.output
    assert f"passing over the snapshot at iteration {newest}" in r.output and "history blobs" in r.output
    finishes_from(folder, "half0A", older, r.output)


# ------------------------------------------------------------------ every state, from files made here

@pytest.fixture
def folder(tmp_path, fake_caffe, monkeypatch):
    monkeypatch.setenv("TF_CAFFE", str(fake_caffe))
    study = Study.load(tiny_study_file(tmp_path))
    Renderer(study).render_all(study.select(["half0*", "transfer0A0B_1_*"]), tmp_path / "results")
    return StudyFolder(tmp_path / "results", study)


def finish(folder, name):
    assert tf("train", name, "--root", folder.root).exit_code == 0


def test_each_state_and_its_phrase(folder, monkeypatch):
    kinds = lambda: {n: s.phrase() for n, s in states(folder, folder.study.select(["half0*", "transfer0A0B_1_1",  # noqa: E731
                                                                                    "half1A"])).items()}
    assert kinds() == {"half0A": "pending", "half0B": "pending", "transfer0A0B_1_1": "blocked on half0A",
                       "half1A": "not rendered"}
    finish(folder, "half0A")
    monkeypatch.setenv("FAKE_CAFFE_CRASH_AT", "25")
    assert tf("train", "half0B", "--root", folder.root).exit_code == 1
    found = kinds()
    assert found["half0A"] == "done" and found["half0B"] == "failed" and found["transfer0A0B_1_1"] == "pending"
    assert net_state(folder, "half0B").resumes_at == 20 and "Check failed" in net_state(folder, "half0B").problem
    # a final snapshot without a record: unverified; adopting it is an explicit step that writes the record
    d = folder.net("half0A")
    d.done_record.unlink()
    s = net_state(folder, "half0A")
    assert s.kind == "unverified" and not d.done_record.exists()          # reading never writes
    assert adopt(folder, folder.study.net("half0A"), s, echo=lambda *_: None).done and d.done_record.exists()
    # a recorded final snapshot changed since: damaged
    final = d.snapshots()[30]
    final.write_bytes(final.read_bytes() + b"\0")
    assert net_state(folder, "half0A").kind == "damaged"
    # a lock held by another process: running
    lock = Lock(folder.net("half0B"))
    child = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                              "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(lock.path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert net_state(folder, "half0B").kind == "running"
    finally:
        child.kill()
        child.wait()


def test_a_transfer_net_with_its_own_snapshot_needs_no_base(folder, monkeypatch):
    finish(folder, "half0A")
    monkeypatch.setenv("FAKE_CAFFE_CRASH_AT", "15")
    assert tf("train", "transfer0A0B_1_1", "--root", folder.root).exit_code == 1
    folder.net("half0A").done_record.unlink()
    for p in folder.net("half0A").snapshots().values():
        p.unlink()                                                      # the base is gone
    s = net_state(folder, "transfer0A0B_1_1")
    assert s.kind == "failed" and s.resumes_at == 10 and s.blocked_on is None
    monkeypatch.delenv("FAKE_CAFFE_CRASH_AT")
    r = tf("train", "transfer0A0B_1_1", "--root", folder.root)
    assert r.exit_code == 0 and "resuming from iteration 10" in r.output


def test_status_reads_each_file_of_a_net_once(tmp_path):
    """`tf status` on the paper study (170 nets; two done, one failed, the rest pending or blocked):
    no file of a net's folder is opened more than once."""
    study = Study.load()
    root = tmp_path / "results"
    Renderer(study).render_all(study.nets.values(), root, tmp_path / "data")
    folder = StudyFolder(root, study)
    for name in ("half0A", "half0B"):                 # done: a final snapshot and its record
        d = folder.net(name)
        final = d.path / "caffe_imagenet_train_iter_450000.caffemodel"
        final.write_bytes(b"weights")
        st = final.stat()
        atomic.write_json(d.done_record, {"iteration": 450000, "caffemodel": {
            "file": final.name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": "0" * 64}})
    write_attempt(folder.net("half1A"), status="failed", exit_code=134, last_lines=["Check failed"])
    opened = []

    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and str(root) in os.fsdecode(args[0]):
            opened.append(os.fsdecode(args[0]))
    sys.addaudithook(hook)
    try:
        r = tf("status", "--root", root, "--format", "json")
    finally:
        root = Path("/nonexistent-after-the-test")     # the hook cannot be removed: make it match nothing
    rows = {x["name"]: x["status"] for x in json.loads(r.output)}
    assert rows["half0A"] == "done" and rows["half1A"] == "failed" and rows["transfer1A1B_1_1"] == "blocked on half1A"
    assert len(rows) == 170
    counts = {}
    for path in opened:
        counts[path] = counts.get(path, 0) + 1
    twice = {p: n for p, n in counts.items() if n > 1}
    assert not twice, twice
    looked = lambda name: len([p for p in counts if p.endswith("/" + name)])      # noqa: E731
    assert looked("tf-done.json") == looked("tf-state.json") == 170          # once for every net
    assert looked(".tf-train.lock") == 168                                   # not for the two done nets


def test_status_rows_carry_the_engine_and_problem(folder):
    finish(folder, "half0A")
    rows = {r["name"]: r for r in status_rows(folder, folder.study.select(["half0A", "transfer0A0B_1_1"]), {})}
    assert rows["half0A"]["engine"] == "caffe" and rows["half0A"]["state"] == "done"
    assert rows["transfer0A0B_1_1"]["status"] == "pending"
    assert state_of(folder, folder.study.net("half0A")).attempt["status"] == "done"


def test_one_folder_listing_per_decision_in_tf_train(folder, monkeypatch):
    """`tf train` lists the net's folder once to read its state and once to judge the outcome (the base
    net, done, is judged by its completion record, without a listing)."""
    from transferfeat.folder import NetFolder
    listed = []
    real = NetFolder.scan
    monkeypatch.setattr(NetFolder, "scan", lambda self: listed.append(self.name) or real(self))
    finish(folder, "half0A")
    assert listed == ["half0A", "half0A"]
    listed.clear()
    assert tf("train", "transfer0A0B_1_1", "--root", folder.root).exit_code == 0
    assert listed == ["transfer0A0B_1_1", "transfer0A0B_1_1"]
