"""The run's numerics policy (`precision`, `deterministic`) and what meta.json records about the device.

- `precision=tf32` lets float32 matmuls and convolutions use TF32 tensor cores on CUDA (Ampere and newer: ~10 bits
  of mantissa in the products, fp32 accumulation); `fp32` keeps full float32 products. Torch's own defaults are
  mixed (TF32 convolutions, fp32 matmuls), so both settings are written explicitly. CPU runs are not touched: the
  flags only exist for CUDA (and `set_float32_matmul_precision` could switch oneDNN to bf16 passes on some CPUs).
- `deterministic=true` asks torch for deterministic kernels everywhere (an error, not a warning, where none
  exists), sets CUBLAS_WORKSPACE_CONFIG, turns cuDNN autotuning off, and makes DSA's scale/rotate use a sampler
  whose backward is a sum of matmuls instead of grid_sample's atomic adds (data/bilinear.py). That is what makes a
  resumed or repeated CUDA run bit-exact; it costs speed (no autotuned convolutions, the slower sampler).
- `cudnn.benchmark` (autotuned convolutions) is on for CUDA runs that are not deterministic: every recipe's shapes
  are fixed per run, so the search happens once per shape."""

from __future__ import annotations

import os

import torch

from .errors import check_choice

PRECISIONS = ("tf32", "fp32")


def apply_numerics(precision: str, deterministic: bool, device: torch.device) -> dict:
    """Set torch's global numerics for this run; returns the state for meta.json."""
    check_choice("precision", str(precision), PRECISIONS)
    if device.type == "cuda":
        tf32 = str(precision) == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        # cuBLAS needs this before its first handle is made for deterministic reductions (harmless on CPU).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
    return numerics_state()


def numerics_state() -> dict:
    return {"precision_matmul": torch.get_float32_matmul_precision(),
            "allow_tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "allow_tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "deterministic": bool(torch.are_deterministic_algorithms_enabled())}


def device_info(device: torch.device) -> dict:
    """GPU name, capability, memory, driver, CUDA and cuDNN versions of this run's device (CPU: the versions only)."""
    info = {"cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if device.type == "cuda":
        from .devices import nvidia_driver

        props = torch.cuda.get_device_properties(device)
        driver = nvidia_driver()
        info.update({"gpu": props.name, "capability": f"{props.major}.{props.minor}",
                     "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                     "driver": driver.version if driver else None})
    return info
