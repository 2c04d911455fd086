"""Matplotlib figures (written to PNG with the Agg backend, so no display is needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from tessera.sparsity import PatternLibrary
from tessera.sparsity.patterns import pattern_counts


def pyplot():
    """matplotlib's pyplot on the Agg backend (PNG files, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return path


def library_figure(library: PatternLibrary, masks: Mapping[str, torch.Tensor], path: str | Path,
                   title: str = "pattern library") -> Path:
    """The K patterns on top, and below them each layer's share of kept kernels using each pattern."""
    plt = pyplot()

    k = len(library)
    layers = list(masks)
    freq = torch.stack([pattern_counts(masks[n], library).double() for n in layers])
    freq = freq / freq.sum(1, keepdim=True).clamp_min(1)
    fig = plt.figure(figsize=(max(6, 1.1 * k), 2.2 + 0.35 * len(layers)))
    grid = fig.add_gridspec(2, k, height_ratios=[1, max(1.5, 0.35 * len(layers))])
    for i, p in enumerate(library.patterns):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(p.reshape(3, 3).float().numpy(), cmap="Greys", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"#{i}", fontsize=8)
    ax = fig.add_subplot(grid[1, :])
    im = ax.imshow(freq.numpy(), aspect="auto", cmap="viridis", vmin=0)
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    ax.set_xticks(range(k), [f"#{i}" for i in range(k)], fontsize=7)
    ax.set_xlabel("pattern")
    fig.colorbar(im, ax=ax, label="share of the layer's kept kernels")
    fig.suptitle(title)
    return save_figure(fig, path)


def accuracy_compression_figure(points: Sequence[dict], path: str | Path, dense_acc: float | None = None) -> Path:
    """Accuracy vs conv compression; ``points`` are dicts with label, compression, acc and optional err."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for p in points:
        ax.errorbar(p["compression"], p["acc"], yerr=p.get("err", 0), fmt="o", capsize=3, label=p["label"])
    if dense_acc is not None:
        ax.axhline(dense_acc, color="grey", ls="--", lw=1, label="dense")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("conv weights, x fewer (log scale)")
    ax.set_ylabel("test accuracy %")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
