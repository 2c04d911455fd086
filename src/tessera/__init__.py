"""tessera: prune CNNs into hardware-friendly sparsity and compile them into native code that runs faster."""

from tessera.errors import TesseraError

__version__ = "0.1.0"
__all__ = ["TesseraError", "__version__"]
