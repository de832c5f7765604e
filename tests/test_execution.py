"""The execution strategy of the student steps is chosen once per run from the config and the device."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from tesla_podd.algorithms.execution import Execution
from tesla_podd.compiling import CompiledOrEager, compile_mode_for
from tesla_podd.errors import ConfigError


def _acfg(**kw):
    return OmegaConf.create({"compile": False, "compile_mode": "default", "lanes": 1, **kw})


def test_strategies_by_config_and_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert Execution.for_run(_acfg(), cpu, "tesla").strategy == "eager"
    assert Execution.for_run(_acfg(lanes=2), cpu, "tesla").strategy == "eager, 2 lanes"
    assert Execution.for_run(_acfg(lanes=2), cpu, "exact").lanes == 1, "lanes split TESLA's passes only"
    assert Execution.for_run(_acfg(compile=True), cpu, "tesla").strategy == "compiled"
    graphs = Execution.for_run(_acfg(compile=True, compile_mode="reduce-overhead", lanes=4), cuda, "tesla")
    assert graphs.strategy == "cuda-graphs" and graphs.lanes == 1, "CUDA graphs on CUDA; lanes are CPU-only"
    cpu_graphs = Execution.for_run(_acfg(compile=True, compile_mode="reduce-overhead"), cpu, "tesla")
    assert cpu_graphs.compile_mode == "default", "on the CPU every mode compiles as default"
    tuned = Execution.for_run(_acfg(compile=True, compile_mode="max-autotune-no-cudagraphs"), cuda, "exact")
    assert tuned.strategy == "compiled (max-autotune-no-cudagraphs)"
    with pytest.raises(ConfigError, match="`algorithm.compile_mode`"):
        compile_mode_for("fast", cpu)


def test_compiled_or_eager_passes_the_mode_to_torch_compile(monkeypatch):
    seen = {}

    def fake_compile(fn, **kw):
        seen.update(kw)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr("tesla_podd.compiling.compile_backend", lambda device: "inductor")
    f = CompiledOrEager(lambda t: t + 1, torch.device("cuda", 0), "a step", mode="reduce-overhead")
    assert seen == {"backend": "inductor", "mode": "reduce-overhead"} and f.graphs
    seen.clear()
    CompiledOrEager(lambda t: t + 1, torch.device("cpu"), "a step", gil_free=True)
    assert seen == {"backend": "inductor", "options": {"cpp_wrapper": True}}
