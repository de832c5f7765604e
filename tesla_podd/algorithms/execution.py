"""How a run executes its student steps, chosen once per run: the matchers (matching.py) only say *what* a step
computes (g_i, or its vector-Jacobian product); `Execution` says how it runs.

- eager:        plain autograd, one op at a time (any device; the reference for every other strategy).
- compiled:     each step's gradient and VJP as one torch.compile'd graph (`algorithm.compile`).
- cuda-graphs:  compiled, and replayed as a CUDA graph (`algorithm.compile_mode=reduce-overhead`): one launch per
                step instead of hundreds, which is what small batches need on a GPU.
- lanes:        on the CPU, TESLA's pass-2 chunks and pass-1 batch parts side by side on threads (`algorithm.lanes`);
                combinable with eager or compiled. CPU-only: on CUDA it is 1 (lanes.resolve_lanes says so).
Every strategy computes the same values up to rounding (tests/test_gradient_modes.py checks them in float64)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..compiling import compile_mode_for
from ..lanes import resolve_lanes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Execution:
    compiled: bool = False
    compile_mode: str = "default"  # torch.compile's mode (compiling.COMPILE_MODES), when compiled
    lanes: int = 1

    @property
    def strategy(self) -> str:
        base = "eager" if not self.compiled else "cuda-graphs" if self.compile_mode == "reduce-overhead" else "compiled"
        mode = f" ({self.compile_mode})" if self.compiled and self.compile_mode not in ("default", "reduce-overhead") \
            else ""
        return base + mode + (f", {self.lanes} lanes" if self.lanes > 1 else "")

    @classmethod
    def for_run(cls, acfg, device: torch.device, grad_mode: str) -> Execution:
        """The strategy of `algorithm.compile`, `algorithm.compile_mode` and `algorithm.lanes` on this device."""
        compiled = bool(acfg.get("compile", False))
        mode = compile_mode_for(str(acfg.get("compile_mode", "default")), device) if compiled else "default"
        # lanes: TESLA's passes only (exact's adjoint pass and unrolled are one sequence of steps)
        lanes = resolve_lanes(acfg.get("lanes", "auto"), device, "algorithm.lanes") if grad_mode == "tesla" else 1
        execution = cls(compiled, mode, lanes)
        log.info("student steps: %s on %s", execution.strategy, device)
        return execution
