"""The family registry: each family of nets is one class, registered with ``@register``.

A family owns its section under ``families:`` in the study file (a dataclass, ``config``), generates
its nets and the datasets they train on, names each net's base net, and places each net in the
paper's figures (``Net.series``, ``Net.x``). A new family is one class here (or anywhere that is
imported before the study is loaded) plus its YAML section; nothing else parses net names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Union

import numpy as np

from .errors import Error, show

REGISTRY: dict[str, type] = {}        # YAML key -> Family subclass, in registration (catalog) order


class StudyError(Error):
    """A study file that does not describe a valid study."""


def register(cls):
    """Class decorator: add a family to the registry under ``cls.key``."""
    if not cls.key or cls.config is None:
        raise TypeError(f"{cls.__name__}: a family needs a key and a config dataclass")
    REGISTRY[cls.key] = cls
    return cls


@dataclass(frozen=True)
class Dataset:
    """A list file the study needs: the whole set, a class subset (relabelled by rank) or the first
    ``per_class`` images of each class (labels unchanged)."""
    name: str                                   # e.g. "half0A_train"
    part: str                                   # "train" or "valid"
    classes: Optional[tuple[int, ...]] = None   # original class ids of a subset, sorted
    per_class: Optional[int] = None

    @property
    def num_classes(self) -> Optional[int]:
        return len(self.classes) if self.classes is not None else None


@dataclass(frozen=True)
class Net:
    """One network of the study, as its family generated it."""
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
    series: Optional[str] = None    # the figure series the net is a point of
    x: Union[int, float] = 0        # its x value there (layer n, images per class, …)
    paper: bool = True              # one of the paper's 163 nets

    @property
    def requires(self) -> tuple[str, ...]:
        return (self.base,) if self.base else ()

    def frozen(self, arch) -> tuple[str, ...]:
        """Layers with blobs whose learning rate is 0 (and BatchNorms on their stored statistics):
        those of the architecture's units 1..n."""
        if self.fine_tune or not self.n:
            return ()
        return tuple(name for unit in arch.units[: self.n] for name in unit)

    def renamed(self, arch) -> tuple[str, ...]:
        """Layers with blobs renamed with ``-new`` so that the engine re-initialises them: those of the
        units after n."""
        if not self.base:
            return ()
        return tuple(name for unit in arch.units[self.n:] for name in unit)

    def to_dict(self, arch) -> dict:
        return {
            "name": self.name, "family": self.family, "base": self.base, "n": self.n,
            "fine_tune": self.fine_tune, "train": self.train, "valid": self.valid,
            "classes": self.classes, "mean": self.mean, "solver": self.solver,
            "frozen": list(self.frozen(arch)), "renamed": list(self.renamed(arch)),
            "requires": list(self.requires), "paper": self.paper, "series": self.series, "x": self.x,
        }


class Family:
    """Base class. ``study`` gives ``config`` (the whole study config) and ``natural_classes()``."""
    key: str = ""               # the section under ``families:``
    config: type = None         # the dataclass that section loads into
    paper: bool = True          # its nets are among the paper's 163
    series: tuple = ()          # figure series its nets belong to, in legend order
    needs: tuple = ()           # families whose nets are its base nets
    axis: str = "n"             # what its nets' x is: n, the layers copied or frozen (or, e.g., images per class)

    def __init__(self, cfg, study):
        self.cfg, self.study = cfg, study

    def check(self) -> None:
        """Raise StudyError (key path relative to ``families.<key>``) for a bad section."""

    def datasets(self) -> Iterable[Dataset]:
        return ()

    def nets(self) -> Iterable[Net]:
        return ()

    # -- helpers for subclasses
    def net(self, name, train, valid, **kw) -> Net:
        """A net of this family on datasets ``train``/``valid`` (mean: its own training set by default)."""
        kw.setdefault("mean", train)
        kw.setdefault("solver", "default")
        kw.setdefault("classes", self.study.dataset_classes(train))
        return Net(name, self.key, train, valid, paper=self.paper, **kw)

    def error(self, key: str, message: str) -> StudyError:
        return StudyError(f"families.{self.key}.{key}: {message}")

    def check_depths(self, depths) -> None:
        depth = len(self.study.config.architecture.units)
        for i, d in enumerate(depths):
            if not 1 <= d < depth:
                raise self.error(f"depths[{i}]", f"{d} is not in 1..{depth - 1}")


