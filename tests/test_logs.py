import gzip
import re
from pathlib import Path

import pytest

from transferfeat.logs import elapsed, parse_files, parse_segment
from transferfeat.folder import NetFolder as NetDir, segment_order

FIXTURES = Path(__file__).parent / "fixtures"


def test_half0A_raw_values(shared):
    d = NetDir(shared / "results", "half0A")
    files = d.logs()
    assert [f.name for f in files] == ["140403_063910_half0A.o227963.gz", "140403_063910_half0A.o239566.gz",
                                       "140403_063910_half0A.o298235.gz", "140403_063910_half0A.o298236.gz"]
    log = parse_files(files)
    assert log.iterations == 450000
    assert log.score(0)[450000] == 0.614559 and log.accuracy[450000] == 0.614559
    assert log.accuracy[1000] == 0.0389203 and log.val_loss[1000] == 5.3778
    assert log.val_loss[450000] == 1.74482
    it, loss = log.loss
    assert loss[list(it).index(20)] == 6.66556
    it, lr = log.lr
    assert lr[list(it).index(20)] == 0.01 and lr[-1] == pytest.approx(1e-6)
    assert len(log.accuracy) == 450


def _grep(path, iteration):
    text = gzip.decompress(Path(path).read_bytes()).decode()
    m = re.search(rf"Iteration {iteration}, loss = (\S+)", text)
    return float(m.group(1)) if m else None


def test_resumed_segment_wins_for_repeated_iterations(shared):
    files = NetDir(shared / "results", "half0A").logs()
    first, second = parse_segment(files[0]), parse_segment(files[1])
    assert (first.first_iter, first.last_iter) == (20, 286180)
    assert (second.first_iter, second.last_iter) == (280020, 450000)
    overlap = 282000
    a, b = _grep(files[0], overlap), _grep(files[1], overlap)
    assert a is not None and b is not None and a != b
    log = parse_files(files)
    it, loss = log.loss
    assert loss[list(it).index(overlap)] == b
    assert len(set(it.tolist())) == len(it)
    # Order comes from the job numbers, not the order the files are given in.
    assert parse_files(list(reversed(files))).loss[1][list(it).index(overlap)] == b


