"""A whole-network function as a standalone C library for a Target — no Python, no torch, no malloc on the run path.

The directory holds ``model.h`` (one entry point in the style of TVM's AOT and onnx2c: ``tessera_run(in, out,
workspace)``, sizes and shapes as macros), ``model.c`` (the generated network function and the offsets that bind
its tables), ``weights.bin`` (every packed table, 64-byte aligned, little-endian) embedded by ``weights.c`` with
the assembler's ``.incbin`` (a text array of a ResNet-50's weights would take the compiler minutes), ``main.c``
(reads an input file, writes the output, optionally times), a ``Makefile``, a ``CMakeLists.txt`` and
``manifest.json``. Written into a temporary directory and renamed, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import fx

from tessera.compiler.geometry import KernelParams
from tessera.compiler.network_emit import emit_network
from tessera.compiler.network_plan import NetworkPlan, Unsupported, plan_network
from tessera.compiler.target import Target
from tessera.compiler.toolchain import FLAGS, GCC_FLAGS
from tessera.errors import CompileError

ALIGN = 64
MAGIC_BASE = 0x7E55E7A000000000


@dataclass(frozen=True)
class ExportInfo:
    directory: Path
    target: Target
    parameters: str  # where the kernel parameters came from: the host's tuning or the families' defaults
    weights_bytes: int
    workspace_bytes: int
    input_shape: tuple[int, ...]  # per image
    output_shape: tuple[int, ...]  # per image


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def target_params(params_for: dict[str, KernelParams], target: Target) -> tuple[dict[str, KernelParams], str]:
    """The host's tuned kernel parameters where they fit ``target`` (same vector width: same family and tile),
    else each family's default for that width; and a sentence saying which."""
    fit = {k: v for k, v in params_for.items() if v.vw == target.vector_width}
    if fit == params_for:
        return fit, "host tuning" if params_for else "family defaults (no layer has tuned parameters)"
    if not fit:
        how = f"compile with target={target.name!r} to tune for it" if target.runs_here() else \
            f"{target.name} cannot be measured here"
        return {}, (f"family defaults for {target.vector_width}-float vectors (the model was tuned for "
                    f"{next(iter(params_for.values())).vw}-float ones; {how})")
    return fit, f"host tuning for {len(fit)} layers, family defaults for {len(params_for) - len(fit)}"


def export_network(gm: fx.GraphModule, params_for: dict[str, KernelParams], directory: str | Path, target: Target,
                   threads: int = 0, note: str = "") -> ExportInfo:
    """Write the library for ``target`` into ``directory`` (replaced when it holds an earlier export).
    ``threads``: a fixed team size baked in (0: OpenMP's default, OMP_NUM_THREADS)."""
    out = Path(directory)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").exists())):
        raise CompileError(f"{out} exists and is not an earlier tessera export; choose a new directory")
    params, source = target_params(params_for, target)
    try:
        r = plan_network(gm, params, target, max(threads, 1), spin=True)
    except Unsupported as exc:
        raise CompileError(f"cannot export: {exc.node.name if exc.node is not None else ''} {exc}") from None
    if len(r.in_floats) != 1 or len(r.out_shapes) != 1:
        raise CompileError("export takes a model with one input and one output tensor")
    blob, offsets = _weights(r)
    buf_off, scratch_off, ws = _workspace(r)
    c_source = emit_network(r)
    digest = hashlib.sha256(c_source.encode() + blob).hexdigest()
    in_shape = tuple(next(n for n in gm.graph.nodes if n.op == "placeholder").meta["tensor_meta"].shape[1:])
    files = {
        "model.h": _header(r, in_shape, ws, len(blob), target, source, note),
        "model.c": _unit(r, c_source, offsets, buf_off, scratch_off, digest, threads),
        "weights.c": WEIGHTS_C,
        "main.c": MAIN_C,
        "Makefile": MAKEFILE.replace("@TARGET_FLAGS@", " ".join(target.cflags)).replace("@TARGET@", target.name)
        .replace("@OPT@", " ".join((FLAGS[0], *GCC_FLAGS))),
        "CMakeLists.txt": CMAKE.replace("@TARGET_FLAGS@", ";".join(target.cflags)),
    }
    manifest = {"format": 1, "target": target.name, "target_key": target.key, "parameters": source,
                "input_shape": list(in_shape), "output_shape": list(r.out_shapes[0]), "weights_bytes": len(blob),
                "workspace_bytes": ws, "sha256": digest, "note": note}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text)
        (tmp / "weights.bin").write_bytes(blob)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportInfo(out, target, source, len(blob), ws, in_shape, tuple(r.out_shapes[0]))


