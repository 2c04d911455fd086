"""A pruned model as an ONNX file other tools can run: dense weights with their zeros, and what tessera knows of
each layer's sparsity (scheme kind, density, pattern library, kept kernels, blocks) in the model's
``metadata_props`` under ``tessera.layer.<module name>`` (JSON), plus ``tessera.version``."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from tessera.errors import TesseraError
from tessera.io import atomic_write_bytes
from tessera.sparsity import analyse_conv


def sparsity_metadata(model: nn.Module) -> dict[str, dict]:
    """Module name -> what its weights' non-zeros say (see :func:`tessera.sparsity.analyse_conv`)."""
    out = {}
    for name, m in model.named_modules():
        if not isinstance(m, nn.Conv2d | nn.Linear):
            continue
        w = m.weight.detach()
        lay = analyse_conv(w if w.dim() == 4 else w[:, :, None, None])
        entry = {"op": type(m).__name__, "shape": list(w.shape), "kind": lay.kind, "density": round(lay.density, 6),
                 "kernels_kept": lay.kernels_kept, "kernels_total": lay.kernels_total}
        if lay.library is not None:
            entry["patterns"] = json.loads(lay.library.to_json())
        if lay.kind == "block":
            entry["block_rows"] = lay.block_n
            entry["block_aligned"] = bool(lay.block_aligned)
        out[name] = entry
    return out


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, opset: int = 17) -> Path:
    """Write ``model`` (eval mode, traced on ``example``) as ONNX with the sparsity metadata; checked with
    ``onnx.checker`` before it is written (atomically)."""
    try:
        import onnx
    except ImportError:
        raise TesseraError("ONNX export needs the onnx package: pip install onnx") from None
    was = model.training
    model.eval()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:
                model(example)  # lazy modules get their shapes; a wrong input shape fails here, plainly
            except Exception as exc:  # any error of the user's forward
                first = (str(exc).splitlines() or [""])[0][:200]
                raise TesseraError(f"the model does not run on a {tuple(example.shape)} input "
                                   f"({type(exc).__name__}: {first}); check the input shape") from None
            torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    finally:
        model.train(was)
    proto = onnx.load_from_string(buf.getvalue())
    import tessera

    meta = {"tessera.version": tessera.__version__}
    meta.update({f"tessera.layer.{k}": json.dumps(v) for k, v in sparsity_metadata(model).items()})
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    path = Path(path)
    atomic_write_bytes(path, proto.SerializeToString())
    return path


def read_sparsity_metadata(path: str | Path) -> dict[str, dict]:
    """The ``tessera.layer.*`` entries of an ONNX file written by :func:`export_onnx` (module name -> dict)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
        raise TesseraError(f"{path} is not a readable ONNX file ({type(exc).__name__})") from None
    out = {}
    for p in proto.metadata_props:
        key, value = p.key, p.value
        if not isinstance(key, str) or not isinstance(value, str):  # undecodable text in a damaged file
            raise TesseraError(f"{path}: a metadata entry is not text; export the model again")
        if key.startswith("tessera.layer."):
            try:
                entry = json.loads(value)
            except json.JSONDecodeError:
                raise TesseraError(f"{path}: metadata {key} is not JSON; export the model again") from None
            if not isinstance(entry, dict):
                raise TesseraError(f"{path}: metadata {key} is not a JSON object; export the model again")
            out[key.removeprefix("tessera.layer.")] = entry
    return out
