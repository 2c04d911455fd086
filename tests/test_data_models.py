import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from tessera.data import cifar10, fashion_mnist, load_dataset
from tessera.errors import CheckpointError, ConfigError, DataError
from tessera.models import create_model, list_models, load_model, register_model, save_model


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_fashion(root, n=20, truncate=False):
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        x = rng.integers(0, 256, (n, 28, 28))
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    if truncate:
        p = root / "t10k-images-idx3-ubyte.gz"
        data = gzip.open(p).read()
        with gzip.open(p, "wb") as f:
            f.write(data[:-100])


def test_fashion_mnist_reads_idx(tmp_path):
    fake_fashion(tmp_path)
    train, test = fashion_mnist(tmp_path)
    assert train.images.shape == (20, 1, 28, 28) and test.labels.shape == (20,)
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0


def test_fashion_mnist_errors(tmp_path):
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        fashion_mnist(tmp_path / "missing")
    fake_fashion(tmp_path, truncate=True)
    with pytest.raises(DataError, match="truncated"):
        fashion_mnist(tmp_path)
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet")


def test_cifar_batches_load_without_arbitrary_unpickling(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [1, 2, 3, 4]}
        (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=2))
    train, test = cifar10(tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and test.labels.tolist() == [1, 2, 3, 4]

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="refusing"):
        cifar10(tmp_path)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("cin, size", [(1, 28), (3, 32), (1, 8)])
def test_zoo_models_any_input(name, cin, size):
    if name == "timm_vgg16" and size < 32:
        pytest.skip("VGG's five 2x2 max pools need 32 pixels or more, as in timm")
    m = create_model(name, in_channels=cin, num_classes=7).eval()
    assert m(torch.randn(2, cin, size, size)).shape == (2, 7)


def test_registry_refuses_duplicates_and_unknown():
    with pytest.raises(ConfigError, match="twice"):
        @register_model
        def vgg6():  # noqa: F811
            pass
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("resnet1000")


def test_model_save_load_roundtrip(tmp_path):
    m = create_model("vgg_tiny", width=4).eval()
    save_model(m, tmp_path / "m.safetensors", "vgg_tiny", {"width": 4}, {"accuracy": 1.0})
    m2, meta = load_model(tmp_path / "m.safetensors")
    x = torch.randn(1, 1, 8, 8)
    assert torch.equal(m(x), m2(x)) and meta["accuracy"] == 1.0
    (tmp_path / "bad.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_model(tmp_path / "bad.safetensors")
