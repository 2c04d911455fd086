"""The main job: recipe → baseline → ADMM (or one-shot) → hard masks → masked retraining → pruned model.

Each training phase checkpoints every epoch under ``<output>/``; running the same recipe again resumes where it
stopped. The final model is written only once everything succeeded. Under torchrun every rank runs this job
(``batch_size`` is the global batch) and only rank 0 writes files and logs.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tessera.data import load_dataset
from tessera.errors import ConfigError
from tessera.models import create_model, load_model, save_model
from tessera.pruning import distributed as ddp
from tessera.pruning.admm import ADMM
from tessera.pruning.gradual import GradualPruner
from tessera.pruning.recipe import Recipe
from tessera.pruning.sparsifier import Sparsifier
from tessera.pruning.targets import select_targets
from tessera.pruning.trainer import Trainer, evaluate
from tessera.sparsity import analyse_conv


@dataclass
class LayerStats:
    name: str
    shape: tuple[int, ...]
    scheme: str
    kept: int
    total: int
    kind: str
    patterns: int
    kernels_kept: int
    kernels_total: int


@dataclass
class PruneResult:
    recipe: str
    baseline_acc: float
    pruned_acc: float
    layers: list[LayerStats]
    library: list[list[int]] | None
    epochs: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    model_path: str = ""
    hard_pruned_acc: float | None = None  # right after the hard masks, before retraining
    admm_residual: float | None = None  # |W - Z| / |W| at the end of ADMM: how close W came to the constraints

    @property
    def conv_compression(self) -> float:
        total = sum(layer.total for layer in self.layers)
        kept = sum(layer.kept for layer in self.layers)
        return total / max(kept, 1)


def layer_stats(model: nn.Module, schemes: dict[str, str]) -> list[LayerStats]:
    """Per-conv statistics read back from the weights (what the compiler will see)."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            lay = analyse_conv(m.weight)
            out.append(LayerStats(
                name, tuple(m.weight.shape), schemes.get(name, "dense"), int((m.weight != 0).sum()),
                m.weight.numel(), lay.kind, len(lay.library) if lay.library is not None else 0,
                lay.kernels_kept, lay.kernels_total,
            ))
    return out


def baseline_model(recipe: Recipe, train, test, progress: bool = True) -> tuple[nn.Module, dict]:
    """Load the recipe's baseline checkpoint, or train the baseline and save it there."""
    ckpt = Path(recipe.baseline.checkpoint) if recipe.baseline.checkpoint else None
    args = {"in_channels": train.shape[0], "num_classes": train.num_classes, **recipe.model.args}
    if ckpt is not None and ckpt.exists():
        model, meta = load_model(ckpt)
        if meta["model"] != recipe.model.name or meta.get("args", {}) != args:
            raise ConfigError(f"baseline {ckpt} holds {meta['model']} {meta.get('args')}, not the recipe's model; "
                              "delete it or point baseline.checkpoint elsewhere")
        return model, meta
    torch.manual_seed(recipe.seed)
    model = create_model(recipe.model.name, **args)
    out = Path(recipe.output)
    history = Trainer(model, train, test, recipe.baseline.train, checkpoint_dir=out, name="baseline",
                      progress=progress)
    history.resume()
    h = history.fit()
    meta = {"epochs": len(h.epochs), "seconds": h.seconds, "history": h.epochs}
    if ckpt is not None and ddp.world().main:
        save_model(model, ckpt, recipe.model.name, args, meta)
    return model, {"model": recipe.model.name, "args": args, **meta}


