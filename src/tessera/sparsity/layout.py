"""The format contract between pruning and compiling: what sparsity a conv weight actually has.

It is read from the weights alone (zeros are zeros, whoever made them), so the compiler works on models pruned by
any tool, and pruning reports describe exactly what the compiler will see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tessera.sparsity.blocks import cover_from_keys, distinct_sorted, nonzero_keys
from tessera.sparsity.patterns import CENTRE, ENTRIES, PatternLibrary

BLOCK_SIZES = (4, 2)  # tried in this order on 1x1 / linear weights
BLOCK_FILL = 0.95  # a block cover must be this full to count as block sparsity (pruned blocks give 1.0)


@dataclass(frozen=True)
class ConvLayout:
    """Sparsity of one conv weight (Cout, Cin, kh, kw).

    kind: "dense" | "pattern" (every kernel a 4-entry pattern, none removed) | "pattern_connectivity" (patterns
    and removed kernels) | "connectivity" (whole kernels removed, kept kernels dense) | "block" (a 1x1 or linear
    weight whose non-zeros are covered by N-row blocks, see ``blocks``) | "unstructured".
    kernel_mask: (Cout, Cin) bool, kernels with any non-zero. library / pattern_index: for pattern kinds, the
    distinct patterns used and each kernel's index into it (-1 for removed kernels).
    """

    kind: str
    density: float
    kernel_mask: torch.Tensor
    library: PatternLibrary | None = None
    pattern_index: torch.Tensor | None = None
    blocks: torch.Tensor | None = None
    block_n: int = 0
    block_aligned: bool = False

    @property
    def kernels_kept(self) -> int:
        return int(self.kernel_mask.sum())

    @property
    def kernels_total(self) -> int:
        return int(self.kernel_mask.numel())


def analyse_conv(w: torch.Tensor) -> ConvLayout:
    """Classify a conv weight's sparsity from its non-zeros.

    >>> w = torch.zeros(2, 2, 3, 3); w[:, :, 1, 1] = 1; w[:, :, 0, 1] = 1; w[:, :, 1, 0] = 1; w[:, :, 1, 2] = 1
    >>> analyse_conv(w).kind
    'pattern'
    """
    nz = w.detach() != 0
    cout, cin = w.shape[:2]
    # per kernel, summed as bytes: a bool tensor's whole sum took ~4x as long (ResNet-50's cached compile)
    counts = nz.reshape(cout, cin, -1).view(torch.uint8).sum(-1, dtype=torch.int32)
    kernel_mask = counts > 0
    nnz = int(counts.sum())
    density = nnz / nz.numel() if nz.numel() else 1.0
    kept_counts = counts[kernel_mask]
    if tuple(w.shape[2:]) == (3, 3) and kept_counts.numel() > 0:
        rows = nz.reshape(cout, cin, 9)[kernel_mask]
        if bool((kept_counts <= ENTRIES).all()):
            # pad kernels with fewer non-zeros (a zero weight inside a pattern) up to a 4-entry pattern: the
            # centre first, then the lowest free positions, so the pattern covers every non-zero.
            rows = _complete_patterns(rows)
            uniq, inverse = unique_rows(rows)
            index = torch.full((cout, cin), -1, dtype=torch.long)
            index[kernel_mask] = inverse
            kind = "pattern" if bool(kernel_mask.all()) else "pattern_connectivity"
            return ConvLayout(kind, density, kernel_mask, PatternLibrary(uniq), index)
    if bool(kernel_mask.all()):
        kind = "dense" if density > 0.999 else "unstructured"
    else:
        kept_full = bool((kept_counts == w.shape[2] * w.shape[3]).all())
        kind = "connectivity" if kept_full and tuple(w.shape[2:]) != (1, 1) else "unstructured"
    if kind == "unstructured":  # N-row blocks of the Cout x (Cin*kh*kw) matrix, whoever pruned them
        found = _blocks(nz.reshape(cout, -1), nnz)
        if found is not None:
            blocks, n, aligned = found
            return ConvLayout("block", density, kernel_mask, blocks=blocks, block_n=n, block_aligned=aligned)
    return ConvLayout(kind, density, kernel_mask)


def unique_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(rows, dim=0, return_inverse=True)`` for a bool matrix, by packing each row into an integer
    (first column most significant, so the order is the same): ~40x faster on a big layer's kernels."""
    if rows.shape[1] > 62 or rows.shape[0] == 0:
        return torch.unique(rows, dim=0, return_inverse=True)
    weights = 2 ** torch.arange(rows.shape[1] - 1, -1, -1, dtype=torch.int64)
    codes = (rows.long() * weights).sum(1)
    uniq, inverse = torch.unique(codes, return_inverse=True)
    return (uniq[:, None] & weights) != 0, inverse


def _blocks(nz: torch.Tensor, nnz: int) -> tuple[torch.Tensor, int, bool] | None:
    """The largest N whose block cover is at least BLOCK_FILL full (``nnz``: the non-zeros of ``nz``), aligned
    when that costs no extra block."""
    keys = nonzero_keys(nz) if nnz else None
    for n in BLOCK_SIZES:
        if n > nz.shape[0] or nnz == 0:
            continue
        m = nz.shape[0]
        free = cover_from_keys(keys, m, n)
        if nnz / (free.shape[0] * n) < BLOCK_FILL:
            continue
        if m % n == 0:  # the aligned cover is every aligned block holding a non-zero: keys // n, distinct
            blk = distinct_sorted(keys // n)  # = column * (m / n) + row // n, sorted as the keys are
            if blk.size != free.shape[0]:
                return free, n, False
            al = torch.from_numpy(np.stack([blk // (m // n), blk % (m // n) * n], 1).astype(np.int64))
            return al, n, True
        al = cover_from_keys(keys, m, n, aligned=True)
        if al.shape[0] == free.shape[0] and bool((al[:, 1] % n == 0).all()):
            return al, n, True
        return free, n, False
    return None


def _complete_patterns(rows: torch.Tensor) -> torch.Tensor:
    rows = rows.clone()
    short = rows.sum(1) < ENTRIES
    for i in torch.nonzero(short).flatten().tolist():
        r = rows[i]
        order = [CENTRE] + [j for j in range(9) if j != CENTRE]
        for j in order:
            if int(r.sum()) >= ENTRIES:
                break
            r[j] = True
    return rows
