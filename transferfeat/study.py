"""The study config (YAML -> frozen dataclasses) and the catalog of nets generated from it.

This module is the single source of truth for net names, datasets, frozen layers, base nets and
the dependency DAG. Nothing here touches the file system except reading the study file.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import yaml

from .errors import Error
from .resources import config_path, data_file

STUDY_ENV = "TF_STUDY"
STUDY_COPY = "tf-study.yaml"     # the study a results folder was rendered from


class StudyError(Error):
    """A study file that does not describe a valid study."""


# --------------------------------------------------------------------------- config schema

LAYER_KEYS = {
    "conv": ("num_output", "group", "kernel", "pad", "stride", "weight_std", "bias"),
    "innerproduct": ("num_output", "weight_std", "bias"),
    "pool": ("pool", "kernel", "stride"),
    "lrn": ("local_size", "alpha", "beta"),
    "relu": (),
    "dropout": ("dropout_ratio",),
}
LEARNABLE = ("conv", "innerproduct")


@dataclass(frozen=True)
class Layer:
    """One layer of the architecture; ``params`` keep the order of the study file."""
    name: str
    type: str
    params: tuple = ()

    def get(self, key, default=None):
        return dict(self.params).get(key, default)

    @property
    def learnable(self) -> bool:
        return self.type in LEARNABLE


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
    name: str
    layers: tuple[Layer, ...]

    @property
    def learnable(self) -> tuple[Layer, ...]:
        return tuple(l for l in self.layers if l.learnable)


@dataclass(frozen=True)
class Solver:
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
class HalfFamily:
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Empty:
    pass


@dataclass(frozen=True)
class NetbaseFamily:
    padding_layers: bool = False


@dataclass(frozen=True)
class ReducedFamily:
    solver: str = "default"


@dataclass(frozen=True)
class DepthFamily:
    depths: tuple[int, ...]


@dataclass(frozen=True)
class TransferFamily:
    directions: tuple[str, ...]
    depths: tuple[int, ...]
    seeds: tuple[int, ...] = ()


@dataclass(frozen=True)
class Families:
    half: Optional[HalfFamily] = None
    halfnatman: Optional[Empty] = None
    netbase: Optional[NetbaseFamily] = None
    reduced: Optional[ReducedFamily] = None
    nolearn: Optional[DepthFamily] = None
    transfer: Optional[TransferFamily] = None
    transfer_ft: Optional[TransferFamily] = None
    transfernatman: Optional[TransferFamily] = None


@dataclass(frozen=True)
class Config:
    name: str
    datasets: Datasets
    input: Input
    architecture: Architecture
    solvers: dict[str, Solver]
    families: Families


def _key(name: str) -> str:
    return name.replace("_", "-") if name == "transfer_ft" else name


def _convert(tp, value, path: str):
    """Convert a YAML value to the annotated type ``tp``, naming ``path`` on error."""
    origin = typing.get_origin(tp)
    if tp is Layer:
        return _layer(value, path)
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, path)
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
            raise StudyError(f"{path}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1]
        return tuple(_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise StudyError(f"{path}: expected a mapping, got {value!r}")
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
        raise StudyError(f"{path}: expected {tp.__name__}, got {value!r}")
    return value


def _dataclass(cls, value, path: str):
    if value is None and not dataclasses.fields(cls):
        value = {}
    if not isinstance(value, dict):
        raise StudyError(f"{path or 'top level'}: expected a mapping, got {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {_key(f.name): f for f in dataclasses.fields(cls)}
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


def _layer(value, path: str) -> Layer:
    if not isinstance(value, dict):
        raise StudyError(f"{path}: expected a mapping, got {value!r}")
    for key in ("name", "type"):
        if key not in value:
            raise StudyError(f"{_join(path, key)}: missing key")
    kind = value["type"]
    if kind not in LAYER_KEYS:
        raise StudyError(f"{path}.type: unknown layer type {kind!r} (valid: {', '.join(LAYER_KEYS)})")
    params = []
    for key, v in value.items():
        if key in ("name", "type"):
            continue
        if key not in LAYER_KEYS[kind]:
            valid = ", ".join(("name", "type") + LAYER_KEYS[kind])
            raise StudyError(f"{_join(path, key)}: unknown key for a {kind} layer (valid keys: {valid})")
        params.append((key, v))
    return Layer(str(value["name"]), kind, tuple(params))


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


# --------------------------------------------------------------------------- the catalog

PAPER_FAMILIES = ("half", "halfnatman", "netbase", "reduced", "transfer", "transfer-ft", "transfernatman")


@dataclass(frozen=True)
class Net:
    """One network of the study."""
    name: str
    family: str
    train: str                  # training dataset name
    valid: str                  # validation dataset name
    classes: int                # classes in the training set
    solver: str                 # key into Config.solvers
    mean: str                   # dataset whose training-set mean the net subtracts
    base: Optional[str] = None  # the net whose weights are copied
    n: int = 0                  # layers 1..n copied (transfer) or random-frozen (nolearn)
    fine_tune: bool = False
    padding_layers: bool = False

    @property
    def requires(self) -> tuple[str, ...]:
        return (self.base,) if self.base else ()

    @property
    def paper(self) -> bool:
        """Part of the paper's 163 (all but the random-frozen-features nets)."""
        return self.family in PAPER_FAMILIES

    def frozen(self, arch: Architecture) -> tuple[str, ...]:
        """Learnable layers whose learning rate is 0."""
        if self.fine_tune or not self.n:
            return ()
        return tuple(l.name for l in arch.learnable[: self.n])

    def renamed(self, arch: Architecture) -> tuple[str, ...]:
        """Learnable layers renamed with ``-new`` so that Caffe re-initialises them."""
        if not self.base:
            return ()
        return tuple(l.name for l in arch.learnable[self.n:])

    def to_dict(self, arch: Architecture) -> dict:
        return {
            "name": self.name, "family": self.family, "base": self.base, "n": self.n,
            "fine_tune": self.fine_tune, "train": self.train, "valid": self.valid,
            "classes": self.classes, "mean": self.mean, "solver": self.solver,
            "frozen": list(self.frozen(arch)), "renamed": list(self.renamed(arch)),
            "requires": list(self.requires), "paper": self.paper,
        }


