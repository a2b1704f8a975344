import os

import pytest

from conftest import REFERENCE_NETS
from transferfeat.errors import Error
from transferfeat.folder import NetFolder as NetDir
from transferfeat.prototxt import parse
from transferfeat.layers import STUDY
from transferfeat.render import Renderer, num
from transferfeat.study import Study

PAPER = Study.load()
FILES = ("imagenet_solver.prototxt", "imagenet_train.prototxt", "imagenet_val.prototxt")


def test_num_formats_like_2014():
    assert [num(0.), num(0), num(1.), num(0.0001), num(0.005), num(True)] == ["0.", "0", "1.", "0.0001", "0.005", "true"]
    assert num(2.0, 0) == "2"


def _matches_reference(ref, name, tmp_path):
    out = tmp_path / "results"
    # The original's folders sat at convnet_transfer/results/<net>, data under ilsvrc12/data.
    Renderer(PAPER, "v0").render(PAPER.net(name), out, data_root=tmp_path / "ilsvrc12" / "data")
    for f in FILES:
        assert (out / name / f).read_bytes() == (ref / f).read_bytes(), f
    # The reference holds the links as real links, or as small text files holding their targets
    # (depending on how it was copied).
    for link in ("basenet", "imagenet_train_leveldb", "imagenet_val_leveldb"):
        if not ((ref / link).is_symlink() or (ref / link).exists()):
            assert not (out / name / link).is_symlink()
            continue
        want = os.readlink(ref / link) if (ref / link).is_symlink() else (ref / link).read_text()
        if name.startswith("reduced") and link == "imagenet_train_leveldb":
            # The original named this one folder "reduced-0010"; tf uses one scheme, reduced0010_train.
            want = want.replace("reduced-0010", "reduced0010_train")
        assert os.readlink(out / name / link) == want


@pytest.mark.parametrize("name", REFERENCE_NETS)
def test_v0_matches_the_original_byte_for_byte(shared, tmp_path, name):
    _matches_reference(shared / "results" / name, name, tmp_path)


def test_reference_links_may_be_real_links(shared, tmp_path):
    name = "transfer0A0B_1_3"
    ref = tmp_path / "ref" / name
    ref.mkdir(parents=True)
    for p in (shared / "results" / name).iterdir():
        if p.name in ("basenet", "imagenet_train_leveldb", "imagenet_val_leveldb"):
            os.symlink(os.readlink(p) if p.is_symlink() else p.read_text(), ref / p.name)   # dangling, as copied
        elif p.suffix == ".prototxt":
            (ref / p.name).write_bytes(p.read_bytes())
    assert (ref / "basenet").is_symlink() and not (ref / "basenet").exists()
    _matches_reference(ref, name, tmp_path)


