"""Packed sparse conv weights: filter-kernel reorder (FKR) + FKW-style compact storage (PatDNN §4).

A layer's kept kernels are grouped by *pattern* (the set of non-zero taps). For every filter, its kernels are
sorted by pattern, then by input channel, so the generated code runs one tight loop per pattern with the tap
offsets as compile-time constants. Filters are reordered by kernel count (then by pattern histogram) so threads
that take filters round-robin get balanced work and similar filters sit together.

Arrays (all int32 / float32, the same the C kernel reads):
  reorder[f]      original output channel computed at position f
  group_ptr[g]    CSR over (filter position, pattern) groups: kernels of group g = f*P + p are
                  group_ptr[g] .. group_ptr[g+1]
  cin_index[k]    input channel of kernel k
  weights[k, t]   the kernel's weights at its pattern's taps (t < taps of that pattern; padded to TMAX)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tessera.sparsity import ConvLayout, analyse_conv

MAX_PATTERNS = 32


@dataclass(frozen=True, eq=False)
class PackedConv:
    cout: int
    cin: int
    kh: int
    kw: int
    patterns: tuple[tuple[int, ...], ...]  # per pattern, sorted flat tap indices (dy*kw + dx)
    reorder: np.ndarray
    group_ptr: np.ndarray
    cin_index: np.ndarray
    weights: np.ndarray
    bias: np.ndarray  # in reordered filter order
    kind: str

    @property
    def tmax(self) -> int:
        return max(len(p) for p in self.patterns)

    @property
    def kernels(self) -> int:
        return int(self.cin_index.shape[0])

    @property
    def nnz_stored(self) -> int:
        return sum(len(self.patterns[p]) * int(c) for p, c in enumerate(self.pattern_counts()))

    def pattern_counts(self) -> np.ndarray:
        per_group = np.diff(self.group_ptr).reshape(self.cout, len(self.patterns))
        return per_group.sum(0)

    def bytes(self) -> dict[str, int]:
        """Storage of this format vs dense and CSR (fp32 values, int32 indices), as PatDNN compares them."""
        nnz = self.nnz_stored
        true_nnz = int(np.count_nonzero(self.weights))
        return {
            "dense": self.cout * self.cin * self.kh * self.kw * 4,
            "csr": true_nnz * 8 + (self.cout + 1) * 4,
            # FKW: values + one channel index per kernel + group offsets + filter reorder + pattern table
            "fkw": nnz * 4 + self.kernels * 4 + self.group_ptr.size * 4 + self.cout * 4
            + sum(len(p) for p in self.patterns),
        }


def _tap_sets(nz: torch.Tensor) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """Distinct non-zero tap sets and each kernel's index into them (-1: kernel removed)."""
    cout, cin = nz.shape[:2]
    flat = nz.reshape(cout, cin, -1)
    kept = flat.any(-1)
    idx = torch.full((cout, cin), -1, dtype=torch.long)
    if not bool(kept.any()):
        return [tuple(range(flat.shape[-1]))], idx
    uniq, inverse = torch.unique(flat[kept], dim=0, return_inverse=True)
    if uniq.shape[0] > MAX_PATTERNS:  # too irregular for per-pattern code: keep kernels whole
        idx[kept] = 0
        return [tuple(range(flat.shape[-1]))], idx
    idx[kept] = inverse
    return [tuple(torch.nonzero(u).flatten().tolist()) for u in uniq], idx


def pack_conv(weight: torch.Tensor, bias: torch.Tensor | None = None, layout: ConvLayout | None = None) -> PackedConv:
    """Pack a (Cout, Cin, kh, kw) weight whose zeros form patterns and/or removed kernels."""
    w = weight.detach().float().cpu()
    cout, cin, kh, kw = w.shape
    layout = layout or analyse_conv(w)
    if layout.library is not None:  # 3x3 patterns (completed to 4 taps where a weight is exactly zero)
        patterns = [tuple(torch.nonzero(p).flatten().tolist()) for p in layout.library.patterns]
        pidx = layout.pattern_index
    else:
        patterns, pidx = _tap_sets(w != 0)
    P = len(patterns)
    counts = torch.stack([(pidx == p).sum(1) for p in range(P)], 1)  # (cout, P)
    total = counts.sum(1)
    # FKR: heaviest filters first, then by pattern histogram so similar filters are adjacent
    order = sorted(range(cout), key=lambda f: (-int(total[f]), tuple(-int(c) for c in counts[f]), f))
    tmax = max(len(p) for p in patterns)
    pos_of = torch.empty(cout, dtype=torch.long)
    pos_of[torch.tensor(order)] = torch.arange(cout)
    fs, cs = torch.nonzero(pidx >= 0, as_tuple=True)
    ps = pidx[fs, cs]
    group = pos_of[fs] * P + ps
    sort = torch.argsort(group * cin + cs)
    fs, cs, ps, group = fs[sort], cs[sort], ps[sort], group[sort]
    group_ptr = torch.zeros(cout * P + 1, dtype=torch.long)
    group_ptr[1:] = torch.cumsum(torch.bincount(group, minlength=cout * P), 0)
    tap_index = torch.zeros(P, tmax, dtype=torch.long)
    tap_valid = torch.zeros(P, tmax, dtype=torch.bool)
    for q, taps in enumerate(patterns):
        tap_index[q, : len(taps)] = torch.tensor(taps)
        tap_valid[q, : len(taps)] = True
    wflat = w.reshape(cout, cin, kh * kw)[fs, cs]  # (kernels, kh*kw)
    vals = torch.gather(wflat, 1, tap_index[ps]) * tap_valid[ps]
    cidx, vals_np, group_ptr_np = cs, vals.numpy().astype(np.float32), group_ptr
    b = np.zeros(cout, dtype=np.float32) if bias is None else bias.detach().float().cpu().numpy()
    return PackedConv(
        cout, cin, kh, kw, tuple(patterns),
        np.asarray(order, dtype=np.int32), group_ptr_np.numpy().astype(np.int32),
        cidx.numpy().astype(np.int32), np.ascontiguousarray(vals_np),
        np.ascontiguousarray(b[order]), layout.kind,
    )


def unpack_conv(p: PackedConv) -> torch.Tensor:
    """Inverse of :func:`pack_conv` (the weight, without bias): the format's own round-trip check."""
    w = torch.zeros(p.cout, p.cin, p.kh * p.kw)
    P = len(p.patterns)
    for pos, f in enumerate(p.reorder.tolist()):
        for q in range(P):
            g = pos * P + q
            for k in range(int(p.group_ptr[g]), int(p.group_ptr[g + 1])):
                taps = list(p.patterns[q])
                w[f, int(p.cin_index[k]), taps] = torch.from_numpy(p.weights[k, : len(taps)].copy())
    return w.reshape(p.cout, p.cin, p.kh, p.kw)
