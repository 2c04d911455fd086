"""Packed block-sparse weights for 1x1 convs and linear layers (unaligned block pruning, Lee & Shin 2024).

A weight is a Cout x Cin matrix whose non-zeros are covered by blocks of N consecutive rows x 1 column that may
start at any row. The kernel is output-stationary: it sweeps start rows top to bottom with N accumulators, one
per output row modulo N, so a block starting at row r adds its N weights to the accumulators of rows
r .. r+N-1 — i.e. to accumulator (r + i) mod N for its i-th weight. Storing every block's values *rotated* by
(start mod N) — ``values[k, l]`` is the weight of the block's row that is congruent to l mod N — makes that one
fixed multiply-add pattern for every block, aligned or not (the paper's weight-rotating output-stationary
dataflow). After the blocks starting at row r, row r is complete and its accumulator is stored and reused.

Arrays (int32 / float32, what the C kernel reads):
  row_ptr[r]   blocks starting at row r are row_ptr[r] .. row_ptr[r+1]   (padded to a multiple of N rows)
  cols[k]      input channel (column) of block k
  values[k, l] rotated weights of block k
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tessera.sparsity import ConvLayout, analyse_conv


@dataclass(frozen=True, eq=False)
class PackedBlocks:
    cout: int
    cin: int
    n: int
    aligned: bool
    row_ptr: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    bias: np.ndarray
    kind: str = "block"

    @property
    def blocks(self) -> int:
        return int(self.cols.shape[0])

    def bytes(self) -> dict[str, int]:
        """Storage vs dense and CSR (fp32 values, int32 indices)."""
        true_nnz = int(np.count_nonzero(self.values))
        return {
            "dense": self.cout * self.cin * 4,
            "csr": true_nnz * 8 + (self.cout + 1) * 4,
            "block": self.values.size * 4 + self.cols.size * 4 + self.row_ptr.size * 4,
        }


def pack_blocks(weight: torch.Tensor, bias: torch.Tensor | None = None,
                layout: ConvLayout | None = None) -> PackedBlocks:
    """Pack a (Cout, Cin) or (Cout, Cin, 1, 1) weight whose non-zeros form N-row blocks."""
    w = weight.detach().float().cpu()
    cout, cin = w.shape[:2]
    w = w.reshape(cout, cin)
    layout = layout or analyse_conv(w.reshape(cout, cin, 1, 1))
    if layout.kind != "block":
        raise ValueError(f"weight is {layout.kind}, not block-sparse")
    n, blocks = layout.block_n, layout.blocks
    cols, starts = blocks[:, 0], blocks[:, 1]
    order = torch.argsort(starts * cin + cols)  # by start row, then column (input locality)
    cols, starts = cols[order], starts[order]
    rows = starts[:, None] + torch.arange(n)[None, :]  # (K, n): the block's rows, top to bottom
    vals = w[rows, cols[:, None]]
    # a clamped cover block may overlap its predecessor in the column: store each weight once
    for k, rows_shared in _overlaps(cols, starts, n):
        vals[k, :rows_shared] = 0.0
    lane = rows % n  # accumulator of each of the block's rows
    rotated = torch.zeros_like(vals)
    rotated.scatter_(1, lane, vals)
    padded_rows = -(-cout // n) * n
    row_ptr = torch.zeros(padded_rows + 1, dtype=torch.long)
    row_ptr[1:] = torch.cumsum(torch.bincount(starts, minlength=padded_rows), 0)
    b = np.zeros(cout, dtype=np.float32) if bias is None else bias.detach().float().cpu().numpy()
    return PackedBlocks(cout, cin, n, layout.block_aligned, row_ptr.numpy().astype(np.int32),
                        cols.numpy().astype(np.int32), np.ascontiguousarray(rotated.numpy(), np.float32),
                        np.ascontiguousarray(b, np.float32))


def _overlaps(cols: torch.Tensor, starts: torch.Tensor, n: int) -> list[tuple[int, int]]:
    """(block, rows shared with the previous block of its column) for overlapping blocks (clamped covers)."""
    c, s = cols.numpy(), starts.numpy()
    order = np.lexsort((np.arange(c.size), s, c))  # by column, then start, then position (a stable sort)
    oc, os_ = c[order], s[order]
    prev_end = np.full(c.size, np.iinfo(np.int64).min)
    same = np.zeros(c.size, bool)
    same[1:] = oc[1:] == oc[:-1]
    prev_end[1:] = os_[:-1] + n
    shared = np.where(same, prev_end - os_, 0)
    hit = np.nonzero(shared > 0)[0]
    return sorted((int(order[i]), int(shared[i])) for i in hit)


def unpack_blocks(p: PackedBlocks) -> torch.Tensor:
    """Inverse of :func:`pack_blocks` (the (Cout, Cin) weight, without bias): the format's round-trip check."""
    w = torch.zeros(p.cout, p.cin)
    starts = np.repeat(np.arange(p.row_ptr.size - 1), np.diff(p.row_ptr))
    for k in range(p.blocks):
        for i in range(p.n):
            r = int(starts[k]) + i
            w[r, int(p.cols[k])] += float(p.values[k, r % p.n])
    return w
