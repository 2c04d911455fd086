"""Block sparsity for a Cout x Cin matrix: keep blocks of N consecutive rows (output channels) x 1 column.

*Aligned* blocks start at rows that are multiples of N; *unaligned* blocks (UBP, Lee & Shin 2024) start at any row,
never overlap and never cross a column. Given non-negative importance scores S (M x L) and a budget of K blocks:

- ``aligned``: the K best aligned windows (they are disjoint, so ranking is exact).
- ``optimal``: exact. Per column, f_c(k) = best total of k disjoint N-windows comes from a dynamic program
  over rows, vectorised over all columns; the columns are then merged under the global budget by taking the K
  largest marginal gains f_c(k) - f_c(k-1). The merge is exact because every f_c is concave: the LP
  max{s.x : sum of windows covering each row <= 1, sum x = k, 0 <= x <= 1} has an interval (consecutive-ones)
  constraint matrix — the cardinality row is all ones, also an interval — so it is totally unimodular and its
  optimum is integral for integer k; an LP optimum is concave in its right-hand side k. (The tests also check
  concavity and exactness against brute force.) Cost O(M * L * M/N), against O(M * L * K) for the DP over the
  flattened matrix with a global budget (``optimal_flat``, kept as the paper-style reference).
- ``bed``: Block Expansion and Division. Greedy on *remaining* importance: repeatedly take the best N-window,
  counting only elements not yet selected, so a window may straddle an earlier pick and expand it; then every
  selected run is divided into N-row blocks — exactly: the best K blocks within N-1 rows of the selected runs
  (``_divide``), where the paper cuts runs greedily. Picks in one column never change another column, and
  within a column pick values only decrease, so the global greedy is a merge of per-column greedy sequences;
  every column advances one pick per vectorised step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tessera.errors import ConfigError, ShapeError

METHODS = ("aligned", "optimal", "bed", "optimal_flat")


@dataclass(frozen=True)
class BlockSelection:
    """mask: bool (M, L); blocks: long (K, 2) rows of (column, start row), sorted; value: total kept score."""

    mask: torch.Tensor
    blocks: torch.Tensor
    value: float


def _check(scores: torch.Tensor, n: int, num_blocks: int, method: str) -> torch.Tensor:
    if method not in METHODS:
        raise ConfigError(f"unknown block selection method {method!r}; use one of {METHODS[:3]}")
    if scores.dim() != 2:
        raise ShapeError(f"block selection needs a 2-D (Cout, Cin) score matrix, got shape {tuple(scores.shape)}")
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"block size N must be a positive integer, got {n!r}")
    m, cols = scores.shape
    if n > m:
        raise ShapeError(f"block size N={n} is larger than Cout={m}; use N <= {m}")
    s = scores.detach().double()
    if not bool(torch.isfinite(s).all()):
        raise ConfigError("block scores contain NaN or inf; check the weights (a diverged training run?)")
    if bool((s < 0).any()):
        raise ConfigError("block scores must be non-negative importances such as |w| or w**2")
    cap = (m // n) * cols
    if not isinstance(num_blocks, int) or not 0 <= num_blocks <= cap:
        raise ConfigError(f"a budget of {num_blocks} blocks cannot be met: a {m}x{cols} matrix holds at most {cap} "
                          f"disjoint {n}-row blocks; lower the kept fraction")
    return s


def window_sums(s: torch.Tensor, n: int) -> torch.Tensor:
    """Sum of every N-row window, shape (M - N + 1, L)."""
    cs = torch.cat([torch.zeros(1, s.shape[1], dtype=s.dtype), s.cumsum(0)])
    return cs[n:] - cs[:-n]


def _finish(blocks: torch.Tensor, s: torch.Tensor, n: int) -> BlockSelection:
    mask = torch.zeros(s.shape, dtype=torch.bool)
    if blocks.numel():
        order = torch.argsort(blocks[:, 0] * s.shape[0] + blocks[:, 1])
        blocks = blocks[order]
        rows = blocks[:, 1:2] + torch.arange(n)[None, :]
        mask[rows.reshape(-1), blocks[:, 0].repeat_interleave(n)] = True
    return BlockSelection(mask, blocks.reshape(-1, 2).long(), float((s * mask).sum()))


def _aligned(s: torch.Tensor, n: int, k: int) -> torch.Tensor:
    w = window_sums(s, n)[::n]  # starts 0, N, 2N, ... that fit
    flat = w.T.reshape(-1)  # column-major so ties prefer lower column, then lower row
    idx = torch.sort(flat, descending=True, stable=True).indices[:k]
    per = w.shape[0]
    return torch.stack([idx // per, (idx % per) * n], 1)


def column_values(s: torch.Tensor, n: int, kmax: int, traceback: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """f[c, k] for k = 0..kmax (−inf where infeasible) and the DP's take-decisions, for traceback."""
    return _window_dp(window_sums(s, n), n, kmax, traceback)


