import errno
import json
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import resize_tmpfs, tf
from transferfeat import databases, images
from transferfeat.splits import read_list
from transferfeat.caffeproto import Datum, read_blob
from transferfeat.cli import main
from transferfeat.databases import build_db, decode_datum, inspect_path, iter_db
from transferfeat.mean import compute_mean
from transferfeat.errors import Error


def _list(tmp_path, synth_dir, n=40, extra=""):
    lines = (synth_dir / "whole_train" / "files.txt").read_text().splitlines()[:n]
    p = tmp_path / "list.txt"
    p.write_text("\n".join(lines) + "\n" + extra)
    return p


def test_build_and_inspect(tmp_path, synth_dir):
    lst = _list(tmp_path, synth_dir)
    r = build_db(lst, synth_dir / "train", tmp_path / "db", classes=20, resize=(24, 20), progress=False, threads=2)
    assert r.written == 40 and r.skipped == []
    assert not (tmp_path / "db.partial").exists() and not (tmp_path / "db.partial.json").exists()
    info = inspect_path(tmp_path / "db")
    assert info["records"] == 40 and info["image_shape"] == [3, 20, 24] and info["encoded"] is False
    assert sum(info["labels"].values()) == 40 and info["first_keys"][0].startswith("00000000_n9")
    keys = [k.decode() for k, _ in iter_db(tmp_path / "db")]
    names = [l.split()[0] for l in lst.read_text().splitlines()]
    assert sorted(k[9:] for k in keys) == sorted(names) and [k[:8] for k in keys] == [f"{i:08d}" for i in range(40)]
    assert [k[9:] for k in keys] != names                  # shuffled by default (seeded)
    r = CliRunner().invoke(main, ["inspect", str(tmp_path / "db"), "--format", "json"])
    assert json.loads(r.output)["records"] == 40


def test_bgr_planar_pixels(tmp_path, synth_dir):
    lst = _list(tmp_path, synth_dir, n=1)
    build_db(lst, synth_dir / "train", tmp_path / "db", classes=20, shuffle=False, progress=False, threads=1)
    (key, value), = iter_db(tmp_path / "db")
    from PIL import Image
    rgb = np.asarray(Image.open(synth_dir / "train" / lst.read_text().split()[0]).convert("RGB"))
    assert np.array_equal(decode_datum(value), rgb[:, :, ::-1].transpose(2, 0, 1))
    d = Datum.from_bytes(value)
    assert (d.channels, d.height, d.width, d.encoded) == (3, 32, 32, False)


def test_encoded_records_hold_the_file_bytes(tmp_path, synth_dir):
    lst = _list(tmp_path, synth_dir, n=5)
    build_db(lst, synth_dir / "train", tmp_path / "db", classes=20, encoded=True, shuffle=False, progress=False)
    for (k, v), line in zip(iter_db(tmp_path / "db"), lst.read_text().splitlines()):
        d = Datum.from_bytes(v)
        assert d.encoded and d.data == (synth_dir / "train" / line.split()[0]).read_bytes()


def test_bad_images_are_skipped_reported_and_limited(tmp_path, synth_dir):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    src = synth_dir / "train"
    lines = (synth_dir / "whole_train" / "files.txt").read_text().splitlines()[:20]
    for l in lines:
        (imgs / l.split()[0]).parent.mkdir(exist_ok=True)
        (imgs / l.split()[0]).write_bytes((src / l.split()[0]).read_bytes())
    corrupt = imgs / lines[3].split()[0]
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(lines) + "\nmissing/nothere.JPEG 1\n")
    with pytest.raises(Error, match="2 of 21 images could not be read.*partial build stays"):
        build_db(lst, imgs, tmp_path / "db", classes=20, progress=False)
    assert not (tmp_path / "db").exists() and (tmp_path / "db.partial").exists()
    r = CliRunner().invoke(main, ["db", "--list", str(lst), "--images", str(imgs), "--out", str(tmp_path / "db"),
                                  "--max-skip", "0.2"])
    assert r.exit_code == 0, r.output
    assert "19 records, 2 skipped" in r.output and "nothere.JPEG" in r.output and "list.txt:4" in r.output
    report = json.loads((tmp_path / "db" / "tf-report.json").read_text())
    assert {s["file"] for s in report["skipped"]} == {lines[3].split()[0], "missing/nothere.JPEG"}


