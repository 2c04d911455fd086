"""A pruning job killed with SIGKILL in the middle of an epoch resumes, with the same command, to the same final
masks, weights and metrics as a run that was never interrupted."""

import os
import signal
import subprocess
import sys
import time

import torch
import yaml

from tessera.io import load_tensors

RECIPE = {
    "name": "killed",
    "data": {"name": "digits"},
    "model": {"name": "vgg_tiny", "args": {"width": 8}},
    "baseline": {"train": {"epochs": 1, "batch_size": 64}},
    "pruning": {
        "defaults": {"scheme": "pattern_connectivity", "num_patterns": 4, "keep": 0.5},
        "targets": [{"op": "Conv2d", "kernel": 3}],
        "admm": {"train": {"epochs": 4, "batch_size": 4}},  # ~450 steps an epoch: time to land inside one
        "retrain": {"epochs": 1, "batch_size": 32},
    },
}


def _start(recipe_path):
    code = f"from tessera.cli import main; raise SystemExit(main(['prune', {str(recipe_path)!r}, '--quiet']))"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: the same float sums in every process
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _recipe(tmp_path, name):
    out = tmp_path / name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(RECIPE | {"output": str(out)}))
    return path, out


def test_sigkill_mid_epoch_resumes_to_the_same_result(tmp_path):
    ref_recipe, ref_out = _recipe(tmp_path, "uninterrupted")
    proc = _start(ref_recipe)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()

    recipe, out = _recipe(tmp_path, "killed")
    proc = _start(recipe)
    ckpt = out / "admm.safetensors"
    deadline = time.time() + 600
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(0.2)  # into the next epoch
    assert proc.poll() is None, "the job ended before it could be killed; make its epochs longer"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    _, meta = load_tensors(ckpt)
    assert meta["epoch"] < RECIPE["pruning"]["admm"]["train"]["epochs"] - 1  # killed with ADMM epochs left
    assert not (out / "model.safetensors").exists()

    proc = _start(recipe)  # the same command resumes
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    ref, ref_meta = load_tensors(ref_out / "model.safetensors")
    got, got_meta = load_tensors(out / "model.safetensors")
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k] == 0, got[k] == 0), f"mask of {k} differs"
        assert torch.allclose(ref[k].float(), got[k].float(), atol=1e-6, rtol=1e-5), k
    assert got_meta["accuracy"] == ref_meta["accuracy"]
    assert got_meta["baseline_accuracy"] == ref_meta["baseline_accuracy"]
