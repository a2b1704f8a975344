"""Scheduler overhead of `tf run` (time from a net finishing to its dependants starting, with a fake
caffe at the subprocess boundary), and `tf plan`'s per-net-dependency makespan against the original
block barriers for 1, 4, 8 and 64 GPUs.

    python benchmarks/bench_scheduler.py
"""
import json
import statistics
import sys
import tempfile
from pathlib import Path

from transferfeat.engines.caffe import CaffeEngine
from transferfeat.folder import StudyFolder
from transferfeat.plan import estimate
from transferfeat.render import Renderer
from transferfeat.schedulers.local import Pool
from transferfeat.study import Study

HERE = Path(__file__).resolve().parent


def overhead():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sys.path.insert(0, str(HERE.parent / "tests"))
        from conftest import tiny_study_file
        study = Study.load(tiny_study_file(tmp, max_iter=20, snapshot=10, test_interval=10))
        exe = tmp / "caffe"
        exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE.parent / "tests" / "fake_caffe.py"}" "$@"\n')
        exe.chmod(0o755)
        nets = study.select(["half0A", "half0B", "transfer0A0B_1_*", "transfer0B0A_1_*"])
        root = tmp / "results"
        Renderer(study).render_all(nets, root)
        Pool(StudyFolder(root, study), nets, [None, None], CaffeEngine(exe), echo=lambda *_: None, interval=60).run()
        calls = {n.name: json.loads((root / n.name / "fake-caffe-calls.jsonl").read_text().splitlines()[0])
                 for n in nets}
        gaps = []
        for n in nets:
            if n.base:
                gaps.append(calls[n.name]["start"] - calls[n.base]["end"])
        first = {base: min(calls[n.name]["start"] - calls[base]["end"] for n in nets if n.base == base)
                 for base in ("half0A", "half0B")}
        return first, gaps


def main():
    first, gaps = overhead()
    print("scheduler overhead (fake caffe, 2 workers, 16 nets):")
    for base, gap in first.items():
        print(f"  {base} ends -> its first dependant's caffe starts: {gap * 1000:6.0f} ms")
    print(f"  median over all dependants (includes waiting for a free worker): {statistics.median(gaps):.2f} s")
    study = Study.load()
    print("\ntf plan, the paper's 170 nets, 9.5 days per full-length net:")
    print(f"{'gpus':>5} {'per-net days':>13} {'util':>6} {'blocks days':>12} {'util':>6} {'blocks/per-net':>15}")
    for a, b in estimate(study, list(study.nets.values()), [1, 4, 8, 64], 9.5):
        print(f"{a.gpus:>5} {a.makespan:>13.1f} {a.utilisation:>6.0%} {b.makespan:>12.1f} {b.utilisation:>6.0%} "
              f"{b.makespan / a.makespan:>14.2f}x")


if __name__ == "__main__":
    main()
