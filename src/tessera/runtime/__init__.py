"""Compiled models as nn.Modules, and their artifacts (safetensors + JSON, never pickle)."""

from tessera.runtime.compiled import CompiledModel, compile, load

__all__ = ["CompiledModel", "compile", "load"]
