"""Per-purpose random streams: `generator(seed, "eval", 3)` is the same whatever ran before it.

We never rely on global RNG state for data order or augmentation; model initialisation, which
torch.nn draws from the global RNG, runs inside `fork_rng` with a derived seed."""

from __future__ import annotations

import contextlib
import hashlib
import random

import numpy as np
import torch


def derive_seed(seed: int, *stream) -> int:
    """A 63-bit seed from a base seed and any stream labels (stable across runs and machines)."""
    text = "/".join([str(seed), *map(str, stream)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *stream, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *stream))
    return g


def seed_everything(seed: int) -> None:
    """For third-party code that reads global RNGs; our own code passes generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded_init(seed: int, *stream):
    """Run a block (e.g. building a model) with the global torch RNG seeded, then restore it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, *stream))
        yield
