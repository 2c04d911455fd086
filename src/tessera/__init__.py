"""tessera: prune CNNs into hardware-friendly sparsity and compile them into native code that runs faster."""

from tessera.errors import TesseraError

__version__ = "0.1.0"
__all__ = ["TesseraError", "__version__", "compile", "load"]


def compile(model, example_inputs, threads=None, tune=True, network=None, log=None, target=None):
    """Compile a (pruned) model into a CompiledModel; see :func:`tessera.runtime.compile`."""
    from tessera.runtime import compile as _compile

    return _compile(model, example_inputs, threads=threads, tune=tune, network=network, log=log, target=target)


def load(path, model=None, threads=None):
    """Load a compiled-model artifact; see :func:`tessera.runtime.load`."""
    from tessera.runtime import load as _load

    return _load(path, model=model, threads=threads)