def _weights(r: NetworkPlan) -> tuple[bytes, list[int]]:
    """Every table the network reads, each at a 64-byte boundary of one blob."""
    parts, offsets, at = [], [], 0
    for t in r.params:
        if t.dtype not in (torch.float32, torch.int32):
            raise CompileError(f"cannot export a {t.dtype} table; please report this model")
        data = t.contiguous().numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        offsets.append(at)
        pad = _aligned(len(data)) - len(data)
        parts += [data, b"\0" * pad]
        at += len(data) + pad
    return b"".join(parts) or b"\0" * ALIGN, offsets


def _workspace(r: NetworkPlan) -> tuple[list[int], list[int], int]:
    """Offsets of the activation buffers and scratch in the caller's workspace, after a 64-byte header."""
    at, bufs, scratch = ALIGN, [], []
    for b in r.buffers:
        bufs.append(at)
        at += _aligned(4 * b.floats)
    for n in r.scratch:
        scratch.append(at)
        at += _aligned(4 * n)
    return bufs, scratch, at


def _c_list(values: list[int]) -> str:
    rows = [", ".join(f"{v}u" for v in values[i:i + 12]) for i in range(0, len(values), 12)]
    return "{\n    " + ",\n    ".join(rows or ["0u"]) + "\n}"


def _header(r: NetworkPlan, in_shape, ws: int, wbytes: int, target: Target, source: str, note: str) -> str:
    out_shape = tuple(r.out_shapes[0])
    dims = "".join(f"#define TESSERA_INPUT_DIM{i} {d}\n" for i, d in enumerate(in_shape))
    odims = "".join(f"#define TESSERA_OUTPUT_DIM{i} {d}\n" for i, d in enumerate(out_shape))
    return f"""/* Generated by tessera for target {target.name} ({' '.join(target.cflags) or 'no ISA flags'}).
   Kernel parameters: {source}.{(' ' + note) if note else ''}
   Tensors are float32, NCHW, contiguous, little-endian; shapes below are per image (any batch size runs).
   The workspace is caller memory of TESSERA_WORKSPACE_BYTES, 64-byte aligned, reused across calls (one call
   at a time per workspace); it is set up on first use. */
#ifndef TESSERA_MODEL_H
#define TESSERA_MODEL_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {{
#endif

#define TESSERA_INPUT_RANK {len(in_shape)}
{dims}#define TESSERA_INPUT_FLOATS {r.in_floats[0]}
#define TESSERA_OUTPUT_RANK {len(out_shape)}
{odims}#define TESSERA_OUTPUT_FLOATS {r.out_floats[0]}
#define TESSERA_WORKSPACE_BYTES {ws}
#define TESSERA_WEIGHTS_BYTES {wbytes}
#define TESSERA_ALIGNMENT {ALIGN}

#define TESSERA_OK 0
#define TESSERA_ERR_ARGUMENT 1   /* a null pointer or a negative batch */
#define TESSERA_ERR_ALIGNMENT 2  /* workspace or weights not 64-byte aligned */

/* One image: in[TESSERA_INPUT_FLOATS] -> out[TESSERA_OUTPUT_FLOATS], with the embedded weights. */
int tessera_run(const float *in, float *out, void *workspace);
/* n images one after another, with the embedded weights (or, built with -DTESSERA_NO_EMBEDDED_WEIGHTS,
   tessera_run_weights only). */
int tessera_run_batch(int n, const float *in, float *out, void *workspace);
/* The same with the contents of weights.bin at ``weights`` (64-byte aligned), e.g. read from a file. */
int tessera_run_weights(int n, const float *in, float *out, void *workspace, const void *weights);

#ifdef __cplusplus
}}
#endif
#endif
"""


