"""The study file: YAML read safely (bounded), converted to frozen dataclasses by their annotations,
and checked whole (names, the architecture's graph, every value against the layer table, solvers,
sizes); each error names the key path. The catalog the families make of it is study.py's."""
from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import yaml

from .errors import Error, check_name, show
from .families import REGISTRY, StudyError
from .layers import LEARNABLE as LEARNABLE_TYPES, STUDY as STUDY_KINDS, STUDY_FIELDS


# --------------------------------------------------------------------------- config schema

LAYER_KEYS = {name: kind.study_keys for name, kind in STUDY_KINDS.items()}    # from the layer table
LEARNABLE = tuple(name for name, kind in STUDY_KINDS.items() if kind.type in LEARNABLE_TYPES)


@dataclass(frozen=True)
class ArchLayer:
    """One layer of the architecture; ``params`` keep the order of the study file; ``bottoms``: the
    layers whose outputs it reads (empty: the previous layer's)."""
    name: str
    type: str
    params: tuple = ()
    bottoms: tuple = ()

    def get(self, key, default=None):
        return dict(self.params).get(key, default)

    @property
    def learnable(self) -> bool:
        return self.type in LEARNABLE

    @property
    def has_blobs(self) -> bool:
        """Whether a transfer net copies blobs of this layer (weights, or BatchNorm's statistics)."""
        return bool(STUDY_KINDS[self.type].fillers)


@dataclass(frozen=True)
class Datasets:
    classes: int
    natural: Union[str, tuple[int, ...]]
    train_per_class: int
    reduced_per_class: tuple[int, ...] = ()
    valid_per_class: Optional[int] = None


@dataclass(frozen=True)
class Input:
    crop: int
    mirror: bool
    train_batch: int
    val_batch: int
    resize: Optional[int] = None


@dataclass(frozen=True)
class Architecture:
    """The layers, and the cut points the study's n counts: unit k is every layer with blobs after
    cut k-1 up to cut k; layers after the last cut form one more unit. Default cuts: each conv and
    innerproduct layer (CaffeNet's conv1 … fc8)."""
    name: str
    layers: tuple[ArchLayer, ...]
    cuts: tuple[str, ...] = ()

    @property
    def learnable(self) -> tuple[ArchLayer, ...]:
        return tuple(l for l in self.layers if l.learnable)

    @property
    def cut_names(self) -> tuple[str, ...]:
        return self.cuts or tuple(l.name for l in self.learnable)

    @functools.cached_property
    def units(self) -> tuple[tuple[str, ...], ...]:
        """The names of the layers with blobs in each unit, in order."""
        ends, units, unit = set(self.cut_names), [], []
        for layer in self.layers:
            if layer.has_blobs:
                unit.append(layer.name)
            if layer.name in ends:
                units.append(tuple(unit))
                unit = []
        return tuple(units) + ((tuple(unit),) if unit else ())


@dataclass(frozen=True)
class SolverSettings:
    test_iter: int
    test_interval: int
    base_lr: float
    lr_policy: str
    gamma: float
    stepsize: int
    display: int
    max_iter: int
    momentum: float
    weight_decay: float
    snapshot: int
    random_seed: Optional[int] = None     # Caffe 1.0 only: makes a run repeatable


@dataclass(frozen=True)
class Config:
    name: str
    datasets: Datasets
    input: Input
    architecture: Architecture
    solvers: dict[str, SolverSettings]
    families: dict          # family key -> its config dataclass, in registry order (see _families)


