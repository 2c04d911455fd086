"""ONNX export of a pruned model: checked by onnx.checker, run by ONNX Runtime against torch, zeros kept, and the
sparsity of every layer readable back from metadata_props."""

import numpy as np
import pytest
import torch

from tessera.errors import TesseraError
from tessera.models import create_model
from tessera.models.batchnorm import randomize_bn_stats
from tessera.onnx_export import export_onnx, read_sparsity_metadata
from tessera.pruning.presets import prune_for_deployment

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def test_pruned_model_round_trips_through_onnx(tmp_path):
    torch.manual_seed(0)
    m = prune_for_deployment(randomize_bn_stats(create_model("tv_mobilenet_v2", width=0.35, num_classes=10)),
                             r"features\.0\.0")
    path = export_onnx(m, torch.randn(1, 3, 32, 32), tmp_path / "m.onnx")
    onnx.checker.check_model(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 32, 32)  # another batch size than the example: the batch axis is dynamic
    (y,) = sess.run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref = m(x).numpy()
    assert np.abs(y - ref).max() / np.abs(ref).max() <= 1e-4
    meta = read_sparsity_metadata(path)
    assert set(meta) == {n for n, mod in m.named_modules() if isinstance(mod, torch.nn.Conv2d | torch.nn.Linear)}
    blocks = [v for v in meta.values() if v["kind"] == "block"]
    assert blocks and all(v["block_rows"] == 4 and v["density"] < 0.3 for v in blocks)
    zeros = sum(int((p.detach() == 0).sum()) for n, p in m.named_parameters() if n.endswith("weight"))
    stored = sum(int((onnx.numpy_helper.to_array(t) == 0).sum()) for t in onnx.load(str(path)).graph.initializer)
    assert stored >= 0.9 * zeros  # the pruned zeros are in the file (BN folding keeps them zero)


def test_pattern_metadata_and_errors(tmp_path):
    torch.manual_seed(0)
    m = prune_for_deployment(randomize_bn_stats(create_model("resnet20")))
    path = export_onnx(m, torch.randn(1, 3, 32, 32), tmp_path / "r.onnx")
    meta = read_sparsity_metadata(path)
    pc = [v for v in meta.values() if v["kind"] == "pattern_connectivity"]
    assert len(pc) >= 15 and all(len(v["patterns"]) <= 8 and v["kernels_kept"] < v["kernels_total"] for v in pc)
    bad = onnx.load(str(path))
    bad.metadata_props.add(key="tessera.layer.x", value="{not json")
    onnx.save(bad, str(tmp_path / "bad.onnx"))
    with pytest.raises(TesseraError, match="not JSON"):
        read_sparsity_metadata(tmp_path / "bad.onnx")


def test_onnx_cli(tmp_path, capsys):
    from tessera.cli import main

    (tmp_path / "net.py").write_text("import torch.nn as nn\n\ndef build():\n    return nn.Sequential("
                                     "nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))\n")
    spec = f"{tmp_path / 'net.py'}:build"
    assert main(["onnx", spec, str(tmp_path / "n.onnx"), "--input-shape", "1,3,8,8"]) == 0  # lazy Linear: fine
    assert "ONNX model written" in capsys.readouterr().out
    assert set(read_sparsity_metadata(tmp_path / "n.onnx")) == {"0", "3"}
    (tmp_path / "net.py").write_text("import torch.nn as nn\n\ndef build():\n    return nn.Sequential("
                                     "nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(288, 4))\n")
    assert main(["onnx", spec, str(tmp_path / "m.onnx"), "--input-shape", "1,3,6,6"]) == 2
    err = capsys.readouterr().err
    assert "does not run on a (1, 3, 6, 6) input" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m.onnx").exists()
