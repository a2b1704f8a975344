"""`tf db` against Caffe's convert_imageset on the same JPEGs in one run (resized records and
--encoded), the store's build (`tf db --store`), `tf mean` against compute_image_mean, and the
ceiling: the slower of OpenCV decode + resize alone on all cores (no database) and the disk writing
(and syncing) as many bytes. Goals on 2 cores: tf db >= 1.8x convert_imageset for resized records;
tf db and the store's build >= 80% of the ceiling.

    python benchmarks/bench_db.py [--images 1500] [--size 500x375] [--resize 256] [--repeats 3] [--dir DIR]
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from transferfeat import images
from transferfeat.databases import build_db, encode_datum
from transferfeat.mean import compute_mean, write_mean
from transferfeat.engines.caffe import find_tool
from transferfeat.procs import environ


def photo(rng: np.random.RandomState, w: int, h: int) -> np.ndarray:
    """An ImageNet photo stand-in (h x w x 3 uint8): a smooth colour field with texture."""
    yy, xx = np.mgrid[0:h, 0:w]
    f = rng.uniform(0.01, 0.08, 3)
    img = 127 + 80 * np.sin(xx[..., None] * f + yy[..., None] * f[::-1] + rng.uniform(0, 6, 3))
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_jpegs(out: Path, n: int, size, classes: int = 10):
    """``n`` photo stand-ins of ``size`` as JPEG files of quality 90, and their list file."""
    rng = np.random.RandomState(0)
    lines = []
    for i in range(n):
        c = i % classes
        name = f"c{c}/img{i:06d}.JPEG"
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(rng, *size)).save(out / name, quality=90)
        lines.append(f"{name} {c}\n")
    (out / "list.txt").write_text("".join(lines))


def timed(f):
    """Seconds ``f`` takes, started from flushed disks (no contender pays for another's write-back)."""
    os.sync()
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def write_synced(path: Path, size: int) -> None:
    """``size`` bytes into a new file, 1 MiB at a time, then fdatasync: what the disk gives a build."""
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(block)
        f.flush()
        os.fdatasync(f.fileno())


def on_all_cores(fn, items, threads):
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(fn, items, chunksize=32):
            pass


def tool(*args):
    """One of Caffe's tools, its glog on stderr (captured), not in files in /tmp."""
    subprocess.run([str(a) for a in args], check=True, capture_output=True, env=environ())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--size", default="500x375")
    ap.add_argument("--resize", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3, help="Rounds of every contender, interleaved; medians shown.")
    ap.add_argument("--dir", default=None, help="Where the images and databases go (e.g. /dev/shm: no disk).")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    r, n, cores = args.resize, args.images, len(os.sched_getaffinity(0))
    if args.dir and not Path(args.dir).is_dir():
        ap.error(f"--dir {args.dir}: no such folder")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        make_jpegs(tmp / "img", n, (w, h))
        lst = tmp / "img" / "list.txt"
        paths = [tmp / "img" / l.split()[0] for l in lst.read_text().splitlines()]
        for p in paths:                                     # warm the page cache for every contender
            p.read_bytes()
        convert, mean_tool = find_tool("convert_imageset"), find_tool("compute_image_mean")
        resize = ["--resize_height", str(r), "--resize_width", str(r)]
        img = str(tmp / "img") + "/"
        contenders = {
            "cv": lambda o: tool(convert, *resize, img, lst, o),
            "tf": lambda o: build_db(lst, tmp / "img", o, classes=10, resize=(r, r), progress=False),
            # the store's build: the whole list in list order (store.build_store's call)
            "store": lambda o: build_db(lst, tmp / "img", o, classes=10, resize=(r, r), shuffle=False, progress=False),
            "cv_enc": lambda o: tool(convert, "--encoded", img, lst, o),
            "tf_enc": lambda o: build_db(lst, tmp / "img", o, classes=10, encoded=True, progress=False),
            "read": lambda o: on_all_cores(lambda p: p.read_bytes(), paths, cores),
            "decode": lambda o: on_all_cores(lambda p: images.read(p), paths, cores),
            "ceiling": lambda o: on_all_cores(lambda p: images.read(p, (r, r)), paths, cores),
            "datum": lambda o: on_all_cores(lambda p: encode_datum(p, 0, (r, r), False), paths, cores),
            "disk": lambda o: write_synced(o, n * (3 * r * r + 16)),
            "cvm": lambda o: tool(mean_tool, tmp / "cv0", o),
            "tfm": lambda o: write_mean(compute_mean(tmp / "cv0", progress=False), o),
        }
        t = {k: [] for k in contenders}
        for k in range(args.repeats):
            for name, run in contenders.items():
                out = tmp / f"{name}{k}"
                t[name].append(timed(lambda: run(out)))
                if k and out.is_dir():
                    shutil.rmtree(out)
                elif k and out.is_file():
                    out.unlink()
        t = {name: float(np.median(v)) for name, v in t.items()}
        print(f"{n} JPEGs {w}x{h} -> {r}x{r}, LMDB, {cores} cores, OpenCV {images.cv2.__version__}, "
              f"medians of {args.repeats} interleaved rounds")
        print(f"convert_imageset (resized)         {n / t['cv']:8.0f} img/s")
        print(f"tf db (resized)                    {n / t['tf']:8.0f} img/s   {t['cv'] / t['tf']:4.2f}x convert_imageset (goal >= 1.8x)")
        print(f"tf db --store (the store's build)  {n / t['store']:8.0f} img/s   {t['cv'] / t['store']:4.2f}x convert_imageset")
        print(f"convert_imageset --encoded         {n / t['cv_enc']:8.0f} img/s")
        print(f"tf db --encoded                    {n / t['tf_enc']:8.0f} img/s   {t['cv_enc'] / t['tf_enc']:4.2f}x convert_imageset --encoded")
        print("stages, all cores, no database:")
        print(f"  read the files                   {n / t['read']:8.0f} img/s")
        print(f"  + OpenCV decode                  {n / t['decode']:8.0f} img/s")
        print(f"  + resize (the ceiling)           {n / t['ceiling']:8.0f} img/s")
        print(f"  + planar Datum bytes             {n / t['datum']:8.0f} img/s")
        print(f"the disk: their bytes written and synced {n / t['disk']:8.0f} img/s "
              f"({n * 3 * r * r / t['disk'] / 2**20:.0f} MiB/s)")
        print(f"compute_image_mean                 {n / t['cvm']:8.0f} img/s")
        print(f"tf mean                            {n / t['tfm']:8.0f} img/s   {t['cvm'] / t['tfm']:4.2f}x compute_image_mean")
        ceiling = max(t["ceiling"], t["disk"])
        print(f"of the ceiling, the slower of decode + resize and the disk (goal >= 80%): tf db "
              f"{ceiling / t['tf']:.0%}, the store's build {ceiling / t['store']:.0%}")
        shutil.rmtree(tmp / "img")


if __name__ == "__main__":
    main()
