"""One device per job: which device `device=auto|cpu|cuda|cuda:N` means for this job.

- `CUDA_VISIBLE_DEVICES` is honoured (torch only sees those GPUs; a SLURM job sees the ones it was given).
- A local multirun (several jobs of one machine, e.g. `hydra/launcher=local`) spreads its jobs over the
  visible GPUs: job j first tries GPU j mod (GPU count), holding a per-GPU lease file while it runs, so two
  running jobs never share a GPU while another one idles.
- GPUs requested but none visible is an error, never a silent CPU run: `device=cuda`, a launcher asking for
  `gpus_per_node > 0`, or `device=auto` in a job whose launcher hid every GPU (`CUDA_VISIBLE_DEVICES=""`,
  which submitit_local does without `gpus_per_node`)."""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ConfigError, check_choice

log = logging.getLogger(__name__)
_held_lease: int | None = None  # fd of this process's GPU lease (released when the next job in it starts)


@dataclass(frozen=True)
class JobInfo:
    """What the launcher tells a job: its number in a multirun and the GPUs it asked for."""

    num: int | None = None          # hydra.job.num in a multirun, None in a single run
    gpus_requested: int = 0         # hydra.launcher.gpus_per_node (submitit), 0 when absent


def job_info() -> JobInfo:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except Exception:  # no Hydra (library use, some tests)
        return JobInfo()
    multirun = hc.mode == RunMode.MULTIRUN
    gpus = hc.launcher.get("gpus_per_node") if "launcher" in hc else None
    return JobInfo(num=int(hc.job.num) if multirun and hc.job.get("num") is not None else None,
                   gpus_requested=int(gpus or 0))


def resolve_device(name: str, job: JobInfo | None = None) -> torch.device:
    name = str(name)
    check_choice("device", name.split(":")[0], ["auto", "cpu", "cuda"])
    job = job if job is not None else job_info()
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if count == 0 and (name.startswith("cuda") or job.gpus_requested > 0 or (name == "auto" and visible == "")):
        why = (f"`device={name}`" if name.startswith("cuda") else
               f"the launcher asked for `hydra.launcher.gpus_per_node={job.gpus_requested}`" if job.gpus_requested
               else "`device=auto` in a job its launcher gave no GPU")
        raise ConfigError(
            f"GPUs were requested ({why}) but this job sees none (CUDA_VISIBLE_DEVICES={visible!r}, "
            f"torch.cuda.is_available()={torch.cuda.is_available()}). On a GPU machine give each job one GPU "
            "(`hydra.launcher.gpus_per_node=1` with submitit launchers); to run on the CPU on purpose set `device=cpu`."
        )
    if name == "cpu" or count == 0:
        return torch.device("cpu")
    if name.startswith("cuda:"):
        return torch.device(name)
    index = _lease_gpu(job.num, count) if job.num is not None and count > 1 else 0
    torch.cuda.set_device(index)  # so a bare "cuda" anywhere means this job's GPU
    return torch.device(f"cuda:{index}")


def _lease_gpu(job_num: int, count: int) -> int:
    """GPU for job `job_num`: the first free one starting at job_num mod count (an flock per physical GPU,
    released by the kernel when the process dies); job_num mod count with a warning when all are busy."""
    global _held_lease
    if _held_lease is not None:  # a reused worker process (joblib): the previous job is over
        os.close(_held_lease)
        _held_lease = None
    ids = (os.environ.get("CUDA_VISIBLE_DEVICES") or ",".join(map(str, range(count)))).split(",")
    for step in range(count):
        index = (job_num + step) % count
        path = Path(tempfile.gettempdir()) / f"tesla-podd-gpu-{ids[index].strip()}.lease"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _held_lease = fd
        log.info("job %d: GPU %d of %d (leased)", job_num, index, count)
        return index
    log.warning("job %d: every GPU is leased by another job; sharing GPU %d", job_num, job_num % count)
    return job_num % count