def _window_dp(w: torch.Tensor, n: int, kmax: int, traceback: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The per-column DP on window values w (M - N + 1, cols); a window of value −inf is never taken."""
    m, cols = w.shape[0] + n - 1, w.shape[1]
    neg = torch.tensor(float("-inf"), dtype=w.dtype)
    ring = n + 1  # best[i] needs best[i-1] and best[i-N] only: keep N+1 rows, not M+1
    best = torch.full((ring, cols, kmax + 1), float("-inf"), dtype=w.dtype)
    best[:, :, 0] = 0.0
    take = torch.zeros((m + 1, cols, kmax + 1), dtype=torch.bool) if traceback else None
    for i in range(n, m + 1):
        cand = torch.cat([neg.expand(cols, 1), best[(i - n) % ring, :, :-1] + w[i - n][:, None]], 1)
        keep = best[(i - 1) % ring]
        t = cand > keep
        best[i % ring] = torch.where(t, cand, keep)
        if take is not None:
            take[i] = t
    return best[m % ring], take


def _traceback(take: torch.Tensor, count: torch.Tensor, n: int) -> torch.Tensor:
    """(column, start row) of the blocks the DP took when column c keeps count[c] blocks; vectorised over columns."""
    m, cols = take.shape[0] - 1, take.shape[1]
    pos = torch.full((cols,), m, dtype=torch.long)
    kk = count.clone()
    ar = torch.arange(cols)
    out = []
    while bool((kk > 0).any()):
        active = kk > 0
        t = take[pos, ar, kk] & active
        if bool(t.any()):
            out.append(torch.stack([ar[t], pos[t] - n], 1))
        pos = torch.where(t, pos - n, torch.where(active, pos - 1, pos))
        kk = kk - t.long()
    return torch.cat(out) if out else torch.zeros(0, 2, dtype=torch.long)


def allocate_blocks(scores: list[torch.Tensor], n: int, total: int) -> list[int]:
    """Split a global budget of ``total`` N-row blocks across several score matrices (layers) so that the total
    kept score is maximal — global ranking across layers, exactly: every column of every matrix has a concave
    value curve (see above), so the K largest marginal gains over all of them are the optimum. Each matrix keeps
    at least one block, so no layer is cut off entirely.

    >>> allocate_blocks([torch.tensor([[1.], [1.]]), torch.tensor([[5.], [5.], [4.], [4.]])], 2, 3)
    [1, 2]
    """
    mats = [_check(s, n, 0, "optimal") for s in scores]
    cap = sum((s.shape[0] // n) * s.shape[1] for s in mats)
    if not len(mats) <= total <= cap:
        raise ConfigError(f"a global budget of {total} blocks cannot be met by {len(mats)} layers holding at most "
                          f"{cap} disjoint {n}-row blocks; change the kept fraction")
    gains, owner = [], []
    first = []
    for i, s in enumerate(mats):
        f, _ = column_values(s, n, min(s.shape[0] // n, total), traceback=False)
        g = (f[:, 1:] - f[:, :-1]).reshape(-1)
        g = torch.nan_to_num(g, nan=float("-inf"))
        best = int(g.argmax())
        first.append(i)
        g[best] = float("-inf")  # reserved: every layer's best block is kept
        gains.append(g)
        owner.append(torch.full_like(g, i, dtype=torch.long))
    g, o = torch.cat(gains), torch.cat(owner)
    top = torch.sort(g, descending=True, stable=True).indices[: total - len(mats)]
    counts = torch.bincount(o[top], minlength=len(mats)) + 1
    return counts.tolist()


def _optimal(s: torch.Tensor, n: int, k: int) -> torch.Tensor:
    m, cols = s.shape
    kmax = min(m // n, k)
    if k == 0:
        return torch.zeros(0, 2, dtype=torch.long)
    f, take = column_values(s, n, kmax)
    gains = f[:, 1:] - f[:, :-1]  # (L, kmax), non-increasing in k (concavity)
    idx = torch.sort(gains.reshape(-1), descending=True, stable=True).indices[:k]
    return _traceback(take, torch.bincount(idx // kmax, minlength=cols), n)


def _optimal_flat(s: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Reference: one DP over the flattened (column-major) matrix with the block count as state, O(M*L*K)."""
    m, cols = s.shape
    w = window_sums(s, n)
    total = m * cols
    best = torch.full((total + 1, k + 1), float("-inf"), dtype=s.dtype)
    best[0, 0] = 0.0
    take = torch.zeros((total + 1, k + 1), dtype=torch.bool)
    neg = torch.tensor([float("-inf")], dtype=s.dtype)
    for p in range(1, total + 1):
        c, r = divmod(p - 1, m)  # position p covers row r of column c
        keep = best[p - 1]
        if r + 1 >= n:  # a window can end here without crossing the column
            cand = torch.cat([neg, best[p - n, :-1] + w[r + 1 - n, c]])
            t = cand > keep
            best[p] = torch.where(t, cand, keep)
            take[p] = t
        else:
            best[p] = keep
    out, p, kk = [], total, k
    while kk > 0:
        if take[p, kk]:
            c, r = divmod(p - 1, m)
            out.append((c, r + 1 - n))
            p, kk = p - n, kk - 1
        else:
            p -= 1
    return torch.tensor(out, dtype=torch.long).reshape(-1, 2)


def _bed(s: torch.Tensor, n: int, k: int) -> torch.Tensor:
    m, cols = s.shape
    if k == 0:
        return torch.zeros(0, 2, dtype=torch.long)
    budget = k * n
    remaining = s.clone()
    sel = torch.zeros_like(s, dtype=torch.bool)
    ar = torch.arange(cols)
    span = torch.arange(n)
    # window sums, one row per column (max along contiguous memory); a pick changes 2N-1 windows of its column
    w = window_sums(remaining, n).T.contiguous()
    # expansion: every column advances one greedy pick per step; picks are merged globally by value
    pick_vals, pick_cols, pick_rows, pick_free = [], [], [], []
    taken = 0
    while True:
        val, r = w.max(1)
        rows_all = r[None, :] + span[:, None]  # (n, cols)
        free = (~sel[rows_all, ar[None, :]]).sum(0)
        ok = free > 0
        if not bool(ok.any()):
            break
        pick_vals.append(torch.where(ok, val, torch.full_like(val, -1.0)))
        pick_cols.append(ar)
        pick_rows.append(r)
        pick_free.append(torch.where(ok, free, torch.zeros_like(free)))
        rows, c = rows_all[:, ok], ar[ok][None, :].expand(n, -1)
        removed = remaining[rows, c]  # (n, picked columns)
        sel[rows, c] = True
        remaining[rows, c] = 0.0
        cum = torch.cat([torch.zeros(1, removed.shape[1], dtype=s.dtype), removed.cumsum(0)])
        for d in range(-(n - 1), n):  # window starting at r + d overlaps rows max(0,d) .. min(n-1, d+n-1)
            q = r[ok] + d
            valid = (q >= 0) & (q <= m - n)
            delta = cum[min(n, d + n)] - cum[max(0, d)]
            w[ar[ok][valid], q[valid]] -= delta[valid]
        taken += int(free[ok].sum())
        # stop once the budget is surely filled by picks worth more than anything a column could still offer
        if taken >= budget:
            vals, frees = torch.cat(pick_vals), torch.cat(pick_free)
            order = torch.sort(vals, descending=True, stable=True).indices
            cut = int(torch.searchsorted(torch.cumsum(frees[order], 0), torch.tensor(budget)))
            threshold = float(vals[order[min(cut, len(order) - 1)]])
            if float(w.max()) < threshold:
                break
    vals = torch.cat(pick_vals)
    order = torch.sort(vals, descending=True, stable=True).indices
    # replay the merged greedy: take picks in value order until the element budget is reached. Within a column
    # pick values never increase, so value order keeps each column's expansion order and a pick adds exactly
    # the elements it found free when it was made: the replay is a prefix of a cumulative sum.
    free = torch.cat(pick_free)[order]
    before = torch.cumsum(free, 0) - free
    take = order[(before < budget) & (vals[order] >= 0)]
    chosen = torch.zeros_like(s, dtype=torch.bool)
    rows = torch.cat(pick_rows)[take][:, None] + torch.arange(n)[None, :]
    chosen[rows.reshape(-1), torch.cat(pick_cols)[take].repeat_interleave(n)] = True
    return _divide(chosen, s, n, k)


def _divide(chosen: torch.Tensor, s: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Division, done exactly: the K best disjoint N-row blocks inside the neighbourhood of the expanded picks.

    Every selected run, widened by N-1 rows on each side (so any way of cutting or growing it into blocks fits),
    is one segment; segments of a column that touch are one. The per-column DP and the concave merge of
    ``optimal`` then run on the segments instead of whole columns. This is never worse than cutting each run
    greedily, and is much cheaper than the exact method at high sparsity, where segments cover a small part of
    the matrix.
    """
    m, cols = s.shape
    if k == 0:
        return torch.zeros(0, 2, dtype=torch.long)
    near = torch.nn.functional.max_pool1d(chosen.T.double()[:, None, :], 2 * n - 1, 1, n - 1)[:, 0, :] > 0
    edges = torch.diff(torch.nn.functional.pad(near.to(torch.int8), (1, 1)), dim=1)
    starts, ends = (edges == 1).nonzero(), (edges == -1).nonzero()  # row-major: same order for both
    seg_col, seg_lo, seg_len = starts[:, 0], starts[:, 1], ends[:, 1] - starts[:, 1]
    if int((seg_len // n).sum()) < k:  # not enough room near the picks (rare): divide whole columns
        seg_col = torch.arange(cols)
        seg_lo, seg_len = torch.zeros(cols, dtype=torch.long), torch.full((cols,), m, dtype=torch.long)
    w = window_sums(s, n).T  # (cols, M - N + 1)
    # segments grouped by length (powers of two), so a long segment does not pad every short one
    group = torch.ceil(torch.log2(seg_len.double())).long()
    parts = []
    for g in torch.unique(group).tolist():
        idx = (group == g).nonzero()[:, 0]
        length = int(seg_len[idx].max())
        if length < n:
            continue
        span = torch.arange(length - n + 1)
        rows = seg_lo[idx][None, :] + span[:, None]
        valid = span[:, None] <= (seg_len[idx] - n)[None, :]
        ws = torch.where(valid, w[seg_col[idx][None, :], rows.clamp(max=m - n)], float("-inf"))
        f, take = _window_dp(ws, n, min(length // n, k), True)
        parts.append((idx, f, take))
    gains = [torch.nan_to_num(f[:, 1:] - f[:, :-1], nan=float("-inf")) for _, f, _ in parts]
    width = max(g.shape[1] for g in gains)
    flat = torch.cat([torch.nn.functional.pad(g, (0, width - g.shape[1]), value=float("-inf")) for g in gains])
    top = torch.sort(flat.reshape(-1), descending=True, stable=True).indices[:k]
    count = torch.bincount(top // width, minlength=flat.shape[0])
    out, first = [], 0
    for idx, _, take in parts:
        b = _traceback(take, count[first : first + len(idx)], n)
        first += len(idx)
        out.append(torch.stack([seg_col[idx][b[:, 0]], seg_lo[idx][b[:, 0]] + b[:, 1]], 1))
    return torch.cat(out)


def select_blocks(scores: torch.Tensor, n: int, num_blocks: int, method: str = "optimal") -> BlockSelection:
    """Choose ``num_blocks`` disjoint N x 1 blocks of ``scores`` (Cout x Cin) maximising the kept total.

    >>> s = torch.tensor([[0.], [5.], [5.], [0.]])
    >>> select_blocks(s, 2, 1, "aligned").value, select_blocks(s, 2, 1, "optimal").value
    (5.0, 10.0)
    """
    s = _check(scores, n, num_blocks, method)
    fn = {"aligned": _aligned, "optimal": _optimal, "bed": _bed, "optimal_flat": _optimal_flat}[method]
    return _finish(fn(s, n, num_blocks), s, n)


def block_cover(nz: torch.Tensor, n: int, aligned: bool = False) -> torch.Tensor:
    """Fewest N-row blocks (column, start row) covering every non-zero of a (M, L) bool matrix, per column.

    The greedy — start a block at the first uncovered non-zero — is optimal for covering points on a line with
    intervals of length N. A start past M - N is clamped to M - N; such a block may overlap the previous one (the
    packer stores each weight once). ``aligned`` starts blocks at multiples of N. This is how the compiler reads
    block sparsity from weights alone, whoever pruned them.

    >>> block_cover(torch.tensor([[0], [1], [1], [0], [0], [1]]).bool(), 2).tolist()
    [[0, 1], [0, 4]]
    """
    m, cols = nz.shape
    if n > m:
        raise ShapeError(f"block size N={n} is larger than Cout={m}; use N <= {m}")
    return cover_from_keys(nonzero_keys(nz), m, n, aligned)


def nonzero_keys(nz: torch.Tensor) -> np.ndarray:
    """``column * M + row`` of every non-zero of a (M, L) bool matrix, sorted (column-major order)."""
    cols_idx, rows_idx = torch.nonzero(nz.t().contiguous(), as_tuple=True)
    return (cols_idx * nz.shape[0] + rows_idx).numpy()


def distinct_sorted(a: np.ndarray) -> np.ndarray:
    """The distinct values of a sorted array, in order (``np.unique`` without its sort)."""
    return a[np.r_[True, a[1:] != a[:-1]]] if a.size else a


def cover_from_keys(keys: np.ndarray, m: int, n: int, aligned: bool = False) -> torch.Tensor:
    """:func:`block_cover` from :func:`nonzero_keys` (computed once for every block size tried)."""
    if not aligned and keys.size and keys.size % n == 0:
        exact = _exact_blocks(keys, m, n)
        if exact is not None:
            return exact
    c = distinct_sorted(keys // m)
    ptr = np.searchsorted(keys, c * m)
    ends = np.searchsorted(keys, c * m + m)
    found_c, found_s = [], []
    while c.size:  # one round per block of the longest column, all columns at once
        r = keys[ptr] - c * m
        start = np.minimum(r - r % n if aligned else r, m - n)
        found_c.append(c)
        found_s.append(start)
        ptr = np.searchsorted(keys, c * m + start + n)
        more = ptr < ends
        c, ptr, ends = c[more], ptr[more], ends[more]
    if not found_c:
        return torch.zeros(0, 2, dtype=torch.long)
    cs, ss = np.concatenate(found_c), np.concatenate(found_s)
    order = np.lexsort((ss, cs))
    return torch.from_numpy(np.stack([cs[order], ss[order]], 1).astype(np.int64))


def _exact_blocks(keys: np.ndarray, m: int, n: int) -> torch.Tensor | None:
    """The greedy cover in one pass when every column's non-zeros are runs of exactly N consecutive rows (what
    block pruning leaves): each group of N keys of a column is then one block, as the greedy would find it;
    None otherwise."""
    col = keys // m
    idx = np.arange(keys.size) - np.searchsorted(keys, col * m)  # position within its column
    heads = np.flatnonzero(idx % n == 0)
    tails = heads + n - 1
    if tails[-1] >= keys.size or not ((keys[tails] - keys[heads] == n - 1).all() and
                                      (col[tails] == col[heads]).all()):
        return None
    return torch.from_numpy(np.stack([col[heads], keys[heads] - col[heads] * m], 1).astype(np.int64))

