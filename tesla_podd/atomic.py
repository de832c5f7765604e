"""Atomic file writes (temp file in the same folder + rename): a killed run never leaves half a file.

Files get the permissions of a plain `open` (0666 minus the umask), so buffers, synsets and eval.json can be
shared; `clean_orphans` removes temp files a killed writer left behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def _umask() -> int:
    """The process umask: from /proc on Linux (thread-safe), else by setting it back at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600; shared outputs follow the umask
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def on_cpu(obj):
    """`obj` with every tensor inside dicts, lists and tuples moved to the CPU (others kept), so a file written
    by a CUDA run (optimiser momentum, soft labels, ...) loads with a plain `torch.load` on a CPU-only machine."""
    if isinstance(obj, torch.Tensor):
        return obj if obj.device.type == "cpu" else obj.cpu()
    if isinstance(obj, dict):
        return type(obj)((k, on_cpu(v)) for k, v in obj.items()) if type(obj) is not dict else \
            {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [on_cpu(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(on_cpu(v) for v in obj)
    return obj


def save_torch(obj, path) -> Path:
    """torch.save, atomically, with every tensor on the CPU (on_cpu)."""
    obj = on_cpu(obj)
    return _atomic(path, lambda f: torch.save(obj, f))


def write_text(text: str, path) -> Path:
    return _atomic(path, lambda f: f.write(text.encode()))


def write_json(obj, path) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)


def write_bytes(data: bytes, path) -> Path:
    return _atomic(path, lambda f: f.write(data))


ORPHAN_AGE_S = 600.0  # a temp file untouched this long belongs to a killed writer (live ones keep writing)


def clean_orphans(folder, min_age_s: float = ORPHAN_AGE_S) -> list[Path]:
    """Delete `.<name>.<random>.tmp` files a killed writer left in `folder`; recent ones may still be written."""
    import time

    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    now = time.time()
    for p in folder.glob(".*.tmp"):
        try:
            if p.is_file() and now - p.stat().st_mtime > min_age_s:
                p.unlink()
                removed.append(p)
        except FileNotFoundError:  # another process cleaned it first
            pass
    return removed
