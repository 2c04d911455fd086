"""Training checkpoints: a job interrupted between two mid-epoch checkpoints resumes to bit-identical weights,
ADMM state and history (dropout included); a damaged file, one from another model or from another training config
is a one-line CheckpointError, never a silent resume."""

import math

import pytest
import torch

from helpers import InterruptAt
from tessera.data import digits
from tessera.errors import CheckpointError
from tessera.io import load_tensors, save_tensors
from tessera.models.zoo import VGG
from tessera.pruning.admm import ADMM, ADMMConfig
from tessera.pruning.sparsifier import Sparsifier
from tessera.pruning.trainer import TrainConfig, Trainer

CFG = TrainConfig(epochs=2, batch_size=64, lr=0.02, schedule="cosine", checkpoint_every=5)


def run(ckpt_dir, cfg=CFG, interrupt_at=None, width=8):
    torch.manual_seed(0)
    model = VGG([[width, width], [2 * width]], 1, 10, dropout=0.3)  # dropout: the RNG must resume too
    train, test = digits()
    targets = Sparsifier([{"op": "Conv2d", "kernel": 3}], {"scheme": "pattern_connectivity", "num_patterns": 4,
                                                           "keep": 0.4}).select(model)
    admm = ADMM(targets, ADMMConfig(rho=0.01, updates_per_epoch=3), math.ceil(len(train) / cfg.batch_size))
    hooks = [admm] + ([InterruptAt(interrupt_at)] if interrupt_at else [])
    tr = Trainer(model, train, test, cfg, hooks=hooks, checkpoint_dir=ckpt_dir, name="admm", progress=False)
    tr.resume()
    tr.fit()
    return model, admm, tr


def test_mid_epoch_checkpoint_resumes_bit_identically(tmp_path):
    ref_model, ref_admm, ref_tr = run(tmp_path / "ref")
    steps = math.ceil(len(digits()[0]) / CFG.batch_size)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", interrupt_at=steps + 8)  # in epoch 2, 3 steps past its checkpoint at step 5
    _, meta = load_tensors(tmp_path / "cut" / "admm.safetensors")
    assert (meta["epoch"], meta["step"]) == (0, 5)
    model, admm, tr = run(tmp_path / "cut")
    for (k, a), b in zip(ref_model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    for z1, z2 in zip(ref_admm.Z + ref_admm.U, admm.Z + admm.U, strict=True):
        assert torch.equal(z1, z2)
    assert [(e["loss"], e["test_acc"]) for e in tr.history.epochs] == \
        [(e["loss"], e["test_acc"]) for e in ref_tr.history.epochs]


def test_a_damaged_checkpoint_is_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    save_tensors(path, {"w": torch.arange(1000, dtype=torch.float32)}, {"epoch": 0})
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x10  # one bit of one weight: safetensors' header check cannot see it
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_tensors(path)


def test_a_checkpoint_of_another_config_or_model_is_refused(tmp_path):
    run(tmp_path, TrainConfig(epochs=1, batch_size=64, lr=0.02))
    with pytest.raises(CheckpointError, match=r"lr=0.02, now lr=0.05; restore the recipe or delete"):
        run(tmp_path, TrainConfig(epochs=1, batch_size=64, lr=0.05))
    with pytest.raises(CheckpointError, match="does not fit this model"):
        run(tmp_path, TrainConfig(epochs=1, batch_size=64, lr=0.02), width=4)