def run_recipe(recipe: Recipe, progress: bool = True, log=print) -> PruneResult:
    """Run a whole recipe; see the module docstring."""
    w = ddp.init_from_env()
    if not w.main:
        log = _silent
    train, test = load_dataset(recipe.data.name, recipe.data.root)
    out = Path(recipe.output)
    t0 = time.perf_counter()
    # check the targets on an untrained copy first: a typo must not cost a baseline training run
    skeleton = create_model(recipe.model.name, in_channels=train.shape[0], num_classes=train.num_classes,
                            **recipe.model.args)
    p = recipe.pruning
    learning = [t.name for t in select_targets(skeleton, p.targets, p.defaults)
                if getattr(t.scheme, "library", None) is not None and len(t.scheme.library) > t.scheme.num_patterns]
    if learning and not (p.algorithm == "admm" and p.admm.train.epochs > 0):
        raise ConfigError(f"library: learn (layer {learning[0]}) needs pruning.algorithm admm with "
                          "admm.train.epochs > 0: the library is learned inside the ADMM loop")
    model, base_meta = baseline_model(recipe, train, test, progress)
    model = model.to(w.device)  # before ADMM's Z and U are made from its weights
    base_acc = evaluate(model, test)
    log(f"baseline {recipe.model.name}: {base_acc:.2f}% test accuracy")
    sparsifier = Sparsifier(p.targets, p.defaults)
    targets = sparsifier.select(model)
    epochs = {"baseline": int(base_meta.get("epochs", 0))}
    seconds = {"baseline": float(base_meta.get("seconds", 0.0))}
    distilling = any(c.distill > 0 for c in (p.admm.train, p.gradual.train, p.retrain))
    teacher = copy.deepcopy(model).eval().requires_grad_(False) if distilling else None  # the dense baseline

    def phase(name: str, cfg, hooks=()) -> None:
        """One training phase with its own checkpoint file, resumed if interrupted earlier."""
        t1 = time.perf_counter()
        tr = Trainer(model, train, test, cfg, hooks=hooks, checkpoint_dir=out, name=name, progress=progress,
                     teacher=teacher)
        tr.resume()
        tr.fit()
        # training seconds of every epoch, including those done before a resume (not just this call's)
        epochs[name], seconds[name] = cfg.epochs, max(tr.history.seconds, time.perf_counter() - t1)

    residual = None
    if p.algorithm == "admm" and p.admm.train.epochs > 0:
        admm = ADMM(targets, p.admm, math.ceil(len(train) / p.admm.train.batch_size), p.admm.train.epochs)
        phase("admm", p.admm.train, [admm])
        if admm.history:
            residual = admm.history[-1]["residual"]
            log(f"ADMM: residual |W-Z|/|W| = {residual:.4f}, rho = {admm.rho:.3g}")
        sparsifier.targets = targets = admm.targets  # learned libraries, if any, are the final ones
    sparsifier.prepare(model)
    if p.algorithm == "gradual" and p.gradual.train.epochs > 0:
        steps = math.ceil(len(train) / p.gradual.train.batch_size)
        phase("gradual", p.gradual.train, [GradualPruner(sparsifier, p.gradual, steps, p.gradual.train.epochs)])
    sparsifier.step()
    hard_acc = evaluate(model, test)
    log(f"hard-pruned: {hard_acc:.2f}% before retraining")
    phase("retrain", p.retrain)  # masks are buffers in the state dict, so a resumed retrain keeps them
    model = sparsifier.squash_mask()
    acc = evaluate(model, test)
    schemes = {t.name: t.scheme.name for t in targets}
    libs = {t.scheme.library.to_json() for t in targets if getattr(t.scheme, "library", None) is not None}
    library = json.loads(next(iter(libs))) if len(libs) == 1 else None
    result = PruneResult(recipe.name, base_acc, acc, layer_stats(model, schemes), library, epochs, seconds,
                         hard_pruned_acc=hard_acc, admm_residual=residual)
    result.model_path = str(out / "model.safetensors")
    seconds["total"] = time.perf_counter() - t0
    ddp.check_identical(model.state_dict(), [schemes, library], "the pruned models", w)
    if not w.main:
        return result
    save_model(model, result.model_path, base_meta["model"], base_meta["args"], {
        "recipe": recipe.name, "accuracy": acc, "baseline_accuracy": base_acc, "library": library,
        "normalise": {"mean": list(train.mean), "std": list(train.std)}, "schemes": schemes,
        "input_shape": [1, *train.shape],
        "libraries": {t.name: json.loads(t.scheme.library.to_json()) for t in targets
                      if getattr(t.scheme, "library", None) is not None},
    })
    return result


def _silent(*args, **kwargs) -> None:
    """The log of ranks other than 0."""
