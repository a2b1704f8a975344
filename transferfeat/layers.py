"""The one layer table: every layer type tf renders, checks and runs, with the fields of its
parameter block that tf honours (their types and Caffe's defaults), how it maps from the study
file, and how its output and parameter shapes follow from its inputs (Caffe's Reshape methods).

Shape inference and validation (netspec.py), the rendering (render.py, the caffe1 template) and
the torch engine (engines/torchnet, which implements one forward function per row) all read this
table, so a field the engine does not honour is refused when a prototxt is read, naming the file,
line and field, instead of being silently ignored. Field names, types and defaults are those of
caffe.proto (BVLC Caffe 1.0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass(frozen=True)
class Field:
    """One field of a prototxt message: its kind (``uint``, ``int``, ``float``, ``bool``,
    ``string``, ``enum`` or ``message``), Caffe's default, the values tf accepts (enums and strings
    with a fixed set), the fields of a nested message, and whether it may be given more than once."""
    kind: str
    default: object = None
    values: tuple = ()
    fields: Optional[dict] = None
    repeated: bool = False


def uint(default=None):
    return Field("uint", default)


def real(default=None):
    return Field("float", default)


def flag(default=False):
    return Field("bool", default)


def enum(*values, default=None):
    return Field("enum", default if default is not None else values[0], values)


FILLER = Field("message", fields={
    "type": Field("string", "constant", ("constant", "gaussian", "xavier", "uniform")),
    "value": real(0.0), "min": real(0.0), "max": real(1.0), "mean": real(0.0), "std": real(1.0)})

# The fields of every layer (LayerParameter) that tf honours; a layer's own block comes on top.
COMMON = {
    "name": Field("string", ""), "type": Field("string", ""),
    "bottom": Field("string", repeated=True), "top": Field("string", repeated=True),
    "param": Field("message", fields={"lr_mult": real(1.0), "decay_mult": real(1.0)}, repeated=True),
    "include": Field("message", fields={"phase": enum("TRAIN", "TEST")}, repeated=True),
}
TRANSFORM = Field("message", fields={
    "scale": real(1.0), "mirror": flag(), "crop_size": uint(0), "mean_file": Field("string"),
    "mean_value": Field("float", repeated=True)})


@dataclass(frozen=True)
class Kind:
    """One layer type. ``study``: its name in a study file's architecture (None: not written there);
    ``infer(spec, layer, inputs)`` -> (top shapes, learnable blob shapes)."""
    type: str
    block: Optional[str]
    fields: dict
    infer: Callable
    study: Optional[str] = None
    study_keys: tuple = ()                          # the keys a study file's layer of this type may give
    bottoms: int = 1                                # the number of inputs it takes (at least, when ``variadic``)
    extra: dict = field(default_factory=dict)       # further LayerParameter messages (data layers)
    fillers: tuple = ()                             # per parameter blob: (its filler's field or None, the default value)
    statistics: bool = False                        # its blobs are statistics the layer keeps, never learned (lr 0)
    variadic: bool = False
    caffe1_only: bool = False                       # no 2014 (V0) spelling: Caffe 1.0's layers of residual nets
    caffe1_keys: tuple = ()                         # study keys of this type that only Caffe 1.0 can spell

    def default(self, name: str):
        return self.fields[name].default


def conv_out(size: int, kernel: int, pad: int, stride: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def pool_out(size: int, kernel: int, pad: int, stride: int) -> int:
    """Caffe's pooling output size: ceil, then one less if the last window starts in the padding."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


class ShapeError(ValueError):
    """A layer whose inputs or settings do not make a net (the reader adds file, line and layer)."""


def _data(spec, layer, ins):
    batch = layer.param("batch_size")
    c, h, w = spec.record_shape(layer)
    if layer.type == "ImageData" and layer.param("new_height"):
        h, w = layer.param("new_height"), layer.param("new_width")
    crop = layer.transform("crop_size")
    if crop and (crop > h or crop > w):
        raise ShapeError(f"crop_size {crop} is larger than the {h}x{w} images")
    return [(batch, c, crop or h, crop or w), (batch,)], []


