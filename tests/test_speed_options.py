"""Speed paths compute the same thing as the plain ones (issue 9): strided 2x2 pooling, channels-last and
compiled expert training (inductor on CPU too, aot_eager where no C++ compiler is found)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from tesla_podd.classifier import train_classifier
from tesla_podd.models import ConvNet, FlatModel
from tesla_podd.models.pooling import AvgPool2x2

DT = torch.float64


@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (2, 3, 7, 6)], ids=["even", "odd-falls-back"])
def test_strided_pool_equals_avgpool_to_second_order(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=DT, requires_grad=True)
    v = torch.randn_like(nn.AvgPool2d(2, 2)(x)).requires_grad_(True)
    w = torch.randn(shape, generator=g, dtype=DT)
    outs = []
    for pool in (nn.AvgPool2d(2, 2), AvgPool2x2()):
        y = pool(x)
        gx = torch.autograd.grad(y, x, v, create_graph=True)[0]  # first order
        gv = torch.autograd.grad((gx * w).sum(), v)[0]  # through the backward (TESLA's pass 2 does this)
        outs.append((y, gx, gv))
    for a, b in zip(*outs):
        assert (a - b).abs().max().item() < 1e-12


def test_strided_pool_on_channels_last_input():
    x = torch.randn(2, 4, 6, 8).contiguous(memory_format=torch.channels_last)
    assert (AvgPool2x2()(x) - nn.functional.avg_pool2d(x, 2, 2)).abs().max().item() < 1e-6


@pytest.mark.parametrize("given,expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_package_import_makes_openmp_threads_sleep_unless_told_otherwise(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = "import os, tesla_podd; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def _train(**speed):
    torch.manual_seed(0)
    model = ConvNet(3, 4, 8, width=8, depth=1)
    x = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(24) % 4
    train_classifier(model, lambda i: (x[i], y[i]), 24, epochs=2, lr=0.1, batch_size=8, momentum=0.9,
                     weight_decay=0.0, augment=lambda b, gen: b, gen=torch.Generator().manual_seed(2), **speed)
    return FlatModel(model).flatten(model)


def test_channels_last_expert_training_matches_fp32():
    ref, fast = _train(), _train(channels_last=True)
    assert ((fast - ref).norm() / ref.norm()).item() < 1e-5
    assert not torch.equal(ref, FlatModel(ConvNet(3, 4, 8, width=8, depth=1)).flatten())  # it did train


def test_compiled_expert_training_runs_on_cpu_and_matches():
    # ~25-45 s cold: inductor builds its C++ kernels (aot_eager where no compiler is found)
    ref, fast = _train(), _train(compile=True)
    assert ((fast - ref).norm() / ref.norm()).item() < 1e-5


def test_cpu_compile_uses_inductor_with_a_compiler_and_falls_back_without(monkeypatch, caplog):
    import shutil

    from tesla_podd import compiling

    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert compiling.cpu_compile_backend() == "inductor"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with caplog.at_level("WARNING"):
        assert compiling.cpu_compile_backend() == "aot_eager"
    assert "no C++ compiler" in caplog.text


def test_a_failed_compile_falls_back_to_eager_with_a_warning(no_compiler, caplog):
    from tesla_podd import compiling

    step = compiling.CompiledOrEager(lambda x: x + 1, torch.device("cpu"), "the test step")
    with caplog.at_level("WARNING"):
        assert step(torch.tensor(1)).item() == 2
    assert step.state == "eager" and "Python.h" in caplog.text
    assert step(torch.tensor(2)).item() == 3  # stays eager, no second attempt


def test_bench_speed_ratios_use_every_repeat(monkeypatch):
    """A mode repeated in --modes (interleaved with the baseline) counts with all its repeats in the ratios."""
    from conftest import REPO

    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench_speed

    def point(mode, wall, cpu):
        return {"kind": "matching", "grad_mode": mode, "syn_steps": 50, "ipc": 1, "sec_per_iter": wall,
                "cpu_sec_per_iter": cpu, "lanes": 1}

    rows = [point("baseline", 12.0, 20.0), point("tesla_compiled_lanes", 6.0, 10.0),
            point("baseline", 8.0, 16.0), point("tesla_compiled_lanes", 4.0, 8.0)]
    ratios = bench_speed.summarize(rows)
    assert ratios["baseline_over_tesla_compiled_lanes_sec_per_iter_ipc1_n50"] == 2.0  # 10 s / 5 s, not 12 / 6
    assert ratios["baseline_over_tesla_compiled_lanes_cpu_sec_per_iter_ipc1_n50"] == 2.0  # 18 / 9
    assert bench_speed._find(rows, grad_mode="baseline")["repeats"] == 2
