"""Learned vs fixed pattern libraries on Fashion-MNIST (issue: ECCV 2020 learned library).

At equal conv compression, compares: dense; PatDNN fixed library (frequency-extracted, K = 8); learned library
K = 12, 8, 6, 4; pattern-only (2.25x) vs pattern + connectivity (8x); unstructured magnitude and filter pruning at
the same compressions. Every run starts from the committed dense checkpoint with the same ADMM + retraining
schedule as recipes/patdnn-8x.yaml (epochs can be shortened with --epochs A,R). Several seeds per setting.

Writes results/pattern_library_study.json, results/library_*.png, results/accuracy_vs_compression.png and its
section of RESULTS.md. Usage: python benchmarks/pattern_library_study.py [--seeds 3] [--epochs 5,6] [--only NAME]
[--report-only] (saved runs are kept: a rerun with more seeds adds only the missing ones)
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path

import yaml

from common import RESULTS_DIR, machine, save_json, stamp, write_section
from tessera.models import load_model
from tessera.pruning.job import run_recipe
from tessera.pruning.recipe import recipe_from_dict
from tessera.report import markdown_table
from tessera.report.figures import accuracy_compression_figure, library_figure
from tessera.sparsity import PatternLibrary

ROOT = Path(__file__).resolve().parent.parent
KEEP_8X = 0.2778  # with 4/9 patterns: 8x fewer conv weights
FIRST = {"name": "features\\.0", "scheme": "pattern"}  # 1 input channel: nothing to disconnect


def settings() -> dict[str, dict]:
    pc = {"scheme": "pattern_connectivity", "keep": KEEP_8X}
    s = {
        "fixed K=8, pattern 2.25x": {"defaults": {"scheme": "pattern", "num_patterns": 8, "library": "extract"}},
        "fixed K=8, pattern+conn 8x": {"defaults": {**pc, "num_patterns": 8, "library": "extract"}, "first": True},
    }
    for k in (12, 8, 6, 4):
        s[f"learned K={k}, pattern+conn 8x"] = {"defaults": {**pc, "num_patterns": k, "library": "learn"},
                                                "first": True}
    s["learned K=8, pattern 2.25x"] = {"defaults": {"scheme": "pattern", "num_patterns": 8, "library": "learn"}}
    s["magnitude 2.25x"] = {"defaults": {"scheme": "magnitude", "keep": 4 / 9}}
    s["magnitude 8x"] = {"defaults": {"scheme": "magnitude", "keep": 0.1238}}
    s["filter 2.25x"] = {"defaults": {"scheme": "filter", "keep": 4 / 9}}
    s["filter 8x"] = {"defaults": {"scheme": "filter", "keep": 0.1238}}
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", default=None, help="ADMM,retrain epochs (default: the recipe's)")
    ap.add_argument("--only", action="append", help="run only these settings (repeatable)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from the saved JSON")
    args = ap.parse_args()
    saved = RESULTS_DIR / "pattern_library_study.json"
    previous = json.loads(saved.read_text()) if saved.exists() else None
    if args.report_only:
        if previous is None:
            raise SystemExit(f"no saved runs at {saved}; run the study first")
        report(previous["runs"], previous["machine"])
        return
    base = yaml.safe_load((ROOT / "recipes" / "patdnn-8x.yaml").read_text())
    base["baseline"]["checkpoint"] = str(ROOT / base["baseline"]["checkpoint"])
    info = machine()
    runs = list(previous["runs"]) if previous else []  # kept: further seeds or settings are added to them
    done = {(r["setting"], r["seed"]) for r in runs}
    for name, cfg in settings().items():
        if args.only and name not in args.only:
            continue
        for seed in range(args.seeds):
            if (name, seed) in done:
                continue
            raw = copy.deepcopy(base)
            raw["name"] = f"{name} seed {seed}"
            raw["seed"] = seed
            raw["pruning"]["defaults"] = cfg["defaults"]
            raw["pruning"]["targets"] = [{"op": "Conv2d", "kernel": 3}] + ([FIRST] if cfg.get("first") else [])
            for section in (raw["pruning"]["admm"]["train"], raw["pruning"]["retrain"]):
                section["seed"] = seed
            if args.epochs:
                a, r = (int(v) for v in args.epochs.split(","))
                raw["pruning"]["admm"]["train"]["epochs"], raw["pruning"]["retrain"]["epochs"] = a, r
            slug = name.replace(" ", "_").replace(",", "").replace("=", "").replace("+", "")
            raw["output"] = str(ROOT / "runs" / "study" / f"{slug}-s{seed}")
            print(f"== {raw['name']}", flush=True)
            r = run_recipe(recipe_from_dict(raw), progress=False)
            runs.append({"setting": name, "seed": seed, "acc": r.pruned_acc, "dense": r.baseline_acc,
                         "compression": r.conv_compression, "library": r.library, "epochs": r.epochs,
                         "seconds": r.seconds, "model": r.model_path})
            save_json("pattern_library_study", {"machine": info, "runs": runs})
    report(runs, info)


def report(runs: list[dict], info: dict) -> None:
    by: dict[str, list[dict]] = {}
    for r in runs:
        by.setdefault(r["setting"], []).append(r)
    dense = runs[0]["dense"]
    _, base_meta = load_model(ROOT / "checkpoints" / "vgg6-fashion_mnist.safetensors")
    rows = [["dense (committed checkpoint)", "1.00x", f"{dense:.2f}", "-", 1, str(base_meta.get("epochs", "?")),
             "-"]]
    points = []
    best = max(by.items(), key=lambda kv: statistics.mean(r["acc"] for r in kv[1]) if "learned" in kv[0] else -1)
    for name, rs in by.items():
        accs = [r["acc"] for r in rs]
        mean = statistics.mean(accs)
        spread = (max(accs) - min(accs)) / 2 if len(accs) > 1 else 0.0
        rows.append([name, f"{rs[0]['compression']:.2f}x", f"{mean:.2f} ± {spread:.2f}", f"{mean - dense:+.2f}",
                     len(rs), f"{rs[0]['epochs'].get('admm', 0)}+{rs[0]['epochs']['retrain']}",
                     f"{statistics.mean(r['seconds'].get('admm', 0) + r['seconds']['retrain'] for r in rs) / 60:.1f}"])
        points.append({"label": name, "compression": rs[0]["compression"], "acc": mean, "err": spread})
    accuracy_compression_figure(points, RESULTS_DIR / "accuracy_vs_compression.png", dense)
    name, rs = best
    top = max(rs, key=lambda r: r["acc"])
    if top["library"]:
        model, meta = load_model(top["model"])
        lib = PatternLibrary.from_json(json.dumps(top["library"]))
        masks = {n: m.weight != 0 for n, m in model.named_modules() if n in meta.get("schemes", {})}
        library_figure(lib, masks, RESULTS_DIR / "library_best.png", f"{name}, seed {top['seed']}")
    md = ["## Learned vs fixed pattern libraries on Fashion-MNIST (issue: ECCV 2020)", "",
          f"Measured {stamp(info)}. vgg6 width 32 from the committed dense checkpoint "
          f"({dense:.2f}%, {base_meta.get('epochs', '?')} epochs); mean ± half-range over seeds. "
          "min/run is wall time, which includes any time a run was paused while other benchmarks had the "
          "machine.", "",
          markdown_table(["setting", "conv compression", "test acc %", "vs dense", "seeds", "epochs", "min/run"],
                         rows), "",
          "![accuracy vs compression](results/accuracy_vs_compression.png)", "",
          f"Library of the best learned run ({name}): ![library](results/library_best.png)"]
    write_section("pattern_library_study", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
