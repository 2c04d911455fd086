"""Shared benchmark plumbing: machine/version stamp, JSON results, and sections of RESULTS.md."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path

import torch
from torch import nn

from tessera.compiler.tune import warm_up
from tessera.runtime.bench import onnx_bytes, ort_call  # noqa: F401 - onnx_bytes: the benchmarks' import

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"


def machine() -> dict:
    """Where a figure was measured. The CPU line names family, model and vector extension: the machine of record
    has changed between sessions behind the same "AMD EPYC" name (Zen 3 with AVX2, Zen 5 with AVX-512)."""
    cpu = platform.processor() or ""
    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        simd = "avx512" if " avx512f" in f" {fields.get('flags', '')}" else \
            "avx2" if " avx2" in f" {fields.get('flags', '')}" else "no avx2"
        cpu = f"{fields.get('model name', cpu)} (family {fields.get('cpu family', '?')} model " \
              f"{fields.get('model', '?')}, {simd})"
    except OSError:
        pass
    import torch

    info = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        info["cc"] = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        pass
    try:
        import tessera

        info["tessera"] = tessera.__version__
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                        cwd=HERE).stdout.strip()
    except Exception:
        pass
    return info


def stamp(info: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in info.items())


def save_json(name: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md, leaving other benchmarks' sections alone."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n\nWritten by the scripts in " \
        "`benchmarks/`; each section says when, on what machine and with which versions it was measured.\n"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS_MD.write_text(text)


def median_time(fn, repeats: int = 50, warmup: int = 5, min_seconds: float = 0.0) -> float:
    """Median wall time of ``fn()`` in seconds after warm-up."""
    for _ in range(warmup):
        fn()
    times = []
    t_end = time.perf_counter() + min_seconds
    while len(times) < repeats or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(fns: dict, rounds: int = 9, per_round: int = 15, warm_s: float = 0.01) -> dict:
    """Median of per-round medians. Before each round: a pause (the previous contender's spinning worker
    threads go idle and stop stealing cores), then untimed calls for at least ``warm_s`` (this contender's
    threads, caches and the core's clock are back up; two calls were too few for sub-millisecond layers)."""
    meds = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            time.sleep(0.03)
            warm_up(fn, warm_s)
            ts = []
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            meds[k].append(statistics.median(ts))
    return {k: 1e3 * statistics.median(v) for k, v in meds.items()}


def ort_session(model: nn.Module, x: torch.Tensor, threads: int, onnx: bytes | None = None):
    """A call of ONNX Runtime on ``x`` (:func:`tessera.runtime.bench.ort_call`); the benchmarks need it installed."""
    call = ort_call(model, x, threads, onnx)
    if call is None:
        raise SystemExit("onnxruntime is not installed: make setup installs it (the bench extra)")
    return call


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))