def _unit(r: NetworkPlan, c_source: str, offsets: list[int], buf_off: list[int], scratch_off: list[int], digest: str,
          threads: int) -> str:
    src = c_source.replace("void net_forward(", "static void tsr_net_forward(")
    magic = MAGIC_BASE | int(digest[:8], 16)
    team = str(threads) if threads else "omp_get_max_threads()"
    return f"""/* Generated by tessera: the whole network as one function; see model.h. */
#include "model.h"
#include <stdint.h>
{src}
static const unsigned long tsr_weight_off[{max(len(offsets), 1)}] = {_c_list(offsets)};
static const unsigned long tsr_buffer_off[{max(len(buf_off), 1)}] = {_c_list(buf_off)};
static const unsigned long tsr_scratch_off[{max(len(scratch_off), 1)}] = {_c_list(scratch_off)};

int tessera_run_weights(int n, const float *in, float *out, void *workspace, const void *weights) {{
    if (!in || !out || !workspace || !weights || n < 0) return TESSERA_ERR_ARGUMENT;
    if ((uintptr_t)workspace % TESSERA_ALIGNMENT || (uintptr_t)weights % TESSERA_ALIGNMENT)
        return TESSERA_ERR_ALIGNMENT;
    unsigned char *ws = (unsigned char *)workspace;
    if (*(const uint64_t *)ws != {magic:#x}ULL) {{  /* first use: zero borders, barrier counters */
        memset(ws, 0, TESSERA_WORKSPACE_BYTES);
        *(uint64_t *)ws = {magic:#x}ULL;
    }}
    void *P[{max(len(offsets), 1)}], *B[{max(len(buf_off), 1)}], *S[{max(len(scratch_off), 1)}];
    for (int i = 0; i < {len(offsets)}; i++) P[i] = (void *)((const unsigned char *)weights + tsr_weight_off[i]);
    for (int i = 0; i < {len(buf_off)}; i++) B[i] = ws + tsr_buffer_off[i];
    for (int i = 0; i < {len(scratch_off)}; i++) S[i] = ws + tsr_scratch_off[i];
    const float *X[1] = {{in}};
    float *Y[1] = {{out}};
#ifdef _OPENMP
    const int team = {team};
#else
    const int team = 1;
#endif
    if (n > 0) tsr_net_forward(n, X, Y, B, S, P, team);
    return TESSERA_OK;
}}

#ifndef TESSERA_NO_EMBEDDED_WEIGHTS
extern const unsigned char tessera_weights[];
int tessera_run_batch(int n, const float *in, float *out, void *workspace) {{
    return tessera_run_weights(n, in, out, workspace, tessera_weights);
}}
int tessera_run(const float *in, float *out, void *workspace) {{
    return tessera_run_weights(1, in, out, workspace, tessera_weights);
}}
#endif
"""


WEIGHTS_C = r"""/* weights.bin as the read-only symbol tessera_weights, 64-byte aligned (GNU assembler .incbin:
   GCC and Clang on ELF targets). The path is relative to the directory the compiler runs in unless TESSERA_WEIGHTS_FILE
   names it (the CMake build does). */
#ifndef TESSERA_NO_EMBEDDED_WEIGHTS
#define TSR_STR2(x) #x
#define TSR_STR(x) TSR_STR2(x)
#ifndef TESSERA_WEIGHTS_FILE
#define TESSERA_WEIGHTS_FILE weights.bin
#endif
__asm__(".section .rodata\n"
        ".balign 64\n"
        ".global tessera_weights\n"
        ".type tessera_weights, %object\n"
        "tessera_weights:\n"
        ".incbin \"" TSR_STR(TESSERA_WEIGHTS_FILE) "\"\n"
        ".size tessera_weights, .-tessera_weights\n"
        ".previous\n");
#else
typedef int tsr_no_embedded_weights;
#endif
"""

