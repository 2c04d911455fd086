"""YAML recipes: the same file drives the CLI and the Python API.

Every section is a dataclass whose type hints carry the allowed values (types, ranges, choices); a recipe is
validated against them with pydantic, and every problem — a wrong type, a value out of range, an unknown key, an
empty file — is reported at once, each with its path, in one error. Keys a recipe leaves out keep the section's
own defaults (``pruning.retrain`` fine-tunes at lr 0.01 on a cosine schedule unless told otherwise).
:func:`recipe_schema` is the JSON Schema of a recipe, for editors (``tessera schema``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tessera.errors import ConfigError, TesseraError
from tessera.pruning.admm import ADMMConfig
from tessera.pruning.gradual import GradualConfig
from tessera.pruning.trainer import TrainConfig

_FORBID = {"extra": "forbid"}  # pydantic's config: a key that is not a field is an error


@dataclass
class DataSection:
    __pydantic_config__ = _FORBID
    name: str = "fashion_mnist"
    root: str | None = None


@dataclass
class ModelSection:
    __pydantic_config__ = _FORBID
    name: str = "vgg6"
    args: dict = field(default_factory=dict)


@dataclass
class BaselineSection:
    __pydantic_config__ = _FORBID
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
    __pydantic_config__ = _FORBID
    algorithm: Literal["admm", "gradual", "oneshot"] = "admm"
    defaults: dict[str, Any] = field(default_factory=lambda: {"scheme": "pattern_connectivity"})
    targets: list[dict[str, Any]] = field(default_factory=lambda: [{"op": "Conv2d", "kernel": 3}])
    admm: ADMMSection = field(default_factory=ADMMSection)
    gradual: GradualSection = field(default_factory=GradualSection)
    retrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, lr=0.01, schedule="cosine"))

    def __post_init__(self) -> None:
        if self.algorithm not in ("admm", "gradual", "oneshot"):
            raise ConfigError(f"pruning.algorithm must be 'admm', 'gradual' or 'oneshot', got {self.algorithm!r}")


@dataclass
class Recipe:
    __pydantic_config__ = _FORBID
    name: str = "recipe"
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    baseline: BaselineSection = field(default_factory=BaselineSection)
    pruning: PruningSection = field(default_factory=PruningSection)
    output: str = "runs/recipe"
    seed: int = 0


def _with_defaults(raw: dict, base: Any) -> dict:
    """``raw`` over the field values of ``base`` (a section's default instance), section by section: a recipe that
    gives ``admm.train.epochs`` keeps the ADMM phase's own learning rate and schedule, not TrainConfig's."""
    out = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    for key, value in raw.items():
        current = out.get(key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            out[key] = _with_defaults(value, current)
        else:
            out[key] = value
    return out


def _problems(exc) -> str:
    items = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"]) or "recipe"
        msg = "unknown key" if e["type"] == "unexpected_keyword_argument" else e["msg"][0].lower() + e["msg"][1:]
        got = "" if e["type"] == "unexpected_keyword_argument" else f" (got {e.get('input')!r})"
        items.append(f"{where}: {msg}{got}")
    return f"{len(items)} problem{'s' * (len(items) > 1)} in the recipe: " + "; ".join(items)


@functools.cache
def _adapter():
    from pydantic import TypeAdapter

    return TypeAdapter(Recipe)


def recipe_from_dict(raw: Any) -> Recipe:
    """Validate ``raw`` (a recipe's parsed YAML) into a Recipe; every problem at once in one ConfigError."""
    from pydantic import ValidationError

    if not isinstance(raw, dict):
        raise ConfigError(f"a recipe is a mapping of sections (name, data, model, baseline, pruning, output), got "
                          f"{type(raw).__name__}; see recipes/quick.yaml")
    if not raw:
        raise ConfigError("the recipe is empty; give at least a name and a pruning section (see recipes/quick.yaml)")
    try:
        return _adapter().validate_python(_with_defaults(raw, Recipe()))
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None
    except TesseraError as exc:  # a section's own cross-field check
        raise type(exc)(f"recipe: {exc}") from None


def recipe_schema() -> dict:
    """The JSON Schema of a recipe (types, ranges, choices, defaults)."""
    return _adapter().json_schema()


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a YAML recipe; relative paths inside it stay relative to the working directory."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"recipe {path} does not exist; pass a YAML file such as recipes/patdnn-8x.yaml")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"recipe {path} is not UTF-8 text (byte {exc.start}); save it as a UTF-8 YAML file") \
            from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is None:
        raise ConfigError(f"recipe {path} is empty; give at least a name and a pruning section (see "
                          "recipes/quick.yaml)")
    return recipe_from_dict(raw)
