"""The study config (YAML -> frozen dataclasses) and the catalog its families generate.

The families (families.py, a registry) decide net names, datasets, base nets and figure series;
this module loads and validates the whole study and answers questions about the catalog. Nothing
here touches the file system except reading the study file (and the natural-class list it names).
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import math
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import yaml

from .errors import Error, check_name, show
from .families import REGISTRY, WHOLE_TRAIN, WHOLE_VALID, Dataset, Net, StudyError
from .layers import LEARNABLE as LEARNABLE_TYPES, STUDY as STUDY_KINDS, STUDY_FIELDS
from .resources import config_path, data_file

STUDY_ENV = "TF_STUDY"
__all__ = ["Study", "StudyError", "Net", "Dataset", "Config", "STUDY_ENV"]


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


def _name(value, what: str) -> None:
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


# --------------------------------------------------------------------------- the catalog

class Study:
    """A loaded study: its config and the catalog of nets, base nets before their dependants."""

    def __init__(self, config: Config, path: Path):
        self.config = config
        self.path = path
        self.families = [REGISTRY[key](cfg, self) for key, cfg in config.families.items()]
        self._natural = None
        for fam in self.families:
            for need in fam.needs:
                if need not in config.families:
                    raise StudyError(f"families.{fam.key}: needs families.{need} (its nets' base nets)")
            fam.check()
        self.dataset_specs: dict[str, Dataset] = {
            WHOLE_TRAIN: Dataset(WHOLE_TRAIN, "train"), WHOLE_VALID: Dataset(WHOLE_VALID, "valid")}
        for fam in self.families:
            for d in fam.datasets():
                self.dataset_specs.setdefault(d.name, d)
        self.nets: dict[str, Net] = {}
        for fam in self.families:
            for net in fam.nets():
                if net.name in self.nets:
                    raise StudyError(f"families.{fam.key}: net {net.name} is also made by family "
                                     f"{self.nets[net.name].family}")
                self.nets[net.name] = net
        self.nets = {n.name: n for n in _dependency_order(list(self.nets.values()))}
        self._check_catalog()

    @classmethod
    def load(cls, path=None) -> "Study":
        """Load ``path``, or ``$TF_STUDY``, or the packaged paper study; validated whole."""
        path = Path(path or os.environ.get(STUDY_ENV) or config_path("paper.yaml"))
        if not path.is_file() and not path.suffix and config_path(f"{path}.yaml").is_file():
            path = config_path(f"{path}.yaml")
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
            cls._check(config)
            study = cls(config, path)
        except StudyError as e:
            raise StudyError(f"study file {path}: {e}") from None
        return study

    @staticmethod
    def _check(c: Config) -> None:
        for what, name in [("name", c.name), ("architecture.name", c.architecture.name)] + [
                (f"architecture.layers[{i}].name", l.name) for i, l in enumerate(c.architecture.layers)] + [
                (f"solvers.{show(k)}", k) for k in c.solvers]:
            _name(name, what)
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

    def _check_catalog(self) -> None:
        """Every net and dataset name is one tf accepts; every base net and dataset a net names
        exists, and its solver."""
        for name in self.dataset_specs:
            _name(name, "a dataset's name")
        for net in self.nets.values():
            _name(net.name, f"families.{net.family}: a net's name")
            if net.base and net.base not in self.nets:
                raise StudyError(f"families.{net.family}: net {net.name} needs base net {net.base}, "
                                 f"which no family of the study makes")
            for role in ("train", "valid", "mean"):
                if getattr(net, role) not in self.dataset_specs:
                    raise StudyError(f"families.{net.family}: net {net.name}'s {role} dataset "
                                     f"{getattr(net, role)} is made by no family of the study")
            if net.solver not in self.config.solvers:
                raise StudyError(f"families.{net.family}: net {net.name} uses unknown solver {net.solver!r}")

    # -- datasets
    @property
    def arch(self) -> Architecture:
        return self.config.architecture

    def natural_classes(self) -> tuple[int, ...]:
        """Indices of the natural classes (the natman split's half A)."""
        if self._natural is None:
            nat = self.config.datasets.natural
            if isinstance(nat, tuple):
                self._natural = tuple(sorted(nat))
            else:
                local = self.path.parent / nat
                path = local if local.is_file() else data_file(nat)
                try:
                    lines = path.read_text(encoding="utf-8").split()
                    self._natural = tuple(sorted(int(x) for x in lines))
                except OSError as e:
                    raise StudyError(f"datasets.natural: {path}: {e.strerror}") from None
                except (ValueError, UnicodeDecodeError):
                    raise StudyError(f"datasets.natural: {path}: not a list of class indices") from None
        return self._natural

    def dataset_classes(self, name: str) -> int:
        """Classes in dataset ``name``."""
        spec = self.dataset_specs.get(name)
        return spec.num_classes if spec and spec.classes is not None else self.config.datasets.classes

    def datasets(self) -> list[str]:
        """Every dataset that some net of the study trains or validates on (train sets first)."""
        names = {d for net in self.nets.values() for d in (net.train, net.valid)}
        return sorted(names, key=lambda d: (self.dataset_specs[d].part != "train", d))

    def series(self) -> list[str]:
        """The figure series of the study's families, in legend order."""
        return list(dict.fromkeys(s for fam in self.families for s in fam.series))

    def axis(self, series: str) -> str:
        """What a series' x is ("n", the layers copied or frozen; "images per class", …)."""
        return next((fam.axis for fam in self.families if series in fam.series), "n")

    # -- nets
    def net(self, name: str) -> Net:
        try:
            return self.nets[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.nets, n=5, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise StudyError(f"unknown net {show(name)} in study {self.config.name!r}{hint}") from None

    def select(self, patterns=()) -> list[Net]:
        """Nets matching any of the glob ``patterns`` (all nets when there are none), in catalog order."""
        if not patterns:
            return list(self.nets.values())
        chosen = set()
        for p in patterns:
            if not any(ch in p for ch in "*?["):
                chosen.add(self.net(p).name)
                continue
            hits = fnmatch.filter(self.nets, p)
            if not hits:
                raise StudyError(f"no net of study {self.config.name!r} matches {show(p)}")
            chosen.update(hits)
        return [n for n in self.nets.values() if n.name in chosen]

    def with_bases(self, nets) -> list[Net]:
        """``nets`` and every net they need, transitively, in catalog order."""
        names, grow = set(), [n.name for n in nets]
        while grow:
            name = grow.pop()
            if name not in names:
                names.add(name)
                grow += list(self.nets[name].requires)
        return [n for n in self.nets.values() if n.name in names]

    def dependants(self, name: str) -> list[Net]:
        return [n for n in self.nets.values() if name in n.requires]

    def max_iter(self, net: Net) -> int:
        return self.config.solvers[net.solver].max_iter


def _dependency_order(nets: list[Net]) -> list[Net]:
    """Stable topological order: a net after the nets it requires, else in generation order."""
    names = {n.name for n in nets}
    placed, out, waiting = set(), [], list(nets)
    while waiting:
        rest = []
        for n in waiting:
            if all(r in placed or r not in names for r in n.requires):
                out.append(n)
                placed.add(n.name)
            else:
                rest.append(n)
        if len(rest) == len(waiting):
            raise StudyError(f"nets {', '.join(n.name for n in rest)} depend on each other in a cycle")
        waiting = rest
    return out
