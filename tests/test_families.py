"""The family registry: a family defined here, in the test (one class plus its YAML section), gets
nets, datasets, rendering, planning and figure series without touching any other module."""
import json
import os
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from conftest import write_study
from transferfeat import families
from transferfeat.cli import main
from transferfeat.families import Dataset, Family, register
from transferfeat.folder import StudyFolder
from transferfeat.plan import estimate, schedule
from transferfeat.render import Renderer
from transferfeat.logcache import parse_root
from transferfeat.results import summarize
from transferfeat.splits import make_splits
from transferfeat.state import states
from transferfeat.study import Study, StudyError


@dataclass(frozen=True)
class CopiesOptions:
    depths: tuple[int, ...]
    per_class: int


@pytest.fixture
def copies():
    """Registers `copies`: netbase's layers 1..n copied and fine-tuned on the first K images per class."""
    @register
    class Copies(Family):
        key, config, series, needs = "copies", CopiesOptions, ("copies_ft",), ("netbase",)

        def check(self):
            if self.cfg.per_class < 1:
                raise self.error("per_class", "must be positive")

        def datasets(self):
            yield Dataset(f"first{self.cfg.per_class}_train", "train", per_class=self.cfg.per_class)

        def nets(self):
            for n in self.cfg.depths:
                yield self.net(f"copies_1_{n}", f"first{self.cfg.per_class}_train", "whole_valid", base="netbase",
                               n=n, fine_tune=True, mean="whole_train", series="copies_ft", x=n)
    yield Copies
    families.REGISTRY.pop("copies")


def study_file(tmp_path, families: dict):
    return write_study(tmp_path, lambda s: s.update(families=families))


def caffe1_log(accuracies: dict) -> str:
    """Caffe 1.0 log lines with one test round per (iteration, accuracy)."""
    out = []
    for it, acc in accuracies.items():
        out += [f"I0101 00:00:{it % 60:02d}.000000 1 solver.cpp:218] Iteration {it} (1 iter/s, 1s/20 iters), loss = 1.5",
                f"I0101 00:00:{it % 60:02d}.000000 1 solver.cpp:330] Iteration {it}, Testing net (#0)",
                f"I0101 00:00:{it % 60:02d}.000000 1 solver.cpp:397]     Test net output #0: accuracy = {acc}",
                f"I0101 00:00:{it % 60:02d}.000000 1 solver.cpp:397]     Test net output #1: loss = 1.2 (* 1 = 1.2 loss)"]
    return "\n".join(out) + "\n"


def test_a_family_defined_in_a_test_gets_everything(copies, tmp_path, synth_dir):
    study = Study.load(study_file(tmp_path, {"netbase": {}, "copies": {"depths": [2, 5], "per_class": 3}}))
    # nets and datasets
    assert [n.name for n in study.nets.values()] == ["netbase", "copies_1_2", "copies_1_5"]
    net = study.net("copies_1_5")
    assert (net.family, net.base, net.classes, net.series, net.x) == ("copies", "netbase", 20, "copies_ft", 5)
    assert study.datasets() == ["first3_train", "whole_train", "whole_valid"]
    assert study.series() == ["random_frozen", "copies_ft"]
    written, _ = make_splits(study, synth_dir, tmp_path / "data")
    lines = (tmp_path / "data" / "first3_train" / "files.txt").read_text().splitlines()
    assert {w.dataset for w in written} == {"whole_train", "whole_valid", "first3_train"} and len(lines) == 20 * 3
    # rendering: base link, renamed layers after n, nothing frozen (fine-tuned)
    root = tmp_path / "results"
    Renderer(study).render_all(study.nets.values(), root, tmp_path / "data")
    assert os.readlink(root / "copies_1_5" / "basenet") == "../netbase"
    train = (root / "copies_1_5" / "imagenet_train.prototxt").read_text()
    assert '"fc6-new"' in train and '"conv5-new"' not in train and "lr_mult: 0" not in train
    assert os.readlink(root / "copies_1_2" / "imagenet_train_lmdb").endswith("first3_train/lmdb")
    # planning
    folder = StudyFolder(root, study)
    plan = schedule(study, study.select(["copies_*"]), states(folder, study.select(["copies_*"])))
    assert plan.blocked == {"copies_1_2": ("netbase", "neither done, selected nor running elsewhere"),
                            "copies_1_5": ("netbase", "neither done, selected nor running elsewhere")}
    plan = schedule(study, list(study.nets.values()), states(folder, list(study.nets.values())))
    assert [n.name for n in plan.order][0] == "netbase" and plan.after["copies_1_5"] == "netbase"
    (one, _), (many, _) = estimate(study, list(study.nets.values()), [1, 8], 1.0)
    assert one.makespan == 3.0 and many.makespan == 2.0             # netbase, then both copies at once
    data = json.loads(CliRunner().invoke(main, ["--study", str(study.path), "plan", "--format", "json"]).output)
    assert data["requires"]["copies_1_2"] == ["netbase"]
    # figure series from the logs
    for name, acc in (("netbase", 0.5), ("copies_1_2", 0.4), ("copies_1_5", 0.3)):
        (root / name / "tf-train-20260101-000000-00.log").write_text(caffe1_log({100: acc, 200: acc}))
    summary = summarize(study, parse_root(study, root, use_cache=False))
    assert summary["series"] == {"random_frozen": {"0": 0.5}, "copies_ft": {"2": 0.4, "5": 0.3}}


def test_a_family_without_its_base_family_is_an_error(copies, tmp_path):
    with pytest.raises(StudyError, match=r"families\.copies: needs families\.netbase"):
        Study.load(study_file(tmp_path, {"copies": {"depths": [2], "per_class": 3}}))
    with pytest.raises(StudyError, match=r"families\.copies\.per_class: must be positive"):
        Study.load(study_file(tmp_path, {"netbase": {}, "copies": {"depths": [2], "per_class": 0}}))
    with pytest.raises(StudyError, match=r"families\.copies\.depths\[0\]: expected int"):
        Study.load(study_file(tmp_path, {"netbase": {}, "copies": {"depths": ["two"], "per_class": 3}}))


def test_paper_transfer_family_without_half_names_both(tmp_path):
    path = write_study(tmp_path, lambda s: s["families"].pop("half"))
    with pytest.raises(StudyError, match=r"families\.transfer: needs families\.half"):
        Study.load(path)


@pytest.mark.parametrize("study", ["paper", "mini"])
def test_every_registered_family_of_the_shipped_studies(study):
    """Counts come from the study itself: every family's nets are in the catalog, on datasets that exist."""
    s = Study.load(study)
    made = [n.name for fam in s.families for n in fam.nets()]
    assert sorted(made) == sorted(s.nets) and len(set(made)) == len(made)
    assert {f.key for f in s.families} == set(families.REGISTRY) - {"copies"}
    for net in s.nets.values():
        assert net.series in s.series() and {net.train, net.valid, net.mean} <= set(s.dataset_specs)