def half_dataset(half: str, part: str) -> str:
    return f"{half}_{part}"


def reduced_dataset(per_class: int, full: int) -> str:
    return "whole_train" if per_class >= full else f"reduced{per_class:04d}_train"


class Study:
    """A loaded study: its config and the catalog of nets, in dependency-respecting order."""

    def __init__(self, config: Config, path: Path):
        self.config = config
        self.path = path
        self.nets: dict[str, Net] = {}
        for net in self._generate():
            self.nets[net.name] = net

    @classmethod
    def load(cls, path=None) -> "Study":
        """Load ``path``, or ``$TF_STUDY``, or the packaged paper study."""
        path = Path(path or os.environ.get(STUDY_ENV) or config_path("paper.yaml"))
        if not path.is_file() and not path.suffix and config_path(f"{path}.yaml").is_file():
            path = config_path(f"{path}.yaml")
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as e:
            raise StudyError(f"study file {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise StudyError(f"study file {path}: {e}") from None
        try:
            config = _dataclass(Config, data, "")
            cls._check(config)
        except StudyError as e:
            raise StudyError(f"study file {path}: {e}") from None
        return cls(config, path)

    @staticmethod
    def _check(c: Config) -> None:
        names = [l.name for l in c.architecture.layers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise StudyError(f"architecture.layers: duplicate layer names {sorted(dup)}")
        if not c.architecture.learnable:
            raise StudyError("architecture.layers: no conv or innerproduct layer")
        for fam in ("reduced",):
            f = getattr(c.families, fam)
            if f and f.solver not in c.solvers:
                raise StudyError(f"families.{fam}.solver: unknown solver {f.solver!r} (solvers: {', '.join(c.solvers)})")
        if "default" not in c.solvers:
            raise StudyError(f"solvers.default: missing key (solvers: {', '.join(c.solvers)})")
        depth = len(c.architecture.learnable)
        for fam in ("nolearn", "transfer", "transfer_ft", "transfernatman"):
            f = getattr(c.families, fam)
            for i, d in enumerate(f.depths if f else ()):
                if not 1 <= d < depth:
                    raise StudyError(f"families.{_key(fam)}.depths[{i}]: {d} is not in 1..{depth - 1}")
            for i, d in enumerate(getattr(f, "directions", ()) if f else ()):
                if len(d) != 2 or set(d) - {"A", "B"}:
                    raise StudyError(f"families.{_key(fam)}.directions[{i}]: {d!r} is not one of AB, BA, AA, BB")
        if c.families.transfer_ft and c.families.transfer_ft.seeds and not c.families.half:
            raise StudyError("families.transfer-ft: needs families.half")

    # -- datasets
    @property
    def arch(self) -> Architecture:
        return self.config.architecture

    def natural_classes(self) -> tuple[int, ...]:
        """Indices of the natural classes (the natman split's half A)."""
        nat = self.config.datasets.natural
        if isinstance(nat, tuple):
            return tuple(sorted(nat))
        local = self.path.parent / nat
        path = local if local.is_file() else data_file(nat)
        try:
            lines = path.read_text().split()
        except OSError as e:
            raise StudyError(f"study file {self.path}: datasets.natural: {path}: {e.strerror}") from None
        return tuple(sorted(int(x) for x in lines))

    def half_classes(self, half: str) -> int:
        """Number of classes in dataset ``half`` (e.g. ``half0A`` or ``halfnatmanB``)."""
        total = self.config.datasets.classes
        if half.startswith("halfnatman"):
            nat = len(self.natural_classes())
            return nat if half.endswith("A") else total - nat
        return total // 2

    def datasets(self) -> list[str]:
        """Every dataset that some net of the study trains or validates on (train sets first)."""
        names = []
        for net in self.nets.values():
            for d in (net.train, net.valid):
                if d not in names:
                    names.append(d)
        return sorted(names, key=lambda d: (not d.endswith("_train"), d))

    # -- nets
    def _generate(self):
        c = self.config
        f = c.families
        total = c.datasets.classes
        whole = dict(train="whole_train", valid="whole_valid", classes=total, mean="whole_train")

        def half(name):
            return dict(train=half_dataset(name, "train"), valid=half_dataset(name, "valid"),
                        classes=self.half_classes(name), mean=half_dataset(name, "train"))

        if f.half:
            for s in f.half.seeds:
                for x in "AB":
                    yield Net(f"half{s}{x}", "half", solver="default", **half(f"half{s}{x}"))
        if f.halfnatman is not None:
            for x in "AB":
                yield Net(f"halfnatman{x}", "halfnatman", solver="default", **half(f"halfnatman{x}"))
        if f.netbase is not None:
            yield Net("netbase", "netbase", solver="default", padding_layers=f.netbase.padding_layers, **whole)
        if f.reduced is not None:
            full = c.datasets.train_per_class
            for k in c.datasets.reduced_per_class:
                d = reduced_dataset(k, full)
                yield Net(f"reduced-{k:04d}", "reduced", solver=f.reduced.solver,
                          **dict(whole, train=d, mean=d))
        if f.nolearn:
            for n in f.nolearn.depths:
                yield Net(f"nolearn_1_{n}", "nolearn", solver="default", n=n, **whole)
        for fam, ft in (("transfer", f.transfer), ("transfer-ft", f.transfer_ft)):
            for s in (ft.seeds if ft else ()):
                for xy in ft.directions:
                    for n in ft.depths:
                        base, target = f"half{s}{xy[0]}", f"half{s}{xy[1]}"
                        yield Net(f"{fam}{s}{xy[0]}{s}{xy[1]}_1_{n}", fam, solver="default", base=base, n=n,
                                  fine_tune=fam == "transfer-ft",
                                  **dict(half(target), mean=half_dataset(base, "train")))
        if f.transfernatman:
            for xy in f.transfernatman.directions:
                for n in f.transfernatman.depths:
                    base, target = f"halfnatman{xy[0]}", f"halfnatman{xy[1]}"
                    yield Net(f"transfernatman{xy}_1_{n}", "transfernatman", solver="default", base=base, n=n,
                              **dict(half(target), mean=half_dataset(base, "train")))

    def net(self, name: str) -> Net:
        try:
            return self.nets[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.nets, n=5, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise StudyError(f"unknown net {name!r} in study {self.config.name!r}{hint}") from None

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
                raise StudyError(f"no net of study {self.config.name!r} matches {p!r}")
            chosen.update(hits)
        return [n for n in self.nets.values() if n.name in chosen]

    def dependants(self, name: str) -> list[Net]:
        return [n for n in self.nets.values() if name in n.requires]

    def max_iter(self, net: Net) -> int:
        return self.config.solvers[net.solver].max_iter
