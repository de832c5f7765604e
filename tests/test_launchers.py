"""Launchers as config and one device per job: local (joblib) and submitit_local multiruns, GPU leases,
and a clear error when GPUs were asked for but none is visible."""

from __future__ import annotations

import fcntl
import os
import tempfile

import pytest
import torch
from conftest import run_cli

from tesla_podd import devices
from tesla_podd.devices import JobInfo, resolve_device
from tesla_podd.errors import ConfigError

# Two tiny jobs: random IPC 1 on fake data, one 5-epoch evaluation network each.
TWO_JOBS = ("debug=smoke", "method=random", "stages=[distill,eval]", "eval.num_models=1", "eval.epochs=5",
            "num_threads=1", "seed=0,1")


def _two_job_sweep(tmp_path, launcher, *extra):
    out = run_cli("-m", f"hydra/launcher={launcher}", *TWO_JOBS, *extra, f"paths.output_root={tmp_path}/o",
                  f"hydra.sweep.dir={tmp_path}/sweep", timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return sorted((tmp_path / "sweep").glob("*/eval.json"))


@pytest.mark.slow
def test_local_launcher_runs_two_jobs_side_by_side(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    evals = _two_job_sweep(tmp_path, "local")
    assert [p.parent.name.split("_")[0] for p in evals] == ["0", "1"]


@pytest.mark.slow
def test_submitit_local_runs_two_jobs(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    evals = _two_job_sweep(tmp_path, "submitit_local")
    assert len(evals) == 2
    assert list((tmp_path / "sweep" / ".submitit").iterdir()), "submitit kept its job logs"


@pytest.mark.slow
def test_submitit_local_without_gpus_refuses_device_auto(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    out = run_cli("-m", "hydra/launcher=submitit_local", *TWO_JOBS[:-1], "device=auto",
                  f"paths.output_root={tmp_path}/o", f"hydra.sweep.dir={tmp_path}/sweep", timeout=600)
    assert out.returncode != 0
    logs = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").rglob("*.err"))
    assert "GPUs were requested" in logs + out.stderr and "device=cpu" in logs + out.stderr


def test_gpus_requested_but_none_visible_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "nvidia_driver", lambda: None)  # no NVIDIA device on this machine either
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ConfigError, match=r"GPUs were requested \(`device=cuda`\).*sees none.*`device=cpu`"):
        resolve_device("cuda", JobInfo())
    with pytest.raises(ConfigError, match=r"hydra.launcher.gpus_per_node=1.*gpus_per_node=1"):
        resolve_device("auto", JobInfo(gpus_requested=1))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # what submitit_local gives a job without gpus_per_node
    with pytest.raises(ConfigError, match=r"`device=auto` in a job its launcher gave no GPU.*CUDA_VISIBLE_DEVICES=''"):
        resolve_device("auto", JobInfo(num=0))
    assert resolve_device("cpu", JobInfo(num=0)) == torch.device("cpu"), "the CPU on purpose is fine"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert resolve_device("auto", JobInfo()) == torch.device("cpu"), "no GPU asked for, none there: the CPU"
    with pytest.raises(ConfigError, match="`device` is 'tpu'"):
        resolve_device("tpu", JobInfo())


def test_multirun_jobs_spread_over_visible_gpus_with_leases(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: None)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
    assert resolve_device("auto", JobInfo(num=2)) == torch.device("cuda:0")
    assert resolve_device("auto", JobInfo(num=3)) == torch.device("cuda:1"), "job j -> GPU j mod 2"
    assert resolve_device("auto", JobInfo()) == torch.device("cuda:0"), "a single run: the first visible GPU"
    assert resolve_device("cuda:1", JobInfo(num=0)) == torch.device("cuda:1"), "an explicit index is kept"
    _release_lease()  # job 3 is over
    # Another running job holds physical GPU 7 (index 1): job 5 takes the free one instead.
    fd = os.open(tmp_path / "tesla-podd-gpu-7.lease", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert resolve_device("auto", JobInfo(num=5)) == torch.device("cuda:0")
    finally:
        os.close(fd)
        _release_lease()


def _release_lease():
    if devices._held_lease is not None:
        os.close(devices._held_lease)
        devices._held_lease = None


@pytest.mark.slow
def test_sigkilled_job_rerun_with_resume_auto_equals_uninterrupted(tmp_path, smoke_cfg):
    """What a requeued SLURM job does: the same command in the same run dir, `resume=auto`."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    from tesla_podd.synset.file import SynsetFile
    from tesla_podd.train import run

    run(smoke_cfg("stages=[buffer]"), run_dir=tmp_path / "buffer")  # paths.output_root=<tmp>/outputs
    args = ["debug=smoke", "method=tesla", "stages=[distill]", "algorithm.iterations=150", "distill.checkpoint_every=1",
            "distill.eval_every=0", "num_threads=1", "resume=auto", f"paths.output_root={tmp_path}/outputs"]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}

    def cmd(run_dir):
        return [sys.executable, "-m", "tesla_podd.train", *args, f"hydra.run.dir={run_dir}"]

    job = tmp_path / "job"
    proc = subprocess.Popen(cmd(job), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (job / "checkpoints" / "last.pt").exists() and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (job / "checkpoints" / "last.pt").exists() and not (job / "synset.pt").exists(), "killed mid-way"
    assert subprocess.run(cmd(job), cwd=REPO, env=env, capture_output=True).returncode == 0  # the requeued job
    assert subprocess.run(cmd(tmp_path / "straight"), cwd=REPO, env=env, capture_output=True).returncode == 0
    resumed, straight = SynsetFile.load(job / "synset.pt"), SynsetFile.load(tmp_path / "straight" / "synset.pt")
    assert torch.equal(resumed.images, straight.images) and torch.equal(resumed.labels, straight.labels)
    assert float(resumed.lr) == float(straight.lr)
