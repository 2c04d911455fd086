"""Errors raised by tessera.

Every error is a one-line message that says what to change, so a user reading it at a terminal knows the fix.
"""

from __future__ import annotations


class TesseraError(Exception):
    """Base class of every error tessera raises on purpose."""


class ConfigError(TesseraError):
    """A recipe, a target list or a scheme parameter is wrong."""


class ShapeError(TesseraError):
    """A weight has a shape the requested scheme cannot handle."""


class DataError(TesseraError):
    """A dataset is missing or malformed."""


class CheckpointError(TesseraError):
    """A checkpoint or artifact is missing, corrupted or incompatible."""


class CompileError(TesseraError):
    """Native code could not be generated, built or loaded."""


class DistributedError(TesseraError):
    """The ranks of a torchrun job disagree or one of them stopped."""


class InputError(TesseraError):
    """A compiled model was called with an input it cannot take (dtype, rank, device)."""
