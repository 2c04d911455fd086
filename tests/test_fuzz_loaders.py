"""Every loader of a file a user may hand us — compiled artifact, pruned model / training checkpoint, recipe, ONNX
(sparsity metadata and the importer) — under random and mutated bytes: it loads or raises a TesseraError; it never
crashes with another exception, never unpickles, never hangs (a deadline per case) and writes nothing.

The default run takes a few hundred cases; ``make test-slow`` (the ``slow`` marker) runs 10,000.
"""

import functools
import os
import pickle
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tessera
from tessera.data import digits
from tessera.errors import TesseraError
from tessera.io import load_tensors, save_tensors
from tessera.models import create_model, load_model, save_model
from tessera.pruning.admm import ADMM, ADMMConfig
from tessera.pruning.recipe import load_recipe
from tessera.pruning.sparsifier import Sparsifier
from tessera.pruning.trainer import TrainConfig, Trainer


def _cases(n: int):
    return settings(max_examples=n, deadline=5000,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@st.composite
def mutated(draw, seed: bytes):
    """``seed`` truncated, with bytes flipped, inserted or overwritten — or bytes of its own."""
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "overwrite", "random", "head"]))
    b = bytearray(seed)
    if kind == "random":
        return draw(st.binary(max_size=4096))
    if kind == "truncate":
        return bytes(b[:draw(st.integers(0, len(b)))])
    if kind == "head":  # the header region (lengths, JSON) is where parsers go wrong
        n = min(len(b), 256)
        for _ in range(draw(st.integers(1, 8))):
            b[draw(st.integers(0, max(0, n - 1)))] = draw(st.integers(0, 255))
        return bytes(b)
    for _ in range(draw(st.integers(1, 16))):
        i = draw(st.integers(0, max(0, len(b) - 1)))
        if kind == "flip" and b:
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=32))
        elif b:
            chunk = draw(st.binary(min_size=1, max_size=32))
            b[i:i + len(chunk)] = chunk
    return bytes(b)


@functools.cache
def _seeds() -> dict[str, bytes]:
    """Valid files of each kind, mutated by the cases (built once per session)."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        m = create_model("vgg_tiny", width=4).eval()
        save_model(m, d / "model.safetensors", "vgg_tiny", {"width": 4}, {"input_shape": [1, 1, 8, 8]})
        cm = tessera.compile(m, torch.randn(1, 1, 8, 8), tune=False, threads=1)
        cm.save(d / "model.tsr")
        _trainer(d, "admm", epochs=1).fit()  # a real training checkpoint: model, optimiser, ADMM Z/U
        (d / "recipe.yaml").write_text(Path(__file__).parent.parent.joinpath("recipes/quick.yaml").read_text())
        try:
            from tessera.onnx_export import export_onnx

            export_onnx(m, torch.randn(1, 1, 8, 8), d / "model.onnx")
        except TesseraError:
            pass
        return {p.name: p.read_bytes() for p in d.iterdir()}


def _trainer(folder: Path, name: str, epochs: int = 1):
    torch.manual_seed(0)
    m = create_model("vgg_tiny", width=4)
    targets = Sparsifier([{"op": "Conv2d", "kernel": 3}], {"scheme": "pattern_connectivity", "keep": 0.5}).select(m)
    train, _ = digits()
    cfg = TrainConfig(epochs=epochs, batch_size=512, checkpoint_every=2)
    return Trainer(m, train, None, cfg, hooks=[ADMM(targets, ADMMConfig(), 4)], checkpoint_dir=folder, name=name,
                   progress=False)


def _resume(path):
    _trainer(path.parent, path.stem).resume()


def _no_pickle(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a loader unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)


def _check(loader, data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"f{suffix}"
        path.write_bytes(data)
        try:
            loader(path)
        except TesseraError:
            pass
        assert sorted(os.listdir(d)) == [path.name], "a loader wrote a file"


def _fuzz(name, loader, suffix, n):
    @_cases(n)
    @given(data=st.data())
    def run(monkeypatch, data):
        seed = _seeds().get(name)  # built before pickle is patched (torch imports subclass its Unpickler)
        _no_pickle(monkeypatch)
        if seed is None:
            pytest.skip(f"no {name} seed (onnx not installed)")
        _check(loader, data.draw(mutated(seed)), suffix)
    return run


def _load_artifact(path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "compiled on another machine" for a mutated fingerprint
        tessera.load(path)


def _read_onnx(path):
    from tessera.models.onnx_import import load_onnx
    from tessera.onnx_export import read_sparsity_metadata

    read_sparsity_metadata(path)
    load_onnx(path)


LOADERS = {"artifact": ("model.tsr", _load_artifact, ".tsr"),
           "checkpoint": ("admm.safetensors", _resume, ".safetensors"),
           "pruned_model": ("model.safetensors", load_model, ".safetensors"),
           "recipe": ("recipe.yaml", load_recipe, ".yaml"), "onnx": ("model.onnx", _read_onnx, ".onnx")}
for _kind, (_seed, _loader, _suffix) in LOADERS.items():
    globals()[f"test_fuzz_{_kind}"] = _fuzz(_seed, _loader, _suffix, 80)
    globals()[f"test_fuzz_{_kind}_long"] = pytest.mark.slow(_fuzz(_seed, _loader, _suffix, 2500))


@st.composite
def altered_checkpoint(draw):
    """The training checkpoint with its metadata or a tensor changed and the checksum written anew: only the
    loader's own checks stand between it and a wrong resume."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.safetensors"
        p.write_bytes(_seeds()["admm.safetensors"])
        tensors, meta = load_tensors(p)
    kind = draw(st.sampled_from(["meta", "drop", "shape", "dtype"]))
    if kind == "meta":
        key = draw(st.sampled_from(sorted(meta)))
        meta[key] = draw(st.one_of(st.none(), st.integers(-3, 10**6), st.text(max_size=8), st.lists(st.integers()),
                                   st.dictionaries(st.text(max_size=4), st.integers(), max_size=3)))
    else:
        key = draw(st.sampled_from(sorted(tensors)))
        if kind == "drop":
            del tensors[key]
        elif kind == "shape":
            tensors[key] = torch.zeros(draw(st.lists(st.integers(0, 5), max_size=3)))
        else:
            tensors[key] = tensors[key].to(torch.int64)
    return tensors, meta


def _fuzz_altered(n):
    @_cases(n)
    @given(altered_checkpoint())
    def run(monkeypatch, case):
        _no_pickle(monkeypatch)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "admm.safetensors"
            save_tensors(path, *case)
            try:
                _resume(path)
            except TesseraError:
                pass
            assert sorted(os.listdir(d)) == ["admm.safetensors"], "a loader wrote a file"
    return run


test_fuzz_checkpoint_altered = _fuzz_altered(80)
test_fuzz_checkpoint_altered_long = pytest.mark.slow(_fuzz_altered(2500))
