import hashlib
import shutil
import re

import pytest
from click.testing import CliRunner

from transferfeat.cli import main
from transferfeat.errors import Error
from transferfeat.families import random_halves
from transferfeat.splits import folder_lists, make_splits, published_md5s, read_list
from transferfeat.study import Study


def test_validation_lists_match_the_paper(shared, tmp_path, paper):
    written, skipped = make_splits(paper, shared / "ilsvrc12" / "data", tmp_path)
    assert len(written) == 11 and all(w.verdict == "matches the paper" for w in written)
    assert skipped and "whole_train" in skipped[0]
    md5 = published_md5s()
    for w in written:
        assert hashlib.md5(w.path.read_bytes()).hexdigest() == md5[w.dataset]
    assert (tmp_path / "half0A_valid" / "idxmap.txt").read_text().startswith("# Orig_idx new_idx\n")
    assert sum(1 for _ in open(tmp_path / "halfnatmanA_valid" / "files.txt")) == 449 * 50


def test_random_halves_use_the_legacy_seeded_rng():
    a, b = random_halves(0, 1000)
    assert len(a) == len(b) == 500 and sorted(a + b) == list(range(1000)) and a == sorted(a)
    assert random_halves(0, 1000) == (a, b) and random_halves(1, 1000)[0] != a


def _train_list(tmp_path, lines):
    d = tmp_path / "src" / "whole_train"
    d.mkdir(parents=True)
    (d / "files.txt").write_text("".join(lines))
    return tmp_path / "src"


def test_train_side_rules_on_a_synthetic_list(tmp_path):
    study = Study.load("mini")                 # 20 classes, reduced sets up to 500 per class
    lines = [f"c{c}/img{i}.JPEG {c}\n" for i in range(6) for c in range(20)]   # interleaved classes
    src = _train_list(tmp_path, lines)
    written, skipped = make_splits(study, src, tmp_path / "out")
    assert {w.verdict for w in written} == {"no published md5"}
    assert skipped == [f"whole_valid: {src}/whole_valid/files.txt not found, so no valid lists were made"]
    out = tmp_path / "out"
    a, _ = random_halves(0, 20)
    got = (out / "half0A_train" / "files.txt").read_text().splitlines()
    want = [f"{l.split()[0]} {a.index(int(l.split()[1]))}" for l in lines if int(l.split()[1]) in a]
    assert got == want                         # input order kept, relabelled by rank within the half
    idx = (out / "half0A_train" / "idxmap.txt").read_text().splitlines()
    assert idx[0] == "# Orig_idx new_idx" and idx[1:] == [f"{c} {i}" for i, c in enumerate(a)]
    nat = (out / "halfnatmanB_train" / "files.txt").read_text().splitlines()
    assert nat[0] == "c9/img0.JPEG 0" and len(nat) == 11 * 6
    red = (out / "reduced0002_train" / "files.txt").read_text().splitlines()
    assert red == [l.rstrip("\n") for l in lines[:40]]      # the first 2 of each class, labels unchanged
    assert (out / "whole_train" / "files.txt").read_text() == "".join(lines)
    assert not (out / "reduced0120_train").exists()          # 120 per class is the whole set


