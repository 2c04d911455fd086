"""Result tables: one row builder, two renderers (rich for terminals, markdown for RESULTS.md)."""

from __future__ import annotations

from collections.abc import Sequence

from tessera.text import markdown_table

__all__ = ["markdown_table", "prune_rows", "rich_table"]


def prune_rows(result) -> tuple[list[str], list[list[str]]]:
    """Per-layer rows of a PruneResult plus a total row."""
    head = ["layer", "shape", "scheme", "kind", "kept / total", "density", "patterns", "kernels kept"]
    rows = []
    for s in result.layers:
        rows.append([
            s.name, "x".join(map(str, s.shape)), s.scheme, s.kind, f"{s.kept} / {s.total}", f"{s.kept / s.total:.3f}",
            str(s.patterns or "-"), f"{s.kernels_kept} / {s.kernels_total}",
        ])
    kept = sum(s.kept for s in result.layers)
    total = sum(s.total for s in result.layers)
    rows.append(["all convs", "", "", "", f"{kept} / {total}", f"{kept / total:.3f}",
                 str(len(result.library)) if result.library else "-", f"{result.conv_compression:.2f}x fewer"])
    return head, rows


def rich_table(title: str, head: Sequence[str], rows: Sequence[Sequence[str]]):
    from rich.table import Table

    t = Table(title=title)
    for h in head:
        t.add_column(h)
    for r in rows:
        t.add_row(*[str(c) for c in r])
    return t
