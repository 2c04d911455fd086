"""`tessera prune` under `torchrun --nproc_per_node 2` (gloo, CPU) computes what one process computes with the same
global batch: the same masks and library, the same accuracy, and weights as close to the single-process run as
that run is to itself at another thread count (float summation order is the only difference there is).
A rank that dies ends the job with a one-line message."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tessera.io import load_tensors

TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = pytest.mark.skipif(not TORCHRUN.exists() or not torch.distributed.is_available(),
                                reason="torchrun / torch.distributed not available")

COMMON = {
    "data": {"name": "digits"},
    "model": {"name": "vgg_tiny", "args": {"width": 8}},
    "baseline": {"train": {"epochs": 1, "batch_size": 128, "lr": 0.01}},
}
RECIPES = {
    "admm": {"pruning": {  # 1797 = 4 x 449 + 1 samples: the last global batch, 1 sample, leaves rank 1 none
        "defaults": {"scheme": "pattern_connectivity", "num_patterns": 4, "keep": 0.5},
        "targets": [{"op": "Conv2d", "kernel": 3}],
        "admm": {"train": {"epochs": 2, "batch_size": 449, "lr": 0.02}},
        "retrain": {"epochs": 1, "batch_size": 128, "lr": 0.01}}},
    "gradual-bed": {"pruning": {
        "algorithm": "gradual",
        "defaults": {"scheme": "block", "n": 4, "keep": 0.3, "method": "bed"},
        "targets": [{"op": "Conv2d", "kernel": 3, "exclude": [r"features\.0"]}],
        "gradual": {"updates_per_epoch": 4, "train": {"epochs": 2, "batch_size": 128, "lr": 0.01}},
        "retrain": {"epochs": 1, "batch_size": 128, "lr": 0.01}}},
}


def _prune(tmp_path: Path, algo: str, tag: str, ranks: int, threads: int) -> tuple[Path, str]:
    out = tmp_path / f"{algo}-{tag}"
    path = tmp_path / f"{algo}-{tag}.yaml"
    path.write_text(yaml.safe_dump({"name": algo, **COMMON, **RECIPES[algo], "output": str(out)}))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "tessera.cli", "prune", str(path), "--quiet"]
    if ranks > 1:
        cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(ranks), "-m", "tessera.cli", "prune",
               str(path), "--quiet"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return out, run.stdout


def _worst(a: dict, b: dict) -> float:
    """Largest difference of any float tensor, relative to that tensor's largest magnitude."""
    return max(float((a[k].double() - b[k].double()).abs().max() / a[k].double().abs().max().clamp_min(1e-12))
               for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("algo", sorted(RECIPES))
def test_two_ranks_prune_like_one_process(tmp_path, algo):
    one, _ = _prune(tmp_path, algo, "1proc", 1, 1)
    noise, _ = _prune(tmp_path, algo, "1proc-2threads", 1, 2)
    two, stdout = _prune(tmp_path, algo, "2ranks", 2, 1)
    ref, ref_meta = load_tensors(one / "model.safetensors")
    got, got_meta = load_tensors(two / "model.safetensors")
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k] == 0, got[k] == 0), f"mask of {k} differs between 1 process and 2 ranks"
    for key in ("accuracy", "baseline_accuracy", "library", "libraries", "schemes"):
        assert got_meta[key] == ref_meta[key], key
    floor = _worst(ref, load_tensors(noise / "model.safetensors")[0])
    assert _worst(ref, got) <= 4 * floor + 1e-5, (_worst(ref, got), floor)
    for phase in ("baseline", "retrain"):  # the epoch records (loss over the global batch) agree too
        h1 = load_tensors(one / f"{phase}.safetensors")[1]["history"]
        h2 = load_tensors(two / f"{phase}.safetensors")[1]["history"]
        assert [round(e["loss"], 3) for e in h1] == [round(e["loss"], 3) for e in h2]
        assert [e.get("test_acc") for e in h1] == [e.get("test_acc") for e in h2]
    assert stdout.count("pruned model saved") == 1  # only rank 0 prints (and writes)
    assert not [p for p in two.iterdir() if p.name.startswith(".")], "a temporary file was left behind"


DYING = """
import os, sys
from tessera.data import load_dataset
from tessera.models import create_model
from tessera.pruning import distributed as ddp
from tessera.pruning.trainer import TrainConfig, Trainer

class Die:
    def after_step(self):
        if ddp.world().rank == 1:
            os._exit(3)

w = ddp.init_from_env(timeout_s=60)
train, test = load_dataset("digits")
model = create_model("vgg_tiny", in_channels=1, num_classes=10, width=8)
try:
    Trainer(model, train, None, TrainConfig(epochs=1, batch_size=64), hooks=[Die()], progress=False).fit()
except ddp.DistributedError as e:
    print("TESSERA:", e, file=sys.stderr)
    sys.exit(1)
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rank_that_dies_ends_the_job_with_a_clear_message(tmp_path):
    script = tmp_path / "dying.py"
    script.write_text(DYING)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(script)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0  # the job ends (no rank left waiting): torchrun names the rank that failed first
    root = run.stderr[run.stderr.index("Root Cause"):]
    assert "rank      : 1" in root and "exitcode  : 3" in root, run.stderr[-2000:]

    # without torchrun's agent to stop it, the surviving rank says what happened in one line
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}) for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert procs[1].returncode == 3
    assert procs[0].returncode == 1, outs[0][1][-2000:]
    line = [ln for ln in outs[0][1].splitlines() if ln.startswith("TESSERA:")]
    assert line and "rank 0 of 2: another rank stopped" in line[0], outs[0][1][-2000:]
