import json
import os
import shutil

import pytest
from click.testing import CliRunner

from transferfeat.cli import main
from transferfeat.results import parse_root, summarize
from transferfeat.study import Study


@pytest.fixture(scope="session")
def cache_home(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def private_cache(cache_home, monkeypatch):
    """One parse cache for this module's tests, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_results_json_on_the_authors_logs(shared):
    r = run("results", "--root", shared / "results", "--format", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    with_logs = [d.name for d in (shared / "results").iterdir() if any(p.suffix == ".gz" for p in d.iterdir())]
    study = Study.load()
    assert sorted(data["nets"]) == sorted(with_logs)
    assert sorted(data["missing"]) == sorted(set(study.nets) - set(with_logs))
    assert all(study.net(m).family == "transfer-ft" for m in data["missing"])
    h = data["nets"]["half0A"]
    assert (h["iterations"], h["tests"], h["classes"], h["top1_last"]) == (450000, 450, 500, 0.614559)
    assert h["top1_best"] >= h["top1_top10_mean"] >= h["top1_last"]
    assert data["nets"]["netbase"]["classes"] == 1000
    assert set(data["series"]) == set(Study.load().series())
    s = data["series"]
    assert list(s["transfer_AnB"]) == [str(n) for n in range(1, 8)]
    # The paper's findings, read off the authors' own logs.
    assert abs(s["baseB"]["0"] - 0.625) < 0.002
    assert s["transfer_AnB"]["7"] < s["selffer_BnB"]["7"] < s["baseB"]["0"]
    assert s["transfer_AnB_plus"]["7"] > s["baseB"]["0"]
    assert s["natman_to_natural"]["7"] < s["natman_to_natural"]["0"]
    assert list(s["reduced"])[-1] == "1300"
    mean8 = sum(data["nets"][f"half{i}{x}"]["top1_top10_mean"] for i in range(4) for x in "AB") / 8
    assert s["baseB"]["0"] == pytest.approx(mean8)


def test_other_formats_and_compare(shared):
    r = run("results", "--root", shared / "results", "--format", "csv")
    lines = r.output.splitlines()
    assert lines[0].startswith("net,iterations,tests,classes,top1_last") and len(lines) == 149
    md = run("results", "--root", shared / "results", "--format", "markdown").output
    assert md.startswith("| net | iterations") and "| half0A | 450000 | 450 | 500 | 0.6146 |" in md
    table = run("results", "--root", shared / "results").output
    assert "22 nets without logs" in table and "transfer_AnB" in table
    cmp = json.loads(run("results", "--root", shared / "results", "--compare", shared / "results",
                         "--format", "json").output)
    assert len(cmp) > 40 and all(row["diff"] == 0 for row in cmp)


def test_cache_is_used_and_invalidated(tmp_path, cache_home):
    root = tmp_path / "results"
    (root / "half0A").mkdir(parents=True)
    log = root / "half0A" / "tf-train-20260101-000000.log"
    shutil.copy(os.path.join(os.path.dirname(__file__), "fixtures", "caffe1_train.log"), log)
    study = Study.load()
    first = summarize(study, parse_root(study, root))
    assert first["nets"]["half0A"]["top1_last"] == 1.0 and first["nets"]["half0A"]["iterations"] == 600
    from transferfeat.results import _cache_path
    assert _cache_path(root).is_file() and str(cache_home) in str(_cache_path(root))
    log.write_text(log.read_text().replace("accuracy = 1\n", "accuracy = 0.5\n"))
    os.utime(log, ns=(1, 1))
    assert summarize(study, parse_root(study, root))["nets"]["half0A"]["top1_last"] == 0.5
    assert summarize(study, parse_root(study, root, use_cache=False))["nets"]["half0A"]["top1_last"] == 0.5


def test_plot_writes_every_figure(shared, tmp_path):
    r = run("plot", "--root", shared / "results", "--out", tmp_path / "figs", "--image-format", "png,pdf")
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "figs").iterdir())
    stems = ["fig2_top", "fig2_bottom", "fig2_bottom_annotated", "fig3", "reduced"]
    assert names == sorted(f"{s}.{e}" for s in stems for e in ("png", "pdf"))
    assert all((tmp_path / "figs" / n).stat().st_size > 5000 for n in names)
    study = Study.load()
    with_logs = [d for d in (shared / "results").iterdir() if any(p.suffix == ".gz" for p in d.iterdir())]
    assert f"{len(study.nets) - len(with_logs)} of {len(study.nets)} nets have no logs yet" in r.output
    r = run("plot", "--root", shared / "results", "--out", tmp_path / "c", "curves", "half0A", "transfer-ft0A0B_1_6")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["curves_half0A.png", "curves_transfer-ft0A0B_1_6.png"]


def test_plot_compare_and_partial(shared, tmp_path):
    part = tmp_path / "partial"
    for net in ("half0A", "half0B", "transfer0A0B_1_3", "transfer-ft0A0A_1_2"):
        shutil.copytree(shared / "results" / net, part / net, symlinks=True)
    r = run("plot", "--root", part, "--out", tmp_path / "figs", "--compare", shared / "results")
    assert r.exit_code == 0, r.output
    total = len(Study.load().nets)
    assert f"{total - 4} of {total} nets have no logs yet" in r.output
    assert (tmp_path / "figs" / "fig2_bottom.png").stat().st_size > 5000


def test_plot_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["plot", "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "f")])
    assert r.exit_code == 1 and "no net of study 'paper' has logs" in r.output
    r = CliRunner().invoke(main, ["results", "--root", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "does not exist" in r.output
    r = CliRunner().invoke(main, ["plot", "--root", str(tmp_path), "--image-format", "gif"])
    assert r.exit_code == 2