def test_bad_list_line_fails_before_writing(tmp_path, synth_dir):
    lst = _list(tmp_path, synth_dir, n=3, extra="broken-line-without-label\n")
    with pytest.raises(Error, match="list.txt:4: expected 'FILE LABEL'"):
        build_db(lst, synth_dir / "train", tmp_path / "db", classes=20, progress=False)
    assert not (tmp_path / "db").exists() and not (tmp_path / "db.partial").exists()


def _failing_put(monkeypatch, exc, after):
    """The ``after``-th commit of a build raises ``exc`` instead of committing."""
    real = databases._Writer.commit
    calls = []

    def commit(self):
        calls.append(len(self.items))
        if len(calls) == after:
            raise exc
        real(self)
    monkeypatch.setattr(databases._Writer, "commit", commit)
    return calls


RECORDS_15 = 15 * 3085 - 100           # commit_bytes for a commit every 15 records of 32x32 images


def test_interrupted_build_resumes_without_duplicates(tmp_path, synth_dir, monkeypatch):
    lst = _list(tmp_path, synth_dir, n=100)
    _failing_put(monkeypatch, KeyboardInterrupt(), after=3)
    with pytest.raises(KeyboardInterrupt):
        build_db(lst, synth_dir / "train", tmp_path / "db", classes=20, progress=False, commit_bytes=RECORDS_15)
    assert not (tmp_path / "db").exists()
    monkeypatch.undo()
    r = build_db(lst, synth_dir / "train", tmp_path / "db", classes=20, progress=False, commit_bytes=RECORDS_15)
    assert r.resumed_at == 30 and r.written == 100
    keys = [k for k, _ in iter_db(tmp_path / "db")]
    assert len(keys) == len(set(keys)) == 100
    build_db(lst, synth_dir / "train", tmp_path / "db2", classes=20, progress=False)
    assert list(iter_db(tmp_path / "db")) == list(iter_db(tmp_path / "db2"))


def test_write_error_mid_build_leaves_no_complete_db(tmp_path, synth_dir, monkeypatch):
    lst = _list(tmp_path, synth_dir, n=60)
    _failing_put(monkeypatch, OSError(errno.ENOSPC, "No space left on device"), after=1)
    r = CliRunner().invoke(main, ["db", "--list", str(lst), "--images", str(synth_dir / "train"),
                                  "--out", str(tmp_path / "db")])
    assert r.exit_code == 1 and "No space left on device" in r.output
    assert not (tmp_path / "db").exists()