WHOLE_TRAIN, WHOLE_VALID = "whole_train", "whole_valid"


def split_datasets(prefix: str, classes) -> list[Dataset]:
    """The train and valid list of a class subset named ``prefix`` (``half0A`` → ``half0A_train``…)."""
    return [Dataset(f"{prefix}_{part}", part, tuple(classes)) for part in ("train", "valid")]


def random_halves(seed: int, classes: int) -> tuple[list[int], list[int]]:
    """The original split script's halves: numpy's legacy RNG seeded with ``[seed]``."""
    np.random.seed([seed])
    a = sorted(int(x) for x in np.random.choice(np.arange(classes), classes // 2, replace=False))
    chosen = set(a)
    return a, [c for c in range(classes) if c not in chosen]


# --------------------------------------------------------------------------- the paper's families

@dataclass(frozen=True)
class Seeds:
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class NoOptions:
    pass


@dataclass(frozen=True)
class NetbaseOptions:
    padding_layers: bool = False


@dataclass(frozen=True)
class ReducedOptions:
    solver: str = "default"


@dataclass(frozen=True)
class Depths:
    depths: tuple[int, ...]


@dataclass(frozen=True)
class Transfers:
    directions: tuple[str, ...]
    depths: tuple[int, ...]
    seeds: tuple[int, ...] = ()


@register
class Half(Family):
    """Base nets on random halves of the classes: ``half{s}{A|B}``."""
    key, config, series = "half", Seeds, ("baseB",)

    def check(self):
        for i, s in enumerate(self.cfg.seeds):
            if not 0 <= s < 2 ** 32:
                raise self.error(f"seeds[{i}]", f"{s} is not a seed numpy takes (0 .. 2**32-1)")

    def datasets(self):
        for s in self.cfg.seeds:
            a, b = random_halves(s, self.study.config.datasets.classes)
            yield from split_datasets(f"half{s}A", a)
            yield from split_datasets(f"half{s}B", b)

    def nets(self):
        for s in self.cfg.seeds:
            for x in "AB":
                yield self.net(f"half{s}{x}", f"half{s}{x}_train", f"half{s}{x}_valid", series="baseB", x=0)


@register
class HalfNatman(Family):
    """Base nets on the natural (A) and man-made (B) classes: ``halfnatman{A|B}``."""
    key, config, series = "halfnatman", NoOptions, ("natman_to_natural", "natman_to_manmade")

    def check(self):
        total = self.study.config.datasets.classes
        if any(not 0 <= c < total for c in self.study.natural_classes()):
            raise StudyError(f"datasets.natural: a class is outside 0..{total - 1}")

    def datasets(self):
        nat = self.study.natural_classes()
        yield from split_datasets("halfnatmanA", nat)
        yield from split_datasets("halfnatmanB", [c for c in range(self.study.config.datasets.classes)
                                                  if c not in set(nat)])

    def nets(self):
        for x, series in (("A", "natman_to_natural"), ("B", "natman_to_manmade")):
            yield self.net(f"halfnatman{x}", f"halfnatman{x}_train", f"halfnatman{x}_valid", series=series, x=0)


@register
class Netbase(Family):
    """The base net on all classes: ``netbase`` (the random-frozen-filter series' reference)."""
    key, config, series = "netbase", NetbaseOptions, ("random_frozen",)

    def nets(self):
        yield self.net("netbase", WHOLE_TRAIN, WHOLE_VALID, padding_layers=self.cfg.padding_layers,
                       series="random_frozen", x=0)


@register
class Reduced(Family):
    """Nets on the first N training images of each class: ``reduced-{NNNN}``."""
    key, config, series, axis = "reduced", ReducedOptions, ("reduced",), "images per class"

    def check(self):
        if self.cfg.solver not in self.study.config.solvers:
            raise self.error("solver", f"unknown solver {show(self.cfg.solver)} "
                                       f"(solvers: {', '.join(self.study.config.solvers)})")

    def _dataset(self, k: int) -> str:
        return WHOLE_TRAIN if k >= self.study.config.datasets.train_per_class else f"reduced{k:04d}_train"

    def datasets(self):
        for k in self.study.config.datasets.reduced_per_class:
            if self._dataset(k) != WHOLE_TRAIN:
                yield Dataset(self._dataset(k), "train", per_class=k)

    def nets(self):
        for k in self.study.config.datasets.reduced_per_class:
            yield self.net(f"reduced-{k:04d}", self._dataset(k), WHOLE_VALID, solver=self.cfg.solver,
                           series="reduced", x=k)


@register
class Nolearn(Family):
    """Layers 1..n random and frozen, trained on all classes: ``nolearn_1_{n}`` (not in the paper's 163)."""
    key, config, series, paper = "nolearn", Depths, ("random_frozen",), False

    def check(self):
        self.check_depths(self.cfg.depths)

    def nets(self):
        for n in self.cfg.depths:
            yield self.net(f"nolearn_1_{n}", WHOLE_TRAIN, WHOLE_VALID, n=n, series="random_frozen", x=n)


class _Transfer(Family):
    """Layers 1..n copied from a base net (frozen, or fine-tuned), the rest re-initialised."""
    config, needs = Transfers, ("half",)
    fine_tune = False

    def check(self):
        self.check_depths(self.cfg.depths)
        for i, d in enumerate(self.cfg.directions):
            if len(d) != 2 or set(d) - {"A", "B"}:
                raise self.error(f"directions[{i}]", f"{show(d)} is not one of AB, BA, AA, BB")

    def pairs(self):
        """(name stem, base net, target dataset prefix, series) for each base/target pair."""
        plus = "_plus" if self.fine_tune else ""
        for s in self.cfg.seeds:
            for xy in self.cfg.directions:
                series = ("selffer_BnB" if xy[0] == xy[1] else "transfer_AnB") + plus
                yield f"{self.key}{s}{xy[0]}{s}{xy[1]}", f"half{s}{xy[0]}", f"half{s}{xy[1]}", series

    def nets(self):
        for stem, base, target, series in self.pairs():
            for n in self.cfg.depths:
                yield self.net(f"{stem}_1_{n}", f"{target}_train", f"{target}_valid", base=base, n=n,
                               fine_tune=self.fine_tune, mean=f"{base}_train", series=series, x=n)


@register
class Transfer(_Transfer):
    """``transfer{s}{X}{s}{Y}_1_{n}``: AnB (transfer) and BnB (selffer), layers 1..n frozen."""
    key, series = "transfer", ("selffer_BnB", "transfer_AnB")


@register
class TransferFineTuned(_Transfer):
    """``transfer-ft{s}{X}{s}{Y}_1_{n}``: AnB⁺ and BnB⁺, the copied layers fine-tuned."""
    key, series, fine_tune = "transfer-ft", ("selffer_BnB_plus", "transfer_AnB_plus"), True


@register
class TransferNatman(_Transfer):
    """``transfernatman{XY}_1_{n}``: from the man-made to the natural classes (BA) and back (AB)."""
    key, series, needs = "transfernatman", ("natman_to_natural", "natman_to_manmade"), ("halfnatman",)

    def pairs(self):
        for xy in self.cfg.directions:
            series = "natman_to_natural" if xy[1] == "A" else "natman_to_manmade"
            yield f"transfernatman{xy}", f"halfnatman{xy[0]}", f"halfnatman{xy[1]}", series
