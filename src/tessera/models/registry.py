"""One registry for every zoo model (timm's pattern: a decorator that refuses duplicates, list with a filter)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

from tessera.errors import ConfigError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model builder under its function name; a second builder with the same name is an error."""
    name = fn.__name__
    if name in _MODELS:
        raise ConfigError(f"model {name!r} is registered twice; rename one of the builders")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered models matching a shell-style pattern, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a zoo model by name, e.g. ``create_model("vgg6", in_channels=1, num_classes=10)``."""
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {list_models()}")
    try:
        model = _MODELS[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r} does not take these arguments ({exc}); check model.args") from None
    model.tessera_zoo = {"name": name, "args": dict(kwargs)}  # lets artifacts rebuild the model by name
    return model


def save_model(model: nn.Module, path, name: str, args: dict | None = None, meta: dict | None = None) -> None:
    """Save a zoo model's weights with what rebuilds it (name, args) and free-form JSON metadata."""
    from tessera.io import save_tensors

    save_tensors(path, model.state_dict(), {"model": name, "args": args or {}, **(meta or {})})


def load_model(path) -> tuple[nn.Module, dict]:
    """Rebuild a model saved by :func:`save_model`: safetensors weights, JSON metadata, no pickle."""
    from tessera.errors import CheckpointError
    from tessera.io import load_tensors

    tensors, meta = load_tensors(path)
    if "model" not in meta:
        raise CheckpointError(f"{path} has no model name in its metadata; save it with tessera.models.save_model")
    model = create_model(meta["model"], **meta.get("args", {}))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit model {meta['model']} ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, meta
