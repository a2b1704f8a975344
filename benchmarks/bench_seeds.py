"""The two engines' results as distributions: the mini study's base nets and frozen transfer nets
trained by Caffe and by the torch engine over the same seeds (the solvers' random_seed), on the
same `tf demo` data, and each net's top-1 (the mean of its 10 best tests, as the figures plot)
compared: both engines' mean and spread, the difference of the means against the seeds' spread,
and an exact two-sample permutation test (every split of the 2×N values; no normality assumed).

    python benchmarks/bench_seeds.py --out DIR [--seeds 1-8] [--nets half0A,half0B,transfer0A0B_1_3,transfer0A0B_1_7]
                                     [--engines caffe,torch] [--parallel 2] [--json FILE]

DIR keeps the data and every run's results folder: a second call resumes (nets done are kept).
"""
import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from transferfeat.demo import prepare_data
from transferfeat.engines import get
from transferfeat.folder import StudyFolder
from transferfeat.render import Renderer
from transferfeat.resources import config_path
from transferfeat.logcache import parse_root
from transferfeat.results import summarize
from transferfeat.schedulers.local import Pool
from transferfeat.study import Study


def seeds_of(text: str) -> list[int]:
    """'1-8' or '1,3,5'."""
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def seeded_study(out: Path, seed: int) -> Study:
    """The mini study with every solver's random_seed set to ``seed``."""
    text = config_path("mini.yaml").read_text()
    assert text.count("random_seed: 1") == 2, "configs/mini.yaml's solvers no longer say random_seed: 1"
    path = out / f"study-seed{seed}.yaml"
    path.write_text(text.replace("random_seed: 1", f"random_seed: {seed}"))
    return Study.load(path)


def permutation_p(a: list, b: list) -> float:
    """Two-sided exact permutation test of the difference of the means: the fraction of all splits
    of the pooled values into groups of len(a) and len(b) whose |difference| is at least the one seen."""
    pooled = np.array(a + b, np.float64)
    seen = abs(np.mean(a) - np.mean(b))
    total, n, count = pooled.sum(), len(a), 0
    splits = list(itertools.combinations(range(len(pooled)), n))
    for idx in splits:
        s = pooled[list(idx)].sum()
        count += abs(s / n - (total - s) / (len(pooled) - n)) >= seen - 1e-12
    return count / len(splits)


def welch_t(a: list, b: list) -> float:
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    return float((np.mean(a) - np.mean(b)) / math.sqrt(va + vb)) if va + vb > 0 else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", default="1-8")
    p.add_argument("--nets", default="half0A,half0B,transfer0A0B_1_3,transfer0A0B_1_7")
    p.add_argument("--engines", default="caffe,torch")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    seeds, engines = seeds_of(a.seeds), a.engines.split(",")
    base_study = Study.load("mini")
    nets = base_study.with_bases(base_study.select(a.nets.split(",")))
    data = prepare_data(base_study, a.out, nets, echo=lambda m: print(m, file=sys.stderr))
    values = {e: {n.name: [] for n in nets} for e in engines}
    seconds = {e: 0.0 for e in engines}
    for seed in seeds:
        study = seeded_study(a.out, seed)
        for engine in engines:
            root = a.out / f"{engine}-seed{seed}"
            Renderer(study).render_all(nets, root, data)
            start = time.time()
            summary = Pool(StudyFolder(root, study), nets, [None] * a.parallel, get(engine), retries=1, threads=1,
                           echo=lambda m: None, interval=60).run()
            seconds[engine] += time.time() - start
            if summary.failed or summary.interrupted:
                print(f"{root}: failed {sorted(summary.failed)}, interrupted {summary.interrupted}", file=sys.stderr)
                return 1
            got = summarize(study, parse_root(study, root))["nets"]
            for n in nets:
                values[engine][n.name].append(got[n.name]["top1_top10_mean"])
            print(f"seed {seed} {engine:<6} " + "  ".join(f"{n.name} {got[n.name]['top1_top10_mean']:.4f}" for n in nets),
                  file=sys.stderr, flush=True)
    rows, doc = [], {"seeds": seeds, "nets": {}, "seconds": seconds}
    for n in nets:
        entry = {e: {"values": values[e][n.name], "mean": float(np.mean(values[e][n.name])),
                     "std": float(np.std(values[e][n.name], ddof=1))} for e in engines}
        if len(engines) == 2:
            x, y = (values[e][n.name] for e in engines)
            diff = entry[engines[1]]["mean"] - entry[engines[0]]["mean"]
            spread = max(entry[e]["std"] for e in engines)
            entry.update(difference=diff, spread=spread, within_spread=abs(diff) < spread,
                         welch_t=welch_t(y, x), permutation_p=permutation_p(y, x))
        doc["nets"][n.name] = entry
        rows.append(entry)
    print(f"\n{len(seeds)} seeds ({a.seeds}) per engine, top-1 = mean of the 10 best tests")
    head = f"{'net':<20}" + "".join(f"{e + ' mean ± sd':>22}" for e in engines)
    if len(engines) == 2:
        head += f"{'difference':>12}{'< spread':>10}{'Welch t':>9}{'perm. p':>9}"
    print(head)
    for n in nets:
        e = doc["nets"][n.name]
        line = f"{n.name:<20}" + "".join(f"{e[k]['mean']:>14.4f} ± {e[k]['std']:.4f}" for k in engines)
        if len(engines) == 2:
            line += (f"{e['difference']:>+12.4f}{'yes' if e['within_spread'] else 'NO':>10}{e['welch_t']:>9.2f}"
                     f"{e['permutation_p']:>9.3f}")
        print(line)
    print("wall time: " + ", ".join(f"{e} {s / 60:.1f} min" for e, s in seconds.items()))
    if a.json:
        a.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
