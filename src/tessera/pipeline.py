"""``tessera run``: a recipe from baseline to a measured, exported native model in one call.

prune (baseline, ADMM / gradual / one-shot, retraining; resumed from the run's checkpoints) -> compile and tune ->
time torch, ONNX Runtime and tessera on the same input (interleaved) -> save the artifact -> export the C library ->
``summary.json``, ``compiled.json`` and the report (:mod:`tessera.report.html`) in the run's folder. Every step
after pruning is cheap to repeat, so running the same recipe again finishes where an interrupted run stopped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tessera.errors import TesseraError


@dataclass
class RunResult:
    recipe: str
    output: str
    baseline_acc: float
    pruned_acc: float
    conv_compression: float
    ms: dict[str, float]  # runtime -> ms per batch
    threads: int
    input_shape: list[int]
    execution: str  # the compiled model's own account of how it runs
    artifact: str
    export_dir: str | None
    report: str

    def speedup(self, over: str) -> float | None:
        return self.ms[over] / self.ms["tessera"] if over in self.ms else None


def run(recipe, threads: int | None = None, progress: bool = True, log=print, export: bool = True,
        rounds: int = 20) -> RunResult | None:
    """Run ``recipe`` (a :class:`tessera.pruning.recipe.Recipe`) end to end; see the module docstring."""
    import tessera
    from tessera.models import load_model
    from tessera.pruning.distributed import world
    from tessera.pruning.job import run_recipe
    from tessera.runtime.bench import compare

    out = Path(recipe.output)
    result = run_recipe(recipe, progress=progress, log=log)
    if not world().main:  # under torchrun: the other ranks helped prune; rank 0 compiles, times and reports
        return None
    model, meta = load_model(result.model_path)
    model.eval()
    shape = list(meta.get("input_shape") or [])
    if len(shape) != 4:
        raise TesseraError(f"{result.model_path} records no input shape; prune it again with this tessera version")
    threads = int(threads or torch.get_num_threads())
    x = torch.randn(shape)
    log(f"compiling and tuning for {'x'.join(map(str, shape))} inputs at {threads} threads ...")
    cm = tessera.compile(model, x, threads=threads, log=None)
    artifact = out / "model.tsr"
    cm.save(artifact)
    log(f"execution: {cm.network_reason}")
    bar = _bar(progress, "timing torch, ONNX Runtime and tessera", rounds)
    with bar as b:
        ms = compare(model, cm, x, threads, rounds=rounds, progress=b)
    export_dir = None
    if export and cm.network is not None:
        info = cm.export(out / "c_library")
        export_dir = str(info.directory)
        log(f"C library for {info.target.name}: {export_dir} (make -C {export_dir})")
    (out / "compiled.json").write_text(json.dumps({
        "layers": [{"name": p.source, "weight_shape": list(p.weight_shape), "kind": p.kind, "density": p.density,
                    "patterns": p.patterns, "kernels_kept": p.kernels_kept, "kernels_total": p.kernels_total,
                    "fused": p.fused, **p.decision.to_json()} for p in cm.plans],
        "nodes": [list(row) for row in cm.node_table], "execution": cm.network_reason,
    }, indent=2) + "\n")
    from tessera.report.html import write_report

    res = RunResult(recipe.name, str(out), result.baseline_acc, result.pruned_acc, result.conv_compression, ms,
                    threads, shape, cm.network_reason, str(artifact), export_dir, str(out / "report.html"))
    (out / "summary.json").write_text(json.dumps(asdict(res), indent=2) + "\n")
    write_report(out)  # report.html and report.md, from summary.json and compiled.json
    return res


class _bar:
    """A rich progress bar for the timing rounds (a no-op when progress is off)."""

    def __init__(self, on: bool, what: str, total: int):
        self.on, self.what, self.total = on, what, total

    def __enter__(self):
        if not self.on:
            return None
        from rich.progress import Progress

        self.p = Progress(transient=True)
        self.p.__enter__()
        task = self.p.add_task(self.what, total=self.total)
        return lambda done, total: self.p.update(task, completed=done)

    def __exit__(self, *exc):
        if self.on:
            self.p.__exit__(*exc)
