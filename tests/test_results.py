import json
import os
import shutil

import numpy as np

import pytest
from click.testing import CliRunner

from conftest import tf as run
from transferfeat.cli import main
from transferfeat.logcache import parse_root
from transferfeat.results import summarize
from transferfeat.study import Study


@pytest.fixture(scope="session")
def cache_home(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def private_cache(cache_home, monkeypatch):
    """One parse cache for this module's tests, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))



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
    assert "22 nets without logs" in table and "transfer AnB" in table and "top-1 accuracy by n" in table
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
    speed = first["nets"]["half0A"]["images_per_second"]
    assert speed > 0 and summarize(study, parse_root(study, root))["nets"]["half0A"]["images_per_second"] == speed
    from transferfeat.logcache import _cache_path
    assert _cache_path(root).is_file() and str(cache_home) in str(_cache_path(root))
    log.write_text(log.read_text().replace("accuracy = 1\n", "accuracy = 0.5\n"))
    os.utime(log, ns=(1, 1))
    assert summarize(study, parse_root(study, root))["nets"]["half0A"]["top1_last"] == 0.5
    assert summarize(study, parse_root(study, root, use_cache=False))["nets"]["half0A"]["top1_last"] == 0.5


def rows(path):
    """A figure's data file, past its provenance header (lines starting with "#")."""
    import csv
    return list(csv.DictReader(line for line in open(path) if not line.startswith("#")))


def test_plot_writes_every_figure_and_its_data(shared, tmp_path):
    r = run("plot", "--root", shared / "results", "--out", tmp_path / "figs", "--image-format", "png,pdf", "--build")
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "figs").iterdir())
    stems = ["fig2_top", "fig2_bottom", "fig2_bottom_annotated", "fig3", "reduced"]
    pres = [f"pres_{i:02d}" for i in range(7)]
    assert names == sorted([f"{s}.{e}" for s in stems + pres for e in ("png", "pdf", "csv")
                            if (s, e) != ("fig2_bottom_annotated", "csv")])    # fig2_bottom.csv holds both
    assert all((tmp_path / "figs" / n).stat().st_size > 5000 for n in names if not n.endswith(".csv"))
    study = Study.load()
    with_logs = [d for d in (shared / "results").iterdir() if any(p.suffix == ".gz" for p in d.iterdir())]
    assert f"{len(study.nets) - len(with_logs)} of {len(study.nets)} nets have no logs yet" in r.output
    for stem in stems:                                             # TrueType (Type 42) fonts, no Type 3
        pdf = (tmp_path / "figs" / f"{stem}.pdf").read_bytes()
        assert b"/FontFile2" in pdf and b"/Subtype /Type3" not in pdf, stem
    r = run("plot", "curves", "half0A", "transfer-ft0A0B_1_6", "--root", shared / "results", "--out", tmp_path / "c")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["curves_half0A.png", "curves_transfer-ft0A0B_1_6.png"]


def test_presentation_frames_build_up_as_the_authors_do(shared):
    """pres_00…06 as the authors' result_transfer_pres_*: nets, then means and regions, then BnB⁺, then AnB⁺."""
    import matplotlib.pyplot as plt
    from transferfeat.plots import PRES, fig2_top
    study = Study.load()
    summary = summarize(study, parse_root(study, shared / "results"))
    shown = []
    for points, lines in PRES:
        fig, data = fig2_top(study, summary, points=points, lines=lines)
        kinds = {(r[1], r[2]) for r in data.rows}
        shown.append(({s for s, k in kinds if k == "net"}, {s for s, k in kinds if k == "mean"},
                      {s for s, k in kinds if k == "region"}, fig.axes[0].get_ylim()))
        legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert fig.axes[0].get_legend()._loc == 3, legend                         # lower left, in every frame
        plt.close(fig)
    nets, means, regions, ylims = zip(*shown)
    bnb, anb, bnb_plus, anb_plus = "selffer_BnB", "transfer_AnB", "selffer_BnB_plus", "transfer_AnB_plus"
    assert nets == ({"baseB", bnb, anb}, {"baseB", bnb, anb}, set(), {bnb_plus}, set(), {anb_plus}, set())
    assert means == (set(), {bnb, anb}, {bnb, anb}, {bnb, anb}, {bnb, anb, bnb_plus}, {bnb, anb, bnb_plus},
                     {bnb, anb, bnb_plus, anb_plus})
    assert regions[1] == {"region 2", "region 4"} and regions[6] == {"region 2", "region 3", "region 4", "region 5"}
    assert len(set(ylims)) == 1                                   # one set of axes for every frame


