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
from tessera.sparsity.layout import unique_rows

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
    group: int = 1  # filters per unit: a unit's filters share kernels and patterns, weights[k] holds all of them

    @property
    def tmax(self) -> int:
        return max(len(p) for p in self.patterns)

    @property
    def kernels(self) -> int:
        return int(self.cin_index.shape[0])

    @property
    def nnz_stored(self) -> int:
        return self.group * sum(len(self.patterns[p]) * int(c) for p, c in enumerate(self.pattern_counts()))

    @property
    def units(self) -> int:
        return self.cout // self.group

    def pattern_counts(self) -> np.ndarray:
        """Kernels stored per pattern (one per unit and input channel)."""
        per_group = np.diff(self.group_ptr).reshape(self.units, len(self.patterns))
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
    uniq, inverse = unique_rows(flat[kept])
    if uniq.shape[0] > MAX_PATTERNS:  # too irregular for per-pattern code: keep kernels whole
        idx[kept] = 0
        return [tuple(range(flat.shape[-1]))], idx
    idx[kept] = inverse
    return [tuple(torch.nonzero(u).flatten().tolist()) for u in uniq], idx


def pack_conv(weight: torch.Tensor, bias: torch.Tensor | None = None, layout: ConvLayout | None = None,
              group_sizes: tuple[int, ...] = (4, 2)) -> PackedConv:
    """Pack a (Cout, Cin, kh, kw) weight whose zeros form patterns and/or removed kernels; filters that share
    kernels and patterns go in units of one of ``group_sizes`` (``()``: single-filter units)."""
    w = weight.detach().float().cpu()
    cout, cin, kh, kw = w.shape
    layout = layout or analyse_conv(w)
    if layout.library is not None:  # 3x3 patterns (completed to 4 taps where a weight is exactly zero)
        patterns = [tuple(torch.nonzero(p).flatten().tolist()) for p in layout.library.patterns]
        pidx = layout.pattern_index
    else:
        patterns, pidx = _tap_sets(w != 0)
    P = len(patterns)
    F = filter_group(pidx, group_sizes)
    units = cout // F
    upidx = pidx.reshape(units, F, cin)[:, 0]  # every filter of a unit has the same kernels and patterns
    counts = torch.stack([(upidx == p).sum(1) for p in range(P)], 1)  # (units, P)
    total = counts.sum(1)
    # FKR: heaviest units first, then by pattern histogram so similar units are adjacent
    uorder = sorted(range(units), key=lambda u: (-int(total[u]), tuple(-int(c) for c in counts[u]), u))
    order = [u * F + i for u in uorder for i in range(F)]
    tmax = max(len(p) for p in patterns)
    pos_of = torch.empty(units, dtype=torch.long)
    pos_of[torch.tensor(uorder)] = torch.arange(units)
    us, cs = torch.nonzero(upidx >= 0, as_tuple=True)
    ps = upidx[us, cs]
    grp = pos_of[us] * P + ps
    sort = torch.argsort(grp * cin + cs)
    us, cs, ps, grp = us[sort], cs[sort], ps[sort], grp[sort]
    group_ptr = torch.zeros(units * P + 1, dtype=torch.long)
    group_ptr[1:] = torch.cumsum(torch.bincount(grp, minlength=units * P), 0)
    tap_index = torch.zeros(P, tmax, dtype=torch.long)
    tap_valid = torch.zeros(P, tmax, dtype=torch.bool)
    for q, taps in enumerate(patterns):
        tap_index[q, : len(taps)] = torch.tensor(taps)
        tap_valid[q, : len(taps)] = True
    wf = w.reshape(units, F, cin, kh * kw)[us, :, cs]  # (kernels, F, kh*kw)
    idx = tap_index[ps][:, None, :].expand(-1, F, -1)
    vals = torch.gather(wf, 2, idx) * tap_valid[ps][:, None, :]  # (kernels, F, tmax)
    b = np.zeros(cout, dtype=np.float32) if bias is None else bias.detach().float().cpu().numpy()
    return PackedConv(
        cout, cin, kh, kw, tuple(patterns),
        np.asarray(order, dtype=np.int32), group_ptr.numpy().astype(np.int32),
        cs.numpy().astype(np.int32), np.ascontiguousarray(vals.reshape(len(cs), F * tmax).numpy(), np.float32),
        np.ascontiguousarray(b[order]), layout.kind, F,
    )


