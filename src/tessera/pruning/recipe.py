"""YAML recipes: the same file drives the CLI and the Python API.

Every section is a dataclass; an unknown key anywhere is a one-line error naming the key and the keys allowed,
so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from tessera.errors import ConfigError, TesseraError
from tessera.pruning.admm import ADMMConfig
from tessera.pruning.gradual import GradualConfig
from tessera.pruning.trainer import TrainConfig


@dataclass
class DataSection:
    name: str = "fashion_mnist"
    root: str | None = None


@dataclass
class ModelSection:
    name: str = "vgg6"
    args: dict = field(default_factory=dict)


@dataclass
class BaselineSection:
    checkpoint: str | None = None  # load from here when it exists, else train and save here
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class ADMMSection(ADMMConfig):
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, lr=0.01, schedule="cosine"))


@dataclass
class GradualSection(GradualConfig):
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, lr=0.01, schedule="cosine"))


@dataclass
class PruningSection:
    algorithm: str = "admm"  # admm | gradual | oneshot
    defaults: dict = field(default_factory=lambda: {"scheme": "pattern_connectivity"})
    targets: list = field(default_factory=lambda: [{"op": "Conv2d", "kernel": 3}])
    admm: ADMMSection = field(default_factory=ADMMSection)
    gradual: GradualSection = field(default_factory=GradualSection)
    retrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, lr=0.01, schedule="cosine"))

    def __post_init__(self) -> None:
        if self.algorithm not in ("admm", "gradual", "oneshot"):
            raise ConfigError(f"pruning.algorithm must be 'admm', 'gradual' or 'oneshot', got {self.algorithm!r}")


@dataclass
class Recipe:
    name: str = "recipe"
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    baseline: BaselineSection = field(default_factory=BaselineSection)
    pruning: PruningSection = field(default_factory=PruningSection)
    output: str = "runs/recipe"
    seed: int = 0


def _default_of(cls, name: str):
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _build(cls, raw: Any, where: str, base: Any = None):
    """Build dataclass ``cls`` from ``raw``; keys not given keep the values of ``base`` (the field's default)."""
    if not dataclasses.is_dataclass(cls):
        return raw
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(f"unknown key {where}.{key}; allowed keys are {sorted(names)}")
    kwargs = {}
    for key, value in raw.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value, f"{where}.{key}", _default_of(cls, key))
        kwargs[key] = value
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except TesseraError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def recipe_from_dict(raw: dict) -> Recipe:
    return _build(Recipe, raw, "recipe")


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a YAML recipe; relative paths inside it stay relative to the working directory."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"recipe {path} does not exist; pass a YAML file such as recipes/patdnn-8x.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    return recipe_from_dict(raw or {})
