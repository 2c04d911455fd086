"""Models from outside the zoo: ``package.module:factory`` (or ``path/to/file.py:factory``) names a callable that
returns an ``nn.Module``; weights come from a safetensors file (never a pickle). The spec is recorded on the model
so a compiled artifact can rebuild it the way it rebuilds zoo models by name."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from torch import nn

from tessera.errors import CheckpointError, ConfigError

EXAMPLE = "mypackage.models:resnet18 or ./net.py:build"


def is_spec(text: str) -> bool:
    """A factory spec rather than a file: ``a.b:c`` with no such file on disk."""
    return ":" in text and not Path(text).exists() and not text.startswith(":") and not text.endswith(":")


def _import(spec: str):
    where, _, attr = spec.rpartition(":")
    if not where or not attr.isidentifier():
        raise ConfigError(f"model {spec!r} must look like {EXAMPLE}")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ConfigError(f"model file {where} does not exist; give the path of the .py that defines {attr}")
        name = f"tessera_external_{path.stem}"
        loader = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[name] = module
        loader.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise ConfigError(f"cannot import {where} ({exc}); install it or put it on PYTHONPATH") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{where} has no {attr!r}; name a function or class that returns the model") from None


def model_from_spec(spec: str, weights: str | Path | None = None) -> nn.Module:
    """Build the model a spec names (called without arguments) and load ``weights`` (safetensors) into it."""
    factory = _import(spec)
    try:
        model = factory()
    except TypeError as exc:
        raise ConfigError(f"{spec} cannot be called without arguments ({exc}); name a factory that takes none") \
            from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        from tessera.io import load_tensors

        tensors, _ = load_tensors(weights)
        state = {k[6:] if k.startswith("model.") else k: v for k, v in tensors.items()}
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{weights} does not fit {spec} ({str(exc).splitlines()[0]})") from None
    model.tessera_external = {"spec": spec}  # lets artifacts rebuild the model from the same factory
    return model.eval()
