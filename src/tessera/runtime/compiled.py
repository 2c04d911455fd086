"""CompiledModel: the drop-in inference module, its report, and save/load of artifacts.

An artifact is one safetensors file: the source model's weights, plus JSON metadata (tessera version, machine
fingerprint, example input shape, thread count, per-layer decisions) and a sha256 over every tensor, so a
truncated or altered file is refused. Kernels are not stored: they are regenerated from the weights and come from
the compile cache when present. On another machine or tessera version the kernels are rebuilt and the layers
re-tuned, and a warning says so.
"""

from __future__ import annotations

import platform
import warnings
from pathlib import Path

import torch
from torch import nn

from tessera.compiler.compile import Compiled, LayerPlan, compile_graph
from tessera.compiler.target import Target, get_target
from tessera.compiler.toolchain import compiler_version, find_compiler
from tessera.errors import CheckpointError, CompileError, InputError, TesseraError
from tessera.io import digest, load_tensors, save_tensors

ARTIFACT_FORMAT = 2  # 2: the checksum covers the metadata too


def machine_fingerprint(target: Target | None = None) -> str:
    cc = find_compiler()
    return f"{platform.machine()}|{get_target(target).key}|{compiler_version(cc) if cc else 'no-cc'}"


class CompiledModel(nn.Module):
    """Inference-only (eval) version of a model whose sparse convs run generated C kernels.

    Call it like the original model on fp32 NCHW batches of the compiled image size (any batch size).
    """

    def __init__(self, compiled: Compiled, source: nn.Module, example_shape, threads: int):
        super().__init__()
        self.graph = compiled.runner
        self.plans: list[LayerPlan] = compiled.plans
        self.network = compiled.network
        self.network_reason = compiled.network_reason
        self.network_params = compiled.network_params
        self.node_table = compiled.node_table()
        self._source = [source]  # kept out of the module tree: only for save()
        self.example_shape = tuple(example_shape)
        self.threads = threads
        self.target = compiled.target or get_target()
        # traced with the example's values (shape-dependent Python): other image sizes run the source model
        self.shape_specialised = bool(compiled.graph.meta.get("shape_specialised"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # inference only; entering no_grad costs microseconds, so only when needed
            with torch.no_grad():
                return self._run(x)
        return self._run(x)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.network is not None and x.shape[1:] == self.example_shape[1:] and x.dim() == 4 \
                and x.dtype == torch.float32 and x.is_cpu:  # cheapest checks (microseconds count at batch 1)
            return self.network(x)
        self._check(x)
        if self.shape_specialised and tuple(x.shape[1:]) != tuple(self.example_shape[1:]):
            warnings.warn(f"tessera: compiled for {tuple(self.example_shape[1:])} inputs (its forward branches on "
                          f"shapes); {tuple(x.shape[1:])} runs the original model in torch", stacklevel=3)
            return self._source[0].eval()(x)
        return self.graph(x)

    def _check(self, x) -> None:
        """Inputs the compiled code cannot take get a one-line error instead of torch's deep traceback."""
        want = "x".join(map(str, self.example_shape[1:]))
        if not isinstance(x, torch.Tensor):
            raise InputError(f"expected a torch.Tensor, got {type(x).__name__}; pass a float32 batch N x {want}")
        if x.dtype != torch.float32:
            raise InputError(f"compiled for float32 input, got {x.dtype}; call x.float() first")
        if not x.is_cpu:
            raise InputError(f"compiled for CPU tensors, got one on {x.device}; call x.cpu() first")
        if x.dim() != len(self.example_shape):
            raise InputError(f"expected a {len(self.example_shape)}-d batch N x {want}, got shape {tuple(x.shape)}; "
                             "add the batch dimension with x.unsqueeze(0)")

    def train(self, mode: bool = True):
        if mode:
            raise TesseraError("a CompiledModel is for inference; train the source model and compile again")
        return super().train(False)

    def report(self) -> str:
        """Layerwise table: shape, sparsity, fused ops, storage, and what runs each layer and why."""
        from tessera.text import markdown_table

        head = ["layer", "weight", "input", "stride", "kind", "density", "patterns", "kernels", "fused",
                "bytes packed/dense/csr", "runs", "why"]
        rows = []
        for p in self.plans:
            b = p.bytes
            rows.append([
                p.source, "x".join(map(str, p.weight_shape)), "x".join(map(str, p.in_shape[1:])), p.stride[0],
                p.kind, f"{p.density:.3f}", p.patterns or "-", f"{p.kernels_kept}/{p.kernels_total}", p.fused,
                _bytes(b), p.decision.backend, p.decision.reason,
            ])
        nodes = markdown_table(["node", "op", "runs"], [list(r) for r in self.node_table])
        return markdown_table(head, rows) + f"\n\nexecution: {self.network_reason}\n\nevery node:\n\n{nodes}\n"

    def torch_nodes(self) -> dict[str, str]:
        """The graph nodes that run in torch, each with the reason (empty when everything runs natively)."""
        return {name: where.removeprefix("torch: ") for name, _, where in self.node_table
                if where.startswith("torch: ")}

    def profile(self, x: torch.Tensor, rounds: int = 20) -> list[tuple[str, float]]:
        """Milliseconds per call of every node inside the native function on input ``x`` (its own build of the
        same C with a clock after each statement), in execution order; needs the whole-network path."""
        from tessera.compiler.compile import network_kernel_params
        from tessera.compiler.profile import profile_network

        if self.network is None:
            raise InputError(f"profile() times the whole-network function; this model runs "
                             f"{self.network_reason.split(':')[0]} (compile with network=True)")
        self._check(x)
        params = network_kernel_params(self.plans, self.network_params)
        return profile_network(self.graph, params, self.target, self.threads, x.contiguous(), rounds)

    def export(self, directory: str | Path, target: str | Target | None = None, threads: int = 0):
        """Write a standalone C library of this model for ``target`` (default: this model's own; e.g.
        "aarch64-neon", "portable") into ``directory``: see :mod:`tessera.compiler.export`. ``threads``: a fixed
        team size (0: OpenMP's default). Needs the whole-network path. Returns an ExportInfo."""
        from tessera.compiler.compile import network_kernel_params
        from tessera.compiler.export import export_network

        if self.network is None:
            torch_nodes = "; ".join(f"{k} ({v})" for k, v in self.torch_nodes().items())
            raise CompileError(f"export needs the whole network in one native function; this model runs "
                               f"{self.network_reason.split(':')[0]}" + (f" (in torch: {torch_nodes})"
                                                                           if torch_nodes else ""))
        t = self.target if target is None else get_target(target)
        params = network_kernel_params(self.plans, self.network_params)
        return export_network(self.graph, params, directory, t, threads)

    def save(self, path: str | Path) -> None:
        """Write the artifact (atomically). Zoo models reload by name, models built from a factory spec
        (:func:`tessera.models.external.model_from_spec`) by that spec; others need ``tessera.load(path, model=)``."""
        import tessera

        src = self._source[0]
        tensors = {f"model.{k}": v for k, v in src.state_dict().items()}
        meta = {
            "format": ARTIFACT_FORMAT, "tessera": tessera.__version__, "machine": machine_fingerprint(self.target),
            "target": self.target.name if not self.target.native else "host",
            "example_shape": list(self.example_shape), "threads": self.threads,
            "zoo": getattr(src, "tessera_zoo", None),
            "external": getattr(src, "tessera_external", None),
            "onnx": getattr(src, "tessera_onnx", None),
            "decisions": {p.name: p.decision.to_json() for p in self.plans},
            "network": self.network is not None,
            "network_params": self.network_params,
        }
        meta["sha256"] = digest(tensors, meta)
        save_tensors(path, tensors, meta)


def compile(model: nn.Module, example_inputs, threads: int | None = None, tune: bool = True,
            network: bool | None = None, log=None, _decisions=None, _force=None,
            _network_params=None, target: str | Target | None = None) -> CompiledModel:
    """Compile ``model`` for inputs shaped like ``example_inputs`` (a tensor or a 1-tuple of one).

    Each conv's sparsity is read from its weights; pattern / connectivity layers get generated C kernels when
    they measure faster than torch on this machine, every other layer keeps running in torch. ``target``: what
    the kernels are built for ("host" by default, or $TESSERA_TARGET; any target this CPU runs, e.g.
    "x86-avx2" or "portable" — see :func:`tessera.compiler.target.list_targets`).

    >>> import torch, tessera
    >>> from tessera.models import create_model
    >>> m = create_model("vgg_tiny", width=4).eval()
    >>> cm = tessera.compile(m, torch.randn(1, 1, 8, 8), tune=False)
    >>> torch.allclose(cm(torch.ones(2, 1, 8, 8)), m(torch.ones(2, 1, 8, 8)), atol=1e-5)
    True
    """
    example = example_inputs[0] if isinstance(example_inputs, list | tuple) else example_inputs
    was_training = model.training
    model.eval()
    compiled = compile_graph(model, example, threads, tune, force=_force, decisions=_decisions,
                             network=network if tune or network is not None else False, log=log,
                             network_params=_network_params, target=target)
    model.train(was_training)
    return CompiledModel(compiled, model, example.shape, int(threads or torch.get_num_threads())).eval()


def load(path: str | Path, model: nn.Module | str | None = None, threads: int | None = None) -> CompiledModel:
    """Load an artifact written by :meth:`CompiledModel.save` and rebuild its kernels (from cache when possible).
    ``model``: an instance of the model's class, or a ``package.module:factory`` spec that builds one (the
    artifact's weights are loaded into it); not needed for zoo models and models saved from a spec."""
    import tessera

    tensors, meta = load_tensors(path)
    if meta.get("format") != ARTIFACT_FORMAT or "sha256" not in meta:
        raise CheckpointError(f"{path} is not a tessera compiled-model artifact (format {meta.get('format')}); "
                              "compile and save it again")
    if digest(tensors, {k: v for k, v in meta.items() if k != "sha256"}) != meta["sha256"]:  # its own entry aside
        raise CheckpointError(f"{path} is corrupted (checksum mismatch); save the compiled model again")
    if model is None and (meta.get("external") or {}).get("spec"):
        model = meta["external"]["spec"]
    if model is None and meta.get("onnx"):
        from tessera.models.onnx_import import load_onnx

        model = load_onnx(meta["onnx"])[0]
    if isinstance(model, str):
        from tessera.models.external import model_from_spec

        model = model_from_spec(model)
    if model is None:
        zoo = meta.get("zoo")
        if not zoo:
            raise CheckpointError(f"{path} holds a non-zoo model; pass model= an instance of its class or a "
                                  "package.module:factory spec")
        from tessera.models import create_model

        model = create_model(zoo["name"], **zoo["args"])
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit the given model ({str(exc).splitlines()[0]})") from None
    target = meta.get("target", "host")
    same = meta.get("machine") == machine_fingerprint(get_target(target)) and meta.get("tessera") == tessera.__version__
    threads = threads or meta.get("threads")
    if not same:
        warnings.warn(f"tessera: {path} was compiled on {meta.get('machine')} with tessera {meta.get('tessera')}; "
                      "kernels are rebuilt and layers re-tuned for this machine", stacklevel=2)
    decisions = meta["decisions"] if same and threads == meta.get("threads") else None
    example = torch.zeros(meta["example_shape"])
    return compile(model, example, threads=threads, _decisions=decisions,
                   network=meta.get("network") if decisions is not None else None,
                   _network_params=meta.get("network_params") if decisions is not None else None, target=target)


def _bytes(b: dict | None) -> str:
    """Packed-format bytes (FKW or block, named) / dense / CSR."""
    if not b:
        return "-"
    fmt = next(k for k in b if k not in ("dense", "csr"))
    return f"{fmt} {b[fmt]}/{b['dense']}/{b['csr']}"
