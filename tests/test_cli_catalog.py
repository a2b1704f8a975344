import json
import os

import pytest
from click.testing import CliRunner

from conftest import tf as run
from transferfeat.cli import main
from transferfeat.study import Study



def test_list_json_and_globs():
    r = run("list", "--format", "json")
    assert r.exit_code == 0
    nets = json.loads(r.output)
    paper = Study.load()
    assert [n["name"] for n in nets] == list(paper.nets)
    assert {"name", "family", "base", "n", "fine_tune", "train", "valid", "requires"} <= set(nets[0])
    ft = json.loads(run("list", "transfer-ft*", "--format", "json").output)
    assert [n["name"] for n in ft] == [n.name for n in paper.nets.values() if n.family == "transfer-ft"]
    assert all(n["fine_tune"] for n in ft) and run("list", "transfer-ft*").output.strip().endswith(f"{len(ft)} nets")


def test_unknown_net_is_a_clean_error():
    r = run("list", "half0C")
    assert r.exit_code == 1
    assert "Error: unknown net 'half0C'" in r.output and "half0A" in r.output


def test_study_option_and_env(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbogus: 1\n")
    r = run("--study", str(bad), "list")
    assert r.exit_code == 1 and "bad.yaml" in r.output and "bogus: unknown key" in r.output
    r = run("list", "half0A", "--format", "json", env={"TF_STUDY": "mini"})
    assert json.loads(r.output)[0]["classes"] == 10


def test_render_cli(tmp_path):
    r = run("render", "transfer0A0B_1_*", "--root", str(tmp_path / "results"), "--dialect", "v0")
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(tmp_path / "results")) == ["tf-study.yaml"] + [f"transfer0A0B_1_{n}" for n in range(1, 8)]
    assert "rendered 7 nets (v0)" in r.output


def test_plan_shows_both_policies():
    r = run("plan", "--gpu-counts", "1,8,64", "--format", "json")
    data = json.loads(r.output)
    assert data["requires"]["transfer0A0B_1_1"] == ["half0A"] and data["requires"]["half0A"] == []
    one, eight, many = data["schedules"]
    paper = Study.load()
    total = sum(9.5 * paper.max_iter(n) / 450000 for n in paper.nets.values())
    assert abs(one["per_net"]["makespan_days"] - total) < 1e-6
    assert one["per_net"]["utilisation"] > 0.999
    for s in data["schedules"]:
        assert s["per_net"]["makespan_days"] <= s["blocks"]["makespan_days"] + 1e-9
    assert many["per_net"]["makespan_days"] >= 2 * 9.5          # base net, then transfer net
    text = run("plan", "--gpu-counts", "8").output
    assert "blocks days" in text and "half0A <- 28" in text
    assert run("plan", "--gpu-counts", "0").exit_code == 2


def test_plan_costs_the_study_at_a_speed(tmp_path):
    """The issue's table: the study's 18.8 G training images at 2,000 / 6,000 / 20,000 img/s; and the
    speed the nets' own logs show (--measured)."""
    hours = {r: json.loads(run("plan", "--images-per-second", str(r), "--format", "json").output)["gpu_hours"]
             for r in (2000, 6000, 20000)}
    assert [round(h, -1) for h in hours.values()] == [2610, 870, 260]
    data = json.loads(run("plan", "--images-per-second", "2000", "--gpu-counts", "1,64", "--format", "json").output)
    assert data["training_images"] == sum(Study.load().max_iter(n) for n in Study.load().nets.values()) * 256
    one, many = data["schedules"]
    assert one["per_net"]["makespan_days"] == pytest.approx(hours[2000] / 24)
    assert many["per_net"]["makespan_days"] <= many["blocks"]["makespan_days"]
    assert "2,613 GPU-hours" in run("plan", "--images-per-second", "2000").output
    root = tmp_path / "results"
    for name, per_s in (("half0A", 2), ("half0B", 4)):
        (root / name).mkdir(parents=True)
        (root / name / "tf-train-20260101-000000.log").write_text(
            f"I0101 00:00:02.0 1 solver.cpp:239] Iteration 20 ({per_s} iter/s, 10s/20 iters), loss = 2\n")
    r = run("--study", "paper", "plan", "--measured", "--root", str(root))
    assert r.exit_code == 0, r.output
    assert "768 img/s, the median of 2 nets' logs" in r.output            # (2 + 4) / 2 iter/s × 256
    assert run("plan", "--measured", "--root", str(tmp_path / "nothing")).exit_code == 1
    assert run("plan", "--images-per-second", "5", "--days-per-net", "2").exit_code == 2


def test_results_folder_keeps_its_study(tmp_path):
    out = tmp_path / "results"
    assert run("--study", "mini", "render", "half0A", "--root", str(out)).exit_code == 0
    assert "name: mini" in (out / "tf-study.yaml").read_text()
    r = run("status", "half0A", "--root", str(out), "--format", "json")   # no --study: the folder's copy
    assert json.loads(r.output)[0]["max_iter"] == 1500
    assert run("render", "half0B", "--root", str(out)).exit_code == 0       # the folder's study: mini's half0B
    assert (out / "half0B" / "imagenet_solver.prototxt").read_text().count("max_iter: 1500")
    r = CliRunner().invoke(main, ["--study", "paper", "render", "half0A", "--root", str(out)])
    assert r.exit_code == 1 and "holds the nets of study 'mini'" in r.output
