"""Lanes: independent pieces of CPU work side by side on Python threads, one intra-op thread each.

On a small CPU a small ConvNet keeps two cores only ~70% busy (docs/benchmarks.md), so independent work
(evaluation networks, TESLA's pass-2 chunks and pass-1 batch parts) finishes sooner side by side. Each piece does
the same arithmetic as alone at one thread, so its result is the same bit for bit."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import torch

log = logging.getLogger(__name__)


def resolve_lanes(value, device: torch.device, key: str = "lanes") -> int:
    """A `*.lanes` setting: auto = torch's intra-op thread count on CPU, 1 on CUDA; else the number given.
    Lanes are CPU threads: on a GPU they would only interleave launches on one stream (no gain, and untested),
    so an explicit number above 1 is forced to 1 there with a message naming the key."""
    if str(value) == "auto":
        return torch.get_num_threads() if device.type == "cpu" else 1
    lanes = max(1, int(value))
    if lanes > 1 and device.type != "cpu":
        log.warning("`%s=%d` runs side by side on CPU threads only; on %s it is 1 (the GPU runs one network or "
                    "step at a time, stacked evaluation is the GPU's way to train several at once)", key, lanes,
                    device)
        return 1
    return lanes


def side_by_side_threads(work, parts: list, lanes: int) -> list:
    """`work(part)` for every part on `lanes` threads, each with one intra-op thread (a per-thread OpenMP
    setting); the caller's thread count is restored afterwards. `lanes=1` runs the parts one after another on
    one such thread: the same arithmetic, so the same results as side by side."""
    threads = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(max(1, min(lanes, len(parts))), initializer=torch.set_num_threads,
                                initargs=(1,)) as pool:
            return list(pool.map(work, parts))
    finally:
        torch.set_num_threads(threads)
