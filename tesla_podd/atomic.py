"""Atomic file writes (temp file in the same folder + rename): a killed run never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_torch(obj, path) -> Path:
    return _atomic(path, lambda f: torch.save(obj, f))


def write_text(text: str, path) -> Path:
    return _atomic(path, lambda f: f.write(text.encode()))


def write_json(obj, path) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)


def write_bytes(data: bytes, path) -> Path:
    return _atomic(path, lambda f: f.write(data))
