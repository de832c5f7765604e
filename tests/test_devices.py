"""Honest devices and the numerics policy, on CPU with torch.cuda's answers faked."""

from __future__ import annotations

import pytest
import torch

from tesla_podd import devices, numerics
from tesla_podd.devices import DriverInfo, JobInfo, arch_supported, resolve_device
from tesla_podd.errors import ConfigError


def _fake_gpus(monkeypatch, count=1, capability=(9, 0), archs=("sm_80", "sm_90")):
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: current.append(i))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return current


def test_auto_with_an_unusable_nvidia_gpu_stops_with_the_driver_wheel_and_pip_command(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(devices, "nvidia_driver", lambda: DriverInfo("470.57.02", ("Tesla V100-SXM2-16GB",)))
    with pytest.raises(ConfigError) as err:
        resolve_device("auto", JobInfo())
    msg = str(err.value)
    assert "driver 470.57.02" in msg and "Tesla V100" in msg and "torch.cuda.is_available() is False" in msg
    assert f"wheel CUDA {torch.version.cuda or 'none'}" in msg
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cu" in msg
    assert "`device=cpu`" in msg and "\n" not in msg, "one paragraph, naming the way to run on the CPU on purpose"
    assert resolve_device("cpu", JobInfo()) == torch.device("cpu"), "the CPU on purpose is still fine"
    monkeypatch.setattr(devices, "nvidia_driver", lambda: None)
    assert resolve_device("auto", JobInfo()) == torch.device("cpu"), "no NVIDIA device at all: the CPU"


def test_a_gpu_architecture_the_wheel_lacks_stops_with_a_newer_wheel(monkeypatch):
    _fake_gpus(monkeypatch, capability=(12, 0), archs=("sm_80", "sm_90"))
    monkeypatch.setattr(devices, "nvidia_driver", lambda: DriverInfo("575.51"))
    with pytest.raises(ConfigError, match=r"sm_120 is not among the wheel's.*sm_80, sm_90.*whl/cu128"):
        resolve_device("auto", JobInfo())


def test_arch_compatibility_rules():
    assert arch_supported((8, 6), ["sm_80"]), "a cubin runs on a newer minor of its major"
    assert not arch_supported((8, 0), ["sm_86"]), "not on an older minor"
    assert not arch_supported((9, 0), ["sm_80", "sm_86"]), "nor on another major"
    assert arch_supported((9, 0), ["sm_80", "compute_80"]), "PTX JIT-compiles for newer GPUs"
    assert arch_supported((9, 0), ["sm_90a"])
    assert not arch_supported((3, 7), ["sm_50", "compute_50"])


def test_cuda_index_is_range_checked_and_made_current(monkeypatch):
    current = _fake_gpus(monkeypatch, count=2)
    assert resolve_device("cuda:1", JobInfo()) == torch.device("cuda:1")
    assert current == [1], "cuda:N becomes the current device"
    with pytest.raises(ConfigError, match=r"`device=cuda:2`: this job sees 2 GPU\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:2", JobInfo())
    with pytest.raises(ConfigError, match=r"`device=cuda:x`"):
        resolve_device("cuda:x", JobInfo())


def test_precision_and_determinism_are_set_and_recorded(monkeypatch):
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        state = numerics.apply_numerics("fp32", False, torch.device("cuda", 0))
        assert state["allow_tf32_matmul"] is False and state["allow_tf32_cudnn"] is False
        assert state["precision_matmul"] == "highest" and state["cudnn_benchmark"] is True
        state = numerics.apply_numerics("tf32", True, torch.device("cuda", 0))
        assert state["allow_tf32_matmul"] is True and state["precision_matmul"] == "high"
        assert state["deterministic"] is True and state["cudnn_benchmark"] is False, "no autotuning when deterministic"
        with pytest.raises(ConfigError, match="`precision`"):
            numerics.apply_numerics("bf16", False, torch.device("cpu"))
        before = torch.get_float32_matmul_precision()
        numerics.apply_numerics("tf32", False, torch.device("cpu"))
        assert torch.get_float32_matmul_precision() == before, "CPU numerics are left alone"
    finally:
        torch.use_deterministic_algorithms(False)
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = saved[:2]
        torch.set_float32_matmul_precision(saved[2])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[3], saved[4]


def test_meta_json_records_device_numerics_and_compile(tmp_path):
    import json

    from omegaconf import OmegaConf

    from tesla_podd.train import write_meta

    cfg = OmegaConf.create({"algorithm": {"compile": True, "compile_mode": "default"}, "buffer": {"compile": False}})
    write_meta(tmp_path, torch.device("cpu"), numerics.numerics_state(), cfg)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["cuda"] == torch.version.cuda and "cudnn" in meta and meta["device"] == "cpu"
    assert set(meta["numerics"]) >= {"allow_tf32_matmul", "allow_tf32_cudnn", "cudnn_benchmark", "deterministic"}
    assert meta["compile"] == {"algorithm": True, "algorithm_mode": "default", "buffer": False}


def test_a_deterministic_smoke_run_writes_its_numerics(smoke_cfg, tmp_path):
    """deterministic=true through buffer and distill (DSA scale/rotate on the matmul sampler): no op refuses."""
    import json

    from tesla_podd.train import run

    try:
        run(smoke_cfg("deterministic=true", "precision=fp32", "stages=[buffer,distill]",
                      "augment.strategy=scale_rotate", "algorithm.iterations=2"), run_dir=tmp_path / "r")
        meta = json.loads((tmp_path / "r" / "meta.json").read_text())
        assert meta["numerics"]["deterministic"] is True
    finally:
        torch.use_deterministic_algorithms(False)
    assert (tmp_path / "r" / "synset.pt").exists()
