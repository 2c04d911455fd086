"""Which layers get which scheme: a config list over defaults (the convention of NNI and Intel Neural Compressor).

Each entry selects layers by op type (``op``), a name regex (``name``, full match), ``exclude`` regexes and an
optional ``kernel`` size, and sets the scheme and its parameters for them; ``skip: true`` leaves them dense. When
several entries match a layer the last one wins, so a general rule comes first and exceptions after it. Parameters
come from ``defaults`` merged under the entry's own (defaults a scheme does not take are ignored; an entry's own
unknown parameter is an error); ``keep`` and ``budget`` of the defaults apply only to entries of the defaults' own
scheme — a block entry under pattern defaults keeps the block scheme's default ``keep``, not the kernels' one.
An entry that matches no layer is an error: it is almost always a typo.

Grouped and depthwise convs (``groups > 1``: MobileNet, EfficientNet, RegNet) are selected only by an entry that
says ``groups`` (``groups: any``, or the exact count): pruning a depthwise 3x3 to 4 of 9 weights removes whole
channels' worth of signal, and the pattern kernels do not run grouped convs anyway.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from tessera.errors import ConfigError, TesseraError
from tessera.sparsity import PatternLibrary, Scheme, make_scheme, needs_library
from tessera.sparsity.schemes import _SCHEMES

_OPS = {"Conv2d": nn.Conv2d, "Linear": nn.Linear}
_SELECTORS = {"op", "name", "exclude", "kernel", "groups", "skip", "scheme"}
_PER_SCHEME = {"keep", "budget"}  # mean something else in each scheme: inherited only by the defaults' own scheme


@dataclass(frozen=True)
class Target:
    """One layer to prune: its qualified name, the module and its scheme."""

    name: str
    module: nn.Module
    scheme: Scheme


def _as_list(v) -> list:
    return [] if v is None else list(v) if isinstance(v, list | tuple) else [v]


def _compile(pattern: str, where: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{where}: {pattern!r} is not a valid regex ({exc})") from None


def _matches(entry: Mapping, name: str, module: nn.Module, i: int) -> bool:
    ops = _as_list(entry.get("op", list(_OPS)))
    for op in ops:
        if op not in _OPS:
            raise ConfigError(f"targets[{i}].op: unknown op type {op!r}; use one of {sorted(_OPS)}")
    if not isinstance(module, tuple(_OPS[o] for o in ops)):
        return False
    if "name" in entry and not _compile(str(entry["name"]), f"targets[{i}].name").fullmatch(name):
        return False
    if any(_compile(str(p), f"targets[{i}].exclude").fullmatch(name) for p in _as_list(entry.get("exclude"))):
        return False
    groups = getattr(module, "groups", 1)
    if "groups" in entry:
        want = entry["groups"]
        if want != "any" and not isinstance(want, int):
            raise ConfigError(f"targets[{i}].groups: {want!r}; use 'any' or a number of groups")
        if not isinstance(module, nn.Conv2d) or (want != "any" and groups != want):
            return False
    elif groups > 1:
        return False
    if "kernel" in entry:
        if not isinstance(module, nn.Conv2d):
            return False
        k = entry["kernel"]
        k = tuple(k) if isinstance(k, list | tuple) else (k, k)
        if tuple(module.kernel_size) != k:
            return False
    return True


def select_targets(model: nn.Module, targets: Sequence[Mapping], defaults: Mapping | None = None) -> list[Target]:
    """Resolve a config list against a model into (name, module, scheme) for every selected layer."""
    defaults = dict(defaults or {})
    if not targets:
        raise ConfigError("pruning.targets is empty; add at least one entry such as {op: Conv2d}")
    chosen: dict[str, tuple[nn.Module, dict | None]] = {}
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, tuple(_OPS.values()))]
    for i, entry in enumerate(targets):
        if not isinstance(entry, Mapping):
            raise ConfigError(f"targets[{i}] must be a mapping like {{op: Conv2d, name: 'features.*'}}")
        hits = [(n, m) for n, m in modules if _matches(entry, n, m, i)]
        if not hits:
            raise ConfigError(
                f"targets[{i}] ({dict(entry)}) matches no layer; fix the regex — layers are {[n for n, _ in modules]}"
            )
        for n, m in hits:
            chosen[n] = (m, None if entry.get("skip") else dict(entry))
    out = []
    for name, (module, entry) in chosen.items():
        if entry is None:
            continue
        scheme_name = entry.get("scheme", defaults.get("scheme"))
        if scheme_name is None:
            raise ConfigError(f"layer {name} has no scheme; set pruning.defaults.scheme or the entry's scheme")
        if scheme_name not in _SCHEMES:
            raise ConfigError(f"unknown scheme {scheme_name!r}; choose one of {sorted(_SCHEMES)}")
        accepted = {f.name for f in dataclasses.fields(_SCHEMES[scheme_name])}
        if defaults.get("scheme", scheme_name) != scheme_name:
            accepted -= _PER_SCHEME  # the defaults' keep is their own scheme's (kernels), not this one's (blocks)
        params = {k: v for k, v in defaults.items() if k in accepted}
        params.update({k: v for k, v in entry.items() if k not in _SELECTORS})
        scheme = make_scheme(scheme_name, **_resolve_library(params))
        try:
            scheme.check(module.weight)
        except TesseraError as exc:
            raise type(exc)(f"layer {name}: {exc}") from None
        out.append(Target(name, module, scheme))
    return out


def _resolve_library(params: dict) -> dict:
    lib = params.get("library")
    if lib is None or lib == "extract":
        params.pop("library", None)
    elif lib == "default":
        params["library"] = PatternLibrary.default(int(params.get("num_patterns", 8)))
    elif lib in ("learn", "learn126"):  # start from every candidate; ADMM shrinks it to num_patterns
        params["library"] = PatternLibrary.full(centre=lib == "learn")
    elif isinstance(lib, PatternLibrary):
        pass
    elif isinstance(lib, list):
        import json

        params["library"] = PatternLibrary.from_json(json.dumps(lib))
    else:
        raise ConfigError("library must be 'extract', 'default', 'learn', 'learn126' or a list of kept-index lists "
                          "like [[1, 3, 4, 5]]")
    return params


def attach_libraries(targets: list[Target]) -> list[Target]:
    """Give every pattern scheme without a library one extracted from the model's weights (shared per K).

    PatDNN extracts the library from the trained model: the K most frequent best-fit patterns over all layers
    that use patterns, so one library serves the whole model.
    """
    by_k: dict[int, list[Target]] = {}
    for t in targets:
        if needs_library(t.scheme) and t.scheme.library is None:
            by_k.setdefault(t.scheme.num_patterns, []).append(t)
    libs = {k: PatternLibrary.extract([t.module.weight for t in ts], k) for k, ts in by_k.items()}
    return [
        dataclasses.replace(t, scheme=t.scheme.with_library(libs[t.scheme.num_patterns]))
        if needs_library(t.scheme) and t.scheme.library is None else t
        for t in targets
    ]
