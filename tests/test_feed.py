"""The batched feed against the per-image DataTransformer it replaced (kept here as the reference):
bit-identical batches for TRAIN and TEST, with and without crop, mean file and mean values, mirror,
scale, Data and ImageData, raw and encoded records; and an index into the image store yields the
records (keys, pixels, labels) its dataset's own LMDB holds."""
import json
import shutil

import cv2
import numpy as np
import pytest

from conftest import edit_prototxt, run_trainer, tf
from transferfeat import images
from transferfeat.caffeproto import Datum, read_blob
from transferfeat.databases import build_db, iter_db
from transferfeat.mean import study_mean
from transferfeat.store import read_index
from transferfeat.errors import Error
from transferfeat.netspec import read
from transferfeat.render import Renderer

pytestmark = pytest.mark.torch


class Reference:
    """Today's (tf 0.1's) per-image feed: records in order, then each image transformed in numpy
    with draws from the layer's generator (mirror, then the offsets)."""

    def __init__(self, spec, phase, seed, folder):
        layer = spec.layers[0]
        tp = layer.block("transform_param")
        self.crop, self.mirror, self.scale = tp.one("crop_size", 0), tp.one("mirror", False), tp.one("scale", 1.0)
        self.phase, self.rng, self.mean = phase, np.random.RandomState(seed), None
        if tp.one("mean_file"):
            m = read_blob(folder / tp.one("mean_file")).array()
            self.mean = m.reshape(m.shape[-3:]).astype(np.float32)
        elif tp.all("mean_value"):
            self.mean = np.array(tp.all("mean_value"), np.float32)[:, None, None]
        self.batch = layer.param("batch_size")
        if layer.type == "Data":
            self.records = self._lmdb(folder / layer.param("source"))
        else:
            p = layer.block("image_data_param")
            lines = [l.rsplit(None, 1) for l in (folder / p.one("source")).read_text().splitlines() if l.strip()]
            self.records = self._images(folder, p.one("root_folder", ""), [(a, int(b)) for a, b in lines],
                                        (p.one("new_width", 0), p.one("new_height", 0)), p.one("shuffle", False))

    def _lmdb(self, path):
        while True:
            for _, v in iter_db(path):
                d = Datum.from_bytes(v)
                yield (images.decode(d.data).transpose(2, 0, 1) if d.encoded else d.image()), d.label

    def _images(self, folder, root, lines, size, shuffle):
        order = list(range(len(lines)))
        while True:
            if shuffle:
                self.rng.shuffle(order)
            for i in order:
                yield images.read(folder / (root + lines[i][0]), size if size[0] else None).transpose(2, 0, 1), lines[i][1]

    def transform(self, img):
        c, h, w = img.shape
        mirror = bool(self.mirror and self.rng.randint(2))
        h_off = w_off = 0
        if self.crop:
            if self.phase == "TRAIN":
                h_off, w_off = self.rng.randint(h - self.crop + 1), self.rng.randint(w - self.crop + 1)
            else:
                h_off, w_off = (h - self.crop) // 2, (w - self.crop) // 2
            img = img[:, h_off:h_off + self.crop, w_off:w_off + self.crop]
        out = img.astype(np.float32)
        if self.mean is not None:
            mean = self.mean
            if mean.shape[1] > 1:
                mean = mean[:, h_off:h_off + out.shape[1], w_off:w_off + out.shape[2]]
            out = out - mean
        if self.scale != 1:
            out = out * np.float32(self.scale)
        return out[:, :, ::-1] if mirror else out

    def next(self):
        items = [next(self.records) for _ in range(self.batch)]
        return np.stack([self.transform(img) for img, _ in items]), [label for _, label in items]


def render(tiny_data, out, layers="Data"):
    """half0A of the tiny study rendered under ``out`` with Data layers, or with ImageData layers: its folder."""
    study, data = tiny_data
    if layers == "Data":
        return Renderer(study).render(study.net("half0A"), out, data_root=data)
    return Renderer(study, image_data=True).render(study.net("half0A"), out, data_root=data, images=data.parent / "synth")


