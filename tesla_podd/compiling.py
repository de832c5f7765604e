"""Which torch.compile backend a job can use: inductor on CUDA, and on CPU where a C++ compiler is found.

Inductor fuses the elementwise work (instance norm, ReLU, pooling and their backward passes) around the
oneDNN/cuDNN convolutions; on a 2-core AVX2 CPU that made an expert step ~2x and a TESLA pass-2 step
~1.8x faster (docs/benchmarks.md). Without a compiler, `aot_eager` keeps the switch working (no speed-up)."""

from __future__ import annotations

import logging
import shutil

import torch

log = logging.getLogger(__name__)


def cpu_compile_backend() -> str:
    """`inductor` where it can build its C++ kernels (a C++ compiler on PATH), else `aot_eager`."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        found = shutil.which(get_cpp_compiler())
    except Exception:  # private API moved, or no compiler found
        found = None
    if found:
        return "inductor"
    log.warning("torch.compile on CPU: no C++ compiler found for inductor; using the aot_eager backend (no speed-up)")
    return "aot_eager"


def compile_backend(device: torch.device) -> str:
    return "inductor" if device.type == "cuda" else cpu_compile_backend()


class CompiledOrEager:
    """`torch.compile(fn)` that falls back to `fn` itself, with one warning, if compiling fails.

    Inductor needs a working C++ toolchain and Python headers; a machine that lacks them (or a torch
    version that cannot trace fn) gets the eager function, the same values, instead of a crashed run.
    Only the first call may fall back: once a compiled call has succeeded, errors propagate."""

    def __init__(self, fn, device: torch.device, what: str, gil_free: bool = False):
        self.fn, self.what = fn, what
        backend = compile_backend(device)
        # cpp_wrapper: the whole compiled graph runs in C++ with the GIL released, so two Python threads can run
        # it side by side (inductor's default Python wrapper holds the GIL inside each fused CPU kernel).
        options = {"cpp_wrapper": True} if gil_free and backend == "inductor" and device.type == "cpu" else None
        self.compiled = torch.compile(fn, backend=backend, options=options)
        self.state = "untried"  # untried | compiled | eager

    def __call__(self, *args, **kwargs):
        if self.state == "compiled":
            return self.compiled(*args, **kwargs)
        if self.state == "eager":
            return self.fn(*args, **kwargs)
        try:
            out = self.compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001  (any compiler failure; a genuine error recurs eagerly below)
            log.warning("torch.compile of %s failed (%s: %s); running it eagerly", self.what,
                        type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
            self.state = "eager"
            return self.fn(*args, **kwargs)
        self.state = "compiled"
        return out
