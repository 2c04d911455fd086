"""Kernel patterns (PatDNN): each kept 3x3 kernel keeps exactly 4 weights, the centre among them.

A *pattern* is a 3x3 boolean mask with 4 true entries. With the centre forced there are C(8, 3) = 56 candidates;
without it, C(9, 4) = 126. A *library* is the small set (K = 4..12) a model may use; every kernel is projected onto
its best library pattern: the one keeping the most L2 energy, which is the Euclidean projection onto the set.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from tessera.errors import ConfigError, ShapeError

CENTRE = 4  # index of (1, 1) in a flattened 3x3 kernel
ENTRIES = 4


def all_patterns(centre: bool = True) -> torch.Tensor:
    """Every 4-entry 3x3 pattern as a (P, 9) bool tensor: 56 with the centre forced, else 126. Order is stable."""
    rows = []
    if centre:
        others = [i for i in range(9) if i != CENTRE]
        for combo in itertools.combinations(others, ENTRIES - 1):
            rows.append(sorted((CENTRE, *combo)))
    else:
        rows = [list(c) for c in itertools.combinations(range(9), ENTRIES)]
    out = torch.zeros(len(rows), 9, dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i, r] = True
    return out


def _check_3x3(w: torch.Tensor) -> None:
    if w.dim() != 4:
        raise ShapeError(f"patterns need a 4-D conv weight (Cout, Cin, 3, 3), got shape {tuple(w.shape)}")
    if tuple(w.shape[2:]) != (3, 3):
        raise ShapeError(
            f"patterns need 3x3 kernels, got {w.shape[2]}x{w.shape[3]}; exclude this layer or use another scheme"
        )


def _prior_score(p: torch.Tensor) -> float:
    """A Gaussian-like prior: edge neighbours of the centre weigh more than corners; compact shapes first."""
    weight = torch.tensor([1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0])
    score = float((weight * p.float()).sum())
    # prefer corners that touch a chosen edge neighbour (L-shapes over scattered ones)
    touching = {0: (1, 3), 2: (1, 5), 6: (3, 7), 8: (5, 7)}
    for corner, edges in touching.items():
        if p[corner] and any(p[e] for e in edges):
            score += 0.5
    return score


@dataclass(frozen=True)
class PatternLibrary:
    """A set of 3x3 patterns, stored as a (K, 9) bool tensor. Immutable: derive a new one to change it.

    >>> lib = PatternLibrary.default(8)
    >>> len(lib), int(lib.patterns.sum(1).min()), bool(lib.patterns[:, 4].all())
    (8, 4, True)
    """

    patterns: torch.Tensor

    def __post_init__(self) -> None:
        p = self.patterns
        if p.dtype != torch.bool or p.dim() != 2 or p.shape[1] != 9 or p.shape[0] == 0:
            raise ConfigError("a pattern library is a non-empty (K, 9) bool tensor")
        if not bool((p.sum(1) == ENTRIES).all()):
            raise ConfigError("every pattern must keep exactly 4 of the 9 entries")
        if torch.unique(p, dim=0).shape[0] != p.shape[0]:
            raise ConfigError("a pattern library must not repeat a pattern")

    def __len__(self) -> int:
        return int(self.patterns.shape[0])

    @classmethod
    def full(cls, centre: bool = True) -> PatternLibrary:
        """All candidates: 56 (centre kept) or 126."""
        return cls(all_patterns(centre))

    @classmethod
    def default(cls, k: int = 8) -> PatternLibrary:
        """K patterns chosen without data by a Gaussian-like prior (centre, edge neighbours, compact shapes)."""
        cands = all_patterns(True)
        if not 1 <= k <= len(cands):
            raise ConfigError(f"num_patterns must be in 1..{len(cands)}, got {k}")
        scores = torch.tensor([_prior_score(p) for p in cands])
        order = sorted(range(len(cands)), key=lambda i: (-float(scores[i]), i))
        return cls(cands[sorted(order[:k])])

    @classmethod
    def extract(cls, weights: Iterable[torch.Tensor], k: int = 8, centre: bool = True) -> PatternLibrary:
        """PatDNN's extraction: project every kernel onto all candidates, keep the K most frequent best patterns.

        Ties in frequency are broken by total kept energy, then by candidate order, so the result is deterministic.
        """
        cands = all_patterns(centre)
        if not 1 <= k <= len(cands):
            raise ConfigError(f"num_patterns must be in 1..{len(cands)}, got {k}")
        counts = torch.zeros(len(cands), dtype=torch.float64)
        energy = torch.zeros(len(cands), dtype=torch.float64)
        seen = False
        for w in weights:
            _check_3x3(w)
            e = w.detach().double().reshape(-1, 9).square()
            scores = e @ cands.double().T
            best = scores.argmax(1)
            counts += torch.bincount(best, minlength=len(cands)).double()
            energy += torch.zeros(len(cands), dtype=torch.float64).index_add_(0, best, scores.max(1).values)
            seen = True
        if not seen:
            raise ConfigError("cannot extract a pattern library from no weights; select at least one 3x3 conv")
        order = sorted(range(len(cands)), key=lambda i: (-float(counts[i]), -float(energy[i]), i))
        return cls(cands[sorted(order[:k])])

    def to_json(self) -> str:
        """Patterns as lists of kept flat indices (0..8, row-major), e.g. [[1, 3, 4, 5], ...]."""
        return json.dumps([torch.nonzero(p).flatten().tolist() for p in self.patterns])

    @classmethod
    def from_json(cls, text: str) -> PatternLibrary:
        try:
            rows = json.loads(text)
            p = torch.zeros(len(rows), 9, dtype=torch.bool)
            for i, r in enumerate(rows):
                p[i, list(r)] = True
        except (ValueError, TypeError, IndexError) as exc:
            raise ConfigError(f"not a pattern library file ({exc}); write it with PatternLibrary.to_json") from None
        return cls(p)

    def render(self) -> str:
        """ASCII picture of the library, one 3x3 block per pattern."""
        lines = ["", "", ""]
        for p in self.patterns:
            g = p.reshape(3, 3)
            for r in range(3):
                lines[r] += "".join("#" if v else "." for v in g[r]) + "  "
        return "\n".join(line.rstrip() for line in lines)


def pattern_scores(w: torch.Tensor, library: PatternLibrary) -> torch.Tensor:
    """Kept energy of every kernel under every library pattern: (Cout*Cin, K)."""
    _check_3x3(w)
    return w.detach().reshape(-1, 9).float().square() @ library.patterns.float().T


def pattern_assignment(w: torch.Tensor, library: PatternLibrary) -> torch.Tensor:
    """Index of the best library pattern per kernel, shape (Cout, Cin)."""
    return pattern_scores(w, library).argmax(1).reshape(w.shape[0], w.shape[1])


def pattern_mask(w: torch.Tensor, library: PatternLibrary) -> torch.Tensor:
    """Bool mask of w's shape: each kernel keeps its best library pattern (max kept L2 energy)."""
    idx = pattern_assignment(w, library)
    return library.patterns[idx].reshape(w.shape)