@pytest.mark.parametrize("dialect", ["v0", "caffe1"])
def test_every_net_renders(tmp_path, dialect):
    r = Renderer(PAPER, dialect)
    for net in PAPER.nets.values():
        r.render(net, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(PAPER.nets)


def _layers(msg):
    return {l.one("name"): l for l in msg.all("layer")}


@pytest.mark.parametrize("name", list(PAPER.nets))
def test_v0_parses_back_with_expected_names_and_rates(name):
    """The 2014 dialect: ``layers { layer { … } bottom top }``, blobs_lr/weight_decay, padding layers."""
    net = PAPER.net(name)
    files = Renderer(PAPER, "v0").files(net)
    frozen, renamed = set(net.frozen(PAPER.arch)), set(net.renamed(PAPER.arch))
    for fname, source, batch in (("imagenet_train.prototxt", "imagenet_train_leveldb", 256),
                                 ("imagenet_val.prototxt", "imagenet_val_leveldb", 50)):
        outer = parse(files[fname], f"{name}/{fname}").all("layers")
        inner = [l.one("layer") for l in outer]
        names = [l.one("name") for l in inner]
        data = inner[0]
        assert (data.one("type"), data.one("source"), data.one("meanfile"), data.one("batchsize"),
                data.one("cropsize"), data.one("mirror")) == ("data", source, "imagenet_mean.binaryproto", batch,
                                                             227, fname.startswith("imagenet_train"))
        blob = "data"
        for layer in PAPER.arch.layers:
            lname = layer.name + "-new" if layer.name in renamed else layer.name
            i = names.index(lname)
            bottoms = outer[i].all("bottom")
            if net.padding_layers and layer.get("pad"):
                pad = names[i - 1]
                assert inner[i - 1].one("type") == "padding" and inner[i - 1].one("pad") == layer.get("pad")
                assert outer[i - 1].all("bottom") == [blob] and bottoms == [pad]
                assert inner[i].one("pad") is None
            else:
                assert bottoms == [blob] and inner[i].one("pad") == layer.get("pad")
            if layer.learnable and fname.startswith("imagenet_train"):
                rates = (inner[i].all("blobs_lr"), inner[i].all("weight_decay"))
                assert rates == (([0, 0], [0, 0]) if layer.name in frozen else ([1, 2], [1, 0])), lname
                assert inner[i].one("weight_filler").one("std") == layer.get("weight_std")
            if layer.type not in ("relu", "dropout"):
                blob = outer[i].one("top")
        tail = [l.one("type") for l in inner[-2:]] if fname.startswith("imagenet_val") else [inner[-1].one("type")]
        assert tail == (["softmax", "accuracy"] if fname.startswith("imagenet_val") else ["softmax_loss"])
        assert outer[-1 if fname.startswith("imagenet_train") else -2].all("bottom")[0] == blob
    solver = parse(files["imagenet_solver.prototxt"])
    assert solver.one("max_iter") == PAPER.max_iter(net) and solver.one("train_net") == "imagenet_train.prototxt"


@pytest.mark.parametrize("name", list(PAPER.nets))
def test_caffe1_parses_back_with_expected_names_and_rates(name):
    net = PAPER.net(name)
    files = Renderer(PAPER, "caffe1").files(net)
    train = _layers(parse(files["imagenet_train.prototxt"], name))
    val = _layers(parse(files["imagenet_val.prototxt"], name))
    solver = parse(files["imagenet_solver.prototxt"])
    assert solver.one("train_net") == "imagenet_train.prototxt" and solver.one("test_net") == "imagenet_val.prototxt"
    assert solver.one("max_iter") == PAPER.max_iter(net)
    assert "solver_mode" not in solver
    frozen, renamed = set(net.frozen(PAPER.arch)), set(net.renamed(PAPER.arch))
    for layer in PAPER.arch.learnable:
        lname = layer.name + "-new" if layer.name in renamed else layer.name
        assert lname in train and lname in val, lname
        rates = [(p.one("lr_mult"), p.one("decay_mult")) for p in train[lname].all("param")]
        assert rates == ([(0, 0), (0, 0)] if layer.name in frozen else [(1, 1), (2, 0)]), lname
        assert train[lname].one("top") == lname
    assert train["data"].one("data_param").one("source") == "imagenet_train_lmdb"
    assert val["data"].one("data_param").one("source") == "imagenet_val_lmdb"
    assert train["data"].one("transform_param").one("mean_file") == "imagenet_mean.binaryproto"
    assert val["accuracy"].one("type") == "Accuracy" and val["loss"].one("type") == "SoftmaxWithLoss"
    last = [l for l in train if l.startswith("fc8")][0]
    assert train["loss"].all("bottom") == [last, "label"]


def test_links_point_at_data_and_base(tmp_path):
    r = Renderer(PAPER)
    path = r.render(PAPER.net("transfer1B1A_1_4"), tmp_path / "results")
    assert os.readlink(path / "basenet") == "../half1B"
    assert os.readlink(path / "imagenet_train_lmdb") == "../../data/half1A_train/lmdb"
    assert os.readlink(path / "imagenet_val_lmdb") == "../../data/half1A_valid/lmdb"
    # The base net's training-set mean: the frozen layers keep their input statistics.
    assert os.readlink(path / "imagenet_mean.binaryproto") == "../../data/half1B_train/mean.binaryproto"


def test_image_data_option(tmp_path):
    r = Renderer(PAPER, image_data=True)
    with pytest.raises(Error, match="--images"):
        r.render(PAPER.net("half0A"), tmp_path / "results")
    path = r.render(PAPER.net("half0A"), tmp_path / "results", images=tmp_path / "jpegs")
    train = _layers(parse((path / "imagenet_train.prototxt").read_text()))
    p = train["data"].one("image_data_param")
    assert train["data"].one("type") == "ImageData"
    assert (p.one("source"), p.one("root_folder"), p.one("new_height")) == (
        "imagenet_train_files.txt", "imagenet_train_images/", 256)
    assert os.readlink(path / "imagenet_train_files.txt") == "../../data/half0A_train/files.txt"
    assert os.readlink(path / "imagenet_val_images") == "../../jpegs/val"


def test_rerender_keeps_logs_and_snapshots(tmp_path):
    r = Renderer(PAPER)
    net = PAPER.net("transfer0A0B_1_2")
    path = r.render(net, tmp_path)
    keep = {"tf-train-20260101-000000.log": b"log", "caffe_imagenet_train_iter_10000.caffemodel": b"w",
            "caffe_imagenet_train_iter_10000.solverstate": b"s"}
    for f, data in keep.items():
        (path / f).write_bytes(data)
    (path / "imagenet_solver.prototxt").write_text("edited")
    Renderer(PAPER, "v0").render(net, tmp_path)
    for f, data in keep.items():
        assert (path / f).read_bytes() == data
    assert (path / "imagenet_solver.prototxt").read_text().startswith('train_net: "imagenet_train.prototxt"')
    assert NetDir(tmp_path, net.name).snapshots() == {10000: path / "caffe_imagenet_train_iter_10000.caffemodel"}


def test_render_refuses_to_replace_a_real_file(tmp_path):
    r = Renderer(PAPER)
    net = PAPER.net("half0A")
    (tmp_path / "half0A").mkdir()
    (tmp_path / "half0A" / "imagenet_mean.binaryproto").write_bytes(b"user data")
    with pytest.raises(Error, match="half0A.*not a link"):
        r.render(net, tmp_path)
    assert (tmp_path / "half0A" / "imagenet_mean.binaryproto").read_bytes() == b"user data"


def test_netbase_padding_layers_only_in_v0():
    v0 = Renderer(PAPER, "v0").files(PAPER.net("netbase"))["imagenet_train.prototxt"]
    c1 = Renderer(PAPER).files(PAPER.net("netbase"))["imagenet_train.prototxt"]
    assert 'type: "padding"' in v0 and "padding" not in c1
    assert [l.one("name") for l in parse(c1).all("layer")] == [
        l.one("layer").one("name") for l in parse(v0).all("layers") if l.one("layer").one("type") != "padding"]


def test_residual_nets_render_only_in_caffe1(tmp_path):
    from click.testing import CliRunner
    from transferfeat.cli import main
    study = Study.load("mini-resnet")
    with pytest.raises(Error, match="the 2014 dialect cannot spell layer conv1 of architecture ResNetMini"):
        Renderer(study, "v0")
    r = CliRunner().invoke(main, ["--study", "mini-resnet", "render", "half0A", "--root", str(tmp_path / "r"),
                                  "--dialect", "v0"])
    assert r.exit_code == 1 and "render it with --dialect caffe1" in r.output and "Traceback" not in r.output
    text = Renderer(study).files(study.net("transfer-ft0A0B_1_2"))["imagenet_train.prototxt"]
    assert "use_global_stats" not in text                  # fine-tuned units normalise on their batches


@pytest.mark.parametrize("type_, key", [(t, k) for t, kind in STUDY.items() for k in kind.caffe1_keys])
def test_keys_only_caffe1_spells_are_refused_in_v0(tmp_path, type_, key):
    """Every study key the layer table marks as Caffe 1.0's: refused by the 2014 dialect, naming the layer."""
    from conftest import write_study
    def edit(s):
        layer = next(l for l in s["architecture"]["layers"] if l["type"] == type_)
        layer[key] = {"bias_term": True, "pad": 1, "global_pooling": False}[key]
    study = Study.load(write_study(tmp_path, edit))
    Renderer(study)
    name = next(l.name for l in study.arch.layers if l.type == type_)
    with pytest.raises(Error, match=f"cannot spell layer {name} of architecture CaffeNetMini .*{type_} {key}"):
        Renderer(study, "v0")


def test_eltwise_coefficients_render_one_line_each(tmp_path):
    from conftest import write_study
    def edit(s):
        layers = s["architecture"]["layers"]
        i = next(k for k, l in enumerate(layers) if l["name"] == "res2a")
        layers[i].update(coeff=[1.0, -0.5])
    study = Study.load(write_study(tmp_path, edit, base="mini-resnet"))
    text = Renderer(study).files(study.net("half0A"))["imagenet_train.prototxt"]
    block = text.split('name: "res2a"')[1].split("layer {")[0]
    assert "eltwise_param {\n    coeff: 1\n    coeff: -0.5\n  }" in block
