"""WHAT is kept: pure functions from weights to masks. No modules, no training, no I/O."""

from tessera.sparsity.channels import filter_mask
from tessera.sparsity.connectivity import check_keep, connectivity_mask, kernel_norms, topk_mask
from tessera.sparsity.elementwise import magnitude_mask, nm_mask
from tessera.sparsity.patterns import (
    PatternLibrary,
    all_patterns,
    kernel_patterns,
    library_from_masks,
    pattern_assignment,
    pattern_connectivity_mask,
    pattern_mask,
    pattern_scores,
)
from tessera.sparsity.schemes import Scheme, list_schemes, make_scheme, needs_library, register_scheme

__all__ = [
    "PatternLibrary", "Scheme", "all_patterns", "check_keep", "connectivity_mask", "filter_mask", "kernel_norms",
    "kernel_patterns", "library_from_masks", "list_schemes", "magnitude_mask", "make_scheme", "needs_library",
    "nm_mask", "pattern_assignment", "pattern_connectivity_mask", "pattern_mask", "pattern_scores",
    "register_scheme", "topk_mask",
]

from tessera.sparsity.layout import ConvLayout, analyse_conv  # noqa: E402

__all__ += ["ConvLayout", "analyse_conv"]

from tessera.sparsity.blocks import BlockSelection, allocate_blocks, block_cover, select_blocks  # noqa: E402

__all__ += ["BlockSelection", "allocate_blocks", "block_cover", "select_blocks"]