def kernel_patterns(mask: torch.Tensor) -> torch.Tensor:
    """Read back a 3x3 mask as (Cout, Cin, 9) bool rows, for checks and reports."""
    _check_3x3(mask)
    return mask.reshape(mask.shape[0], mask.shape[1], 9).bool()


def library_from_masks(masks: Sequence[torch.Tensor]) -> PatternLibrary:
    """The set of distinct non-empty patterns that appear in some masks (e.g. a pruned model's weights)."""
    rows = torch.cat([kernel_patterns(m).reshape(-1, 9) for m in masks])
    rows = rows[rows.any(1)]
    if rows.shape[0] == 0:
        raise ConfigError("the masks contain no kept kernel, so there is no pattern to read")
    return PatternLibrary(torch.unique(rows, dim=0))


def pattern_connectivity_mask(
    w: torch.Tensor, library: PatternLibrary, keep: float, per_filter: bool = False
) -> torch.Tensor:
    """Euclidean projection onto (library pattern per kernel) ∩ (only round(keep*kernels) kernels non-zero).

    Keeping a kernel under its best pattern saves exactly that pattern's kept energy from the distance, so the
    exact projection ranks kernels by best-pattern energy (not by raw norm) and keeps the top ones.
    """
    from tessera.sparsity.connectivity import connectivity_keep_mask

    scores = pattern_scores(w, library)
    best = scores.argmax(1)
    kept = connectivity_keep_mask(scores.max(1).values.reshape(w.shape[0], w.shape[1]), keep, per_filter)
    return library.patterns[best].reshape(w.shape) & kept[:, :, None, None]


