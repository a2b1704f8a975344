import hashlib

import pytest
from click.testing import CliRunner

from transferfeat.cli import main
from transferfeat.errors import Error
from transferfeat.families import random_halves
from transferfeat.splits import make_splits, published_md5s, read_list
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
