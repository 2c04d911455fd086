"""Unaligned (BED) vs aligned block pruning on Fashion-MNIST at the same budget and schedule (issue: UBP).

Runs recipes/ubp-bed-80.yaml and recipes/ubp-aligned-80.yaml (N = 4, 80% of every conv after the first removed,
gradual cubic schedule with the block selection re-run 4 times per epoch, then masked fine-tuning) from the
committed dense checkpoint; writes results/block_pruning_fashion_mnist.json and its section of RESULTS.md.
Usage: python benchmarks/block_pruning_fashion_mnist.py
"""

from __future__ import annotations

from pruning_fashion_mnist import main

if __name__ == "__main__":
    main(["ubp-bed-80", "ubp-aligned-80"], section="block_pruning_fashion_mnist",
         title="Unaligned vs aligned block pruning on Fashion-MNIST (issue: UBP)",
         intro="Blocks of N = 4 output channels x 1 input weight (a 3x3 conv seen as Cout x Cin*9), 80% of the "
               "weights of every conv after the first removed; both runs use the same dense checkpoint, gradual "
               "schedule (selection re-run 4x per epoch) and fine-tuning, differing only in the selection method.")
