"""Accuracy of pattern (+ connectivity) pruning on Fashion-MNIST vs dense and unstructured magnitude.

Runs the shipped recipes (same baseline, same ADMM and retraining schedule), then writes
``results/pruning_fashion_mnist.json`` and its section of ``RESULTS.md``. Each recipe resumes from its checkpoints,
so an interrupted run can be restarted. Recipes named on the command line are (re)run; the table's other rows are
taken from the stored JSON, each with the date and machine it was measured on (a training run is an hour or more
of this machine, so a new recipe should not cost re-running the old ones).
Usage: ``python benchmarks/pruning_fashion_mnist.py [recipe names...]`` (no names: run every recipe).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from common import RESULTS_DIR, machine, save_json, stamp, write_section
from tessera.models import create_model, load_model
from tessera.pruning.job import LayerStats, PruneResult, run_recipe
from tessera.pruning.recipe import load_recipe
from tessera.report import markdown_table, prune_rows

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ["patdnn-8x", "pattern-only", "magnitude-8x", "patdnn-8x-erk", "patdnn-8x-erk-long", "patdnn-8x-erk-rewind",
           "patdnn-8x-erk-learned-rewind", "patdnn-8x-erk-w64", "magnitude-8x-erk-w64"]


TITLE = "Pruning accuracy on Fashion-MNIST (issue: PatDNN pattern + connectivity)"
INTRO = ("All width-32 runs start from the same dense checkpoint (patdnn-8x-erk-w64 from its own width-64 one, with "
         "patdnn-8x-erk-long's schedule) and use the same schedule: 6 ADMM epochs, hard "
         "masks, masked retraining (10 epochs; the -long and -rewind runs 20: -rewind retrains on the baseline's "
         "one-cycle schedule peaking at lr 0.05 (learning-rate rewinding) instead of fine-tuning at lr 0.01 cosine; "
         "-learned learns its 8 patterns inside ADMM, starting from all 56, instead of taking the 8 most frequent of "
         "the dense model; -long retrained from a copy of patdnn-8x-erk's ADMM checkpoint, whose epochs its wall "
         "minutes include); both training phases distil from the dense baseline (weight 0.7, temperature 4). "
         "patdnn-8x keeps 1/3.6 of the kernels in every layer; the -erk runs keep 1/3.6 of all kernels, split across "
         "layers by the ERK rule (budget: erk: the 32x32 layer keeps 79%, the 128x128 layer 18%), the same 8x fewer "
         "conv weights. ADMM residual: |W - Z| / |W| at the end of ADMM (how far the weights still are from the "
         "constraint set); accuracy after hard masks: before retraining. Wall minutes count each epoch as it ran; "
         "runs shared the 2 cores (with each other and with kernel benchmarks), so one run alone is faster.")


def conv_pixels(model: str, args: dict, shape=(1, 1, 28, 28)) -> dict[str, int]:
    """Output pixels of every conv of the model, per image."""
    import torch
    from torch import nn

    net = create_model(model, **args)
    pixels: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda m, _, out, n=n: pixels.__setitem__(n, out.shape[-2] * out.shape[-1]))
             for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net.eval()(torch.zeros(shape))
    for h in hooks:
        h.remove()
    return pixels


def conv_macs_kept(result: PruneResult, pixels: dict[str, int]) -> float:
    """Multiply-adds of the pruned convs over those of the dense ones, per image: what the compiled model
    computes (a kept weight costs once per output pixel, so early layers on large images weigh more). Read from
    the recorded per-layer kept counts, so stored results need no model file."""
    kept = sum(s.kept * pixels[s.name] for s in result.layers)
    dense = sum(s.total * pixels[s.name] for s in result.layers)
    return kept / dense


def stored_results(section: str) -> dict[str, tuple[PruneResult, dict]]:
    """Earlier results of this section by recipe name, each with the machine stamp it was measured under."""
    path = RESULTS_DIR / f"{section}.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    out = {}
    for d in data.get("results", []):
        measured = d.pop("measured", None) or data["machine"]
        d["layers"] = [LayerStats(**{**s, "shape": tuple(s["shape"])}) for s in d["layers"]]
        out[d["recipe"]] = (PruneResult(**d), measured)
    return out


def main(names: list[str], section: str = "pruning_fashion_mnist", title: str = TITLE, intro: str = INTRO,
         order: list[str] | None = None) -> None:
    """Run the recipes ``names``; the table lists ``order`` (default: ``names``), earlier rows from the JSON."""
    info = machine()
    results: dict[str, tuple[PruneResult, dict]] = stored_results(section)
    for name in names:
        recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml")
        recipe.baseline.checkpoint = str(ROOT / recipe.baseline.checkpoint)
        recipe.output = str(ROOT / recipe.output)
        print(f"== {name}")
        results[name] = (run_recipe(recipe, progress=False), info)
    listed = [(results[n][0], results[n][1]) for n in (order or names) if n in results]
    baselines: dict[str, dict] = {}  # checkpoint -> its metadata, in the order the table first needs them
    pixels: dict[str, dict[str, int]] = {}  # checkpoint -> output pixels of each conv of its model
    rows = []
    for r, measured in listed:
        ckpt = load_recipe(ROOT / "recipes" / f"{r.recipe}.yaml").baseline.checkpoint
        if ckpt not in baselines:  # each dense baseline heads the rows pruned from it
            _, meta = load_model(ROOT / ckpt)
            baselines[ckpt] = meta
            pixels[ckpt] = conv_pixels(meta["model"], meta["args"])
            rows.append([f"dense baseline ({meta['model']} width {meta['args'].get('width', '?')})", "1.00x",
                         "100%", f"{r.baseline_acc:.2f}", "-", "-", "-", str(meta.get("epochs", "?")),
                         f"{meta.get('seconds', 0) / 60:.1f}", "-"])
        rows.append([
            r.recipe, f"{r.conv_compression:.2f}x", f"{100 * conv_macs_kept(r, pixels[ckpt]):.1f}%",
            f"{r.pruned_acc:.2f}",
            f"{r.pruned_acc - r.baseline_acc:+.2f}",
            "-" if r.admm_residual is None else f"{r.admm_residual:.3f}",
            "-" if r.hard_pruned_acc is None else f"{r.hard_pruned_acc:.2f}",
            " + ".join(f"{v} {k}" for k, v in r.epochs.items() if k != "baseline"),
            f"{sum(v for k, v in r.seconds.items() if k != 'baseline') / 60:.1f}",
            f"{measured['date'][:10]}, {measured['cpu']}, {measured.get('commit', '?')}",
        ])
    md = [
        f"## {title}",
        "",
        f"Written {stamp(info)}. Model vgg6 (6 3x3 convs, BN; width 32, and width 64 for the rows under its own "
        f"dense baseline), test set 10k images. {intro} Each row "
        "says when, on which CPU and at which commit it was trained (rows not re-run keep their stored result).",
        "",
        markdown_table(["model", "conv compression", "conv MACs kept", "test acc %", "vs dense (points)",
                        "ADMM residual", "acc. after hard masks %", "epochs", "wall min", "measured"], rows),
    ]
    for r, _ in listed:
        head, lrows = prune_rows(r)
        md += ["", f"Per-layer, {r.recipe}:", "", markdown_table(head, lrows)]
        if r.library:
            md += ["", f"Pattern library ({len(r.library)} patterns, kept flat indices of the 3x3 kernel): "
                   f"`{r.library}`"]
    save_json(section, {"machine": info, "baseline": next(iter(baselines.values())), "baselines": baselines,
                        "results": [{**asdict(r), "measured": m} for r, m in listed]})
    write_section(section, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main(sys.argv[1:] or RECIPES, order=RECIPES)