CASES = {                              # transform_param changes, applied to the rendered train or val net
    "train, crop, mean file, mirror": ("TRAIN", {}),
    "train, no crop, no mean, mirror": ("TRAIN", {"crop_size": None, "mean_file": None}),
    "train, crop, mean values, scale, no mirror": ("TRAIN", {"mean_file": None, "mean_value": [104.0, 117.0, 123.0],
                                                             "mirror": False, "scale": 0.017}),
    "train, crop, one mean value, mirror, scale": ("TRAIN", {"mean_file": None, "mean_value": [120.5], "scale": 0.5}),
    "test, crop, mean file": ("TEST", {}),
    "test, crop, mean file, mirror": ("TEST", {"mirror": True}),
    "test, no crop, mean file, scale": ("TEST", {"crop_size": None, "scale": 0.25}),
}


def variant(path, changes):
    def edit(msg):
        tp = msg["layer"][0].one("transform_param")
        for k, v in changes.items():
            if v is None:
                tp.pop(k, None)
            else:
                tp[k] = v if isinstance(v, list) else [v]
    edit_prototxt(path, edit)


@pytest.mark.parametrize("layers", ["Data", "ImageData"])
@pytest.mark.parametrize("case", list(CASES))
def test_batches_are_bit_identical_to_the_per_image_transform(tiny_data, torch_engine, tmp_path, case, layers):
    from transferfeat.engines.torchnet.feed import Feed
    from transferfeat.engines.torchnet.glog import Quiet
    phase, changes = CASES[case]
    d = render(tiny_data, tmp_path, layers)
    prototxt = d / ("imagenet_train.prototxt" if phase == "TRAIN" else "imagenet_val.prototxt")
    variant(prototxt, changes)
    spec = read(prototxt, phase, data_shape=(3, 32, 32))
    feed, ref = Feed(spec, phase, 7, Quiet(), readers=3), Reference(spec, phase, 7, d)
    for _ in range(12):                                  # past the end of the data: wrapping (and reshuffling) too
        (data, labels), (want, want_labels) = feed.next(), ref.next()
        assert labels.tolist() == want_labels
        assert data.dtype == np.float32 or str(data.dtype) == "torch.float32"
        assert np.array_equal(data.numpy(), want), case


def test_encoded_records_are_decoded_as_caffe_does(tiny_data, torch_engine, tmp_path):
    """An LMDB of encoded records (the JPEG files' own bytes): the same batches as the reference."""
    from transferfeat.engines.torchnet.feed import Feed
    from transferfeat.engines.torchnet.glog import Quiet
    study, data = tiny_data
    enc = tmp_path / "enc_lmdb"
    build_db(data / "half0A_train" / "files.txt", data.parent / "synth" / "train", enc, classes=20, encoded=True,
             progress=False)
    assert Datum.from_bytes(next(iter_db(enc))[1]).encoded
    d = render(tiny_data, tmp_path / "results")
    (d / "imagenet_train_lmdb").unlink()
    (d / "imagenet_train_lmdb").symlink_to(enc)
    spec = read(d / "imagenet_train.prototxt", "TRAIN", data_shape=(3, 32, 32))
    feed, ref = Feed(spec, "TRAIN", 3, Quiet(), readers=2), Reference(spec, "TRAIN", 3, d)
    for _ in range(5):
        (x, y), (want, labels) = feed.next(), ref.next()
        assert y.tolist() == labels and np.array_equal(x.numpy(), want)


def encoded_net(tiny_data, tmp_path):
    """half0A rendered under ``tmp_path`` with its training LMDB replaced by one of encoded records."""
    study, data = tiny_data
    enc = tmp_path / "enc_lmdb"
    build_db(data / "half0A_train" / "files.txt", data.parent / "synth" / "train", enc, classes=20, encoded=True,
             progress=False)
    d = render(tiny_data, tmp_path / "results")
    (d / "imagenet_train_lmdb").unlink()
    (d / "imagenet_train_lmdb").symlink_to(enc)
    return d