def test_resume_with_other_settings_is_refused(tmp_path, synth_dir, monkeypatch):
    lst = _list(tmp_path, synth_dir, n=40)
    _failing_put(monkeypatch, KeyboardInterrupt(), after=2)
    with pytest.raises(KeyboardInterrupt):
        build_db(lst, synth_dir / "train", tmp_path / "db", classes=20, progress=False, commit_bytes=RECORDS_15 * 10 // 15)
    monkeypatch.undo()
    with pytest.raises(Error, match="partial build with other settings"):
        build_db(lst, synth_dir / "train", tmp_path / "db", classes=20, resize=(8, 8), progress=False)


def test_map_grows_instead_of_failing(tmp_path, synth_dir, monkeypatch):
    monkeypatch.setattr(databases, "estimate_bytes", lambda *a, **k: 1)      # a far too small first map
    lst = _list(tmp_path, synth_dir, n=240)
    r = build_db(lst, synth_dir / "train", tmp_path / "db", classes=20, resize=(128, 128), progress=False)
    assert r.written == 240


def test_resize_matches_opencv_reference_points():
    from transferfeat import images
    img = np.repeat((np.arange(16, dtype=np.uint8).reshape(4, 4) * 16)[:, :, None], 3, axis=2)
    up = images.resized(img, (8, 8))[:, :, 0]
    assert up.shape == (8, 8) and up[0, 0] == 0 and up[-1, -1] == 240
    assert images.resized(img, (2, 2))[:, :, 0].tolist() == [[40, 72], [168, 200]]   # half-pixel centres


def test_mean_cli_on_a_dataset(tmp_path, synth_dir):
    data = tmp_path / "data"
    r = CliRunner().invoke(main, ["--study", "mini", "split", "--source", str(synth_dir), "--data-root", str(data)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["--study", "mini", "db", "half0A_train", "--data-root", str(data),
                                  "--images", str(synth_dir)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["--study", "mini", "mean", "half0A_train", "--data-root", str(data)])
    assert r.exit_code == 0, r.output
    assert "3x32x32, channel means" in r.output
    blob = read_blob(data / "half0A_train" / "mean.binaryproto")
    assert blob.dims == (1, 3, 32, 32)
    assert np.allclose(blob.array()[0], compute_mean(data / "half0A_train" / "lmdb", progress=False))
    r = CliRunner().invoke(main, ["--study", "mini", "db", "half9Z_train", "--data-root", str(data), "--images", "x"])
    assert r.exit_code == 1 and "not a dataset of study 'mini'" in r.output


def test_synth_cli(tmp_path):
    r = CliRunner().invoke(main, ["synth", "--classes", "4", "--train-per-class", "3", "--valid-per-class", "2",
                                  "--size", "16x16", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    train = (tmp_path / "s" / "whole_train" / "files.txt").read_text().splitlines()
    valid = (tmp_path / "s" / "whole_valid" / "files.txt").read_text().splitlines()
    assert len(train) == 12 and len(valid) == 8
    assert all((tmp_path / "s" / "train" / l.split()[0]).is_file() for l in train)
    assert all((tmp_path / "s" / "val" / l.split()[0]).is_file() for l in valid)
    assert len((tmp_path / "s" / "synsets.txt").read_text().split()) == 4


def test_synth_classes_are_spread_evenly():
    """Three strokes at three places in three colours per class; the closest pair of classes (in
    average image) is about as far apart as any class is from its nearest neighbour, unlike random draws."""
    from transferfeat.synth import _blob, class_strokes

    def nearest(classes):
        m = np.array([sum(_blob(s.cx, s.cy, s.color) for s in c).ravel() for c in classes])
        d = np.linalg.norm(m[:, None] - m[None], axis=2)
        np.fill_diagonal(d, np.inf)
        return d.min(1)
    classes = class_strokes(20, np.random.RandomState(0))
    for c in classes:
        assert len({(s.cx, s.cy) for s in c}) == len({s.color for s in c}) == len({s.theta for s in c}) == 3
    spread = nearest(classes)
    rng = np.random.RandomState(0)
    drawn = nearest([class_strokes(1, rng)[0] for _ in range(20)])      # 20 random candidates, not picked
    assert spread.min() > 0.95 * np.median(spread) and drawn.min() < 0.85 * np.median(drawn)
    assert spread.min() > 1.3 * drawn.min()


# ------------------------------------------------------------------ compatibility with Caffe's own tools

def _tool(caffe_bin, name):
    return str(caffe_bin.parent / name) if (caffe_bin.parent / name).exists() else name


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    """500x375 JPEGs as ILSVRC has them, with a greyscale, a CMYK and a PNG-named-JPEG file among them."""
    from PIL import Image
    from transferfeat.synth import synthesize
    tmp = tmp_path_factory.mktemp("odd")
    synthesize(tmp / "s", classes=20, train_per_class=2, valid_per_class=0, size=(500, 375), seed=2)
    lines = (tmp / "s" / "whole_train" / "files.txt").read_text().splitlines()
    imgs = tmp / "s" / "train"
    for line, (mode, kind) in zip(lines, (("L", "JPEG"), ("CMYK", "JPEG"), ("RGB", "PNG"))):
        path = imgs / line.split()[0]
        Image.open(path).convert(mode).save(path, kind)
    lst = tmp / "list.txt"
    lst.write_text("\n".join(lines) + "\n")
    return lst, imgs


@pytest.mark.caffe
@pytest.mark.parametrize("args,kwargs", [
    (["--resize_height", "256", "--resize_width", "256"], dict(resize=(256, 256))),
    (["--resize_height", "227", "--resize_width", "300", "--encoded"], dict(resize=(300, 227), encoded=True)),
    (["--encoded"], dict(encoded=True)),
], ids=["resized", "resized-encoded", "encoded"])
def test_records_identical_to_convert_imageset(tmp_path, odd_images, caffe_bin, args, kwargs):
    """Byte for byte, no tolerance: OpenCV decodes, converts and resizes as in Caffe (its version's
    libjpeg and OpenCV pinned by these 40 images, grey, CMYK and PNG among them)."""
    lst, imgs = odd_images
    subprocess.run([_tool(caffe_bin, "convert_imageset"), *args, str(imgs) + "/", str(lst), str(tmp_path / "cv")],
                   check=True, capture_output=True)
    build_db(lst, imgs, tmp_path / "tf", classes=20, shuffle=False, progress=False, **kwargs)
    cv, tf = list(iter_db(tmp_path / "cv")), list(iter_db(tmp_path / "tf"))
    assert len(cv) == len(tf) == 40
    assert [k for k, _ in cv] == [k for k, _ in tf]
    differ = [k for (k, a), (_, b) in zip(cv, tf) if a != b]
    assert differ == []


@pytest.mark.caffe
def test_mean_matches_compute_image_mean(tmp_path, odd_images, caffe_bin):
    lst, imgs = odd_images
    build_db(lst, imgs, tmp_path / "db", classes=20, resize=(64, 48), progress=False)
    subprocess.run([_tool(caffe_bin, "compute_image_mean"), str(tmp_path / "db"), str(tmp_path / "cv.binaryproto")],
                   check=True, capture_output=True)
    r = CliRunner().invoke(main, ["mean", "--db", str(tmp_path / "db"), "--out", str(tmp_path / "tf.binaryproto")])
    assert r.exit_code == 0, r.output
    ref, ours = read_blob(tmp_path / "cv.binaryproto"), read_blob(tmp_path / "tf.binaryproto")
    assert (ref.num, ref.channels, ref.height, ref.width, ref.shape) == (ours.num, ours.channels, ours.height,
                                                                          ours.width, ours.shape)
    assert np.abs(ref.data - ours.data).max() < 1e-3


def test_two_db_builds_on_one_output(tmp_path, synth_dir):
    from transferfeat.databases import _build_lock
    out = tmp_path / "db"
    with _build_lock(out):
        r = CliRunner().invoke(main, ["db", "--list", str(synth_dir / "whole_train" / "files.txt"), "--images",
                                      str(synth_dir / "train"), "--out", str(out)])
    assert r.exit_code == 1 and "another tf db is building" in r.output and str(out) in r.output


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
    from transferfeat.databases import iter_db
    fixed = dict(iter_db(tmp_path / "db"))
    assert all(fixed[k] == v for k, v in iter_db(tmp_path / "whole") if k in fixed)   # same keys, same records
    assert len(fixed) == 39


@pytest.mark.parametrize("make", [lambda a: a, lambda a: a[:, ::-1], lambda a: a[:, :, :1], lambda a: a.astype(np.float32)],
                         ids=["colour", "a view", "one channel", "float"])
def test_planar_pixels_are_the_transposed_image(make):
    img = make(np.random.RandomState(0).randint(0, 256, (5, 7, 3)).astype(np.uint8))
    out = np.zeros(img.shape[2:] + img.shape[:2], img.dtype)
    images.planar_into(img, out)
    assert np.array_equal(out, img.transpose(2, 0, 1))


# --------------------------------------------------------------------------- the store against its lists

def _store_root(tiny_data, where):
    study, data = tiny_data
    root = where / "data"
    shutil.copytree(data, root, ignore=shutil.ignore_patterns("lmdb", "lmdb.partial*", "mean.binaryproto", "index"))
    return study, root, data.parent / "synth"


def test_a_store_that_no_longer_holds_its_lists_is_refused_or_rebuilt(tiny_data, tmp_path):
    """After a re-split (the whole train list changed) or with another --resize, `tf db --store` refuses the
    old store, naming it and why, and writes no index against it; --rebuild builds it again, and its
    indexes then read the new list's records. An index whose own list changed since is refused when read."""
    from transferfeat.store import read_index
    study, root, images = _store_root(tiny_data, tmp_path)
    args = ("--study", study.path, "db", "--store", "--data-root", root, "--images", images)
    assert tf(*args).exit_code == 0
    index = root / "half0A_train" / "index" / "tf-index.json"
    before = index.read_bytes()
    again = tf(*args)
    assert again.exit_code == 0 and "exists, built from" in again.output
    r = tf(*args, "--resize", "28x28")
    assert r.exit_code == 1 and "store/train does not hold" in r.output and "resize [32, 32], not [28, 28]" in r.output
    whole = root / "whole_train" / "files.txt"
    lines = whole.read_text().splitlines()
    whole.write_text("\n".join(lines[1:] + lines[:1]) + "\n")               # a new split: the same images, another order
    r = tf(*args)
    assert r.exit_code == 1 and f"{root / 'store' / 'train'} does not hold {whole}" in r.output, r.output
    assert "has changed since it was built (a new tf split?)" in r.output and "--rebuild" in r.output
    assert index.read_bytes() == before                                    # no index written against the old store
    from transferfeat.store import write_index
    with pytest.raises(Error, match="store/train does not hold .*has changed since it was built"):
        write_index(root / "half0A_train" / "files.txt", root, "train", tmp_path / "x", 20)      # the library too
    r = tf(*args, "--rebuild")
    assert r.exit_code == 0 and "removing it to build it again" in r.output, r.output
    rows = dict((e.path, i) for i, e in enumerate(read_list(whole, 20)))
    idx = read_index(index.parent)
    for key, label, value in list(idx.records())[:20]:
        path = key.decode().split("_", 1)[1]
        assert Datum.from_bytes(bytes(value)).label == read_list(whole, 20)[rows[path]].label
    lst = root / "half0A_train" / "files.txt"
    lst.write_text(lst.read_text().replace(" 0\n", " 1\n", 1))              # the dataset's own list re-split
    with pytest.raises(Error, match="its list .* has changed since this index was written"):
        read_index(index.parent)


def test_a_per_dataset_database_that_no_longer_holds_its_list_is_refused(tiny_data, tmp_path):
    study, root, images = _store_root(tiny_data, tmp_path)
    args = ("--study", study.path, "db", "half0A_valid", "--data-root", root, "--images", images)
    assert tf(*args).exit_code == 0
    assert "exists, built from" in tf(*args).output
    lst = root / "half0A_valid" / "files.txt"
    lines = lst.read_text().splitlines(True)
    lst.write_text("".join(lines[1:] + lines[:1]))                         # a new split: another order
    r = tf(*args)
    assert r.exit_code == 1 and "half0A_valid/lmdb does not hold" in r.output and "has changed" in r.output
    r = tf(*args, "--rebuild")
    assert r.exit_code == 0 and "removing it to build it again" in r.output
    assert "exists, built from" in tf(*args).output


def test_a_full_disk_while_indexes_are_written_names_the_index_and_leaves_nothing_half_written(tiny_data, tmp_path, tmpfs):
    """The store whole, the disk full while the indexes are written: one line naming the index, that the
    store is whole and that a rerun finishes it; no .partial left; after room is made, the rerun does."""
    study, _, images = _store_root(tiny_data, tmp_path)
    disk = tmpfs("64m")
    root = disk / "data"
    shutil.copytree(tmp_path / "data", root)
    args = ("--study", study.path, "db", "--store", "--data-root", root, "--images", images)
    assert tf(*args).exit_code == 0
    for index in root.glob("*/index"):
        shutil.rmtree(index)
    used = shutil.disk_usage(disk).used
    resize_tmpfs(disk, f"{used // 1024 + 24}k")
    r = tf(*args)
    assert r.exit_code == 1 and "writing the index failed" in r.output and "(the disk is full)" in r.output, r.output
    assert "the store is whole" in r.output and "run `tf db --store` again" in r.output and "/index" in r.output
    assert r.output.count("\n") == 1 or "exists, built from" in r.output
    assert not list(root.glob("*/*.partial")) and not list(root.glob("*/.*.tmp"))
    resize_tmpfs(disk, "64m")
    r = tf(*args)
    assert r.exit_code == 0, r.output
    assert all((d / "index" / "tf-index.json").is_file() for d in root.iterdir() if (d / "files.txt").is_file())
