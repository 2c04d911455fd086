"""Datasets read from local files only: nothing is downloaded at run time."""

from tessera.data.datasets import DatasetSplit, cifar10, digits, fashion_mnist, load_dataset

__all__ = ["DatasetSplit", "cifar10", "digits", "fashion_mnist", "load_dataset"]