def like_decode_jpeg(data, device):
    """What torchvision.io.decode_jpeg(data, mode=RGB, device=device) returns (a list of RGB C×H×W uint8
    tensors), with OpenCV's pixels: the decoder's own pixels are gpu_check.py's to measure (CI's
    PyTorch is a CPU build, and PyPI's torchvision needs CUDA's)."""
    import torch
    return [torch.from_numpy(np.ascontiguousarray(cv2.imdecode(t.numpy(), cv2.IMREAD_COLOR)[:, :, ::-1].transpose(2, 0, 1)))
            .to(device) for t in data]


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][0] == "TRAIN"])
def test_decoding_on_the_device_takes_the_same_windows(tiny_data, torch_engine, tmp_path, monkeypatch, case):
    """TF_DECODE=device: the readers hand JPEG bytes over, the device decodes the batch and takes each
    crop window (mirrored where drawn) from the same draws: with a decoder giving OpenCV's pixels,
    batches bit-identical to the reference, past the end of the data."""
    from transferfeat.engines.torchnet import feed as feed_module
    from transferfeat.engines.torchnet.glog import Quiet
    monkeypatch.setenv("TF_DECODE", "device")
    monkeypatch.setattr(feed_module, "device_decoder", lambda: like_decode_jpeg)
    d = encoded_net(tiny_data, tmp_path)
    variant(d / "imagenet_train.prototxt", CASES[case][1])
    spec = read(d / "imagenet_train.prototxt", "TRAIN", data_shape=(3, 32, 32))
    feed, ref = feed_module.Feed(spec, "TRAIN", 5, Quiet(), readers=2), Reference(spec, "TRAIN", 5, d)
    assert feed.decoder is like_decode_jpeg
    for _ in range(12):
        (x, y), (want, labels) = feed.next(), ref.next()
        assert y.tolist() == labels and np.array_equal(x.numpy(), want), case


def test_decoding_on_the_device_refuses_what_it_cannot_do(tiny_data, torch_engine, tmp_path, monkeypatch):
    import sys
    from transferfeat.engines.torchnet import feed as feed_module
    from transferfeat.engines.torchnet.glog import Quiet
    d = encoded_net(tiny_data, tmp_path)
    spec = read(d / "imagenet_train.prototxt", "TRAIN", data_shape=(3, 32, 32))
    monkeypatch.setenv("TF_DECODE", "gpu")
    with pytest.raises(Error, match="TF_DECODE='gpu': not one of cpu, device"):
        feed_module.Feed(spec, "TRAIN", 0, Quiet())
    monkeypatch.setenv("TF_DECODE", "device")
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(Error, match=r"TF_DECODE=device needs torchvision built for this PyTorch .*pip install "
                                    r"'transferfeat\[gpu-decode\]'"):
        feed_module.Feed(spec, "TRAIN", 0, Quiet())
    monkeypatch.setattr(feed_module, "device_decoder", lambda: like_decode_jpeg)
    raw = read(d / "imagenet_val.prototxt", "TEST", data_shape=(3, 32, 32))      # raw records
    feed = feed_module.Feed(raw, "TEST", 0, Quiet())
    with pytest.raises(Error, match=r"imagenet_val_lmdb: record 00000000_\S+: TF_DECODE=device decodes JPEG records "
                                    r"only .* this one is raw pixels"):
        feed.next()
    feed.close()
    images_net = render(tiny_data, tmp_path / "imagedata", "ImageData")
    spec = read(images_net / "imagenet_train.prototxt", "TRAIN", data_shape=(3, 32, 32))
    with pytest.raises(Error, match="line .*: TF_DECODE=device decodes a Data layer's encoded records, not ImageData"):
        feed_module.Feed(spec, "TRAIN", 0, Quiet())