def _convert(tp, value, path: str):
    """Convert a YAML value to the annotated type ``tp``, naming ``path`` on error."""
    origin = typing.get_origin(tp)
    if tp is ArchLayer:
        return _layer(value, path)
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, path)
    if tp is dict:
        return _families(value, path)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except StudyError as e:
                errors.append(str(e))
        raise StudyError(errors[-1])
    if origin is tuple:
        if not isinstance(value, list):
            raise StudyError(f"{path}: expected a list, got {show(value)}")
        (item,) = typing.get_args(tp)[:1]
        return tuple(_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise StudyError(f"{path}: expected a mapping, got {show(value)}")
        item = typing.get_args(tp)[1]
        return {k: _convert(item, v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise StudyError(f"{path}: expected {tp.__name__}, got {show(value)}")
    return value


def _dataclass(cls, value, path: str):
    if value is None and not dataclasses.fields(cls):
        value = {}
    if not isinstance(value, dict):
        raise StudyError(f"{path or 'top level'}: expected a mapping, got {show(value)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in value:
        if key not in fields:
            valid = ", ".join(fields) or "(none)"
            raise StudyError(f"{_join(path, key)}: unknown key (valid keys: {valid})")
    kwargs = {}
    for key, f in fields.items():
        if key in value:
            kwargs[f.name] = _convert(hints[f.name], value[key], _join(path, key))
        elif f.default is dataclasses.MISSING:
            raise StudyError(f"{_join(path, key)}: missing key")
    return cls(**kwargs)


def _layer(value, path: str) -> ArchLayer:
    if not isinstance(value, dict):
        raise StudyError(f"{path}: expected a mapping, got {show(value)}")
    for key in ("name", "type"):
        if key not in value:
            raise StudyError(f"{_join(path, key)}: missing key")
    kind = value["type"]
    if not isinstance(kind, str) or kind not in LAYER_KEYS:
        raise StudyError(f"{path}.type: unknown layer type {show(kind)} (valid: {', '.join(LAYER_KEYS)})")
    params, bottoms = [], ()
    for key, v in value.items():
        if key in ("name", "type"):
            continue
        if key == "bottom":
            bottoms = tuple(v) if isinstance(v, list) else (v,)
            if not bottoms or not all(isinstance(b, str) for b in bottoms):
                raise StudyError(f"{_join(path, key)}: expected a layer name or a list of them, got {show(v)}")
            continue
        if key not in LAYER_KEYS[kind]:
            valid = ", ".join(("name", "type", "bottom") + LAYER_KEYS[kind])
            raise StudyError(f"{_join(path, key)}: unknown key for a {kind} layer (valid keys: {valid})")
        params.append((key, v))
    return ArchLayer(str(value["name"]), kind, tuple(params), bottoms)


def _families(value, path: str) -> dict:
    """The ``families:`` section: each key a registered family, its value that family's config."""
    if not isinstance(value, dict):
        raise StudyError(f"{path}: expected a mapping, got {show(value)}")
    for key in value:
        if key not in REGISTRY:
            raise StudyError(f"{_join(path, key)}: unknown key (valid keys: {', '.join(REGISTRY)})")
    return {key: _dataclass(fam.config, value[key], _join(path, key))
            for key, fam in REGISTRY.items() if key in value}


MAX_NODES = 20_000      # values a study file may expand to: a few hundred is usual; aliases can make billions
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def _read_yaml(text: str):
    """The YAML document, refused when its aliases expand it past MAX_NODES values (a small file of
    nested aliases otherwise becomes a billion values, and so does every message that shows one)."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is None:
        return None
    sizes: dict = {}

    def size(n) -> int:
        if id(n) not in sizes:
            sizes[id(n)] = 0                    # a node inside itself counts once (the loader refuses it)
            inner = [x for pair in n.value for x in pair] if isinstance(n, yaml.MappingNode) else (
                n.value if isinstance(n, yaml.SequenceNode) else [])
            sizes[id(n)] = min(1 + sum(size(c) for c in inner), MAX_NODES + 1)
        return sizes[id(n)]
    if size(node) > MAX_NODES:
        raise StudyError(f"its YAML expands to more than {MAX_NODES} values (aliases nested in aliases); "
                         f"a study needs a few hundred")
    return yaml.safe_load(text)


def valid_name(value, what: str) -> None:
    try:
        check_name(value, what)
    except Error as e:
        raise StudyError(str(e)) from None


def _layer_value(kind, key: str, value, path: str) -> None:
    """A study layer's value is what its field in the layer table takes (so nothing else reaches a prototxt)."""
    if key in ("weight_std", "bias"):
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), "a number"
    else:
        field = kind.fields[STUDY_FIELDS.get(key, key)]
        if field.repeated:
            ok = isinstance(value, list) and bool(value) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            want = "a list of numbers"
        elif field.kind == "bool":
            ok, want = isinstance(value, bool), "true or false"
        elif field.values:
            ok, want = value in field.values, f"one of {', '.join(field.values)}"
        elif field.kind == "float":
            ok, want = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), "a number"
        else:
            ok, want = isinstance(value, int) and not isinstance(value, bool) and value >= 0, "a whole number"
    if not ok:
        raise StudyError(f"{path}: {show(value)} is not {want}")


def _positive(value, path: str, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise StudyError(f"{path}: {show(value)} must be {'0 or more' if zero_ok else 'positive'}")


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)

def load_config(path: Path) -> Config:
    """The study file at ``path`` read, converted and checked whole; a StudyError naming the file and
    the key path otherwise."""
    try:
        data = _read_yaml(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise StudyError(f"study file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise StudyError(f"study file {path}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        raise StudyError(f"study file {path}: {' '.join(str(e).split())[:300]}") from None
    except StudyError as e:
        raise StudyError(f"study file {path}: {e}") from None
    try:
        config = _dataclass(Config, data, "")
        check(config)
    except StudyError as e:
        raise StudyError(f"study file {path}: {e}") from None
    return config


def check(c: Config) -> None:
    """Everything a study file says, checked: names, the architecture's graph and values, solvers, sizes."""
    for what, name in [("name", c.name), ("architecture.name", c.architecture.name)] + [
            (f"architecture.layers[{i}].name", l.name) for i, l in enumerate(c.architecture.layers)] + [
            (f"solvers.{show(k)}", k) for k in c.solvers]:
        valid_name(name, what)
    names = [l.name for l in c.architecture.layers]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise StudyError(f"architecture.layers: duplicate layer names {sorted(dup)}")
    arch = c.architecture
    if not arch.learnable:
        raise StudyError("architecture.layers: no conv or innerproduct layer")
    for k, cut in enumerate(arch.cuts):
        if cut not in names or cut in arch.cuts[:k]:
            raise StudyError(f"architecture.cuts[{k}]: {show(cut)} is not a layer of the architecture "
                             f"(or is named twice)")
    if [names.index(c) for c in arch.cuts] != sorted(names.index(c) for c in arch.cuts):
        raise StudyError(f"architecture.cuts: {', '.join(arch.cuts)} are not in the layers' order")
    if any(STUDY_KINDS[l.type].caffe1_only for l in arch.layers) and not arch.cuts:
        graph = ", ".join(t for t, k in STUDY_KINDS.items() if k.caffe1_only)
        raise StudyError(f"architecture.cuts: missing key (an architecture with {graph} layers names the cut "
                         f"points its units end at)")
    for k, unit in enumerate(arch.units):
        if not unit:
            raise StudyError(f"architecture.cuts[{k}]: unit {k + 1} (up to {arch.cut_names[k]}) holds no layer "
                             f"with weights")
    seen = set()
    for i, layer in enumerate(arch.layers):
        for b in layer.bottoms:
            if b not in seen:
                raise StudyError(f"architecture.layers[{i}].bottom: {show(b)} is not a layer before "
                                 f"{layer.name}")
        want = STUDY_KINDS[layer.type]
        got = len(layer.bottoms) or 1
        if got < want.bottoms or (got > want.bottoms and not want.variadic):
            raise StudyError(f"architecture.layers[{i}]: a {layer.type} layer reads {want.bottoms}"
                             f"{' or more' if want.variadic else ''} layers' outputs, not {got} (bottom: …)")
        seen.add(layer.name)
    for i, layer in enumerate(arch.layers):
        for key, value in layer.params:
            if key in ("num_output", "kernel", "stride", "group", "local_size") and (
                    not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise StudyError(f"architecture.layers[{i}].{key}: {show(value)} is not a positive integer")
            _layer_value(STUDY_KINDS[layer.type], key, value, f"architecture.layers[{i}].{key}")
    if "default" not in c.solvers:
        raise StudyError(f"solvers.default: missing key (solvers: {', '.join(c.solvers)})")
    for name, s in c.solvers.items():
        for key in ("test_iter", "test_interval", "display", "max_iter", "snapshot", "stepsize"):
            _positive(getattr(s, key), f"solvers.{name}.{key}", zero_ok=key in ("display", "snapshot"))
        if not 0 < s.base_lr < float("inf"):
            raise StudyError(f"solvers.{name}.base_lr: {s.base_lr} must be a positive number")
        if s.lr_policy not in LR_POLICIES:
            raise StudyError(f"solvers.{name}.lr_policy: {show(s.lr_policy)} is not one of {', '.join(LR_POLICIES)}")
        for key in ("gamma", "momentum", "weight_decay"):
            if not 0 <= getattr(s, key) < float("inf"):
                raise StudyError(f"solvers.{name}.{key}: {getattr(s, key)} must be a number, 0 or more")
    d, i = c.datasets, c.input
    _positive(d.classes - 1, "datasets.classes")
    _positive(d.train_per_class, "datasets.train_per_class")
    for k, v in enumerate(d.reduced_per_class):
        _positive(v, f"datasets.reduced_per_class[{k}]")
    for key in ("crop", "train_batch", "val_batch"):
        _positive(getattr(i, key), f"input.{key}")