def test_empty_and_truncated_files(shared, tmp_path):
    empty = NetDir(shared / "results", "half0A").logs()[2]
    seg = parse_segment(empty)
    assert seg.last_iter is None and seg.test == {} and len(seg.loss[0]) == 0
    raw = NetDir(shared / "results", "half0A").logs()[0].read_bytes()
    cut = tmp_path / "cut.o1.gz"
    cut.write_bytes(raw[: len(raw) // 3])
    part = parse_segment(cut)
    full = parse_segment(NetDir(shared / "results", "half0A").logs()[0])
    assert 0 < part.last_iter < full.last_iter
    assert all(full.test[k] == v for k, v in part.test.items())
    (tmp_path / "zero.log").write_bytes(b"")
    assert parse_segment(tmp_path / "zero.log").last_iter is None


def test_gzip_and_plain_parse_the_same(shared, tmp_path):
    gz = NetDir(shared / "results", "transfer0A0B_1_3").logs()[0]
    plain = tmp_path / "plain.o240412"
    plain.write_bytes(gzip.decompress(gz.read_bytes()))
    a, b = parse_segment(gz), parse_segment(plain)
    assert a.test == b.test and (a.loss[1] == b.loss[1]).all() and a.seconds == b.seconds > 0


def test_caffe1_log_from_a_real_run():
    log = parse_files([FIXTURES / "caffe1_train.log"])
    assert log.test_names == {0: "accuracy", 1: "loss"}
    assert log.accuracy[100] == 0.513333 and log.val_loss[100] == 1.38788
    assert log.accuracy[600] == 1.0 and log.val_loss[600] == 0.00203186
    it, loss = log.loss
    assert it[0] == 0 and loss[list(it).index(100)] == 1.9915       # "Iteration 100 (… iter/s …), loss = …"
    assert loss[-1] == 0.0710844                                     # the closing "Iteration 600, loss = …"
    assert log.lr[1][-1] == 0.001 and log.iterations == 600


def test_caffe1_names_reorder_scores(tmp_path):
    text = ("I0101 00:00:00.0 1 solver.cpp:347] Iteration 10, Testing net (#0)\n"
            "I0101 00:00:00.0 1 data_layer.cpp:73] Restarting data prefetching from start.\n"
            "I0101 00:00:01.0 1 solver.cpp:414]     Test net output #0: loss = 2.5 (* 1 = 2.5 loss)\n"
            "I0101 00:00:01.0 1 solver.cpp:414]     Test net output #1: accuracy = 0.25\n"
            "I0101 00:00:02.0 1 solver.cpp:239] Iteration 20 (1 iter/s, 1s/20 iters), loss = 2.1\n")
    p = tmp_path / "tf-train-20260101-000000.log"
    p.write_text(text)
    log = parse_files([p])
    assert log.accuracy == {10: 0.25} and log.val_loss == {10: 2.5}


def test_new_year_does_not_break_time_or_order(tmp_path):
    assert elapsed([_c(12, 31, 23, 59, 0), _c(1, 1, 0, 1, 0)]) == 120
    assert elapsed([_c(4, 30, 12, 0, 0), _c(5, 1, 12, 0, 0)]) == 86400
    p = tmp_path / "x.o5"
    p.write_text("I1231 23:00:00.000 1 solver.cpp:217] Iteration 20, lr = 0.01\n"
                 "I0101 01:00:00.000 1 solver.cpp:217] Iteration 40, lr = 0.01\n")
    assert parse_segment(p).seconds == 7200
    # Segments are ordered by their names (job numbers as numbers), never by glog's year-less clock.
    names = ["a.o10.gz", "a.o9.gz", "a.o100.gz"]
    assert sorted(names, key=segment_order) == ["a.o9.gz", "a.o10.gz", "a.o100.gz"]
    tf = ["tf-train-20261231-235900.log", "tf-train-20270101-000100.log"]
    assert sorted(reversed(tf), key=segment_order) == tf


def _c(month, day, h, m, s):
    from transferfeat.logs import _DAYS
    return ((_DAYS[month - 1] + day) * 24 + h) * 3600 + m * 60 + s


def test_log_file_names(tmp_path):
    for name in ("140403_063910_half0A.o227963.gz", "catlog.oMANUAL.gz", "x.e12", "tf-train-20260101-000000.log",
                 "imagenet_solver.prototxt", "notes.txt", "caffe_imagenet_train_iter_10.caffemodel"):
        (tmp_path / "n" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "n" / name).write_text("")
    assert [p.name for p in NetDir(tmp_path, "n").logs()] == [
        "140403_063910_half0A.o227963.gz", "catlog.oMANUAL.gz", "tf-train-20260101-000000.log", "x.e12"]


def test_training_speed_from_each_kind_of_log(tmp_path, shared):
    """img/s where the torch engine logged them, iter/s × batch for Caffe 1.0, iterations over the wall
    time for the authors' 2014 logs (the K20s of the paper: a few hundred images/s)."""
    torch_log = tmp_path / "tf-train-20260101-000000.log"
    torch_log.write_text("I0101 00:00:00.0 1 torchnet.py:1] torch engine: torch 2.1, cpu, fp32\n"
                         "I0101 00:00:02.0 1 solver.cpp:239] Iteration 20 (0.5 iter/s, 40s/20 iters, 128.0 img/s), loss = 2\n"
                         "I0101 00:00:04.0 1 solver.cpp:239] Iteration 40 (0.5 iter/s, 40s/20 iters, 140.0 img/s), loss = 2\n"
                         "I0101 00:00:06.0 1 solver.cpp:239] Iteration 60 (0.5 iter/s, 40s/20 iters, 150.0 img/s), loss = 2\n")
    log = parse_files([torch_log])
    assert log.images_per_second(256) == 140.0 and list(log.loss[0]) == [20, 40, 60]
    caffe_log = tmp_path / "tf-train-20260102-000000.log"
    caffe_log.write_text("I0101 00:00:02.0 1 solver.cpp:239] Iteration 20 (2 iter/s, 10s/20 iters), loss = 2\n"
                         "I0101 00:00:04.0 1 solver.cpp:239] Iteration 40 (4 iter/s, 5s/20 iters), loss = 2\n"
                         "I0101 00:00:06.0 1 solver.cpp:239] Iteration 60 (3 iter/s, 6.7s/20 iters), loss = 2\n")
    assert parse_files([caffe_log]).images_per_second(50) == 150.0
    old = NetDir(shared / "results", "half0A").logs()
    rate = parse_files(old).images_per_second(256)
    assert 100 < rate < 400
    (tmp_path / "empty.log").write_text("")
    assert parse_files([tmp_path / "empty.log"]).images_per_second(256) is None
