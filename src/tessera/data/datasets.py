"""Offline datasets as in-memory tensors.

Small image datasets fit in memory many times over, so they are loaded once into float tensors (N, C, H, W) in
[0, 1] and labels (N,). Augmentation and batching live in the trainer, which keeps this module free of torch's
DataLoader machinery and makes epochs reproducible from a seed.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tessera.errors import DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


@dataclass(frozen=True)
class DatasetSplit:
    """Images (N, C, H, W) float32 in [0, 1], labels (N,) int64, plus normalisation stats of the training set."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped): the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}; check the file or reinstall the dataset") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte idx file; point at the original Fashion-MNIST files")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated ({body.size} of {int(np.prod(dims))} values); reinstall the dataset")
    return body.reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem, stem.replace("-idx", ".idx")):
        if (root / name).exists():
            return root / name
    raise DataError(
        f"Fashion-MNIST file {stem}[.gz] not found in {root}; install Debian's dataset-fashion-mnist "
        "(apt-get install dataset-fashion-mnist) or pass root= a folder holding the idx files"
    )


def fashion_mnist(root: str | os.PathLike | None = None) -> tuple[DatasetSplit, DatasetSplit]:
    """Fashion-MNIST (60k train / 10k test, 1x28x28) from idx files; default folder is Debian's package."""
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    if not root.is_dir():
        raise DataError(
            f"Fashion-MNIST folder {root} does not exist; install Debian's dataset-fashion-mnist "
            "(apt-get install dataset-fashion-mnist) or set data.root to a folder holding the idx files"
        )
    splits = []
    for prefix in ("train", "t10k"):
        x = _read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
        y = _read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise DataError(f"Fashion-MNIST {prefix} images and labels disagree in {root}; reinstall the dataset")
        splits.append((torch.from_numpy(x.copy()).float().div_(255).unsqueeze(1), torch.from_numpy(y.astype(np.int64))))
    return _with_stats(splits, 10)


def cifar10(root: str | os.PathLike) -> tuple[DatasetSplit, DatasetSplit]:
    """CIFAR-10 from the official "python version" folder (data_batch_1..5, test_batch).

    Those batches are pickles. tessera never unpickles files, so they are parsed with a restricted reader that
    accepts only dicts, lists, strings, ints and bytes — the only types the official batches contain.
    """
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
    splits = []
    for files in names:
        xs, ys = [], []
        for name in files:
            path = root / name
            if not path.exists():
                raise DataError(f"CIFAR-10 batch {path} not found; set data.root to the cifar-10-batches-py folder")
            batch = _safe_unpickle(path.read_bytes())
            data = batch.get(b"data") if b"data" in batch else batch.get("data")
            labels = batch.get(b"labels") if b"labels" in batch else batch.get("labels")
            if data is None or labels is None:
                raise DataError(f"{path} is not a CIFAR-10 python batch; point at the official python version")
            raw = bytearray(data) if isinstance(data, bytes) else data
            xs.append(np.asarray(raw, dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(labels, dtype=np.int64))
        x = torch.from_numpy(np.concatenate(xs)).float().div_(255)
        splits.append((x, torch.from_numpy(np.concatenate(ys))))
    return _with_stats(splits, 10)


_NUMPY_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
}


def _safe_unpickle(blob: bytes):
    """Unpickle with an allow-list: builtin containers plus numpy's array reconstruction, nothing else.

    No arbitrary class can be constructed, so a crafted file cannot run code.
    """

    class _Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in _NUMPY_ALLOWED:
                return super().find_class(module, name)
            raise DataError(f"refusing to load {module}.{name} from a data file; only plain CIFAR batches are read")

    try:
        return _Restricted(io.BytesIO(blob), encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:  # corrupted file
        raise DataError(f"cannot parse a CIFAR-10 batch ({exc}); re-extract the official archive") from None


def digits(test_fraction: float = 0.25, seed: int = 0) -> tuple[DatasetSplit, DatasetSplit]:
    """sklearn's 8x8 digits (1797 images, 1x8x8): tiny and shipped with scikit-learn, for fast tests."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the digits dataset needs scikit-learn; pip install scikit-learn") from None
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    n_test = int(len(y) * test_fraction)
    test, train = perm[:n_test], perm[n_test:]
    return _with_stats([(x[train], y[train]), (x[test], y[test])], 10)


def _with_stats(splits, num_classes: int) -> tuple[DatasetSplit, DatasetSplit]:
    (xtr, ytr), (xte, yte) = splits
    mean = tuple(float(m) for m in xtr.mean(dim=(0, 2, 3)))
    std = tuple(float(s) for s in xtr.std(dim=(0, 2, 3)))
    return (
        DatasetSplit(xtr, ytr, mean, std, num_classes),
        DatasetSplit(xte, yte, mean, std, num_classes),
    )


_LOADERS = {"fashion_mnist": fashion_mnist, "cifar10": cifar10, "digits": digits}


def load_dataset(name: str, root: str | None = None) -> tuple[DatasetSplit, DatasetSplit]:
    """Load a dataset by name: "fashion_mnist" (default folder), "cifar10" (needs root) or "digits"."""
    if name not in _LOADERS:
        raise DataError(f"unknown dataset {name!r}; use one of {sorted(_LOADERS)}")
    if name == "digits":
        return digits()
    if name == "cifar10" and root is None:
        raise DataError("cifar10 needs data.root: a local folder with the python batches (nothing is downloaded)")
    return _LOADERS[name](root)
