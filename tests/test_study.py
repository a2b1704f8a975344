import collections
import textwrap

import pytest
from click.testing import CliRunner

from conftest import set_key, write_study
from transferfeat.cli import main
from transferfeat.study import Study, StudyError


def test_catalog_counts(paper):
    fams = collections.Counter(n.family for n in paper.nets.values())
    assert len(paper.nets) == 170
    assert sum(n.paper for n in paper.nets.values()) == 163
    assert fams == {"half": 8, "halfnatman": 2, "netbase": 1, "reduced": 12, "nolearn": 7,
                    "transfer": 84, "transfer-ft": 42, "transfernatman": 14}


def test_globs_and_names(paper):
    assert len(paper.select(["transfer-ft*"])) == 42
    assert [n.name for n in paper.select(["reduced-00[01]?"])] == [
        "reduced-0001", "reduced-0002", "reduced-0005", "reduced-0010"]
    assert {n.name for n in paper.select(["half0A", "netbase"])} == {"half0A", "netbase"}
    assert len(paper.datasets()) == 33


def test_unknown_net_suggests_close_matches(paper):
    with pytest.raises(StudyError, match=r"unknown net 'transfer0A0B_1_9'.*did you mean .*transfer0A0B_1_"):
        paper.net("transfer0A0B_1_9")
    with pytest.raises(StudyError, match="no net of study 'paper' matches 'zzz\\*'"):
        paper.select(["zzz*"])


@pytest.mark.parametrize("name", list(Study.load().nets))
def test_every_net_is_consistent(paper, name):
    net = paper.net(name)
    learnable = [l.name for l in paper.arch.learnable]
    if net.base:
        base = paper.net(net.base)
        assert net.requires == (base.name,)
        assert net.mean == base.train           # a transfer net subtracts its base net's mean
        assert list(net.renamed(paper.arch)) == learnable[net.n:]
        assert base.classes == net.classes or net.family == "transfernatman"
    else:
        assert net.requires == () and net.renamed(paper.arch) == ()
        assert net.mean == net.train
    frozen = list(net.frozen(paper.arch))
    if net.fine_tune or not net.n:
        assert frozen == []
    else:
        assert frozen == learnable[: net.n]
    assert net.train.endswith("_train") and net.valid.endswith("_valid")


def test_specific_nets(paper):
    t = paper.net("transfer2B2A_1_5")
    assert (t.base, t.train, t.valid, t.n, t.classes) == ("half2B", "half2A_train", "half2A_valid", 5, 500)
    assert paper.net("transfernatmanAB_1_3").classes == 551
    assert paper.net("halfnatmanA").classes == 449
    r = paper.net("reduced-1300")
    assert (r.train, r.solver) == ("whole_train", "reduced")
    assert paper.net("reduced-0025").train == "reduced0025_train"
    assert paper.max_iter(r) == 200000 and paper.max_iter(paper.net("half0A")) == 450000


def _write(tmp_path, text):
    p = tmp_path / "study.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def rename(data: dict, dotted: str, new: str) -> None:
    """Rename the key at ``dotted`` (a.b.c) to ``new``, keeping its place."""
    *path, last = dotted.split(".")
    for key in path:
        data = data[int(key)] if isinstance(data, list) else data[key]
    items = list(data.items())
    data.clear()
    data.update((new if k == last else k, v) for k, v in items)


def test_bad_study_names_the_key_path(tmp_path):
    with pytest.raises(StudyError) as e:
        Study.load(write_study(tmp_path, lambda s: rename(s, "solvers.default.base_lr", "base_lrr"), base="paper"))
    msg = str(e.value)
    assert "study.yaml" in msg and "solvers.default.base_lrr: unknown key" in msg and "base_lr" in msg


@pytest.mark.parametrize("edit,expect", [
    (lambda s: set_key(s, "input.crop", "big"), "input.crop: expected int"),
    (lambda s: rename(s, "families.transfer", "transfr"), "families.transfr: unknown key (valid keys: half, halfnatman"),
    (lambda s: set_key(s, "architecture.layers.1.type", "relux"), "architecture.layers[1].type: unknown layer type"),
    (lambda s: set_key(s, "architecture.layers.1.pad", 1), "architecture.layers[1].pad: unknown key"),
    (lambda s: set_key(s, "families.nolearn.depths", [1, 9]), "families.nolearn.depths[1]: 9"),
    (lambda s: set_key(s, "families.reduced.solver", "fast"), "families.reduced.solver: unknown solver 'fast'"),
])
def test_bad_study_values(tmp_path, edit, expect):
    with pytest.raises(StudyError, match=expect.replace("[", r"\[").replace("(", r"\(")):
        Study.load(write_study(tmp_path, edit, base="paper"))


def test_missing_and_unparsable_study(tmp_path):
    with pytest.raises(StudyError, match="nope.yaml"):
        Study.load(tmp_path / "nope.yaml")
    with pytest.raises(StudyError, match="study.yaml"):
        Study.load(_write(tmp_path, "name: [unclosed\n"))


def test_mini_study_has_the_same_design(mini, paper):
    assert len(mini.nets) == len(paper.nets)
    assert [n.family for n in mini.nets.values()] == [n.family for n in paper.nets.values()]
    assert [l.name for l in mini.arch.learnable] == [l.name for l in paper.arch.learnable]


@pytest.mark.parametrize("key,value,expect", [
    ("solvers.default.max_iter", 0, "solvers.default.max_iter: 0 must be positive"),
    ("architecture.layers.0.num_output", -3, "architecture.layers[0].num_output: -3 is not a positive integer"),
    ("solvers.default.base_lr", -0.01, "solvers.default.base_lr: -0.01 must be a positive number"),
    ("input.crop", 0, "input.crop: 0 must be positive"),
    ("families.half.seeds", [0, -1], "families.half.seeds[1]: -1 is not a seed"),
])
def test_study_numbers_in_range(tmp_path, key, value, expect):
    path = write_study(tmp_path, lambda s: set_key(s, key, value), name="s.yaml")
    r = CliRunner().invoke(main, ["--study", str(path), "list"])
    assert r.exit_code == 1 and expect in r.output and "s.yaml" in r.output
