import json

import pytest
import yaml

from tessera.cli import main
from tessera.models import load_model
from tessera.pruning.recipe import load_recipe

QUICK = {
    "name": "quick",
    "data": {"name": "digits"},
    "model": {"name": "vgg_tiny", "args": {"width": 8}},
    "baseline": {"train": {"epochs": 2, "batch_size": 64}},
    "pruning": {
        "defaults": {"scheme": "pattern_connectivity", "num_patterns": 4, "keep": 0.5},
        "targets": [{"op": "Conv2d", "kernel": 3}],
        "admm": {"train": {"epochs": 1, "batch_size": 64}},
        "retrain": {"epochs": 1, "batch_size": 64, "distill": 0.5},  # learns from the dense baseline too
    },
}


def write(tmp_path, recipe):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(recipe))
    return p


def test_prune_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune", str(write(tmp_path, QUICK | {"output": str(out)})), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "accuracy: dense" in text and "pattern library" in text
    model, meta = load_model(out / "model.safetensors")
    assert len(meta["library"]) == 4 and meta["schemes"]
    for name, mod in model.named_modules():
        if name in meta["schemes"]:
            kp = (mod.weight != 0).reshape(mod.weight.shape[0], mod.weight.shape[1], 9)
            assert bool((kp.sum(-1)[kp.any(-1)] <= 4).all())


@pytest.mark.parametrize("patch, match", [
    ({"pruning": {**QUICK["pruning"], "lr": 0.1}}, "unknown key recipe.pruning.lr"),
    ({"pruning": {**QUICK["pruning"], "defaults": {"scheme": "pattern_connectivity", "keep": 1.5}}}, r"\(0, 1\]"),
    ({"pruning": {**QUICK["pruning"], "targets": [{"name": "conv9"}]}}, "matches no layer"),
    ({"data": {"name": "fashion_mnist", "root": "/nonexistent"}}, "dataset-fashion-mnist"),
    ({"pruning": {**QUICK["pruning"], "retrain": {"epochs": 1, "distill": 1.5}}}, r"distill must be in \[0, 1\]"),
    ({"pruning": {**QUICK["pruning"], "algorithm": "oneshot",
                  "defaults": {"scheme": "pattern", "num_patterns": 4, "library": "learn"}}},
     "needs pruning.algorithm admm"),
])
def test_bad_recipes_fail_with_one_line_and_write_nothing(tmp_path, capsys, patch, match):
    out = tmp_path / "out"
    code = main(["prune", str(write(tmp_path, QUICK | patch | {"output": str(out)})), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("tessera: error:")
    import re

    assert re.search(match, err), err
    assert not (out / "model.safetensors").exists()


def test_shipped_recipes_parse():
    import pathlib

    for path in pathlib.Path(__file__).parent.parent.joinpath("recipes").glob("*.yaml"):
        load_recipe(path)
    assert json.dumps(QUICK)


def test_compile_and_bench_cli(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune", str(write(tmp_path, QUICK | {"output": str(out)})), "--quiet"]) == 0
    capsys.readouterr()
    art = tmp_path / "m.tsr"
    assert main(["compile", str(out / "model.safetensors"), "--output", str(art), "--threads", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "pattern_connectivity" in text and art.exists()
    assert main(["bench", str(art), "--rounds", "2", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "tessera" in text and "torch" in text


def test_compile_cli_errors(tmp_path, capsys):
    assert main(["compile", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
