"""Files as safetensors (tensors) + JSON metadata (everything else). Never pickle.

Writes go to a temporary file in the same folder and are renamed into place, so an interrupted write never leaves
a half-written checkpoint behind; each file carries a sha256 of its tensors and metadata, so a damaged one is
refused rather than loaded (safetensors itself checks only the header's structure).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tessera.errors import CheckpointError


def _publish(tmp: str, path: Path) -> None:
    """Rename the finished temporary file into place with the permissions a plain open() would have given."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def digest(tensors: dict[str, torch.Tensor], meta: object = None) -> str:
    """sha256 over every tensor's name and exact bytes and the JSON of ``meta``: equal only when every value is
    bit-identical."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> None:
    """Save tensors and a JSON-serialisable ``meta`` dict atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        text = json.dumps(meta or {})
        save_file(clean, tmp, metadata={"tessera": text, "tessera_sha256": digest(clean, json.loads(text))})
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Load what :func:`save_tensors` wrote; a missing or corrupted file is a CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
        meta = json.loads(header.get("tessera", "{}"))
        expected = header.get("tessera_sha256")  # absent in files written elsewhere: nothing to check against
        if expected is not None and digest(tensors, meta) != expected:
            raise ValueError("its contents do not match the checksum written with it")
    except (SafetensorError, OSError, ValueError, TypeError, RecursionError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupted or not a safetensors file ({str(exc)[:160]}); re-create it or restore "
            "a copy"
        ) from None
    return tensors, meta
