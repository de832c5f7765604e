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


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")


def compile_mode_for(mode: str, device: torch.device) -> str:
    """`algorithm.compile_mode` on this device. `reduce-overhead` replays each compiled step as a CUDA graph (one
    launch instead of hundreds: what small batches need on a GPU); `max-autotune-no-cudagraphs` searches kernel
    configurations at compile time. Both are CUDA-only ideas: on the CPU every mode compiles as `default`."""
    from .errors import check_choice

    check_choice("algorithm.compile_mode", str(mode), COMPILE_MODES)
    if device.type != "cuda" and mode != "default":
        log.info("algorithm.compile_mode=%s applies to CUDA; on %s the student steps compile in the default mode",
                 mode, device)
        return "default"
    return str(mode)


class CompiledOrEager:
    """`torch.compile(fn)` that falls back to `fn` itself, with one warning, if compiling fails.

    Inductor needs a working C++ toolchain and Python headers; a machine that lacks them (or a torch
    version that cannot trace fn) gets the eager function, the same values, instead of a crashed run.
    Only the first call may fall back: once a compiled call has succeeded, errors propagate.
    `mode` is torch.compile's (see compile_mode_for); under CUDA graphs (`reduce-overhead`) each call starts a new
    graph step and its outputs are copied out, since the next replay overwrites the graph's own output buffers."""

    def __init__(self, fn, device: torch.device, what: str, gil_free: bool = False, mode: str = "default"):
        self.fn, self.what = fn, what
        backend = compile_backend(device)
        self.graphs = mode == "reduce-overhead" and backend == "inductor" and device.type == "cuda"
        if mode != "default" and backend == "inductor":
            self.compiled = torch.compile(fn, backend=backend, mode=mode)
        else:
            # cpp_wrapper: the whole compiled graph runs in C++ with the GIL released, so two Python threads can
            # run it side by side (inductor's default Python wrapper holds the GIL inside each fused CPU kernel).
            options = {"cpp_wrapper": True} if gil_free and backend == "inductor" and device.type == "cpu" else None
            self.compiled = torch.compile(fn, backend=backend, options=options)
        self.state = "untried"  # untried | compiled | eager

    def _run_compiled(self, *args, **kwargs):
        if not self.graphs:
            return self.compiled(*args, **kwargs)
        torch.compiler.cudagraph_mark_step_begin()
        out = self.compiled(*args, **kwargs)
        return torch.utils._pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, out)

    def __call__(self, *args, **kwargs):
        if self.state == "compiled":
            return self._run_compiled(*args, **kwargs)
        if self.state == "eager":
            return self.fn(*args, **kwargs)
        try:
            out = self._run_compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001  (any compiler failure; a genuine error recurs eagerly below)
            log.warning("torch.compile of %s failed (%s: %s); running it eagerly", self.what,
                        type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
            self.state = "eager"
            return self.fn(*args, **kwargs)
        self.state = "compiled"
        return out
