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


def run_cli(*args: str, cwd: Path = REPO, timeout: int = 300, env_extra: dict | None = None):
    """`python -m tesla_podd.train args...` as a user would run it; returns CompletedProcess."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "tesla_podd.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()