def _conv(spec, layer, ins):
    n, group, k = layer.param("num_output"), layer.param("group"), layer.param("kernel_size")
    pad, stride = layer.param("pad"), layer.param("stride")
    if n is None or k is None:
        raise ShapeError("needs num_output and kernel_size")
    if len(ins[0]) != 4 or ins[0][1] % group or n % group:
        raise ShapeError(f"input {ins[0]}: needs N x C x H x W with channels and num_output divisible by group")
    out = (ins[0][0], n, conv_out(ins[0][2], k, pad, stride), conv_out(ins[0][3], k, pad, stride))
    if min(out[2:]) < 1:
        raise ShapeError(f"kernel {k} does not fit its {ins[0][2]}x{ins[0][3]} input")
    return [out], [(n, ins[0][1] // group, k, k)] + ([(n,)] if layer.param("bias_term") else [])


def _pool(spec, layer, ins):
    k, pad, stride = layer.param("kernel_size"), layer.param("pad"), layer.param("stride")
    if layer.param("global_pooling"):
        if pad or stride != 1 or ins[0][2] != ins[0][3]:
            raise ShapeError(f"global_pooling takes no pad or stride, and a square input (got {ins[0]})")
        k = ins[0][2]
    if k is None:
        raise ShapeError("needs kernel_size (or global_pooling)")
    return [(*ins[0][:2], pool_out(ins[0][2], k, pad, stride), pool_out(ins[0][3], k, pad, stride))], []


def _inner(spec, layer, ins):
    n = layer.param("num_output")
    if n is None:
        raise ShapeError("needs num_output")
    return [(ins[0][0], n)], [(n, math.prod(ins[0][1:]))] + ([(n,)] if layer.param("bias_term") else [])


def _same(spec, layer, ins):
    return [ins[0]] * len(layer.tops), []


def _batch_norm(spec, layer, ins):
    """BatchNormLayer: three blobs, the running mean sum, variance sum (C each) and their scale factor (1)."""
    c = ins[0][1]
    return [ins[0]], [(c,), (c,), (1,)]


def _scale(spec, layer, ins):
    """ScaleLayer with its own scale blob along axis 1 (num_axes 1), and a bias blob with bias_term."""
    c = ins[0][1]
    return [ins[0]], [(c,)] + ([(c,)] if layer.param("bias_term") else [])


def _eltwise(spec, layer, ins):
    coeff = layer.block().all("coeff")
    if any(shape != ins[0] for shape in ins[1:]):
        raise ShapeError(f"needs inputs of one shape, got {ins}")
    if coeff and (len(coeff) != len(ins) or layer.param("operation") != "SUM"):
        raise ShapeError(f"coeff is for SUM, one per input: {len(coeff)} for {len(ins)} inputs")
    return [ins[0]], []


def _scalar(spec, layer, ins):
    if len(ins) != 2 or ins[1][:1] != ins[0][:1]:
        raise ShapeError(f"needs scores and labels of the same batch size, got {ins}")
    return [()] * len(layer.tops), []


DATA = {"source": Field("string", ""), "batch_size": uint(), "backend": enum("LMDB")}
IMAGE_DATA = {"source": Field("string", ""), "batch_size": uint(1), "root_folder": Field("string", ""),
              "new_height": uint(0), "new_width": uint(0), "shuffle": flag()}

TABLE = {k.type: k for k in (
    Kind("Data", "data_param", DATA, _data, extra={"transform_param": TRANSFORM}, bottoms=0),
    Kind("ImageData", "image_data_param", IMAGE_DATA, _data, extra={"transform_param": TRANSFORM}, bottoms=0),
    Kind("Convolution", "convolution_param",
         {"num_output": uint(), "bias_term": flag(True), "pad": uint(0), "kernel_size": uint(), "stride": uint(1),
          "group": uint(1), "weight_filler": FILLER, "bias_filler": FILLER}, _conv,
         study="conv", study_keys=("num_output", "group", "kernel", "pad", "stride", "bias_term", "weight_std", "bias"),
         fillers=(("weight_filler", 0.0), ("bias_filler", 0.0)), caffe1_keys=("bias_term",)),
    Kind("ReLU", None, {}, _same, study="relu"),
    Kind("Pooling", "pooling_param",
         {"pool": enum("MAX", "AVE"), "kernel_size": uint(), "stride": uint(1), "pad": uint(0),
          "global_pooling": flag()}, _pool, study="pool", study_keys=("pool", "kernel", "stride", "pad", "global_pooling"),
         caffe1_keys=("pad", "global_pooling")),
    Kind("LRN", "lrn_param", {"local_size": uint(5), "alpha": real(1.0), "beta": real(0.75), "k": real(1.0),
                              "norm_region": enum("ACROSS_CHANNELS")}, _same,
         study="lrn", study_keys=("local_size", "alpha", "beta")),
    Kind("InnerProduct", "inner_product_param",
         {"num_output": uint(), "bias_term": flag(True), "weight_filler": FILLER, "bias_filler": FILLER}, _inner,
         study="innerproduct", study_keys=("num_output", "weight_std", "bias"),
         fillers=(("weight_filler", 0.0), ("bias_filler", 0.0))),
    Kind("Dropout", "dropout_param", {"dropout_ratio": real(0.5)}, _same, study="dropout",
         study_keys=("dropout_ratio",)),
    Kind("BatchNorm", "batch_norm_param",
         {"use_global_stats": flag(None), "moving_average_fraction": real(0.999), "eps": real(1e-5)}, _batch_norm,
         study="batchnorm", study_keys=("moving_average_fraction", "eps"), fillers=((None, 0.0),) * 3,
         statistics=True, caffe1_only=True),
    Kind("Scale", "scale_param", {"axis": Field("int", 1, ("1",)), "num_axes": Field("int", 1, ("1",)), "filler": FILLER,
                                  "bias_term": flag(), "bias_filler": FILLER}, _scale,
         study="scale", study_keys=("bias_term",), fillers=(("filler", 1.0), ("bias_filler", 0.0)), caffe1_only=True),
    Kind("Eltwise", "eltwise_param", {"operation": enum("SUM", "PROD", "MAX", default="SUM"),
                                      "coeff": Field("float", repeated=True), "stable_prod_grad": flag(True)},
         _eltwise, study="eltwise", study_keys=("operation", "coeff"), bottoms=2, variadic=True, caffe1_only=True),
    Kind("SoftmaxWithLoss", None, {}, _scalar, bottoms=2),
    Kind("Softmax", None, {}, _same),
    Kind("Accuracy", "accuracy_param", {"top_k": uint(1)}, _scalar, bottoms=2),
)}

STUDY = {k.study: k for k in TABLE.values() if k.study}       # study-file layer type -> its Kind
STUDY_FIELDS = {"kernel": "kernel_size"}       # study keys spelled otherwise in Caffe 1.0 (weight_std, bias: fillers)
LEARNABLE = ("Convolution", "InnerProduct")     # the layers whose weights the study's n counts by default


def check(msg, fields: dict, at: str = "") -> None:
    """Refuse a field of ``msg`` (a prototxt Message) that ``fields`` does not list, a value of the
    wrong kind, a value outside the accepted ones, or a field given twice that is said once.
    Raises ValueError("line N: field …")."""
    for name, values in msg.items():
        path = f"{at}{name}"
        line = msg.lines.get(name, msg.line)
        spec = fields.get(name)
        if spec is None:
            known = ", ".join(fields) or "none"
            raise ValueError(f"line {line}: field {path!r} is not one tf reads here (it reads: {known}); "
                             f"Caffe would refuse a misspelt field, and tf does not honour this one")
        if len(values) > 1 and not spec.repeated:
            raise ValueError(f"line {line}: field {path!r} is given {len(values)} times; tf reads it once")
        for v in values:
            _check_value(v, spec, path, line)


def _check_value(v, spec: Field, path: str, line: int) -> None:
    from .prototxt import Message, Word
    kind = spec.kind
    if kind == "message":
        if not isinstance(v, Message):
            raise ValueError(f"line {line}: field {path!r} must be a {{ … }} block, not {_short(v)}")
        check(v, spec.fields, f"{path}.")
        return
    ok = {"uint": lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= 0,
          "int": lambda x: isinstance(x, int) and not isinstance(x, bool),
          "float": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x),
          "bool": lambda x: isinstance(x, bool),
          "string": lambda x: isinstance(x, str) and not isinstance(x, Word),
          "enum": lambda x: isinstance(x, Word)}[kind](v)
    if not ok:
        want = {"uint": "a whole number, 0 or more", "int": "a whole number", "float": "a finite number",
                "bool": "true or false", "string": "a quoted string", "enum": "one of " + ", ".join(spec.values)}[kind]
        raise ValueError(f"line {line}: field {path!r} must be {want}, not {_short(v)}")
    if spec.values and str(v) not in spec.values:
        raise ValueError(f"line {line}: field {path!r} is {_short(v)}; tf supports {', '.join(spec.values)}")


def _short(v, limit: int = 40) -> str:
    text = repr(str(v)) if isinstance(v, str) else repr(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"
