"""Reading prototxts through the one layer table (layers.py): shapes, fields tf honours, the
solver's settings and Caffe's learning-rate policies."""
import math
import re

import pytest

from conftest import edit_prototxt
from transferfeat.errors import Error
from transferfeat.layers import LEARNABLE, STUDY, STUDY_FIELDS, TABLE
from transferfeat.netspec import NetError, learning_rate, read, read_solver
from transferfeat.prototxt import Message, Word, dump, parse
from transferfeat.render import Renderer
from transferfeat.config import LAYER_KEYS
from transferfeat.study import Study


@pytest.fixture
def net(tmp_path):
    """The mini study's half0A, rendered (caffe1): its folder."""
    study = Study.load("mini")
    return Renderer(study).render(study.net("half0A"), tmp_path / "results", data_root=tmp_path / "data")


def layer(msg, name):
    return next(l for l in msg["layer"] if l.one("name") == name)


def test_shapes_of_the_rendered_nets(net):
    spec = read(net / "imagenet_train.prototxt", data_shape=(3, 32, 32))
    assert spec.shapes["data"] == (32, 3, 28, 28) and spec.shapes["fc8"] == (32, 20)
    assert spec.learnable["conv2"] == [(32, 8, 3, 3), (32,)]                  # group 2
    paper = Study.load()
    d = Renderer(paper).render(paper.net("half0A"), net.parent.parent / "paper", data_root=net.parent)
    spec = read(d / "imagenet_train.prototxt")
    assert sum(math.prod(s) for blobs in spec.learnable.values() for s in blobs) == 60_965_224   # CaffeNet


def test_a_field_the_engine_does_not_honour_is_refused_with_file_line_and_field(net):
    """pad_h is a field Caffe knows but the engine would ignore (it reads pad): an error at load."""
    path = net / "imagenet_train.prototxt"
    edit_prototxt(path, lambda msg: layer(msg, "conv2").one("convolution_param").update(pad_h=[2]))
    line = next(i for i, l in enumerate(path.read_text().splitlines(), 1) if "pad_h" in l)
    with pytest.raises(NetError) as e:
        read(path)
    assert str(e.value).startswith(f"{path}: line {line}: field 'convolution_param.pad_h' is not one tf reads here")
    assert "(layer 'conv2')" in str(e.value)
    assert read(path, strict=False).learnable["conv2"]               # lenient: Caffe's nets still have shapes


@pytest.mark.parametrize("edit,message", [
    (lambda m: layer(m, "conv1").one("convolution_param").update(strid=[2]), "field 'convolution_param.strid' is not"),
    (lambda m: layer(m, "conv1").one("convolution_param").update(stride=["2"]), "must be a whole number, 0 or more, not '2'"),
    (lambda m: layer(m, "conv1").one("convolution_param").update(stride=[1, 2]), "given 2 times"),
    (lambda m: layer(m, "pool1").one("pooling_param").update(pool=[Word("STOCHASTIC")]), "tf supports MAX, AVE"),
    (lambda m: layer(m, "pool1").one("pooling_param").update(pool=["MAX"]), "must be one of MAX, AVE"),
    (lambda m: layer(m, "norm1").update(loss_weight=[1.0]), "field 'loss_weight' is not"),
    (lambda m: layer(m, "conv1").one("convolution_param").one("weight_filler").update(type=["msra"]), "tf supports constant"),
    (lambda m: layer(m, "norm1").update(type=["PReLU"]), "has type 'PReLU', which tf cannot run"),
    (lambda m: m["layer"][0].one("data_param").update(backend=[Word("LEVELDB")]), "tf supports LMDB"),
    (lambda m: m.update(input=["data"]), "field 'input' is not"),
])
def test_fields_and_values_tf_does_not_honour(net, edit, message):
    path = net / "imagenet_train.prototxt"
    edit_prototxt(path, edit)
    with pytest.raises(NetError, match=re.escape(message)) as e:
        read(path)
    assert re.match(rf"{re.escape(str(path))}: line \d+: ", str(e.value)), str(e.value)


def test_shape_errors_name_the_layer(net):
    path = net / "imagenet_train.prototxt"
    edit_prototxt(path, lambda m: layer(m, "conv1").one("convolution_param").update(kernel_size=[40]))
    with pytest.raises(NetError, match=r"line \d+: layer 'conv1': kernel 40 does not fit its 28x28 input"):
        read(path, data_shape=(3, 32, 32))
    edit_prototxt(path, lambda m: m["layer"][0].one("transform_param").update(crop_size=[64]))
    with pytest.raises(NetError, match=r"layer 'data': crop_size 64 is larger than the 32x32 images"):
        read(path, data_shape=(3, 32, 32))


