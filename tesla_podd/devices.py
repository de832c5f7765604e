"""One device per job: which device `device=auto|cpu|cuda|cuda:N` means for this job.

- `CUDA_VISIBLE_DEVICES` is honoured (torch only sees those GPUs; a SLURM job sees the ones it was given).
- A local multirun (several jobs of one machine, e.g. `hydra/launcher=local`) spreads its jobs over the
  visible GPUs: job j first tries GPU j mod (GPU count), holding a per-GPU lease file while it runs, so two
  running jobs never share a GPU while another one idles.
- GPUs requested but none visible is an error, never a silent CPU run: `device=cuda`, a launcher asking for
  `gpus_per_node > 0`, or `device=auto` in a job whose launcher hid every GPU (`CUDA_VISIBLE_DEVICES=""`,
  which submitit_local does without `gpus_per_node`).
- An NVIDIA GPU that this torch build cannot use (a driver older than the wheel's CUDA, an architecture the wheel
  has no kernels for) is an error too: one paragraph with the driver, the wheel's CUDA, its architectures and the
  pip command for a matching wheel, instead of a days-long CPU run.
- `cuda:N` is range-checked and made current (torch.cuda.set_device), so a bare "cuda" anywhere means that GPU."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
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
    if count == 0 and name != "cpu" and visible != "":
        driver = nvidia_driver()
        if driver is not None:  # a GPU is there and torch cannot use it: never a silent CPU run
            raise ConfigError(unusable_gpu_message(f"`device={name}`", driver, "torch.cuda.is_available() is False"))
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
        index = _explicit_index(name, count)
        _check_arch(name, index)
        torch.cuda.set_device(index)  # so a bare "cuda" (and every unplaced CUDA tensor) means this GPU
        return torch.device(f"cuda:{index}")
    index = _lease_gpu(job.num, count) if job.num is not None and count > 1 else 0
    _check_arch(name, index)
    torch.cuda.set_device(index)  # so a bare "cuda" anywhere means this job's GPU
    return torch.device(f"cuda:{index}")


def _explicit_index(name: str, count: int) -> int:
    text = name.split(":", 1)[1]
    if not text.isdigit() or int(text) >= count:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise ConfigError(f"`device={name}`: this job sees {count} GPU(s), cuda:0 to cuda:{count - 1} "
                          f"(CUDA_VISIBLE_DEVICES={visible!r}; indices count the visible GPUs only). Choose one of "
                          "those, or `device=cuda` / `device=auto` for the first.")
    return int(text)


@dataclass(frozen=True)
class DriverInfo:
    """What the NVIDIA driver says about the machine, read without torch."""

    version: str  # e.g. "535.104.05", or "unknown"
    gpus: tuple[str, ...] = ()  # GPU names, when nvidia-smi answered


def nvidia_driver() -> DriverInfo | None:
    """The NVIDIA driver of this machine (nvidia-smi, else /proc/driver/nvidia/version), None when there is none."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=driver_version,name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            rows = [r.split(",", 1) for r in out.stdout.strip().splitlines() if "," in r]
            if out.returncode == 0 and rows:
                return DriverInfo(rows[0][0].strip(), tuple(r[1].strip() for r in rows))
        except (OSError, subprocess.SubprocessError):
            pass
    proc = Path("/proc/driver/nvidia/version")
    if proc.exists():
        m = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?([0-9][0-9.]+)", proc.read_text(errors="replace"))
        return DriverInfo(m.group(1) if m else "unknown")
    return None


def arch_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a wheel built for `arch_list` (torch.cuda.get_arch_list()) runs on a GPU of `capability`: a cubin
    of the same major and no newer minor (sm_80 runs on 8.6), or PTX of an older or equal arch (JIT-compiled)."""
    major, minor = capability
    for arch in arch_list:
        m = re.fullmatch(r"(sm|compute)_(\d+)(\d)[a-z]?", arch)
        if not m:
            continue
        a_major, a_minor = int(m.group(2)), int(m.group(3))
        if m.group(1) == "sm" and a_major == major and a_minor <= minor:
            return True
        if m.group(1) == "compute" and (a_major, a_minor) <= (major, minor):
            return True
    return False


def _check_arch(name: str, index: int) -> None:
    try:
        cap = tuple(torch.cuda.get_device_capability(index))
        archs = list(torch.cuda.get_arch_list())
    except Exception:  # noqa: BLE001  (no way to tell: let the first kernel speak)
        return
    if archs and not arch_supported(cap, archs):
        driver = nvidia_driver() or DriverInfo("unknown")
        raise ConfigError(unusable_gpu_message(
            f"`device={name}`", driver, f"the GPU's architecture sm_{cap[0]}{cap[1]} is not among the wheel's",
            newer=cap > max(_arch_caps(archs), default=(0, 0))))


def _arch_caps(archs: list[str]) -> list[tuple[int, int]]:
    return [(int(m.group(1)), int(m.group(2))) for a in archs if (m := re.fullmatch(r"\w+_(\d+)(\d)[a-z]?", a))]


def unusable_gpu_message(why: str, driver: DriverInfo, problem: str, newer: bool = False) -> str:
    """One paragraph: what is there, what this torch was built for, and the pip command for a wheel that fits."""
    try:
        archs = ", ".join(torch.cuda.get_arch_list()) or "none"
    except Exception:  # noqa: BLE001
        archs = "unknown"
    gpus = f" ({', '.join(driver.gpus)})" if driver.gpus else ""
    wheel = torch.version.cuda or "none (a CPU-only build)"
    tag = "cu128" if newer else ("cu118" if torch.version.cuda else "cu121")
    return (f"{why}: this machine has an NVIDIA GPU{gpus} with driver {driver.version}, but this torch "
            f"{torch.__version__} cannot use it: {problem} (wheel CUDA {wheel}, architectures {archs}). A driver "
            "older than the wheel's CUDA needs a wheel built for an older CUDA (or a newer driver); a GPU newer or "
            "older than the wheel's architectures needs a wheel that has them. For example: `pip install torch "
            f"torchvision --index-url https://download.pytorch.org/whl/{tag}` (see pytorch.org for the wheel that "
            "matches your driver). To run on the CPU on purpose set `device=cpu`.")


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
        except OSError as exc:  # no locks on this file system (NFS/Lustre temp dir): leases are a convenience
            os.close(fd)
            log.warning("job %d: GPU leases need file locks, which %s refuses (%s); using GPU %d (job number "
                        "mod GPUs)", job_num, path.parent, exc.strerror or type(exc).__name__, job_num % count)
            return job_num % count
        _held_lease = fd
        log.info("job %d: GPU %d of %d (leased)", job_num, index, count)
        return index
    log.warning("job %d: every GPU is leased by another job; sharing GPU %d", job_num, job_num % count)
    return job_num % count