def pattern_usage(weights: Sequence[torch.Tensor], library: PatternLibrary) -> torch.Tensor:
    """How useful each library pattern is: the kept L2 energy of the kernels that choose it, summed (K,).

    This is the ECCV 2020 selection signal: patterns that few kernels pick, or that keep little energy when they
    are picked, are the ones to drop first.
    """
    usage = torch.zeros(len(library), dtype=torch.float64)
    for w in weights:
        scores = pattern_scores(w, library).double()
        best = scores.max(1)
        usage.index_add_(0, best.indices, best.values)
    return usage


def shrink_library(library: PatternLibrary, usage: torch.Tensor, size: int) -> PatternLibrary:
    """Keep the ``size`` most used patterns (ties: earlier pattern first), in the library's order."""
    if not 1 <= size <= len(library):
        raise ConfigError(f"cannot shrink a {len(library)}-pattern library to {size}")
    order = sorted(range(len(library)), key=lambda i: (-float(usage[i]), i))
    return PatternLibrary(library.patterns[sorted(order[:size])])


def shrink_schedule(start: int, final: int, updates: int) -> list[int]:
    """Library size after each of ``updates`` shrink steps: geometric from ``start`` to ``final``, reached at
    the midpoint so the second half trains with the final library. Monotone non-increasing.

    >>> shrink_schedule(56, 8, 6)
    [29, 15, 8, 8, 8, 8]
    """
    if final > start or final < 1 or updates < 1:
        raise ConfigError(f"cannot shrink {start} patterns to {final} in {updates} steps")
    reach = max(1, updates // 2)
    sizes = [max(final, round(start * (final / start) ** ((i + 1) / reach))) for i in range(updates)]
    for i in range(1, len(sizes)):
        sizes[i] = min(sizes[i], sizes[i - 1])
    return sizes


def pattern_counts(mask: torch.Tensor, library: PatternLibrary) -> torch.Tensor:
    """How many kept kernels of a 3x3 mask use each library pattern (K,); kernels outside the library are not
    counted (check ``counts.sum()`` against the kept kernels to detect them)."""
    rows = kernel_patterns(mask).reshape(-1, 9)
    rows = rows[rows.any(1)]
    match = (rows[:, None, :] == library.patterns[None, :, :]).all(-1)  # (kernels, K)
    return match.sum(0)


def grouped_pattern_connectivity_mask(
    w: torch.Tensor, library: PatternLibrary, keep: float, group: int = 4
) -> torch.Tensor:
    """Patterns + connectivity where each group of ``group`` consecutive filters shares its kept input channels
    and the pattern on each: the projection onto that set (per group and channel, the pattern with the most
    kept energy summed over the group's filters; group-channels ranked by that energy).

    The shared structure is what lets generated code load each input vector once for the whole group instead of
    once per filter (tessera's co-design of pruning and kernel; not in PatDNN).
    """
    from tessera.sparsity.connectivity import check_keep, topk_mask

    keep = check_keep(keep)
    if not isinstance(group, int) or group < 1:
        raise ConfigError(f"group must be a positive integer, got {group!r}")
    cout, cin = w.shape[0], w.shape[1]
    scores = pattern_scores(w, library).double().reshape(cout, cin, -1)  # (Cout, Cin, K)
    ngroups = -(-cout // group)
    pad = ngroups * group - cout
    if pad:
        scores = torch.cat([scores, scores.new_zeros(pad, cin, scores.shape[2])])
    gsc = scores.reshape(ngroups, group, cin, -1).sum(1)  # (G, Cin, K)
    best = gsc.argmax(2)  # (G, Cin)
    value = gsc.max(2).values
    kept = topk_mask(value, round(keep * ngroups * cin))  # (G, Cin)
    per_filter = kept.repeat_interleave(group, 0)[:cout]
    pat = best.repeat_interleave(group, 0)[:cout]
    return library.patterns[pat].reshape(w.shape) & per_filter[:, :, None, None]
