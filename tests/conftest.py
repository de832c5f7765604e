"""Shared fixtures: compose configs like the CLI does, run stages in-process, find ../shared/data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED_DATA = REPO.parent / "shared" / "data"

# Tiny nets: one thread is fastest and immune to oversubscription on a busy 2-core machine.
torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "disabled")


def compose_cfg(*overrides: str, tmp: Path | None = None):
    """Compose `conf/train.yaml` with overrides (Hydra's own resolution, `${hydra:...}` included)."""
    GlobalHydra.instance().clear()
    extra = []
    if tmp is not None:
        extra = [f"paths.output_root={tmp}/outputs", f"hydra.run.dir={tmp}/run"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=[*overrides, *extra], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def smoke_cfg(tmp_path):
    def make(*overrides):
        return compose_cfg("debug=smoke", "num_threads=1", *overrides, tmp=tmp_path)

    return make


def run_killed_then_resumed(make_cfg, overrides, run_dir: Path, monkeypatch, at: int = 2) -> None:
    """Distill in-process with `overrides`, interrupted (KeyboardInterrupt) right after iteration `at` wrote its
    checkpoint, then continued to the end with resume=true: what a user's killed and restarted run does."""
    from tesla_podd.stages import distill as distill_stage
    from tesla_podd.train import run

    checked = distill_stage.check_values

    def killed_after_iteration(*args, **kwargs):
        if args[3] == at:  # check_values(roles, lr, bound, it, ...): after the checkpoint of iteration `at`
            raise KeyboardInterrupt
        return checked(*args, **kwargs)

    monkeypatch.setattr(distill_stage, "check_values", killed_after_iteration)
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(*overrides), run_dir=run_dir)
    monkeypatch.undo()
    run(make_cfg(*overrides, "resume=true"), run_dir=run_dir)


@pytest.fixture
def no_compiler(monkeypatch):
    """torch.compile as on a machine without Python headers: every compiled call fails."""
    from tesla_podd import compiling

    def broken_compile(fn, backend, options=None):
        def call(*args, **kwargs):
            raise RuntimeError("fatal error: Python.h: No such file or directory")
        return call

    monkeypatch.setattr(compiling.torch, "compile", broken_compile)


def run_cli(*args: str, cwd: Path = REPO, timeout: int = 300, env_extra: dict | None = None):
    """`python -m tesla_podd.train args...` as a user would run it; returns CompletedProcess."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "tesla_podd.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def pytest_collection_modifyitems(config, items):
    """`gpu`-marked tests skip, each with the reason, where torch sees no CUDA device (so `make test-all` passes on
    a CPU-only machine and the same tests run on a GPU one)."""
    if torch.cuda.is_available():
        return
    why = pytest.mark.skip(reason=f"needs a CUDA device: torch {torch.__version__} (CUDA build "
                                  f"{torch.version.cuda or 'none'}) sees none here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(why)


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()
