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
    ({"pruning": {**QUICK["pruning"], "lr": 0.1}}, "pruning.lr: unknown key"),
    ({"pruning": {**QUICK["pruning"], "defaults": {"scheme": "pattern_connectivity", "keep": 1.5}}}, r"\(0, 1\]"),
    ({"pruning": {**QUICK["pruning"], "targets": [{"name": "conv9"}]}}, "matches no layer"),
    ({"data": {"name": "fashion_mnist", "root": "/nonexistent"}}, "dataset-fashion-mnist"),
    ({"pruning": {**QUICK["pruning"], "retrain": {"epochs": 1, "distill": 1.5}}},
     r"pruning.retrain.distill: input should be less than or equal to 1 \(got 1.5\)"),
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


def test_recipe_problems_are_all_listed_with_paths(tmp_path, capsys):
    bad = QUICK | {"seeed": 1, "model": {"name": "vgg_tiny", "args": []},
                   "pruning": {**QUICK["pruning"], "algorithm": "admmm",
                               "retrain": {"epochs": "two", "lr": -0.1, "schedule": "linear"}}}
    assert main(["prune", str(write(tmp_path, bad)), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "6 problems in the recipe" in err, err
    for where in ("seeed: unknown key", "model.args: input should be a valid dictionary",
                  "pruning.algorithm: input should be 'admm', 'gradual' or 'oneshot' (got 'admmm')",
                  "pruning.retrain.epochs: input should be a valid integer", "pruning.retrain.lr: input should be "
                  "greater than 0 (got -0.1)", "pruning.retrain.schedule: input should be 'onecycle', 'cosine' or "
                  "'constant'"):
        assert where in err, where
    for text, message in (("", "is empty"), ("- 1\n- 2\n", "a recipe is a mapping"), ("{}", "recipe is empty")):
        path = tmp_path / "r2.yaml"
        path.write_text(text)
        assert main(["prune", str(path)]) == 2
        assert message in capsys.readouterr().err


def test_sections_keep_their_own_defaults():
    """A recipe that sets only the ADMM epochs keeps the ADMM phase's lr and schedule (not TrainConfig's)."""
    from tessera.pruning.recipe import recipe_from_dict

    r = recipe_from_dict({"name": "x", "pruning": {"admm": {"train": {"epochs": 7}}}})
    assert (r.pruning.admm.train.epochs, r.pruning.admm.train.lr, r.pruning.admm.train.schedule) == (7, 0.01, "cosine")
    assert r.pruning.retrain.lr == 0.01 and r.baseline.train.lr == 0.05


def test_an_unwritable_output_is_one_line_and_leaves_nothing(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert main(["schema", "--output", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tessera: error: ") and len(err.strip().splitlines()) == 1
    assert err.strip().endswith(f"{tmp_path / 'taken'}; choose another path or free some space")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no temporary file left behind


def test_schema_command(tmp_path, capsys):
    assert main(["schema", "--output", str(tmp_path / "s.json")]) == 0
    schema = json.loads((tmp_path / "s.json").read_text())
    train = schema["$defs"]["TrainConfig"]["properties"]
    assert train["lr"]["exclusiveMinimum"] == 0 and train["schedule"]["enum"] == ["onecycle", "cosine", "constant"]
    assert schema["additionalProperties"] is False
    assert main(["schema"]) == 0 and json.loads(capsys.readouterr().out.split("\n", 1)[1])


def test_shipped_recipes_cover_every_scheme_and_algorithm():
    """Each shipped recipe validates and its targets resolve on its model (no training); together they use every
    registered scheme and every algorithm."""
    import pathlib

    from tessera.models import create_model
    from tessera.pruning.targets import select_targets
    from tessera.sparsity.schemes import _SCHEMES

    schemes, algorithms = set(), set()
    for path in sorted(pathlib.Path(__file__).parent.parent.joinpath("recipes").glob("*.yaml")):
        r = load_recipe(path)
        channels = 1 if r.data.name == "fashion_mnist" else 3
        model = create_model(r.model.name, in_channels=channels, num_classes=10, **r.model.args)
        targets = select_targets(model, r.pruning.targets, r.pruning.defaults)
        assert targets, path
        schemes |= {t.scheme.name for t in targets}
        algorithms.add(r.pruning.algorithm)
    assert schemes == set(_SCHEMES), set(_SCHEMES) - schemes
    assert algorithms == {"admm", "gradual", "oneshot"}


def test_shipped_recipes_parse():
    import pathlib

    for path in pathlib.Path(__file__).parent.parent.joinpath("recipes").glob("*.yaml"):
        load_recipe(path)
    assert json.dumps(QUICK)


def test_run_pipeline_and_resume(tmp_path, capsys):
    """`tessera run`: prune, compile, time, export and report in one command; run again, it resumes (no epoch is
    trained twice) and ends the same way."""
    out = tmp_path / "run"
    recipe = write(tmp_path, QUICK | {"output": str(out)})
    assert main(["run", str(recipe), "--quiet", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "accuracy: dense" in text and "faster than torch" in text and "report:" in text
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["ms"]) >= {"torch", "tessera"} and summary["conv_compression"] > 1.5
    assert (out / "model.tsr").exists() and (out / "report.md").read_text().startswith("# quick")
    assert (out / "c_library" / "model.h").exists()
    phases = [out / f"{name}.safetensors" for name in ("baseline", "admm", "retrain")]
    stamps = [p.stat().st_mtime_ns for p in phases]
    assert main(["run", str(recipe), "--quiet", "--threads", "1", "--no-export"]) == 0
    assert "accuracy: dense" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in phases] == stamps  # every phase resumed complete: nothing retrained
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2


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


def test_export_cli(tmp_path, capsys):
    """A factory model exported for the portable target, built and checked against torch in one command; a bad
    target is a one-line error before any work; a foreign target without --check says how to cross-build."""
    (tmp_path / "net.py").write_text(NET_PY)
    spec = f"{tmp_path / 'net.py'}:build"
    out = tmp_path / "lib"
    assert main(["export", spec, str(out), "--input-shape", "1,3,16,16", "--target", "portable", "--check",
                 "--threads", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "exported" in text and "relative error vs torch" in text
    assert float(text.split("relative error vs torch ")[1].split()[0]) <= 1e-5
    assert (out / "model.h").exists() and (out / "tessera_main").exists()
    assert main(["export", spec, str(tmp_path / "arm"), "--input-shape", "1,3,16,16", "--target", "aarch64-neon",
                 "--threads", "1", "--quiet"]) == 0
    assert "CC=aarch64-linux-gnu-gcc" in capsys.readouterr().out
    assert main(["export", spec, str(tmp_path / "x"), "--input-shape", "1,3,16,16", "--target", "z80"]) == 2
    err = capsys.readouterr().err
    assert "unknown target 'z80'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_compile_cli_errors(tmp_path, capsys):
    assert main(["compile", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_every_command_shows_an_example_in_its_help(capsys):
    from tessera.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(commands) >= {"prune", "run", "compile", "bench", "export", "onnx", "report", "schema", "list"}
    for name in commands:
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0 and "example: tessera " in capsys.readouterr().out, name


def test_list_and_bench_cli(tmp_path, capsys):
    assert main(["list", "schemes"]) == 0 and "pattern_connectivity" in capsys.readouterr().out.split()
    assert main(["list", "models"]) == 0 and "resnet20" in capsys.readouterr().out.split()
    with pytest.raises(SystemExit) as exit_:
        main(["list", "nothing"])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "missing.tessera")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1


NET_PY = '''
import torch.nn as nn


def build():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 8))
'''


def test_any_model_by_factory_spec(tmp_path, capsys):
    """`package.module:factory` / `file.py:factory` + --weights for compile and bench; the artifact records the
    spec, so tessera.load rebuilds the model from it (no model= needed)."""
    import torch
    from safetensors.torch import save_file

    import tessera
    from tessera.pruning.sparsifier import Sparsifier

    (tmp_path / "net.py").write_text(NET_PY)
    spec = f"{tmp_path / 'net.py'}:build"
    from tessera.models.external import model_from_spec

    torch.manual_seed(0)
    m = model_from_spec(spec)
    s = Sparsifier(targets=[{"op": "Conv2d", "kernel": 3, "name": "2", "scheme": "pattern_connectivity",
                             "num_patterns": 4, "keep": 0.5}])
    s.prepare(m)
    s.step()
    m = s.squash_mask().eval()
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(weights))
    art = tmp_path / "net.tsr"
    assert main(["compile", spec, "--weights", str(weights), "--input-shape", "1,3,16,16", "--threads", "1",
                 "--output", str(art), "--quiet"]) == 0
    assert art.exists()
    capsys.readouterr()
    cm = tessera.load(art)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(cm(x), m(x), rtol=1e-4, atol=1e-5)
    assert main(["bench", spec, "--weights", str(weights), "--input-shape", "1,3,16,16", "--rounds", "1",
                 "--threads", "1"]) == 0
    assert "tessera" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["nosuchpkg.nets:build"], "cannot import nosuchpkg.nets"),
    (["tessera.models:nothing_here"], "has no 'nothing_here'"),
    (["tessera.models:create_model", "--input-shape", "1,3,8,8"], "create_model"),
])
def test_factory_spec_errors_are_one_line(args, message, capsys):
    assert main(["compile", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_weights_that_do_not_fit_the_factory(tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    (tmp_path / "net.py").write_text(NET_PY)
    save_file({"bogus": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    assert main(["compile", f"{tmp_path / 'net.py'}:build", "--weights", str(tmp_path / "w.safetensors"),
                 "--input-shape", "1,3,8,8"]) == 2
    assert "does not fit" in capsys.readouterr().err
