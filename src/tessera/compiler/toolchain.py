"""Find the C compiler, build generated C into a shared object cached by hash, load it with ctypes.

Only ``compile`` varies; ``compile_cached`` keys the product by sha256 of (source, full command line, compiler
version, format version), writes through a temporary file and a rename under a per-key lock, so concurrent
processes never load a half-written library. A missing compiler is not a crash: ``find_compiler`` returns None
and callers fall back to torch.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tessera.compiler.target import Target, host_target, runnable_target
from tessera.errors import CompileError

FORMAT_VERSION = "1"
FLAGS = ("-O3", "-ffp-contract=fast", "-fno-math-errno", "-shared", "-fPIC", "-std=gnu11")
# gcc's -O3 clones every tile function per constant argument and splits its loops: 4x the build time of a
# block-sparse layer for kernels that measured no faster (ResNet-50 at 224: 29.7 vs 31.3 ms, MobileNetV2 6.13 vs
# 6.20; cold compile 19.9 vs 34.2 s). Plain -O2 is no answer: 25% slower kernels.
GCC_FLAGS = ("-fno-ipa-cp-clone", "-fno-split-loops")


def cache_dir() -> Path:
    """Per-user cache: $TESSERA_CACHE, else $XDG_CACHE_HOME/tessera, else ~/.cache/tessera."""
    root = os.environ.get("TESSERA_CACHE")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tessera"
    return base / f"kernels-v{FORMAT_VERSION}"


@functools.cache
def find_compiler() -> str | None:
    """Path of the C compiler ($CC, cc, gcc, clang) that can build OpenMP code, or None."""
    for name in filter(None, (os.environ.get("CC"), "cc", "gcc", "clang")):
        path = shutil.which(name)
        if path:
            return path
    return None


@functools.cache
def compiler_version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.splitlines()[0] if out else "unknown"


# A whole network is one large unit: gcc's link-time optimiser splits its code generation over every core after
# inlining across the unit (ResNet-50 at 224: 2.35 s vs 3.6 s on 2 cores; kernels as fast or faster — splitting
# the unit in two instead built in 2.3 s and ran MobileNetV2 3% slower, its small layers no longer inlined).
PARALLEL_FLAGS = ("-flto=auto",)


def flags(cc: str, target: Target | None = None, parallel: bool = False) -> tuple[str, ...]:
    """The full command line but for files: optimisation, the target's ISA flags, OpenMP, a shared object;
    ``parallel``: code generation over all cores (gcc's LTO; one large unit)."""
    t = target or host_target()
    gcc = "clang" not in compiler_version(cc).lower()
    return FLAGS + (GCC_FLAGS if gcc else ()) + (PARALLEL_FLAGS if gcc and parallel else ()) + t.cflags + \
        (("-fopenmp",) if t.openmp else ())


def cache_key(source: str, cc: str, target: Target | None = None, parallel: bool = False) -> str:
    h = hashlib.sha256()
    for part in (FORMAT_VERSION, cc, compiler_version(cc), " ".join(flags(cc, target, parallel)), source):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def compile_source(source: str, out: Path, cc: str, target: Target | None = None, parallel: bool = False,
                   objects: tuple[Path, ...] = (), object_only: bool = False) -> None:
    """Run the compiler: C source -> shared object at ``out``, linked with ``objects``; or, ``object_only``, an
    object file to link into other libraries. ``parallel``: see :func:`flags` (a compiler without LTO support
    builds it on one core instead)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.c"
        src.write_text(source)
        what = ["-c", str(src)] if object_only else [str(src), *map(str, objects)]
        cmd = [cc, *flags(cc, target, parallel), *what, "-o", str(out)] + ([] if object_only else ["-lm"])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 and parallel:
            return compile_source(source, out, cc, target, False, objects, object_only)
        if proc.returncode != 0:
            raise CompileError(f"{Path(cc).name} failed on generated code: {proc.stderr.strip().splitlines()[-1:]}; "
                               "report this with the source from tessera.compiler.codegen")


def compile_cached(source: str, target: Target | None = None, parallel: bool = False,
                   objects: tuple[Path, ...] = (), object_only: bool = False) -> Path:
    """Shared object for ``source`` on ``target`` (the host's by default; it must run in this process), built
    once per (source, objects, compiler, flags) and reused from the cache; ``parallel``: see :func:`flags`.
    ``object_only``: an object file (``.o``) that several libraries link (code they share is compiled once)."""
    target = runnable_target(target)
    cc = find_compiler()
    if cc is None:
        raise CompileError("no C compiler found; install gcc (apt-get install gcc) or set CC")
    key = cache_key(source + "".join(f"\0{o.name}" for o in objects) + ("\0object" if object_only else ""), cc,
                    target, parallel)  # an object's name is its own key
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    suffix = ".o" if object_only else ".so"
    so = d / f"{key}{suffix}"
    if so.exists():
        return so
    with open(d / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if so.exists():  # built by another process while we waited
                return so
            fd, tmp = tempfile.mkstemp(dir=d, suffix=f"{suffix}.tmp")
            os.close(fd)
            try:
                compile_source(source, Path(tmp), cc, target, parallel, objects, object_only)
                (d / f"{key}.c").write_text(source)
                os.replace(tmp, so)
            finally:
                Path(tmp).unlink(missing_ok=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return so


@functools.cache
def load_library(path: str) -> ctypes.CDLL:
    """Load a built kernel library; an OSError becomes a message saying what to do.

    Worker threads: libgomp's default wait policy spins ~300k pauses (a few ms) before sleeping, enough to stay
    awake across the layers of one inference; the whole-network function opens a single parallel region per
    call, so threads wake once per inference. OMP_WAIT_POLICY / GOMP_SPINCOUNT set by the user are respected.
    """
    try:
        return ctypes.CDLL(path)
    except OSError as exc:
        raise CompileError(f"cannot load kernel library {path} ({exc}); delete {cache_dir()} to rebuild") from None