def test_figure_data_are_the_notebooks_numbers(shared, tmp_path):
    """The written data files hold what the authors' notebook computed from the same logs."""
    assert run("plot", "--root", shared / "results", "--out", tmp_path).exit_code == 0
    means = {(r["series"], r["x"]): float(r["y"]) for r in rows(tmp_path / "fig2_bottom.csv") if r["kind"] == "mean"}
    assert abs(means[("transfer_AnB", "0")] - 0.625) < 0.002                 # the lines start at baseB
    assert abs(means[("transfer_AnB", "7")] - 0.542) < 0.001
    assert abs(means[("transfer_AnB_plus", "7")] - 0.646) < 0.002
    counts = {(r["series"], r["x"]): (r["nets"], r["of"]) for r in rows(tmp_path / "fig2_bottom.csv") if r["kind"] == "mean"}
    assert counts[("transfer_AnB", "7")] == ("8", "8") and counts[("selffer_BnB_plus", "1")] == ("1", "2")
    names = {(r["series"], r["x"]): r["net_names"] for r in rows(tmp_path / "fig2_bottom.csv") if r["kind"] == "mean"}
    assert names[("selffer_BnB_plus", "1")] == "transfer-ft0A0A_1_1"               # the net behind the point
    regions = {r["series"] for r in rows(tmp_path / "fig2_bottom.csv") if r["kind"] == "region"}
    assert regions == {"region 2", "region 3", "region 4", "region 5"}          # the paper's numbering
    assert not (tmp_path / "fig2_bottom_annotated.csv").exists()                 # one file for both figures
    head = [l for l in open(tmp_path / "fig2_bottom.csv") if l.startswith("#")]
    assert any("# source: " in l for l in head) and any("also drawn by: fig2_bottom_annotated" in l for l in head)
    rel = {(r["series"], r["x"]): float(r["y"]) for r in rows(tmp_path / "fig3.csv") if r["panel"] == "relative"}
    rel_counts = {(r["series"], r["x"]): (r["nets"], r["of"]) for r in rows(tmp_path / "fig3.csv") if r["panel"] == "relative"}
    assert rel_counts[("mean AnB, random splits", "7")] == ("8", "8") and rel_counts[("mean AnB, m/n split", "7")] == ("2", "2")
    assert abs(rel[("mean AnB, random splits", "7")] - (-0.083)) < 0.001        # acc - ref, not acc/ref - 1
    assert abs(rel[("mean AnB, m/n split", "7")] - (-0.25)) < 0.005
    nm = {(r["series"], r["x"]): float(r["y"]) for r in rows(tmp_path / "fig3.csv") if r["panel"] == "natman"}
    assert abs(nm[("natman_to_natural", "0")] - 0.653) < 0.001 and abs(nm[("natman_to_natural", "7")] - 0.399) < 0.001
    top = rows(tmp_path / "fig2_top.csv")
    study = Study.load()
    logged = [n for n in study.nets.values() if n.series in ("baseB", "selffer_BnB", "selffer_BnB_plus", "transfer_AnB",
                                                            "transfer_AnB_plus") and (shared / "results" / n.name).is_dir()
              and any(p.suffix == ".gz" and p.stat().st_size for p in (shared / "results" / n.name).iterdir())]
    assert len(top) == len(logged) == 112 and all(r["net_names"] for r in top)        # a row per net drawn
    assert {r["series"] for r in top} == {"baseB", "selffer_BnB", "selffer_BnB_plus", "transfer_AnB", "transfer_AnB_plus"}
    one = next(r for r in top if r["net_names"] == "transfer0A0B_1_3")
    assert one["n"] == "3" and float(one["x"]) == 3.09                        # the layer, and where it was drawn
    assert len({r["source"] for f in ("fig2_top", "fig2_bottom", "fig3", "reduced") for r in rows(tmp_path / f"{f}.csv")}) == 1
    reduced = {r["x"]: float(r["y"]) for r in rows(tmp_path / "reduced.csv")}
    assert list(reduced)[-1] == "1300" and reduced["1300"] > 0.5