def test_an_index_yields_its_datasets_lmdb_records(tiny_data, torch_engine, tmp_path):
    """tf db --store: the store and an index per dataset; each index's records are the dataset's LMDB's
    (keys, pixels, labels), in its order; the torch engine's batches from either are the same."""
    study, data = tiny_data
    root = tmp_path / "data"
    shutil.copytree(data, root, ignore=shutil.ignore_patterns("lmdb", "lmdb.partial*", "mean.binaryproto"))
    r = tf("--study", study.path, "db", "--store", "--data-root", root, "--images", data.parent / "synth")
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"disk for study {study.config.name!r}: a database per dataset ")
    assert f"{root / 'half0A_train' / 'index'}: " in r.output and f"{root / 'whole_valid' / 'index'}: " in r.output
    for name in ("half0A_train", "half1B_valid", "reduced0005_train", "halfnatmanA_train"):
        if not (data / name / "lmdb").exists():
            build_db(data / name / "files.txt", data.parent / "synth" / ("train" if "train" in name else "val"),
                     data / name / "lmdb", classes=20, progress=False)
        lmdb_records = [(k, Datum.from_bytes(v)) for k, v in iter_db(data / name / "lmdb")]
        index_records = [(k, label, Datum.from_bytes(bytes(v))) for k, label, v in read_index(root / name / "index").records()]
        assert [k for k, _ in lmdb_records] == [k for k, _, _ in index_records], name
        assert [d.label for _, d in lmdb_records] == [label for _, label, _ in index_records], name
        assert all(a.data == b.data for (_, a), (_, _, b) in zip(lmdb_records, index_records)), name
    # rendered against the store, a net's Data layer reads the index; Caffe refuses it
    study_mean(study, "half0A_train", root, progress=False)
    assert np.allclose(read_blob(root / "half0A_train" / "mean.binaryproto").array(),
                       read_blob(data / "half0A_train" / "mean.binaryproto").array(), atol=1e-4)
    d = Renderer(study).render(study.net("half0A"), tmp_path / "results", data_root=root)
    assert (d / "imagenet_train_lmdb").resolve() == (root / "half0A_train" / "index").resolve()
    from transferfeat.engines.torchnet.feed import Feed
    from transferfeat.engines.torchnet.glog import Quiet
    a = Feed(read(d / "imagenet_train.prototxt"), "TRAIN", 5, Quiet())
    lmdb_net = Renderer(study).render(study.net("half0A"), tmp_path / "results_lmdb", data_root=data)
    b = Feed(read(lmdb_net / "imagenet_train.prototxt"), "TRAIN", 5, Quiet())
    for _ in range(4):
        (x, y), (x2, y2) = a.next(), b.next()
        assert np.array_equal(x.numpy(), x2.numpy()) and y.tolist() == y2.tolist()
    r = tf("--study", study.path, "train", "half0A", "--root", tmp_path / "results")
    assert r.exit_code == 1 and "is an index into the image store" in r.output and "Caffe needs real LMDBs" in r.output
    status = json.loads(tf("status", "--root", tmp_path / "results", "--format", "json").output)
    row = next(r for r in status if r["name"] == "half0A")                 # refused: failed, with why; not pending
    assert row["state"] == "failed" and "is an index into the image store" in row["problem"]


def test_device_decode_without_a_gpu_is_refused(tiny_data, torch_engine, tmp_path, monkeypatch):
    """TF_DECODE=device on a CPU trainer: one line before any trainer starts (tf), and from the trainer itself."""
    from transferfeat.engines.pytorch import TorchEngine
    from transferfeat.folder import NetFolder
    d = render(tiny_data, tmp_path / "results")
    monkeypatch.setenv("TF_DECODE", "device")
    with pytest.raises(Error, match="TF_DECODE=device decodes JPEG records on a GPU, and this trainer runs on the CPU"):
        TorchEngine().command(NetFolder(tmp_path / "results", "half0A"))
    out = run_trainer(d, "train", "-solver", "imagenet_solver.prototxt", check=False)
    assert out.returncode != 0 and "this trainer runs on the CPU" in out.stderr and "Traceback" not in out.stderr


def test_records_of_another_size_in_a_batch_are_an_error(tiny_data, torch_engine, tmp_path):
    from transferfeat.engines.torchnet.feed import Feed
    from transferfeat.engines.torchnet.glog import Quiet
    d = render(tiny_data, tmp_path / "results", "ImageData")
    variant(d / "imagenet_train.prototxt", {"crop_size": None, "mean_file": None})
    edit_prototxt(d / "imagenet_train.prototxt",
                  lambda m: [m["layer"][0].one("image_data_param").pop(k, None) for k in ("new_height", "new_width")])
    images = tmp_path / "images"
    shutil.copytree((d / "imagenet_train_images").resolve(), images)
    listing = (d / "imagenet_train_files.txt").resolve().read_text()
    img = cv2.imread(str(images / listing.split()[0]))
    cv2.imwrite(str(images / "big.png"), cv2.resize(img, (40, 40)))
    for name, text in (("imagenet_train_images", None), ("imagenet_train_files.txt", listing + "big.png 0\n")):
        (d / name).unlink()
        (d / name).symlink_to(images) if text is None else (d / name).write_text(text)
    spec = read(d / "imagenet_train.prototxt", "TRAIN", data_shape=(3, 32, 32))
    feed = Feed(spec, "TRAIN", 0, Quiet())
    with pytest.raises(Error, match="a 3x40x40 image among 3x32x32 ones"):
        for _ in range(100):
            feed.next()