MAIN_C = r"""/* tessera_main INPUT OUTPUT [REPEATS]: runs the model on the float32 NCHW images in INPUT (as many as
   the file holds) and writes the outputs to OUTPUT; with REPEATS > 0 it also prints the median ms per call. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "model.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e3 * (double)t.tv_sec + 1e-6 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s INPUT.bin OUTPUT.bin [REPEATS]\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", argv[1]); return 2; }
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    const long per = (long)sizeof(float) * TESSERA_INPUT_FLOATS;
    if (bytes <= 0 || bytes % per) {
        fprintf(stderr, "%s holds %ld bytes, not a whole number of %ld-byte images\n", argv[1], bytes, per);
        return 2;
    }
    const int n = (int)(bytes / per);
    float *in = malloc((size_t)bytes), *out = malloc(sizeof(float) * (size_t)n * TESSERA_OUTPUT_FLOATS);
    void *ws = aligned_alloc(TESSERA_ALIGNMENT, (TESSERA_WORKSPACE_BYTES + TESSERA_ALIGNMENT - 1) /
                             TESSERA_ALIGNMENT * TESSERA_ALIGNMENT);
    if (!in || !out || !ws || fread(in, 1, (size_t)bytes, f) != (size_t)bytes) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    fclose(f);
    int rc = tessera_run_batch(n, in, out, ws);
    if (rc) { fprintf(stderr, "tessera_run failed: %d\n", rc); return 1; }
    const int repeats = argc > 3 ? atoi(argv[3]) : 0;
    if (repeats > 0) {
        double *t = malloc(sizeof(double) * (size_t)repeats);
        for (int i = 0; i < 3; i++) tessera_run_batch(n, in, out, ws);
        for (int i = 0; i < repeats; i++) {
            const double t0 = now_ms();
            tessera_run_batch(n, in, out, ws);
            t[i] = now_ms() - t0;
        }
        qsort(t, (size_t)repeats, sizeof(double), cmp);
        printf("median %.4f ms per batch of %d\n", t[repeats / 2], n);
        free(t);
    }
    FILE *g = fopen(argv[2], "wb");
    if (!g || fwrite(out, sizeof(float), (size_t)n * TESSERA_OUTPUT_FLOATS, g) != (size_t)n * TESSERA_OUTPUT_FLOATS) {
        fprintf(stderr, "cannot write %s\n", argv[2]);
        return 2;
    }
    fclose(g);
    free(in); free(out); free(ws);
    return 0;
}
"""

MAKEFILE = """# Built by tessera for target @TARGET@. `make` builds libtessera_model.a and tessera_main;
# `make shared` a shared library; `make OPENMP=0` without OpenMP (one thread);
# cross: `make CC=aarch64-linux-gnu-gcc`; `make OPT=-O2` for a quicker build.
CC ?= cc
AR ?= ar
OPT ?= @OPT@
TARGET_FLAGS ?= @TARGET_FLAGS@
OPENMP ?= 1
CFLAGS ?= $(OPT) $(TARGET_FLAGS)
OMP := $(if $(filter 1,$(OPENMP)),-fopenmp,)
ALL_CFLAGS := $(CFLAGS) -std=gnu11 -ffp-contract=fast -fno-math-errno $(OMP)

all: libtessera_model.a tessera_main

model.o: model.c model.h
\t$(CC) $(ALL_CFLAGS) -c model.c -o $@

weights.o: weights.c weights.bin
\t$(CC) $(ALL_CFLAGS) -c weights.c -o $@

libtessera_model.a: model.o weights.o
\t$(AR) rcs $@ model.o weights.o

tessera_main: main.c libtessera_model.a
\t$(CC) $(ALL_CFLAGS) main.c libtessera_model.a -lm -o $@

# a shared library (dlopen from an app, ctypes from Python)
shared: libtessera_model.so
libtessera_model.so: model.c weights.c model.h weights.bin
\t$(CC) $(ALL_CFLAGS) -fPIC -shared model.c weights.c -lm -o $@

clean:
\trm -f model.o weights.o libtessera_model.a libtessera_model.so tessera_main

.PHONY: all clean shared
"""

