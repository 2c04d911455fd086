"""Tables and figures on top of the library's results."""

from tessera.report.tables import markdown_table, prune_rows, rich_table

__all__ = ["markdown_table", "prune_rows", "rich_table"]