def filter_group(pidx: torch.Tensor, sizes: tuple[int, ...] = (4, 2)) -> int:
    """Largest F such that every aligned run of F filters keeps the same kernels with the same patterns.

    Such filters share every input load in the generated code (see ``pattern_group`` pruning); 1 if none.
    """
    cout = pidx.shape[0]
    for f in sizes:
        if cout % f == 0 and cout > f:
            g = pidx.reshape(cout // f, f, -1)
            if bool((g == g[:, :1]).all()):
                return f
    return 1


def unpack_conv(p: PackedConv) -> torch.Tensor:
    """Inverse of :func:`pack_conv` (the weight, without bias): the format's own round-trip check."""
    w = torch.zeros(p.cout, p.cin, p.kh * p.kw)
    P, F = len(p.patterns), p.group
    vals = p.weights.reshape(-1, F, p.tmax)
    for pos in range(p.units):
        for q in range(P):
            g = pos * P + q
            taps = list(p.patterns[q])
            for k in range(int(p.group_ptr[g]), int(p.group_ptr[g + 1])):
                for i in range(F):
                    f = int(p.reorder[pos * F + i])
                    w[f, int(p.cin_index[k]), taps] = torch.from_numpy(vals[k, i, : len(taps)].copy())
    return w.reshape(p.cout, p.cin, p.kh, p.kw)


@dataclass(frozen=True, eq=False)
class TapLists:
    """The channel-blocked view of a packed layer: per filter position and block of input channels, the list of
    kept kernels, each as TMAX (input offset, weight) taps (weight 0 pads shorter patterns).

    toff[k, t] = channel * plane + offset of tap t in the padded input; tw[k, t] its weight;
    kptr[f * blocks + b] .. kptr[f * blocks + b + 1] = kernels of filter position f in channel block b.
    """

    toff: np.ndarray
    tw: np.ndarray
    kptr: np.ndarray
    blocks: int


def kernel_rows(p: PackedConv) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each stored kernel's unit position, pattern and input channel (int64), read off the FKW group pointers:
    the start of every re-packing for another kernel variant."""
    P = len(p.patterns)
    grp = np.repeat(np.arange(p.units * P), np.diff(p.group_ptr.astype(np.int64)))
    return grp // P, grp % P, p.cin_index.astype(np.int64)


def pack_taps(p: PackedConv, tap_offsets: list[list[int]], plane: int, cblock: int) -> TapLists:
    """Re-pack a PackedConv for the channel-blocked kernel (same filter order, ``p.reorder``)."""
    P, F, tmax = len(p.patterns), p.group, p.tmax
    unit, pat, ch = kernel_rows(p)
    offs = np.zeros((P, tmax), dtype=np.int64)
    for q, o in enumerate(tap_offsets):
        offs[q, : len(o)] = o
    vals = p.weights.reshape(-1, F, tmax)
    fpos = (unit[:, None] * F + np.arange(F)[None, :]).reshape(-1)  # (K*F,)
    chf = np.repeat(ch, F)
    toff = chf[:, None] * plane + offs[np.repeat(pat, F)]
    tw = vals.reshape(-1, tmax)
    blocks = max(1, -(-p.cin // cblock))
    key = (fpos * blocks + chf // cblock) * p.cin + chf
    order = np.argsort(key, kind="stable")
    kptr = np.zeros(p.cout * blocks + 1, dtype=np.int64)
    kptr[1:] = np.cumsum(np.bincount(fpos * blocks + chf // cblock, minlength=p.cout * blocks))
    return TapLists(np.ascontiguousarray(toff[order], np.int32), np.ascontiguousarray(tw[order], np.float32),
                    kptr.astype(np.int32), blocks)


def pack_pattern_blocks(p: PackedConv, plane: int, cblock: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-pack a PackedConv (single-filter units) for the shifted kernel: kernels grouped by (filter position,
    channel block, pattern), then channel. Returns weights (K, TMAX), group pointers over (f * blocks + b) * P + q
    and each kernel's input offset (channel * plane)."""
    P = len(p.patterns)
    if p.group != 1:
        raise ValueError("the shifted kernel takes single-filter units")
    f, pat, ch = kernel_rows(p)
    blocks = max(1, -(-p.cin // cblock))
    g = (f * blocks + ch // cblock) * P + pat
    order = np.argsort(g * p.cin + ch, kind="stable")
    ptr = np.zeros(p.cout * blocks * P + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(np.bincount(g, minlength=p.cout * blocks * P))
    return (np.ascontiguousarray(p.weights[order], np.float32), ptr.astype(np.int32),
            np.ascontiguousarray(ch[order] * plane, np.int32))