def test_the_solver_is_read_with_caffes_defaults_and_strictly_when_asked(net):
    path = net / "imagenet_solver.prototxt"
    s = read_solver(path)
    assert (s["max_iter"], s["momentum"], s["average_loss"], s["iter_size"], s["test_iter"]) == (1500, 0.9, 1, 1, [10])
    edit_prototxt(path, lambda m: m.update(clip_gradients=[10.0]))
    assert read_solver(path)["max_iter"] == 1500                      # Caffe's field, not tf's: lenient reading
    with pytest.raises(NetError, match=r"line \d+: field 'clip_gradients' is not one tf reads here"):
        read_solver(path, strict=True)


def test_the_table_and_the_study_vocabulary_agree():
    """Each study layer type maps to a row whose fields hold every study key (weight_std and bias: the fillers)."""
    assert set(LAYER_KEYS) == set(STUDY) and set(LEARNABLE) <= set(TABLE)
    for name, kind in STUDY.items():
        for key in kind.study_keys:
            if key in ("weight_std", "bias"):
                assert kind.type in LEARNABLE and {"weight_filler", "bias_filler"} <= set(kind.fields)
            else:
                assert STUDY_FIELDS.get(key, key) in kind.fields, (name, key)


def test_the_table_agrees_with_caffe_proto(shared):
    """Every field the table lists exists in caffe.proto's message, with a matching type."""
    proto = (shared.parent / "reference" / "caffe.proto").read_text()

    def message(name):
        body = re.search(rf"\nmessage {name} {{(.*?)\n}}", proto, re.S).group(1)
        return {f: t for t, f in re.findall(r"\n\s*(?:optional|repeated|required) (\w+) (\w+) =", body)}
    types = {"uint": {"uint32"}, "int": {"int32", "int64"}, "float": {"float"}, "bool": {"bool"}, "string": {"string"}}
    blocks = {"convolution_param": "ConvolutionParameter", "pooling_param": "PoolingParameter", "lrn_param":
              "LRNParameter", "inner_product_param": "InnerProductParameter", "dropout_param": "DropoutParameter",
              "accuracy_param": "AccuracyParameter", "data_param": "DataParameter", "image_data_param":
              "ImageDataParameter", "batch_norm_param": "BatchNormParameter", "scale_param": "ScaleParameter",
              "eltwise_param": "EltwiseParameter"}
    for kind in TABLE.values():
        if not kind.block:
            continue
        fields = message(blocks[kind.block])
        for name, f in kind.fields.items():
            assert name in fields, (kind.type, name)
            if f.kind in types:
                assert fields[name] in types[f.kind], (kind.type, name, fields[name])
            elif f.kind == "message":
                assert fields[name] == "FillerParameter", (kind.type, name)
    filler = message("FillerParameter")
    assert set(TABLE["Convolution"].fields["weight_filler"].fields) <= set(filler)
    transform = message("TransformationParameter")
    assert set(TABLE["Data"].extra["transform_param"].fields) <= set(transform)


@pytest.mark.parametrize("policy,values,expect", [
    ("fixed", {}, [0.01, 0.01, 0.01]),
    ("step", {"gamma": 0.1, "stepsize": 10}, [0.01, 0.001, 0.0001]),
    ("exp", {"gamma": 0.5}, [0.01, 0.01 * 0.5 ** 10, 0.01 * 0.5 ** 20]),
    ("inv", {"gamma": 0.1, "power": 0.5}, [0.01, 0.01 * 2 ** -0.5, 0.01 * 3 ** -0.5]),
    ("poly", {"power": 2.0, "max_iter": 40}, [0.01, 0.01 * 0.75 ** 2, 0.01 * 0.5 ** 2]),
    ("sigmoid", {"gamma": -0.1, "stepsize": 10}, [0.01 / (1 + math.exp(-1)), 0.005, 0.01 / (1 + math.exp(1))]),
])
def test_learning_rate_policies(policy, values, expect):
    s = {"lr_policy": policy, "base_lr": 0.01, **values}
    assert [learning_rate(s, it) for it in (0, 10, 20)] == pytest.approx(expect)
    assert learning_rate({"lr_policy": "multistep", "base_lr": 0.01, "gamma": 0.1}, 5, step=2) == pytest.approx(1e-4)


def test_prototxt_round_trip_and_quoting():
    text = 'name: "a \\"b\\"\\n"\nlayer {\n  pool: MAX\n  x: 1.5\n  on: true\n  s: "MAX"\n}\n'
    msg = parse(text)
    assert msg.one("name") == 'a "b"\n' and isinstance(msg.one("layer").one("pool"), Word)
    assert not isinstance(msg.one("layer").one("s"), Word) and msg.one("layer").lines["x"] == 4
    assert parse(dump(msg)) == msg and isinstance(parse(dump(msg)).one("layer").one("pool"), Word)
    assert isinstance(Message(), dict)
    with pytest.raises(Error, match="line 1: expected a field name"):
        parse('"name": 1')


