"""What the generated C is built for: a frozen ``Target`` (architecture, vector width, registers, compiler flags,
OpenMP), detected for the host or named by the user, and part of every cache key.

The C itself is the same for every target but its vector width (GCC/Clang vector extensions, no intrinsics): the
compiler lowers a vector to AVX-512, AVX2, NEON or — for ``portable`` — whatever the baseline ISA has. A named
x86 target uses an explicit ``-march`` (an AVX2 build on an AVX-512 machine must not pick up EVEX encodings); the
host target uses ``-march=native``.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from dataclasses import dataclass, replace

from tessera.errors import CompileError


@dataclass(frozen=True)
class Target:
    name: str  # x86-avx512, x86-avx2, aarch64-neon, portable
    arch: str  # x86_64, aarch64, or "any" (portable C)
    vector_width: int  # floats per vector the generated code uses
    registers: int  # vector registers the ISA has (tile choices assume them)
    cflags: tuple[str, ...]  # -march / -mtune / -mcpu
    openmp: bool = True
    cc: str | None = None  # the compiler; None: the host's (toolchain.find_compiler)
    native: bool = False  # built with -march=native for this very machine

    @property
    def key(self) -> str:
        """What distinguishes two builds of one source (cache keys, artifact fingerprints)."""
        return f"{self.name}|vw{self.vector_width}|{' '.join(self.cflags)}|omp{int(self.openmp)}|{self.cc or ''}"

    def runs_here(self) -> bool:
        """Whether code built for this target runs in this process (in-process compile, tuning, tests)."""
        if self.arch == "any":
            return True
        if self.arch != _machine():
            return False
        if self.arch == "x86_64":
            need = {16: "avx512f", 8: "avx2"}.get(self.vector_width)
            return need is None or need in _cpu_flags()
        return True


TARGETS: dict[str, Target] = {
    "x86-avx512": Target("x86-avx512", "x86_64", 16, 32, ("-march=skylake-avx512", "-mtune=icelake-server")),
    "x86-avx2": Target("x86-avx2", "x86_64", 8, 16, ("-march=haswell",)),
    "aarch64-neon": Target("aarch64-neon", "aarch64", 4, 32, ("-march=armv8-a",)),
    "portable": Target("portable", "any", 4, 16, ()),
}


def list_targets() -> list[str]:
    return sorted(TARGETS)


def _machine() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


# gcc's tunings for CPUs with AVX-512 (as -mtune names); any other tuning on an AVX-512 CPU is the compiler not
# knowing the CPU: gcc 12 on Zen 5 reports znver3 for -march=native
AVX512_TUNINGS = {"skylake-avx512", "cannonlake", "icelake-client", "icelake-server", "cascadelake", "cooperlake",
                  "tigerlake", "sapphirerapids", "rocketlake", "graniterapids", "graniterapids-d", "emeraldrapids",
                  "znver4", "znver5", "knl", "knm"}


def pick_tune(native_tune: str | None, avx512: bool) -> tuple[str, ...]:
    """The extra flag for a compiler whose native tuning is ``native_tune`` on a CPU with or without AVX-512.
    gcc 12 on Zen 5 tunes -march=native as znver3 and folds every load into its FMA, so the shifted kernel reloads
    each input vector for every tap that uses it; tuned as icelake-server it keeps the loaded rows in registers
    (ResNet-18 3x3 layers at 12% on Zen 5: 10-16% faster)."""
    return ("-mtune=icelake-server",) if avx512 and native_tune and native_tune not in AVX512_TUNINGS else ()


@functools.cache
def _native_tune(cc: str) -> str | None:
    try:
        out = subprocess.run([cc, "-march=native", "-Q", "--help=target"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return next((line.split()[-1] for line in out.splitlines() if line.strip().startswith("-mtune=")
                 and len(line.split()) == 2), None)


@functools.cache
def host_target() -> Target:
    """The target this machine runs best: its ISA's vector width, built with -march=native."""
    from tessera.compiler.toolchain import find_compiler

    arch, cpu = _machine(), _cpu_flags()
    if arch == "x86_64" and "avx512f" in cpu:
        base = TARGETS["x86-avx512"]
    elif arch == "x86_64" and "avx2" in cpu and "fma" in cpu:
        base = TARGETS["x86-avx2"]
    elif arch == "aarch64":
        return replace(TARGETS["aarch64-neon"], cflags=("-mcpu=native",), native=True)
    else:
        return TARGETS["portable"]
    cc = find_compiler()
    tune = pick_tune(_native_tune(cc), base.vector_width == 16) if cc else ()
    return replace(base, cflags=("-march=native", *tune), native=True)


def get_target(target: str | Target | None = None) -> Target:
    """``target`` as a Target: a Target as it is, a name from :data:`TARGETS` or "host"; None reads
    $TESSERA_TARGET and defaults to the host."""
    if isinstance(target, Target):
        return target
    name = target or os.environ.get("TESSERA_TARGET") or "host"
    if name in ("host", "native"):
        return host_target()
    if name not in TARGETS:
        raise CompileError(f"unknown target {name!r}; use one of: host, {', '.join(list_targets())}")
    return TARGETS[name]


def runnable_target(target: str | Target | None = None) -> Target:
    """A target whose code this process can load: an error naming the way out (export) otherwise."""
    t = get_target(target)
    if not t.runs_here():
        raise CompileError(f"target {t.name} does not run on this {_machine()} machine; compile for host and use "
                           f"`tessera export --target {t.name}` to build a library for it")
    return t