def test_data_files_hold_what_the_figures_drew(shared):
    """Each mean line of Figure 2 bottom and each marker of Figure 2 top, as drawn, is in its data file."""
    from transferfeat.plots import figures
    study = Study.load()
    summary = summarize(study, parse_root(study, shared / "results"))
    figs = {stem: (fig, data) for stem, fig, data in figures(study, summary)}
    fig, data = figs["fig2_bottom"]
    drawn = sorted(tuple(np.round(l.get_ydata(), 6)) for l in fig.axes[0].lines if len(l.get_xdata()) == 8)
    means = {}
    for r in data.rows:
        if r[2] == "mean":
            means.setdefault(r[1], []).append(round(r[5], 6))
    assert drawn == sorted(tuple(v) for v in means.values())
    fig, data = figs["fig2_top"]
    points = sorted((round(float(x), 3), round(float(y), 6)) for l in fig.axes[0].lines if l.get_marker() not in ("+", "None")
                    for x, y in zip(l.get_xdata(), l.get_ydata()))
    assert points == sorted((round(r[4], 3), round(r[5], 6)) for r in data.rows)
    import matplotlib.pyplot as plt
    plt.close("all")


def test_legends_cover_no_data(shared):
    import matplotlib.pyplot as plt
    from transferfeat.plots import figures
    from transferfeat.logcache import parse_root
    from transferfeat.results import summarize
    study = Study.load()
    summary = summarize(study, parse_root(study, shared / "results"))
    for stem, fig, _ in figures(study, summary):
        fig.canvas.draw()
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is None:
                continue
            box = legend.get_window_extent()
            points = [c.get_offsets() for c in ax.collections if len(c.get_offsets())] + \
                     [np.column_stack(l.get_data()) for l in ax.lines if len(l.get_xdata())]
            for pts in points:
                inside = [box.contains(*ax.transData.transform(p)) for p in np.asarray(pts, float)
                          if np.all(np.isfinite(p)) and ax.get_ylim()[0] <= p[1] <= ax.get_ylim()[1]]
                assert not any(inside), stem
        plt.close(fig)


def test_plot_compare_and_partial(shared, tmp_path):
    part = tmp_path / "partial"
    for net in ("half0A", "half0B", "transfer0A0B_1_3", "transfer-ft0A0A_1_2"):
        shutil.copytree(shared / "results" / net, part / net, symlinks=True)
    r = run("plot", "--root", part, "--out", tmp_path / "figs", "--compare", shared / "results",
            "--label", "mine", "--compare-label", "the authors")
    assert r.exit_code == 0, r.output
    assert "transfer AnB (the authors)" in (tmp_path / "figs" / "fig2_top.csv").read_text() or \
        "the authors" in (tmp_path / "figs" / "fig2_top.csv").read_text()
    (tmp_path / "nologs").mkdir()
    r = run("plot", "--root", part, "--out", tmp_path / "f2", "--compare", tmp_path / "nologs")
    assert r.exit_code == 0 and "has no logs of study 'paper': nothing to compare" in r.output
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
