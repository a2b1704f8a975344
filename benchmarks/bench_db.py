"""`tf db` against Caffe's convert_imageset on the same JPEGs in one run (resized records and
--encoded), `tf mean` against compute_image_mean, and the ceiling: OpenCV decode + resize alone on
all cores, no database. Goal: tf db >= 1.8x convert_imageset for resized records on 2 cores.

    python benchmarks/bench_db.py [--images 1500] [--size 500x375] [--resize 256]
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
from transferfeat.datasets import build_db, compute_mean, encode_datum, write_mean
from transferfeat.engines.caffe import find_tool


def make_jpegs(out: Path, n: int, size, classes: int = 10):
    """ImageNet-sized photo stand-ins: smooth colour fields with texture, JPEG quality 90."""
    rng = np.random.RandomState(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    lines = []
    for i in range(n):
        c = i % classes
        f = rng.uniform(0.01, 0.08, 3)
        img = 127 + 80 * np.sin(xx[..., None] * f + yy[..., None] * f[::-1] + rng.uniform(0, 6, 3))
        img += rng.normal(0, 12, img.shape)
        name = f"c{c}/img{i:06d}.JPEG"
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out / name, quality=90)
        lines.append(f"{name} {c}\n")
    (out / "list.txt").write_text("".join(lines))


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def on_all_cores(fn, items, threads):
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(fn, items, chunksize=32):
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--size", default="500x375")
    ap.add_argument("--resize", type=int, default=256)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    r, n, cores = args.resize, args.images, os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_jpegs(tmp / "img", n, (w, h))
        lst = tmp / "img" / "list.txt"
        paths = [tmp / "img" / l.split()[0] for l in lst.read_text().splitlines()]
        for p in paths:                                     # warm the page cache for every contender
            p.read_bytes()
        convert, mean_tool = find_tool("convert_imageset"), find_tool("compute_image_mean")
        resize = ["--resize_height", str(r), "--resize_width", str(r)]
        t = {}
        t["cv"] = timed(lambda: subprocess.run([str(convert), *resize, str(tmp / "img") + "/", str(lst),
                                                str(tmp / "cv")], check=True, capture_output=True))
        t["tf"] = timed(lambda: build_db(lst, tmp / "img", tmp / "tf", classes=10, resize=(r, r), shuffle=False,
                                         progress=False))
        t["cv_enc"] = timed(lambda: subprocess.run([str(convert), "--encoded", str(tmp / "img") + "/", str(lst),
                                                    str(tmp / "cv_enc")], check=True, capture_output=True))
        t["tf_enc"] = timed(lambda: build_db(lst, tmp / "img", tmp / "tf_enc", classes=10, encoded=True,
                                             shuffle=False, progress=False))
        t["read"] = timed(lambda: on_all_cores(lambda p: p.read_bytes(), paths, cores))
        t["decode"] = timed(lambda: on_all_cores(lambda p: images.read(p), paths, cores))
        t["ceiling"] = timed(lambda: on_all_cores(lambda p: images.read(p, (r, r)), paths, cores))
        t["datum"] = timed(lambda: on_all_cores(lambda p: encode_datum(p, 0, (r, r), False), paths, cores))
        t["cvm"] = timed(lambda: subprocess.run([str(mean_tool), str(tmp / "cv"), str(tmp / "cv.binaryproto")],
                                                check=True, capture_output=True))
        t["tfm"] = timed(lambda: write_mean(compute_mean(tmp / "cv", progress=False), tmp / "tf.binaryproto"))
        print(f"{n} JPEGs {w}x{h} -> {r}x{r}, LMDB, {cores} cores, OpenCV {images.cv2.__version__}")
        print(f"convert_imageset (resized)         {n / t['cv']:8.0f} img/s")
        print(f"tf db (resized)                    {n / t['tf']:8.0f} img/s   {t['cv'] / t['tf']:4.2f}x convert_imageset (goal >= 1.8x)")
        print(f"convert_imageset --encoded         {n / t['cv_enc']:8.0f} img/s")
        print(f"tf db --encoded                    {n / t['tf_enc']:8.0f} img/s   {t['cv_enc'] / t['tf_enc']:4.2f}x convert_imageset --encoded")
        print("stages, all cores, no database:")
        print(f"  read the files                   {n / t['read']:8.0f} img/s")
        print(f"  + OpenCV decode                  {n / t['decode']:8.0f} img/s")
        print(f"  + resize (the ceiling)           {n / t['ceiling']:8.0f} img/s   tf db is {t['ceiling'] / t['tf']:4.0%} of it")
        print(f"  + planar Datum bytes             {n / t['datum']:8.0f} img/s")
        print(f"compute_image_mean                 {n / t['cvm']:8.0f} img/s")
        print(f"tf mean                            {n / t['tfm']:8.0f} img/s   {t['cvm'] / t['tfm']:4.2f}x compute_image_mean")
        shutil.rmtree(tmp / "img")


if __name__ == "__main__":
    main()
