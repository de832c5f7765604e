"""W&B: offline by default, never hangs without network, metrics and images reach the run."""

from __future__ import annotations

import time

import pytest
from omegaconf import OmegaConf

from tesla_podd import tracking
from tesla_podd.errors import ConfigError


def _cfg(mode, resume=False, resume_dir=None):
    return OmegaConf.create({"wandb": {"mode": mode, "project": "tesla-podd-test", "entity": None, "group": "g",
                                       "name": None, "tags": ["test"]}, "seed": 0, "stages": ["distill", "eval"],
                             "resume": resume, "resume_dir": resume_dir})


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


def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # artifact staging stays in tmp
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))


def test_run_id_is_kept_in_the_run_dir_and_a_resumed_run_continues_it(tmp_path, monkeypatch):
    _offline(monkeypatch, tmp_path)
    first = tracking.Tracker.start(_cfg("offline"), tmp_path / "a", stages=["buffer", "distill"])
    try:
        rid = first.run.id
        assert first.run.job_type == "buffer+distill"
    finally:
        first.finish()
    assert (tmp_path / "a" / "wandb_run_id").read_text().strip() == rid
    again = tracking.Tracker.start(_cfg("offline"), tmp_path / "a")  # a requeued job: same run dir
    resumed = tracking.Tracker.start(_cfg("offline", resume="auto", resume_dir=str(tmp_path / "a")), tmp_path / "b")
    fresh = tracking.Tracker.start(_cfg("offline"), tmp_path / "c")
    try:
        assert again.run.id == rid and resumed.run.id == rid and fresh.run.id != rid
        assert again.run.job_type == "distill+eval"
    finally:
        for t in (again, resumed, fresh):
            t.finish()
    assert len(list((tmp_path / "a" / "wandb").glob(f"offline-run-*-{rid}"))) >= 1


@pytest.mark.slow
def test_offline_pipeline_logs_buffer_reference_synset_and_eval_table(smoke_cfg, tmp_path, monkeypatch):
    """buffer (reference: nothing copied) -> synset -> eval table, all in the offline run, ready for `wandb sync`."""
    _offline(monkeypatch, tmp_path)
    from tesla_podd.train import run

    run(smoke_cfg("method=tesla", "wandb=default"), run_dir=tmp_path / "run")
    import wandb

    wandb.teardown()  # the W&B service writes the offline log asynchronously: flush it
    (log,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    data = log.read_bytes()
    for name in (b"buffer-fake-convnet", b"synset-tesla-pixels-fake-ipc1", b"eval-tesla-pixels-fake-ipc1",
                 b"eval/table", b"buffer+distill+eval"):
        assert name in data, name
    copies = [p for p in tmp_path.rglob("expert_*.pt") if "buffers" not in p.parts]
    assert copies == [], "the buffer is a reference artifact: its expert files are never copied or uploaded"
    staged = [p.stat().st_size for p in (tmp_path / "wandb-data").rglob("*") if p.is_file()]
    assert max(staged) < 200_000, "only the small synset and table are staged for upload"


def test_eval_table_cells():
    assert tracking._cell({"a": 1}) == '{"a": 1}' and tracking._cell(2.5) == 2.5 and tracking._cell(None) is None
    assert tracking.artifact_name("synset", "tesla/pixels ipc0.4") == "synset-tesla-pixels-ipc0.4"
