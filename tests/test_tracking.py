"""W&B: offline by default, never hangs without network, metrics and images reach the run."""

from __future__ import annotations

import time

import pytest
from omegaconf import OmegaConf

from tesla_podd import tracking
from tesla_podd.errors import ConfigError


def _cfg(mode):
    return OmegaConf.create({"wandb": {"mode": mode, "project": "tesla-podd-test", "entity": None, "group": "g",
                                       "name": None, "tags": ["test"]}, "seed": 0})


def test_mode_resolution(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert tracking.resolve_mode(None) == "offline"
    assert tracking.resolve_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert tracking.resolve_mode("online") == "offline", "the environment wins"
    monkeypatch.delenv("WANDB_MODE")
    with pytest.raises(ConfigError, match="`wandb.mode` is 'loud'"):
        tracking.resolve_mode("loud")


def test_online_without_network_falls_back_quickly(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    t = time.time()
    assert tracking.resolve_mode("online") == "offline"
    assert time.time() - t < 5


def test_offline_run_logs_to_disk(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    tracker = tracking.Tracker.start(_cfg("offline"), tmp_path)
    try:
        assert tracker.enabled
        tracker.log({"eval/acc_mean": 12.5}, step=1)
        png = tmp_path / "x.png"
        from PIL import Image

        Image.new("RGB", (4, 4)).save(png)
        tracker.log_image("distill/synset", png, step=2)
        tracker.summary({"eval/acc_mean": 12.5})
    finally:
        tracker.finish()
        tracker.finish()  # safe twice
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs and any(p.suffix == ".wandb" for p in runs[0].iterdir())


def test_disabled_is_a_no_op(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    tracker = tracking.Tracker.start(_cfg("disabled"), tmp_path)
    assert not tracker.enabled
    tracker.log({"a": 1})
    tracker.finish()
    assert not (tmp_path / "wandb").exists()
