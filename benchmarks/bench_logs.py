"""Parse and aggregate all the authors' logs, cold: transferfeat against a plain line-by-line port of
the original notebook's parser, side by side in one run. Goal: >= 3x faster.

    python benchmarks/bench_logs.py [--shared DIR]       (default: $TF_SHARED or ../shared)
"""
import argparse
import gzip
import os
import sys
import tempfile
import time
from pathlib import Path

from transferfeat.folder import NetFolder as NetDir
from transferfeat.logcache import parse_root
from transferfeat.results import summarize
from transferfeat.study import Study


def notebook_parse(files):
    """The original notebook's way: read every line, test substrings, split out the numbers."""
    train_loss, lr, test_acc, test_loss = {}, {}, {}, {}
    for path in files:
        opener = gzip.open if str(path).endswith(".gz") else open
        testing = None
        with opener(path, "rt", errors="replace") as f:
            for line in f:
                if "Iteration" in line and "lr = " in line:
                    it = int(line.split("Iteration ")[1].split(",")[0])
                    lr[it] = float(line.split("lr = ")[1])
                elif "Iteration" in line and "loss = " in line:
                    it = int(line.split("Iteration ")[1].split(",")[0].split(" ")[0])
                    train_loss[it] = float(line.split("loss = ")[1])
                elif "Testing net" in line:
                    testing = int(line.split("Iteration ")[1].split(",")[0])
                elif "Test score #0" in line and testing is not None:
                    test_acc[testing] = float(line.split(": ")[-1])
                elif "Test score #1" in line and testing is not None:
                    test_loss[testing] = float(line.split(": ")[-1])
    return train_loss, lr, test_acc, test_loss


def baseline(study, root):
    out = {}
    for net in study.nets.values():
        files = NetDir(root, net.name).logs()
        if not files:
            continue
        loss, _, acc, vloss = notebook_parse(files)
        if acc:
            a = sorted(acc.values(), reverse=True)[:10]
            out[net.name] = sum(a) / len(a)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.environ.get("TF_SHARED", "../shared"))
    args = ap.parse_args()
    root = Path(args.shared) / "convnet_transfer" / "results"
    if not root.is_dir():
        sys.exit(f"reference logs not found under {root}: pass --shared")
    study = Study.load()
    t = time.perf_counter()
    base = baseline(study, root)
    t_base = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as cache:
        os.environ["XDG_CACHE_HOME"] = cache           # cold: nothing cached
        t = time.perf_counter()
        ours = summarize(study, parse_root(study, root))
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        summarize(study, parse_root(study, root))
        t_warm = time.perf_counter() - t
    worst = max(abs(base[n] - ours["nets"][n]["top1_top10_mean"]) for n in base)
    print(f"nets: {len(base)} (same statistic within {worst:.1e})")
    print(f"notebook port (1 core):      {t_base:7.2f} s")
    print(f"transferfeat cold ({os.cpu_count()} cores): {t_ours:7.2f} s   ratio {t_base / t_ours:5.1f}x  (goal >= 3x)")
    print(f"transferfeat warm (cache):   {t_warm:7.2f} s   ratio {t_base / t_warm:5.1f}x")


if __name__ == "__main__":
    main()
