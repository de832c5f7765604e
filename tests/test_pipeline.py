"""End-to-end: buffer + random + eval on fake data, re-evaluation, buffer resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch
from conftest import REPO, run_cli

from tesla_podd.expert_store import open_store
from tesla_podd.synset.file import SynsetFile
from tesla_podd.train import run


def test_smoke_buffer_random_eval_in_process(smoke_cfg, tmp_path):
    cfg = smoke_cfg("method=random")
    run(smoke_cfg("method=random", "stages=[buffer]"), run_dir=tmp_path / "buffer")  # random itself needs none
    acc = run(cfg, run_dir=tmp_path / "run")
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert set(report) >= {"accs", "mean", "std", "num_models", "model", "protocol"}
    assert report["num_models"] == 2 and len(report["accs"]) == 2
    assert abs(report["mean"] - acc) < 1e-9
    assert report["mean"] > 60.0, "fake data is class-separable: one real image per class must beat chance (25%)"
    assert (tmp_path / "run" / "synset.png").stat().st_size > 100
    syn = SynsetFile.load(tmp_path / "run" / "synset.pt")
    assert syn.images.shape == (4, 3, 16, 16) and syn.labels.tolist() == [0, 1, 2, 3] and syn.lr is None
    # the buffer: 2 experts x (4 epochs + init), one file each
    trajs = open_store(cfg).load_trajectories(need_epochs=4)
    assert len(trajs) == 2 and trajs[0].shape[0] == 5
    assert not torch.equal(trajs[0][0], trajs[1][0]), "experts start from different inits"


def test_reevaluate_saved_set_gives_same_numbers(smoke_cfg, tmp_path):
    run(smoke_cfg("method=random", "stages=[distill,eval]"), run_dir=tmp_path / "a")
    first = json.loads((tmp_path / "a" / "eval.json").read_text())
    cfg = smoke_cfg("method=random", "stages=[eval]", f"eval.synset_path={tmp_path / 'a' / 'synset.pt'}")
    run(cfg, run_dir=tmp_path / "b")
    second = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert second["accs"] == first["accs"], "evaluation is seeded per model index"


def test_cli_smoke_writes_outputs_and_returns(tmp_path):
    out = run_cli("debug=smoke", "method=random", "stages=[distill,eval]", f"paths.output_root={tmp_path}/o",
                  f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "eval accuracy:" in out.stdout
    assert (tmp_path / "run" / "eval.json").exists() and (tmp_path / "run" / ".hydra" / "config.yaml").exists()


def test_multirun_sweep(tmp_path):
    out = run_cli("-m", "debug=smoke", "method=random", "stages=[distill,eval]", "eval.num_models=1", "eval.epochs=5",
                  "seed=0,1", f"paths.output_root={tmp_path}/o", f"hydra.sweep.dir={tmp_path}/sweep")
    assert out.returncode == 0, out.stderr[-2000:]
    evals = sorted((tmp_path / "sweep").glob("*/eval.json"))
    assert len(evals) == 2


def _buffer_proc(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    # Wide enough that one expert takes seconds even on an idle machine: the kill below must land mid-way.
    args = ["debug=smoke", "stages=[buffer]", "buffer.num_experts=3", "buffer.train_epochs=12", "model.width=48",
            f"paths.output_root={tmp_path}/o", f"hydra.run.dir={tmp_path}/r"]
    return [sys.executable, "-m", "tesla_podd.train", *args], env


def test_buffer_resumes_after_sigkill_and_matches_uninterrupted(tmp_path, smoke_cfg):
    cmd, env = _buffer_proc(tmp_path)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    cfg = smoke_cfg("buffer.num_experts=3", "buffer.train_epochs=12", "model.width=48")
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.paths.output_root = f"{tmp_path}/o"
        cfg.paths.buffer_root = f"{tmp_path}/o/buffers"
    store = open_store(cfg)
    # Kill it mid-way: as soon as the first expert is done (the second is then in progress).
    deadline = time.time() + 240
    while time.time() < deadline:
        m = store.read_manifest() if store.manifest_path.exists() else None
        if m and m["num_experts"] >= 1:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = store.read_manifest()["num_experts"]
    assert 1 <= done_before < 3
    # Rerun: continues, and the result equals an uninterrupted build in another folder.
    assert subprocess.run(cmd, cwd=REPO, env=env, capture_output=True).returncode == 0
    resumed = store.load_trajectories(12)
    assert len(resumed) == 3
    fresh_root = tmp_path / "fresh"
    cmd2 = [c.replace(f"{tmp_path}/o", str(fresh_root)) for c in cmd]
    assert subprocess.run(cmd2, cwd=REPO, env=env, capture_output=True).returncode == 0
    with open_dict(cfg):
        cfg.paths.buffer_root = f"{fresh_root}/buffers"
    fresh = open_store(cfg).load_trajectories(12)
    for a, b in zip(resumed, fresh):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
