"""The catalog a study's families generate from its config (config.py).

The families (families.py, a registry) decide net names, datasets, base nets and figure series;
this module loads and validates the whole study and answers questions about the catalog. Nothing
here touches the file system except reading the study file (and the natural-class list it names).
"""
from __future__ import annotations

import difflib
import fnmatch
import os
from pathlib import Path

from .config import Architecture, Config, load_config, valid_name
from .errors import show
from .families import REGISTRY, WHOLE_TRAIN, WHOLE_VALID, Dataset, Net, StudyError
from .resources import config_path, list_file

STUDY_ENV = "TF_STUDY"
__all__ = ["Study", "StudyError", "Net", "Dataset", "Config", "STUDY_ENV"]


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
        config = load_config(path)
        try:
            return cls(config, path)
        except StudyError as e:
            raise StudyError(f"study file {path}: {e}") from None

    def _check_catalog(self) -> None:
        """Every net and dataset name is one tf accepts; every base net and dataset a net names
        exists, and its solver."""
        for name in self.dataset_specs:
            valid_name(name, "a dataset's name")
        for net in self.nets.values():
            valid_name(net.name, f"families.{net.family}: a net's name")
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
                path = local if local.is_file() else list_file(nat)
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