CMAKE = """cmake_minimum_required(VERSION 3.13)
project(tessera_model C)
option(TESSERA_OPENMP "build with OpenMP" ON)
set(TESSERA_TARGET_FLAGS "@TARGET_FLAGS@" CACHE STRING "ISA flags of the export's target")
add_library(tessera_model STATIC model.c weights.c)
set_target_properties(tessera_model PROPERTIES C_STANDARD 11 C_EXTENSIONS ON)
target_compile_options(tessera_model PRIVATE ${TESSERA_TARGET_FLAGS} -ffp-contract=fast -fno-math-errno)
target_compile_definitions(tessera_model PRIVATE TESSERA_WEIGHTS_FILE=${CMAKE_CURRENT_SOURCE_DIR}/weights.bin)
set_source_files_properties(weights.c PROPERTIES OBJECT_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/weights.bin)
target_include_directories(tessera_model PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
if(TESSERA_OPENMP)
  find_package(OpenMP REQUIRED)
  target_link_libraries(tessera_model PUBLIC OpenMP::OpenMP_C)
endif()
target_link_libraries(tessera_model PUBLIC m)
add_executable(tessera_main main.c)
set_target_properties(tessera_main PROPERTIES C_STANDARD 11 C_EXTENSIONS ON)
target_link_libraries(tessera_main PRIVATE tessera_model)
"""


def cross_tools(target: Target) -> tuple[str, list[str]]:
    """(C compiler, command prefix that runs its binaries here) for ``target``: the host's own when the target
    runs here, else a cross compiler and qemu-user (Debian: gcc-aarch64-linux-gnu, qemu-user)."""
    from tessera.compiler.toolchain import find_compiler

    if target.runs_here():
        cc = find_compiler()
        if cc is None:
            raise CompileError("no C compiler found; install gcc (apt-get install gcc) or set CC")
        return cc, []
    cc = target.cc or f"{target.arch}-linux-gnu-gcc"
    qemu = f"qemu-{target.arch}"
    missing = [t for t in (cc, qemu) if shutil.which(t) is None]
    if missing:
        raise CompileError(f"{' and '.join(missing)} not found; install gcc-{target.arch}-linux-gnu and qemu-user "
                           f"(apt-get) to build and run {target.name} here")
    return cc, [qemu, "-L", f"/usr/{target.arch}-linux-gnu"]


def build_export(directory: str | Path, target: Target, opt: str = "-O3", openmp: bool = True,
                 goals: tuple[str, ...] = ()) -> list[str]:
    """``make`` the export in ``directory`` (its default goals, or ``goals``) with the compiler for ``target``;
    the command that runs its ``tessera_main`` here (under qemu for a foreign architecture)."""
    d = Path(directory)
    cc, runner = cross_tools(target)
    cmd = ["make", "-C", str(d), f"CC={cc}", f"OPT={opt}", f"OPENMP={int(openmp)}", "-j2", "--no-print-directory",
           *goals]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileError(f"building the export failed: {proc.stderr.strip().splitlines()[-3:]}")
    return [*runner, str(d / "tessera_main")]


def run_export(command: list[str], x: torch.Tensor, out_shape: tuple[int, ...], repeats: int = 0
               ) -> tuple[torch.Tensor, float | None]:
    """Run a built export's ``tessera_main`` on ``x`` through files; its output and (``repeats`` > 0) the
    median milliseconds per call it measured."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        x.detach().contiguous().numpy().astype("<f4").tofile(src)
        proc = subprocess.run([*command, str(src), str(dst), str(repeats)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise CompileError(f"the exported model failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
        y = torch.from_numpy(np.fromfile(dst, dtype="<f4").copy()).reshape(x.shape[0], *out_shape)
    ms = float(proc.stdout.split()[1]) if repeats > 0 else None
    return y, ms