@pytest.mark.parametrize("line,msg", [
    ("a.JPEG\n", "expected 'FILE LABEL'"),
    ("a.JPEG x\n", "label 'x' is not an integer"),
    ("a.JPEG 20\n", "label 20 is out of range 0..19"),
    ("a.JPEG -1\n", "label -1 is out of range"),
    ("first.JPEG 1\n", "duplicate file 'first.JPEG' \\(first on line 1\\)"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, msg):
    p = tmp_path / "files.txt"
    p.write_text("first.JPEG 1\nsecond.JPEG 2\n" + line)
    with pytest.raises(Error, match=f"{p}:3: {msg}"):
        read_list(p, 20)


def test_split_cli_warns_loudly_on_mismatch(shared, tmp_path):
    src = tmp_path / "src" / "whole_valid"
    src.mkdir(parents=True)
    text = (shared / "ilsvrc12" / "data" / "whole_valid" / "files.txt").read_text()
    (src / "files.txt").write_text(text.replace("ILSVRC2012_val_00000001.JPEG 65", "ILSVRC2012_val_00000001.JPEG 66"))
    r = CliRunner().invoke(main, ["split", "--source", str(tmp_path / "src"), "--data-root", str(tmp_path / "out")])
    assert r.exit_code == 0
    assert "MISMATCH" in r.output and "differ from the paper's" in r.output
    assert "half1A_valid" in r.output


def test_split_cli_without_inputs_fails(tmp_path):
    r = CliRunner().invoke(main, ["split", "--source", str(tmp_path), "--data-root", str(tmp_path / "out")])
    assert r.exit_code == 1 and "no list written" in r.output


def _folder_study(tmp_path, classes=4):
    from conftest import folder_study
    return Study.load(folder_study(tmp_path, classes))


def test_a_class_folder_becomes_the_study_lists_with_held_out_validation(tmp_path):
    from conftest import class_folder
    img = class_folder(tmp_path / "img", per_class=10)
    (img / "ant_1" / "notes.txt").write_text("not an image")
    (img / "ant_1" / "empty.jpg").write_bytes(b"")
    study = _folder_study(tmp_path)
    f = folder_lists(img, tmp_path / "data", 4, valid_fraction=0.2, seed=3)
    assert f.classes == ["ant_1", "cat_3", "owl_2", "zebra_0"] and f.held_out        # labels by sorted name
    assert (f.train, f.valid) == (32, 8) and sorted(f.skipped) == ["ant_1/empty.jpg: empty file",
                                                                   "ant_1/notes.txt: not an image file name"]
    train = read_list(tmp_path / "data" / "whole_train" / "files.txt", 4)
    valid = read_list(tmp_path / "data" / "whole_valid" / "files.txt", 4)
    assert not {e.path for e in train} & {e.path for e in valid}
    assert all(e.path.startswith(f.classes[e.label] + "/") for e in train + valid)
    assert [sum(e.label == c for e in valid) for c in range(4)] == [2, 2, 2, 2]
    assert (tmp_path / "data" / "classes.txt").read_text().split() == f.classes
    first = (tmp_path / "data" / "whole_valid" / "files.txt").read_text()
    folder_lists(img, tmp_path / "again", 4, valid_fraction=0.2, seed=3)
    assert (tmp_path / "again" / "whole_valid" / "files.txt").read_text() == first            # seeded
    folder_lists(img, tmp_path / "other", 4, valid_fraction=0.2, seed=4)
    assert (tmp_path / "other" / "whole_valid" / "files.txt").read_text() != first
    written, _ = make_splits(study, tmp_path / "data", tmp_path / "data")
    assert {w.dataset for w in written} >= {"half0A_train", "half0A_valid", "half0B_train", "half0B_valid"}
    half = read_list(tmp_path / "data" / "half0A_train" / "files.txt", 2)
    assert len(half) == 16 and {e.label for e in half} == {0, 1}


def test_a_val_folder_gives_the_validation_images(tmp_path):
    from conftest import class_folder
    img = class_folder(tmp_path / "img", per_class=3, val_per_class=2)
    f = folder_lists(img, tmp_path / "data", 4)
    assert not f.held_out and (f.train, f.valid) == (12, 8)
    valid = read_list(tmp_path / "data" / "whole_valid" / "files.txt", 4)
    assert all(e.path == f"val/{f.classes[e.label]}/img00{i % 2}.jpg" for i, e in enumerate(valid))


@pytest.mark.parametrize("make, msg", [
    (lambda d: (d / "cat").mkdir() or (d / "dog").mkdir() or (d / "dog" / "a.jpg").write_bytes(b"x"),
     "cat: no images in this class folder"),
    (lambda d: [(d / c).mkdir() or (d / c / "a.jpg").write_bytes(b"x") for c in ("train", "dog")], "may not be named 'train'"),
    (lambda d: (d / "dog").mkdir() or (d / "dog" / "a.jpg").write_bytes(b"x"), "1 class folder(s); a study needs at least 2"),
    (lambda d: [(d / c).mkdir() or (d / c / "a.jpg").write_bytes(b"x") for c in ("a", "b", "c")], "3 class folders, but the study's datasets.classes is 2"),
    (lambda d: [(d / c).mkdir() or (d / c / "a.jpg").write_bytes(b"x") for c in ("a", "b")], "a: 1 image; holding out"),
    (lambda d: [(d / c).mkdir() or (d / c / "a.jpg").write_bytes(b"x") for c in ("a", "b", "val", "val/a")], "val/b: no validation images"),
    (lambda d: [(d / c).mkdir() or (d / c / "a.jpg").write_bytes(b"x") for c in ("a", "b", "val", "val/c")], "val/c: a validation class with no training folder"),
])
def test_bad_class_folders_get_a_clear_error(tmp_path, make, msg):
    d = tmp_path / "img"
    d.mkdir()
    make(d)
    with pytest.raises(Error, match=re.escape(msg)):
        folder_lists(d, tmp_path / "data", 2)
    assert not (tmp_path / "data" / "whole_train").exists()            # nothing half-written


def test_split_cli_takes_a_class_folder(tmp_path):
    from conftest import class_folder
    img = class_folder(tmp_path / "img", per_class=5)
    (img / "owl_2" / "x.txt").write_text("")
    study = _folder_study(tmp_path)
    r = CliRunner().invoke(main, ["--study", str(study.path), "split", "--folder", str(img), "--data-root",
                                  str(tmp_path / "data"), "--valid-fraction", "0.4"])
    assert r.exit_code == 0, r.output
    assert "4 classes, 12 train images, 8 validation images (held out of each class), 1 files skipped" in r.output
    assert "half0A_train" in r.output and "skipped" in r.output and "owl_2/x.txt" in r.output
    r = CliRunner().invoke(main, ["split", "--folder", str(img), "--source", str(img)])
    assert r.exit_code == 2 and "not both" in r.output


def _split_cli(study, img, data):
    return CliRunner().invoke(main, ["--study", str(study.path), "split", "--folder", str(img), "--data-root", str(data)])


@pytest.mark.parametrize("name", [b"caf\xe9", b"new\nline", b"tab\tname"])
def test_a_class_name_a_list_cannot_hold_is_one_line_naming_it(tmp_path, name):
    """A class folder whose name is not UTF-8 (Latin-1 bytes) or holds a control character: one line naming
    the folder (escaped), exit 1, no traceback, no list written."""
    import os
    from conftest import class_folder
    img = class_folder(tmp_path / "img", per_class=3)
    os.rename(img / "owl_2", os.fsencode(img) + b"/" + name)
    r = _split_cli(_folder_study(tmp_path), img, tmp_path / "data")
    assert r.exit_code == 1 and r.exception.__class__ is SystemExit, r.output
    assert r.output.count("\n") == 1 and "cannot go in a list file" in r.output
    assert repr(name.decode("latin-1"))[1:-1].replace("\\xe9", "\\xe9") in r.output or "\\xe9" in r.output
    assert not (tmp_path / "data" / "whole_train").exists()


def test_files_whose_names_a_list_cannot_hold_and_broken_links_are_counted_skips(tmp_path):
    import os
    from conftest import class_folder
    img = class_folder(tmp_path / "img", per_class=3)
    shutil.copy(img / "owl_2" / "img000.jpg", os.fsencode(img / "owl_2") + b"/na\xefve.jpg")
    (img / "owl_2" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    f = folder_lists(img, tmp_path / "data", 4, valid_fraction=0.34)
    assert (f.train, f.valid) == (8, 4)
    assert sorted(f.skipped) == ["owl_2/gone.jpg: a broken link (No such file or directory)",
                                 "owl_2/na\\xefve.jpg: a name a list file cannot hold (not UTF-8, white space or "
                                 "control characters)"]


@pytest.mark.parametrize("link, msg", [
    (lambda img: (img / "cow_9").symlink_to(img), "cow_9 links back to"),                            # the folder itself
    (lambda img: (img / "owl_2" / "up").symlink_to(img), "owl_2/up links back to"),                  # inside a class
    (lambda img: (img / "owl_2" / "ants").symlink_to(img / "ant_1"), "would be labelled both 'owl_2' and 'ant_1'"),
    (lambda img: (img / "owl_2" / "x.jpg").symlink_to(img / "cat_3" / "img000.jpg"), "would be labelled both"),
    (lambda img: (img / "val" / "owl_2").mkdir(parents=True) or (img / "val" / "owl_2" / "v.jpg").symlink_to(
        img / "owl_2" / "img000.jpg"), "is also a training image"),
])
def test_a_link_that_would_give_an_image_a_second_label_is_an_error(tmp_path, link, msg):
    """Links back into the image folder, or to another class's folder or file, or a validation image that is
    a training image: one line naming the link, never a silent wrong label."""
    from conftest import class_folder
    img = class_folder(tmp_path / "img", per_class=3, classes=4)
    if "cow_9" in msg:                                        # the linked class replaces one, so still 4 classes
        shutil.rmtree(img / "zebra_0")
    if "training image" in msg:
        for c in ("ant_1", "cat_3", "zebra_0"):
            (img / "val" / c).mkdir(parents=True)
            shutil.copy(img / c / "img000.jpg", img / "val" / c / "v.jpg")
    link(img)
    with pytest.raises(Error, match=re.escape(msg)):
        folder_lists(img, tmp_path / "data", 4, valid_fraction=0.34)
    assert not (tmp_path / "data" / "whole_train").exists()


def test_a_class_folder_that_is_a_link_elsewhere_is_read_once(tmp_path):
    """A class folder kept on another disk (a link out of the image folder) is an ordinary class; a link
    inside a class to its own sub-folder reads those images once."""
    from conftest import class_folder
    img = class_folder(tmp_path / "img", per_class=3)
    shutil.move(img / "owl_2", tmp_path / "elsewhere")
    (img / "owl_2").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "sub").mkdir()
    shutil.copy(img / "cat_3" / "img000.jpg", tmp_path / "elsewhere" / "sub" / "s.jpg")
    (tmp_path / "elsewhere" / "again").symlink_to(tmp_path / "elsewhere" / "sub")
    f = folder_lists(img, tmp_path / "data", 4, valid_fraction=0.25)
    assert f.train + f.valid == 13 and f.skipped == ["owl_2/sub: the same as owl_2/again (a link), read once"]