@pytest.fixture
def residual(tmp_path):
    """The residual miniature's transfer0A0B_1_2, rendered (caffe1): its folder."""
    study = Study.load("mini-resnet")
    return Renderer(study).render(study.net("transfer0A0B_1_2"), tmp_path / "results", data_root=tmp_path / "data")


def test_the_residual_net_reads_with_its_statistics_and_frozen_units(residual):
    spec = read(residual / "imagenet_train.prototxt", data_shape=(3, 32, 32))
    assert spec.shapes["conv1"] == (32, 16, 14, 14) and spec.shapes["res4a"] == (32, 64, 4, 4)
    assert spec.learnable["conv1"] == [(16, 3, 3, 3)]                              # bias_term: false
    assert spec.learnable["bn_conv1"] == [(16,), (16,), (1,)] and spec.learnable["scale_conv1"] == [(16,), (16,)]
    layers = {l.name: l for l in spec.layers}
    assert layers["res2a"].bottoms == ["scale_conv1", "scale2a_branch2b"]       # the stem's ReLU worked in place
    assert layers["res3a"].bottoms == ["scale3a_branch1-new", "scale3a_branch2b-new"]
    assert layers["bn_conv1"].lr_mult == [0, 0, 0] and layers["bn_conv1"].param("use_global_stats") is True
    assert layers["bn3a_branch1-new"].lr_mult == [0, 0, 0] and layers["bn3a_branch1-new"].param("use_global_stats") is None
    assert layers["scale_conv1"].lr_mult == [0, 0] and layers["scale3a_branch1-new"].lr_mult == [1, 1]
    assert "bias_filler" not in (residual / "imagenet_train.prototxt").read_text().split('name: "res2a_branch2a"')[1][:400]
    val = read(residual / "imagenet_val.prototxt", "TEST", data_shape=(3, 32, 32))
    assert {l.name: l for l in val.layers}["bn_conv1"].param("use_global_stats") is None     # TEST: stored anyway


@pytest.mark.parametrize("edit,message", [
    (lambda m: layer(m, "bn_conv1")["param"][0].update(lr_mult=[1]), "a BatchNorm layer's blobs are statistics, never learned"),
    (lambda m: layer(m, "res2a").update(bottom=["scale_conv1"]), "takes 2 or more bottom blob(s), not 1"),
    (lambda m: layer(m, "res2a").update(bottom=["scale_conv1", "data"]), "needs inputs of one shape"),
    (lambda m: layer(m, "res2a").update(eltwise_param=[Message({"operation": [Word("PROD")], "coeff": [1.0, 2.0]})]),
     "coeff is for SUM"),
    (lambda m: layer(m, "scale_conv1").one("scale_param").update(axis=[0]), "tf supports 1"),
    (lambda m: layer(m, "scale_conv1").update(param=layer(m, "scale_conv1")["param"] * 2), "4 param blocks for 2 parameter blobs"),
])
def test_residual_layers_are_checked_as_caffe_checks_them(residual, edit, message):
    path = residual / "imagenet_train.prototxt"
    edit_prototxt(path, edit)
    with pytest.raises(NetError, match=re.escape(message)):
        read(path, data_shape=(3, 32, 32))


def test_resnet18_renders_with_imagenet_shapes(tmp_path):
    """The ResNet-18 study at ImageNet scale: 224 crops, 7x7 before global pooling, 11.7 M parameters."""
    study = Study.load("resnet18")
    d = Renderer(study).render(study.net("transfer0A0B_1_5"), tmp_path / "results", data_root=tmp_path / "data")
    spec = read(d / "imagenet_train.prototxt", data_shape=(3, 256, 256))
    assert spec.shapes["pool1"] == (256, 64, 56, 56) and spec.shapes["res5b"] == (256, 512, 7, 7)
    assert spec.shapes["pool5"] == (256, 512, 1, 1) and spec.shapes["fc1000-new"] == (256, 1000)
    weights = sum(math.prod(s) for name, blobs in spec.learnable.items() if not name.startswith("bn") for s in blobs)
    assert weights == 11_689_512                                               # torchvision's resnet18 has as many
    frozen = {l.name for l in spec.layers if l.lr_mult and not any(l.lr_mult)}
    assert {"conv1", "res3b_branch2b", "scale3b_branch2b"} <= frozen and "res4a_branch1-new" not in frozen
