"""Sweeps as users expect them: the W&B group names the swept keys, a killed multirun re-launched with the same
command and resume=auto continues every job, and an Optuna search runs through Hydra's sweeper."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import REPO, compose_cfg, run_cli
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from tesla_podd import tracking
from tesla_podd.errors import ConfigError
from tesla_podd.sweeps import MAX_GROUP, group_with_values, job_values, swept_keys, wandb_group
from tesla_podd.train import objective_value


def test_swept_keys_and_job_values():
    keys = swept_keys(["debug=smoke", "algorithm.lr_img=100,1000", "seed=range(0,2)", "paths.data_dir=/x"],
                      {"algorithm.lr_lr": "interval(1e-8,1e-5)"})
    assert keys == ["algorithm.lr_img", "seed", "algorithm.lr_lr"]
    values = job_values(["debug=smoke", "algorithm.lr_img=100", "seed=1", "algorithm.lr_lr=3e-06"], keys)
    assert values == ["algorithm.lr_img=100", "algorithm.lr_lr=3e-06"], "seeds aggregate in one group"
    long = group_with_values("g" * 120, ["a=1", "b=2"])
    assert len(long) == MAX_GROUP and long != group_with_values("g" * 120, ["a=1", "b=3"])


def _multirun_job(tmp_path, *job_overrides, sweep=("debug=smoke", "algorithm.lr_img=100,1000", "seed=0,1")):
    """The config one job of `-m <sweep>` sees: Hydra's multirun mode, the sweep's saved command line."""
    cfg = compose_cfg("debug=smoke", *job_overrides, tmp=tmp_path)
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.mode = "MULTIRUN"
        cfg.hydra.sweep.dir = str(tmp_path / "sweep")
        cfg.hydra.overrides.task = ["debug=smoke", *job_overrides]
    (tmp_path / "sweep").mkdir()
    OmegaConf.save({"hydra": {"overrides": {"task": list(sweep)}}}, tmp_path / "sweep" / "multirun.yaml")
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_wandb_group_of_a_multirun_job_names_its_swept_values(tmp_path, monkeypatch):
    cfg = _multirun_job(tmp_path, "algorithm.lr_img=1000", "seed=1")
    assert wandb_group(cfg) == f"{cfg.run_name} algorithm.lr_img=1000"
    seen = {}

    class FakeRun:
        group = None

    def fake_init(**kwargs):
        seen.update(kwargs)
        return FakeRun()

    import wandb

    monkeypatch.setattr(wandb, "init", fake_init)
    monkeypatch.setenv("WANDB_MODE", "offline")
    tracking.Tracker.start(cfg, tmp_path / "run", ["distill"])
    assert seen["group"] == f"{cfg.run_name} algorithm.lr_img=1000"


def test_wandb_group_set_by_the_user_is_kept(tmp_path):
    cfg = _multirun_job(tmp_path, "algorithm.lr_img=1000", "wandb.group=mine")
    assert wandb_group(cfg) == "mine"


# Two jobs of 16 RaT-BPTT iterations each (no buffer), a checkpoint after every iteration.
KILLED = ("-m", "debug=smoke", "method=rat_bptt", "stages=[distill]", "algorithm.iterations=16",
          "distill.checkpoint_every=1", "distill.eval_every=0", "num_threads=1", "seed=0,1", "sweep_name=killed",
          "resume=auto")


def test_killed_multirun_relaunched_with_the_same_command_continues_every_job(tmp_path):
    args = (*KILLED, f"paths.output_root={tmp_path}")
    sweep = tmp_path / "multirun" / "killed"
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tesla_podd.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # kill the whole multirun the moment job 1 saved its first checkpoint
        deadline = time.time() + 240
        while not list(sweep.glob("1_*/checkpoints/last.pt")):
            assert proc.poll() is None, "the multirun ended before job 1 saved a checkpoint"
            assert time.time() < deadline, "job 1 saved no checkpoint in time"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    job0, job1 = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert (job0 / "synset.pt").is_file() and not (job1 / "synset.pt").exists(), "killed during job 1"

    out = run_cli(*args)  # the same command again
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert f"resumed from {job0}/checkpoints/last.pt at iteration 16" in log, "job 0 was finished: nothing redone"
    resumed = [line for line in log.splitlines() if f"resumed from {job1}/checkpoints/last.pt" in line]
    assert resumed and 0 < int(resumed[0].rsplit(" ", 1)[1]) < 16, "job 1 continued from its checkpoint"
    assert (job1 / "synset.pt").is_file()


def test_optuna_search_two_trials_on_smoke_data(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    out = run_cli("-m", "hparams_search=optuna_tesla", "debug=smoke", "hydra.sweeper.n_trials=2",
                  "eval.num_models=1", "eval.epochs=5", "num_threads=1", "sweep_name=search",
                  f"paths.output_root={tmp_path}", timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    sweep = tmp_path / "multirun" / "search"
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"algorithm.lr_img", "algorithm.lr_lr", "algorithm.syn_steps"}
    trials = [p for p in sweep.iterdir() if p.is_dir()]
    assert len(trials) == 2, "one run dir per trial"
    # The search maximised the validation accuracy (a diverged trial scores 0), never the test accuracy.
    scores = [json.loads((t / "results.json").read_text())["eval/val_mean"] if (t / "results.json").is_file()
              else 0.0 for t in trials]
    assert results["best_value"] == pytest.approx(max(scores))


def test_objective_is_the_validation_mean_when_asked():
    cfg = OmegaConf.create({"objective": "eval/val_mean"})
    assert objective_value(cfg, {"eval/acc_mean": 50.0, "eval/val_mean": 40.0}) == 40.0
    assert objective_value(cfg, {"distill/num_images": 4}) is None, "no evaluation ran: nothing to return"
    with pytest.raises(ConfigError, match=r"`objective` is 'eval/val_mean'.*dataset.val_size"):
        objective_value(cfg, {"eval/acc_mean": 50.0})
