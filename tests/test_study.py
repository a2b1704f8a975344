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


def test_units_are_caffenets_layers_without_cuts(paper):
    assert paper.arch.units == tuple((l.name,) for l in paper.arch.learnable)
    net = paper.net("transfer0A0B_1_3")
    assert net.frozen(paper.arch) == ("conv1", "conv2", "conv3")
    assert net.renamed(paper.arch) == ("conv4", "conv5", "fc6", "fc7", "fc8")


@pytest.mark.parametrize("base,units,nets", [("mini-resnet", 5, 107), ("resnet18", 10, 212)])
def test_residual_studies_cut_into_units(base, units, nets):
    study = Study.load(base)
    arch = study.arch
    assert len(arch.units) == units and len(arch.cuts) == units - 1 and len(study.nets) == nets
    assert arch.units[-1] == (arch.layers[-1].name,)                          # the classifier, always new
    first = arch.units[0]
    assert first[0] == "conv1" and {"bn_conv1", "scale_conv1"} <= set(first)
    block = arch.units[arch.cuts.index("res3a")]                               # projection and two convs
    assert [n for n in block if n.startswith("res")] == ["res3a_branch1", "res3a_branch2a", "res3a_branch2b"]
    assert sum(n.startswith("bn") for n in block) == 3 and sum(n.startswith("scale") for n in block) == 3
    n2 = study.net("transfer0A0B_1_2")
    assert n2.frozen(arch) == arch.units[0] + arch.units[1]
    assert n2.renamed(arch) == sum(arch.units[2:], ())
    assert study.net("transfer-ft0A0B_1_2").frozen(arch) == ()


def _residual(edit):
    def go(s):
        s["architecture"]["layers"] = [
            {"name": "conv1", "type": "conv", "num_output": 8, "kernel": 3, "pad": 1, "bias_term": False, "weight_std": 0.1},
            {"name": "bn1", "type": "batchnorm"},
            {"name": "scale1", "type": "scale", "bias_term": True},
            {"name": "relu1", "type": "relu"},
            {"name": "conv2", "type": "conv", "num_output": 8, "kernel": 3, "pad": 1, "weight_std": 0.1, "bias": 0},
            {"name": "sum2", "type": "eltwise", "bottom": ["relu1", "conv2"]},
            {"name": "fc", "type": "innerproduct", "num_output": 20, "weight_std": 0.01, "bias": 0}]
        s["architecture"]["cuts"] = ["relu1", "sum2"]
        for fam in ("nolearn", "transfer", "transfer-ft", "transfernatman"):
            s["families"][fam]["depths"] = [1, 2]
        edit(s)
    return go


@pytest.mark.parametrize("edit,expect", [
    (lambda s: None, None),
    (lambda s: s["architecture"].pop("cuts"), "architecture.cuts: missing key (an architecture with batchnorm"),
    (lambda s: set_key(s, "architecture.cuts", ["sum2", "relu1"]), "architecture.cuts: sum2, relu1 are not in the layers' order"),
    (lambda s: set_key(s, "architecture.cuts", ["relu9"]), "architecture.cuts[0]: 'relu9' is not a layer"),
    (lambda s: set_key(s, "architecture.cuts", ["relu1", "conv2", "sum2"]), "architecture.cuts[2]: unit 3 (up to sum2) holds no layer with weights"),
    (lambda s: set_key(s, "architecture.layers.5.bottom", ["relu1", "fc"]), "architecture.layers[5].bottom: 'fc' is not a layer before sum2"),
    (lambda s: set_key(s, "architecture.layers.5.bottom", "relu1"), "architecture.layers[5]: a eltwise layer reads 2 or more layers' outputs, not 1"),
    (lambda s: set_key(s, "architecture.layers.3.bottom", ["conv1", "bn1"]), "architecture.layers[3]: a relu layer reads 1 layers' outputs, not 2"),
    (lambda s: set_key(s, "architecture.layers.5.bottom", 3), "architecture.layers[5].bottom: expected a layer name or a list"),
    (lambda s: set_key(s, "architecture.layers.0.bias_term", "no"), "architecture.layers[0].bias_term: 'no' is not true or false"),
    (lambda s: set_key(s, "architecture.layers.5.coeff", [1, "x"]), "architecture.layers[5].coeff: [1, 'x'] is not a list of numbers"),
    (lambda s: set_key(s, "families.transfer.depths", [3]), "families.transfer.depths[0]: 3 is not in 1..2"),
])
def test_graph_architectures_are_checked(tmp_path, edit, expect):
    path = write_study(tmp_path, _residual(edit))
    if expect is None:
        study = Study.load(path)
        assert study.arch.units == (("conv1", "bn1", "scale1"), ("conv2",), ("fc",))
        assert study.arch.layers[5].bottoms == ("relu1", "conv2")
        return
    with pytest.raises(StudyError) as e:
        Study.load(path)
    assert expect in str(e.value)
