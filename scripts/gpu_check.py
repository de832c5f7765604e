#!/usr/bin/env python
"""The GPU path checked in one prepared run, with a global deadline, for a fresh one-GPU machine.

Steps, in order (each writes the JSON and Markdown report again the moment it ends):
  env       torch, CUDA, cuDNN, GPU, driver, compute capability against the wheel's architectures, free memory,
            the project's packages; no usable CUDA device stops the check here (exit 2)
  pytest    `pytest -m gpu` on the test files that carry the marker
  smoke     `python -m tesla_podd.train debug=smoke device=cuda method=M` for every method side by side, and a
            CUDA checkpoint resumed in a process that sees no GPU (every saved file loaded there with torch.load)
  numerics  float64 CUDA vs CPU gradients of unrolled / tesla / exact and of DSA's backward; float32 with TF32 on
            and off against float64; two identical TESLA iterations (bitwise repeatability), and the CUDA ops that
            torch flags as nondeterministic on that path
  syncs     a TESLA iteration at the CIFAR-10 IPC 10 shape (100 images, 30 steps, ConvNetD3 width 128, 32x32)
            through the real distill stage: host-device syncs per iteration (torch.cuda.set_sync_debug_mode),
            GPU busy fraction (union of the profiled CUDA kernels over wall time), seconds per iteration
  eval      5 evaluation networks stacked vs one after another: agreement, and the time of 5 stacked over 1
  compile   compiled vs eager TESLA student steps (algorithm.compile; every algorithm.compile_mode the config
            knows): gradient agreement and seconds per iteration
  bench     trimmed bench_speed (matching vs unrolled, evaluation) and bench_memory at TESLA Table 5's settings
            (CIFAR-100 and ImageNet-1K 64x64, 50 steps, batch 100)

    bash scripts/gpu_check.sh [OUT]                           # what a lent GPU machine runs (docs/gpu.md)
    python scripts/gpu_check.py --out docs/bench/gpu          # the same, without the wheel set-up
    GPU_CHECK_STEPS=compile,bench python scripts/gpu_check.py # rerun chosen steps into the existing report
    python scripts/gpu_check.py --dry-run --out /tmp/x        # every step on the CPU at tiny sizes (a test)

Exit code: 0 when no step failed (a missed speed target is reported, not a failure), 1 when one failed or broke,
2 when the environment stops the check (no usable CUDA device, packages missing)."""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts"), str(REPO / "tests")]
STEPS = ("env", "pytest", "smoke", "numerics", "syncs", "eval", "compile", "bench")
CAPS = {"env": 60, "pytest": 150, "smoke": 150, "numerics": 60, "syncs": 90, "eval": 60, "compile": 120,
        "bench": 210}  # the most seconds each step may take (less when the deadline is nearer)
RESERVE = 5  # seconds kept at the end to write the report
# The targets (docs/gpu.md): TESLA Table 5 on one A6000, and >= 5x that on an H100/H200-class GPU.
TABLE5 = {"cifar100": {"a6000_sec": 14.5, "a6000_gb": 3.6, "target_sec": 2.9},
          "imagenet64": {"a6000_sec": 46.0, "a6000_gb": 13.9, "target_sec": 9.2}}
BUSY_TARGET, STACK_TARGET, SYNC_TARGET = 0.80, 2.0, 10
OWN_ENV: dict = {}  # environment variables this script set for itself, not for the commands it runs


class StepTimeout(Exception):
    pass


@dataclass
class Check:
    out: Path
    dry: bool
    deadline: float  # seconds for the whole check
    steps: list[str]
    start: float = field(default_factory=time.monotonic)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gpu_check_")))
    report: dict = field(default_factory=dict)

    @property
    def device(self) -> str:
        return "cpu" if self.dry else "cuda"

    def left(self) -> float:
        return self.deadline - (time.monotonic() - self.start) - RESERVE

    def budget(self, step: str) -> float:
        return min(CAPS[step], self.left())

    def size(self, dry, full):
        """The tiny size of a dry run, or the real one."""
        return dry if self.dry else full


# ---- report -----------------------------------------------------------------------------------------------
def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename (own helper: the report must be written even when the project's
    packages, and so tesla_podd.atomic, cannot be imported)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def save(check: Check) -> None:
    rep = check.report
    rep["meta"]["seconds"] = round(time.monotonic() - check.start, 1)
    write_atomic(check.out / "gpu_check.json", json.dumps(rep, indent=1, default=str) + "\n")
    write_atomic(check.out / "gpu_check.md", markdown(rep))


def markdown(rep: dict) -> str:
    meta, env = rep["meta"], rep["steps"].get("env", {}).get("data", {})
    gpu = env.get("gpu") or "no GPU"
    lines = ["# GPU check", "",
             f"{'DRY RUN on the CPU (tiny sizes; no GPU figure here). ' if meta.get('dry_run') else ''}"
             f"{gpu}, compute capability {env.get('capability', '-')}, driver {env.get('driver', '-')}, "
             f"torch {env.get('torch', '-')} (CUDA {env.get('cuda_build', '-')}, cuDNN {env.get('cudnn', '-')}). "
             f"Written {meta.get('written')}, {meta.get('seconds')} s of a {meta.get('deadline_s')} s deadline, "
             f"git {meta.get('git') or '-'}.", "",
             "| step | status | seconds | result |", "|---|---|---|---|"]
    for name in STEPS:
        s = rep["steps"].get(name)
        if s:
            lines.append(f"| {name} | {s['status']} | {s.get('seconds', '-')} | {cell(s.get('summary', ''))} |")
    targets = [t for name in STEPS for t in rep["steps"].get(name, {}).get("targets", [])]
    if targets:
        lines += ["", "## Targets", "", "| target | wanted | measured | status |", "|---|---|---|---|"]
        lines += [f"| {t['name']} | {t['wanted']} | {cell(t['measured'])} | {t['status']} |" for t in targets]
    for name in STEPS:
        s = rep["steps"].get(name)
        if s and s.get("lines"):
            lines += ["", f"## {name}", ""] + list(s["lines"])
    return "\n".join(lines) + "\n"


def cell(value) -> str:
    """A value as one Markdown table cell (an error message may hold '|' or line breaks)."""
    return " ".join(str(value).split()).replace("|", "\\|")


def target(name: str, wanted: str, measured, ok: bool | None) -> dict:
    return {"name": name, "wanted": wanted, "measured": "-" if measured is None else measured,
            "status": "n/a" if ok is None else ("met" if ok else "missed")}


# ---- helpers -----------------------------------------------------------------------------------------------
def run_proc(cmd: list[str], timeout: float, env: dict | None = None, cwd: Path = REPO) -> dict:
    """Run a command in its own process group; on timeout the whole group is killed. Returns rc, seconds, output."""
    t = time.monotonic()
    full_env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", **(env or {})}
    if OWN_ENV.get("CUBLAS_WORKSPACE_CONFIG") == full_env.get("CUBLAS_WORKSPACE_CONFIG"):
        full_env.pop("CUBLAS_WORKSPACE_CONFIG", None)  # set for this process's deterministic run only
    proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max(1.0, timeout))
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        timed_out = True
    return {"rc": None if timed_out else proc.returncode, "timed_out": timed_out,
            "seconds": round(time.monotonic() - t, 1), "output": out or ""}


def tail(text: str, n: int = 3, width: int = 300) -> str:
    """The last n non-empty lines of text, for a report line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " / ".join(ln[:width] for ln in lines[-n:])


class alarm:
    """Raise StepTimeout in the main thread after `seconds` (in-process steps; a hung CUDA kernel is left to the
    shell wrapper's timeout)."""

    def __init__(self, seconds: float):
        self.seconds = max(1.0, seconds)

    def __enter__(self):
        def fire(signum, frame):
            raise StepTimeout(f"step ran past its {self.seconds:.0f} s budget")

        self.old = signal.signal(signal.SIGALRM, fire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


def synced(device: str):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def rel_err(a, b) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def sci(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1e}"


# ---- steps -------------------------------------------------------------------------------------------------
def step_env(check: Check) -> dict:
    import torch

    data = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "python": sys.version.split()[0],
            "cuda_available": torch.cuda.is_available(), "cpus": os.cpu_count()}
    lines, stop = [], None
    try:
        data["cudnn"] = torch.backends.cudnn.version()
    except Exception:  # noqa: BLE001
        data["cudnn"] = None
    missing = []
    for pkg in ("hydra", "omegaconf", "kornia", "pytest"):
        try:
            mod = __import__(pkg)
            data[f"pkg_{pkg}"] = getattr(mod, "__version__", "?")
        except ImportError as exc:
            missing.append(f"{pkg} ({exc})")
    try:
        from tesla_podd.devices import arch_supported, nvidia_driver
    except ImportError as exc:
        missing.append(f"tesla_podd ({exc})")
        arch_supported, nvidia_driver = None, lambda: None
    driver = nvidia_driver()
    data["driver"] = driver.version if driver else None
    if torch.cuda.is_available() and arch_supported:
        props = torch.cuda.get_device_properties(0)
        cap = f"{props.major}.{props.minor}"
        arch = torch.cuda.get_arch_list()
        sm = f"sm_{props.major}{props.minor}"
        free, total = torch.cuda.mem_get_info(0)
        data.update(gpu=props.name, capability=cap, arch_list=arch,
                    arch_supported=arch_supported((props.major, props.minor), arch),
                    device_count=torch.cuda.device_count(), free_gib=round(free / 2**30, 1),
                    total_gib=round(total / 2**30, 1), multiprocessors=props.multi_processor_count,
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
        lines.append(f"- GPU: {props.name} (compute capability {cap}, {props.multi_processor_count} SMs), "
                     f"{data['free_gib']} of {data['total_gib']} GiB free, {data['device_count']} visible")
        lines.append(f"- torch {torch.__version__} built for CUDA {torch.version.cuda}, cuDNN {data['cudnn']}, "
                     f"driver {data['driver']}; kernels for {' '.join(arch)}")
        if not data["arch_supported"]:
            stop = (f"This torch wheel has no kernels for {props.name} ({sm}; it has {' '.join(arch)}): install a "
                    "torch build for this GPU (see the matching CUDA version on pytorch.org).")
    try:
        from tesla_podd.devices import resolve_device

        data["device_auto"] = str(resolve_device("auto"))
    except Exception as exc:  # noqa: BLE001  (an honest refusal is a finding, not a crash)
        data["device_auto"] = f"refused: {str(exc)[:600]}"
    lines.append(f"- `device=auto` resolves to: {data['device_auto']}")
    if not (stop or check.dry or torch.cuda.is_available()):
        if data["device_auto"].startswith("refused"):  # the runner's own paragraph: driver, wheel CUDA, pip command
            stop = f"No usable CUDA device: {data['device_auto'][len('refused: '):]}"
        else:
            why = ("no NVIDIA driver answers (nvidia-smi, /proc/driver/nvidia): no GPU here" if not data["driver"]
                   else f"the NVIDIA driver {data['driver']} answers, so the driver is probably older than the CUDA "
                        f"{torch.version.cuda} this torch was built for: install a torch build for an older CUDA "
                        "(pip install torch --index-url https://download.pytorch.org/whl/cu121, say) or a newer "
                        "driver")
            stop = (f"No usable CUDA device: torch {torch.__version__} (built for CUDA {torch.version.cuda}) "
                    f"reports torch.cuda.is_available() = False; {why}. Run the check on a GPU machine, or "
                    "`--dry-run` here.")
    lines.append(f"- Python {data['python']}, {data['cpus']} CPUs; packages: "
                 + ", ".join(f"{k[4:]} {v}" for k, v in data.items() if k.startswith("pkg_")))
    if missing:
        stop = ("Packages the project needs are missing: " + "; ".join(missing) + ". Carry the wheels "
                "(`make gpu-wheels` here, then `carry: [.gpu-wheels]`); scripts/gpu_check.sh installs them.")
    if check.dry and not stop:
        lines.insert(0, "- dry run: no CUDA device needed; the GPU lines below are absent")
    summary = stop or (f"{data.get('gpu', 'CPU (dry run)')}, driver {data['driver']}, "
                       f"{data.get('free_gib', '-')} GiB free")
    return {"status": "fail" if stop else "pass", "summary": summary, "lines": lines, "data": data, "stop": bool(stop)}


def gpu_test_files() -> list[str]:
    """The test files that carry the `gpu` marker (only those are collected: the others may import packages a
    GPU machine was not given, such as wandb)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if "mark.gpu" in p.read_text())


def step_pytest(check: Check) -> dict:
    files = gpu_test_files()
    # The smoke and resume tests are what the smoke step runs (side by side, reported run by run): not twice.
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfEs", "-p", "no:cacheprovider",
           "-k", "not smoke_run_of_every_method and not resumes_in_a_process_without", *files]
    r = run_proc(cmd, check.budget("pytest"))
    import re

    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", r["output"])}
    failed = [ln for ln in r["output"].splitlines() if ln.startswith(("FAILED", "ERROR"))]
    ok = r["rc"] == 0 and not failed
    summary = ", ".join(f"{n} {k}" for k, n in counts.items()) or tail(r["output"], 1)
    if r["timed_out"]:
        summary = f"timed out after {r['seconds']} s ({summary})"
    lines = [f"- `{' '.join(cmd[1:])}`: rc {r['rc']}, {summary}"] + [f"- {ln[:300]}" for ln in failed[:20]]
    if check.dry:
        lines.append("- dry run: every gpu test skips on the CPU (conftest's hook)")
    return {"status": "pass" if ok else "fail", "summary": summary, "lines": lines,
            "data": {"counts": counts, "failed": failed, "rc": r["rc"], "files": files}}


def cli_run(check: Check, overrides: list[str], run_dir: Path, budget: float, device: str | None = None,
            env: dict | None = None) -> dict:
    """`python -m tesla_podd.train debug=smoke device=... overrides` into run_dir/r: rc, seconds, the device its
    meta.json names, the eval accuracy when it evaluated, the error's last lines when it failed."""
    device = device or check.device
    if check.dry:  # the same overrides through tesla_podd.train.run in this process: a Python start-up fewer
        r = run_in_process(["debug=smoke", f"device={device}", *overrides, f"paths.output_root={run_dir}/o"],
                           run_dir / "r")
    else:
        r = run_proc([sys.executable, "-m", "tesla_podd.train", "debug=smoke", f"device={device}", *overrides,
                      f"paths.output_root={run_dir}/o", f"hydra.run.dir={run_dir}/r"], budget, env=env)
    res = {"rc": r["rc"], "seconds": r["seconds"]}
    try:
        res["device"] = json.loads((run_dir / "r" / "meta.json").read_text()).get("device")
        res["acc"] = json.loads((run_dir / "r" / "results.json").read_text()).get("eval/acc_mean")
    except (OSError, ValueError):
        pass
    res["ok"] = r["rc"] == 0 and str(res.get("device", "")).startswith(device)
    if not res["ok"]:
        res["error"] = tail(r["output"])
    return res


def run_in_process(overrides: list[str], run_dir: Path) -> dict:
    """run_proc's answer for tesla_podd.train.run(compose(overrides)) in this process."""
    from tesla_podd.train import run

    t = time.monotonic()
    try:
        run(compose(overrides), run_dir=run_dir)
        rc, output = 0, ""
    except Exception as exc:  # noqa: BLE001  (reported as a failed run)
        rc, output = 1, f"{type(exc).__name__}: {exc}"
    return {"rc": rc, "timed_out": False, "seconds": round(time.monotonic() - t, 1), "output": output}


def smoke_one(check: Check, method: str, budget: float) -> dict:
    return {"method": method, **cli_run(check, [f"method={method}"], check.tmp / "smoke" / method, budget)}


def resume_on_cpu(check: Check, budget: float) -> dict:
    """Distill 2 RaT-BPTT iterations on the device, resume to 3 in a process that sees no GPU, then torch.load
    every saved file there."""
    run_dir, t0 = check.tmp / "resume", time.monotonic()
    fast = ["method=rat_bptt", "stages=[distill]", "distill.eval_every=0", "distill.image_every=0",
            "distill.checkpoint_every=1"]
    no_gpu = {"CUDA_VISIBLE_DEVICES": ""}
    first = cli_run(check, fast + ["algorithm.iterations=2"], run_dir, budget)
    if not first["ok"]:
        return {"ok": False, "error": f"the run on {check.device} failed: {first.get('error')}"}
    second = cli_run(check, fast + ["algorithm.iterations=3", "resume=true"], run_dir,
                     budget - (time.monotonic() - t0), device="cpu", env=no_gpu)
    if not second["ok"]:
        return {"ok": False, "error": f"the resume without a GPU failed: {second.get('error')}"}
    saved = sorted(str(p) for p in (run_dir / "r").rglob("*.pt"))
    if check.dry:  # this process sees no GPU either: load here, one Python start-up fewer
        import torch

        loaded = {p: torch.load(p, weights_only=False) for p in saved}
        reached = str(max(int(v["iteration"]) for p, v in loaded.items() if p.endswith("last.pt")))
        return {"ok": reached == "3", "files": len(saved), "iteration": reached,
                "seconds": round(time.monotonic() - t0, 1)}
    probe = ("import sys, torch\nloaded = {p: torch.load(p, weights_only=False) for p in sys.argv[1:]}\n"
             "print(max(int(v['iteration']) for p, v in loaded.items() if p.endswith('last.pt')))")
    third = run_proc([sys.executable, "-c", probe, *saved], budget - (time.monotonic() - t0), env=no_gpu)
    reached = tail(third["output"], 1)
    ok = third["rc"] == 0 and reached == "3"
    return {"ok": ok, "files": len(saved), "iteration": reached, "seconds": round(time.monotonic() - t0, 1),
            **({} if ok else {"error": tail(third["output"])})}


def step_smoke(check: Check) -> dict:
    # The dry run smokes no method of its own: the resume check's first run is a smoke run through the same code.
    methods = [] if check.dry else sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))
    budget = check.budget("smoke")
    # Side by side: a smoke run is mostly Python start-up and tiny kernels; the GPU has room for all of them.
    with ThreadPoolExecutor(max_workers=len(methods) + 1) as pool:
        runs = [pool.submit(smoke_one, check, m, budget) for m in methods]
        resumed = pool.submit(resume_on_cpu, check, budget)
        results, resume = [f.result() for f in runs], resumed.result()
    lines = [f"- {r['method']}: {'ok' if r['ok'] else 'FAILED'} in {r['seconds']} s on {r.get('device', '?')}, "
             f"accuracy {r.get('acc')}" + (f" — {r['error']}" if r.get("error") else "") for r in results]
    lines.append(f"- checkpoint written on {check.device}, resumed to iteration {resume.get('iteration')} with no "
                 f"GPU visible, {resume.get('files')} saved .pt files loaded there: "
                 + ("ok" if resume["ok"] else f"FAILED — {resume.get('error')}"))
    ok = all(r["ok"] for r in results) and resume["ok"]
    bad = [r["method"] for r in results if not r["ok"]] + ([] if resume["ok"] else ["resume on CPU"])
    ran = f"{len(results)} methods ran on {check.device}" if results else "dry run: the resume check's runs only"
    summary = f"{ran}; CPU resume ok" if ok else "failed: " + ", ".join(bad)
    return {"status": "pass" if ok else "fail", "summary": summary, "lines": lines,
            "data": {"methods": results, "resume": resume}}


def tesla_problem(device: str, dtype, ipc: int, steps: int, width: int, size: int, seed: int = 0):
    """One TESLA matcher call on random data (as bench_speed builds it): returns a function giving dL/dX."""
    import torch

    from tesla_podd.algorithms.base import PositiveScalar
    from tesla_podd.algorithms.matching import MATCHERS, StepPlan, Student
    from tesla_podd.data.augment import DSA
    from tesla_podd.models import ConvNet, FlatModel
    from tesla_podd.synset.pixels import PixelSet

    def grad():
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        # every draw in float32 on the CPU, then converted: float64 and float32 runs see the same numbers
        flat = FlatModel(ConvNet(3, 10, size, width=width, depth=3 if size >= 32 else 2).to(device, dtype))
        theta0 = flat.flatten()
        target = theta0 + 0.01 * torch.randn(theta0.shape, generator=g).to(device, dtype)
        n = 10 * ipc
        synset = PixelSet(torch.randn(n, 3, size, size, generator=g).to(device, dtype),
                          (torch.arange(n) % 10).to(device), 10)
        aug = DSA()
        plans = [StepPlan(torch.randperm(n, generator=g).to(device), aug.sample(n, (size, size), g))
                 for _ in range(steps)]
        MATCHERS["tesla"](Student(flat, synset, aug), plans, theta0, target, PositiveScalar(0.01, device, dtype))
        return synset.images.grad.detach().double().cpu()

    return grad


def tf32(on: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def step_numerics(check: Check) -> dict:
    import torch

    test_gpu = test_helpers()[0]
    dev, lines, data, ok = torch.device(check.device), [], {}, True
    # float64: CUDA against CPU, the three matchers on pixels (soft labels) and a poster with learned labels
    for mode in ("unrolled", "tesla", "exact"):
        for tag, kw in check.size((("pixels", dict(soft=True)),),
                                  (("pixels", dict(soft=True)), ("poster", dict(poster=True, learn_labels=True)))):
            _, cpu = test_gpu.gradients(mode, torch.device("cpu"), **kw)
            _, gpu = test_gpu.gradients(mode, dev, **kw)
            err = max(rel_err(a, b) for a, b in zip(gpu, cpu))
            data[f"f64_{mode}_{tag}"] = err
            ok &= err < 1e-10
    (o_cpu, g_cpu), (o_gpu, g_gpu) = (test_gpu.dsa_output_and_grad(d) for d in (torch.device("cpu"), dev))
    data["f64_dsa_output"], data["f64_dsa_backward"] = rel_err(o_gpu, o_cpu), rel_err(g_gpu, g_cpu)
    ok &= data["f64_dsa_backward"] < 1e-10
    lines.append("- float64, CUDA vs CPU, max relative error of the gradients (want < 1e-10): "
                 + ", ".join(f"{k[4:]} {sci(v)}" for k, v in data.items() if k.startswith("f64_")))
    # float32 with TF32 on and off against float64, at a realistic width
    ipc, steps, width, size = check.size((1, 2, 8, 16), (10, 5, 128, 32))
    ref = tesla_problem(check.device, torch.float64, ipc, steps, width, size)()
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        tf32(True)
        g_tf32 = tesla_problem(check.device, torch.float32, ipc, steps, width, size)()
        tf32(False)
        g_fp32 = tesla_problem(check.device, torch.float32, ipc, steps, width, size)()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    data.update(tf32_vs_f64=rel_err(g_tf32, ref), fp32_vs_f64=rel_err(g_fp32, ref),
                tf32_vs_fp32=rel_err(g_tf32, g_fp32))
    lines.append(f"- TESLA dL/dX, IPC {ipc}, {steps} steps, width {width}, {size}x{size}: relative error against "
                 f"float64 with TF32 on {sci(data['tf32_vs_f64'])}, off {sci(data['fp32_vs_f64'])}; on vs off "
                 f"{sci(data['tf32_vs_fp32'])}")
    # repeatability: the same iteration twice, and the ops torch itself calls nondeterministic on this path
    a = tesla_problem(check.device, torch.float32, ipc, steps, width, size)()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            b = tesla_problem(check.device, torch.float32, ipc, steps, width, size)()
        finally:
            torch.use_deterministic_algorithms(False)
    flagged = sorted({str(w.message).split(" does not have a deterministic")[0][:120] for w in caught
                      if "deterministic" in str(w.message)})
    data.update(repeat_max_abs_diff=float((a - b).abs().max()), repeat_bitwise=bool(torch.equal(a, b)),
                nondeterministic_ops=flagged)
    lines.append(f"- two identical float32 TESLA iterations: {'bit-identical' if data['repeat_bitwise'] else 'differ'}"
                 f" (max |diff| {sci(data['repeat_max_abs_diff'])}); ops torch flags as nondeterministic: "
                 + (", ".join(flagged) or "none"))
    # deterministic=true through the real pipeline (its sampler, its flags): the first TESLA iteration twice
    firsts = []
    try:
        for _ in range(2):
            rec: dict = {}

            def first(it, call, algo, rec=rec):
                out = call()
                rec.setdefault("grad", algo.synset.param_groups()["images"][0].grad.detach().cpu().clone())
                return out

            probe_run(check, cifar10_ipc10(check, 1) + ["deterministic=true"], first)
            firsts.append(rec["grad"])
    finally:
        torch.use_deterministic_algorithms(False)  # the run set it process-wide
    data["deterministic_bitwise"] = bool(torch.equal(*firsts))
    ok &= data["deterministic_bitwise"]
    lines.append("- `deterministic=true`, the same TESLA iteration (CIFAR-10 IPC 10 shape) in two runs: "
                 + ("bit-identical" if data["deterministic_bitwise"] else
                    f"DIFFERENT (max |diff| {sci(float((firsts[0] - firsts[1]).abs().max()))})"))
    summary = (f"float64 CUDA = CPU (worst {sci(max(v for k, v in data.items() if k.startswith('f64_')))}); "
               f"TF32 error {sci(data['tf32_vs_f64'])}; repeat {'bitwise' if data['repeat_bitwise'] else 'differs'}"
               f"; deterministic=true {'bitwise' if data['deterministic_bitwise'] else 'DIFFERS'}")
    return {"status": "pass" if ok else "fail", "summary": summary,
            "lines": lines, "data": data}


def test_helpers():
    """tests/test_gpu.py (the gpu tests' helpers) and tests/conftest.py, imported without keeping the one torch
    thread that conftest sets for the test suite."""
    import torch

    threads = torch.get_num_threads()
    import conftest
    import test_gpu

    torch.set_num_threads(threads)
    return test_gpu, conftest


def compose(overrides: list[str]):
    """The config as the CLI composes it (tests/conftest.py's compose_cfg)."""
    return test_helpers()[1].compose_cfg(*overrides)


def probe_run(check: Check, overrides: list[str], on_iteration) -> None:
    """Run the real pipeline (buffer, distill) with `overrides`, calling on_iteration(it, call) around each
    TESLA iteration, where call() runs it (TrajectoryMatching.meta_step) and returns its metrics."""

    from tesla_podd.algorithms.trajectory import TrajectoryMatching
    from tesla_podd.train import run

    run_dir = Path(tempfile.mkdtemp(prefix="probe_", dir=check.tmp))
    cfg = compose(["debug=smoke", f"device={check.device}", f"paths.output_root={check.tmp}/probe_o", *overrides])
    real = TrajectoryMatching.meta_step

    def wrapped(self, it, gen):
        return on_iteration(it, lambda: real(self, it, gen), self)

    TrajectoryMatching.meta_step = wrapped
    try:
        run(cfg, run_dir=run_dir)
    finally:
        TrajectoryMatching.meta_step = real


def cifar10_ipc10(check: Check, iterations: int) -> list[str]:
    """TESLA at CIFAR-10 IPC 10's shape on the fake data (100 noise images in 4 classes, 30 steps, ConvNetD3 of
    width 128 at 32x32); tiny in a dry run."""
    ipc, steps, width, size = check.size((2, 3, 8, 16), (25, 30, 128, 32))
    tiny_buffer = ["buffer.num_experts=1", "buffer.train_epochs=3"] if check.dry else []
    return [*tiny_buffer, "method=tesla", "stages=[buffer,distill]", f"dataset.image_size={size}",
            f"model.width={width}", f"ipc={ipc}", "synset.init=noise", f"algorithm.syn_steps={steps}",
            "algorithm.batch_syn=null",
            f"algorithm.iterations={iterations}", "distill.eval_every=0", "distill.image_every=0",
            "distill.checkpoint_every=0", "distill.log_every=1000"]


def kernel_seconds(prof) -> float | None:
    """Seconds of the union of the profiled CUDA kernel intervals (None without CUDA events)."""
    from torch.autograd import DeviceType

    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                   if getattr(e, "device_type", None) == DeviceType.CUDA)
    if not spans:
        return None
    busy, (lo, hi) = 0.0, spans[0]
    for start, end in spans[1:]:
        if start > hi:
            busy, lo, hi = busy + hi - lo, start, end
        else:
            hi = max(hi, end)
    return (busy + hi - lo) / 1e6


SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def step_syncs(check: Check) -> dict:
    """Iteration 1 warms up, 2 counts syncs, 3 is profiled, the rest are timed plainly (the busy fraction divides the
    profiled kernel time by their wall time: the profiler slows the host side it measures)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    data: dict = {"iterations": []}
    cuda = check.device == "cuda"

    def on_iteration(it, call, algo):
        synced(check.device)
        t, done = time.perf_counter(), len(data["iterations"])
        if done == 1 and cuda:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    out = call()
                finally:
                    torch.cuda.set_sync_debug_mode(0)
            synced_at = [w for w in caught if "synchroniz" in str(w.message)]
            data["syncs"] = len(synced_at)
            data["sync_sites"] = sorted({f"{Path(w.filename).name}:{w.lineno}" for w in synced_at})[:15]
        elif done == 2:
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            with profile(activities=acts) as prof:
                out = call()
                synced(check.device)
            data["profiled_wall_s"] = round(time.perf_counter() - t, 3)
            data["kernel_s"] = kernel_seconds(prof)
            data["sync_calls_profiled"] = sum(e.name in SYNC_CALLS for e in prof.events())
        else:
            out = call()
        synced(check.device)
        data["iterations"].append(round(time.perf_counter() - t, 3))
        data["syn_steps"] = algo.syn_steps
        return out

    probe_run(check, cifar10_ipc10(check, check.size(4, 5)), on_iteration)
    its = data["iterations"]
    plain = its[3:] or its[1:]
    data["sec_per_iter"] = round(sorted(plain)[len(plain) // 2], 3) if plain else None
    kernel = data.get("kernel_s")
    busy = None if kernel is None or not data["sec_per_iter"] else min(1.0, kernel / data["sec_per_iter"])
    data["busy"] = busy
    syncs, steps = data.get("syncs"), data.get("syn_steps")
    lines = [f"- one TESLA iteration (its meta_step: student steps and meta-gradient), {steps} student steps: "
             + (f"{syncs} host-device syncs ({syncs / steps:.1f} per step) at "
                + (", ".join(data['sync_sites']) or "-") if syncs is not None else "syncs not counted (no CUDA)"),
             f"- GPU busy {busy:.0%}: {kernel:.3f} s of kernels (profiled iteration, {data['profiled_wall_s']} s "
             f"under the profiler, {data['sync_calls_profiled']} cuda*Synchronize calls) in a {data['sec_per_iter']} "
             "s iteration" if busy is not None else "- GPU busy fraction not measured (no CUDA)",
             f"- seconds per iteration: {', '.join(map(str, its))} (first: warm-up; 2nd: sync counting; 3rd: "
             "profiled)"]
    targets = [target("syncs per TESLA iteration (IPC 10, 30 steps)", f"<= {SYNC_TARGET} (not one per step)", syncs,
                      None if syncs is None else syncs <= SYNC_TARGET),
               target("GPU busy during a TESLA iteration", f">= {BUSY_TARGET:.0%}",
                      None if busy is None else f"{busy:.0%}", None if busy is None else busy >= BUSY_TARGET)]
    summary = (f"{syncs} syncs/iteration, GPU busy {busy:.0%}, {data['sec_per_iter']} s/iteration"
               if cuda and busy is not None else f"{data['sec_per_iter']} s/iteration on the {check.device}")
    return {"status": "pass", "summary": summary, "lines": lines, "data": data, "targets": targets}


def step_eval(check: Check) -> dict:
    import torch

    test_gpu = test_helpers()[0]
    from tesla_podd.evaluation.bench import evaluation_seconds

    dev = torch.device(check.device)
    alone, stacked, curves = test_gpu.stacked_and_alone(dev)
    diff = max(float((stacked.state(i)[n] - p).abs().max()) for i in range(len(alone)) for n, p in alone[i][0].items())
    acc = max(abs(a["test"] - b["test"]) for i in range(len(alone)) for a, b in zip(curves[i], alone[i][1]))
    ipc, epochs, size = check.size((1, 1, 16), (10, 200, 32))
    kw = dict(ipc=ipc, epochs=epochs, image_size=size, device=check.device)
    if not check.dry:  # warm-up: kernels, cuDNN choices
        evaluation_seconds(1, **{**kw, "epochs": 2}, batched=False)
        evaluation_seconds(5, **{**kw, "epochs": 2}, batched=True)
    one = evaluation_seconds(1, **kw, batched=False)
    five = evaluation_seconds(5, **kw, batched=True)
    seq5 = evaluation_seconds(5, **kw, batched=False) if not check.dry else None
    ratio = five / one
    data = {"max_param_diff": diff, "max_acc_diff": acc, "one_s": round(one, 3), "five_stacked_s": round(five, 3),
            "five_sequential_s": None if seq5 is None else round(seq5, 3), "ratio": round(ratio, 2),
            "ipc": ipc, "epochs": epochs}
    ok = diff < 1e-4 and acc <= 5.0 + 1e-9
    lines = [f"- 3 networks stacked vs one after another (TF32 off): max |parameter diff| {sci(diff)}, "
             f"accuracies differ by at most {acc:.1f} points",
             f"- IPC {ipc}, {epochs} epochs: 1 network {one:.2f} s, 5 stacked {five:.2f} s ({ratio:.2f}x)"
             + (f", 5 one after another {seq5:.2f} s" if seq5 is not None else "")]
    targets = [target("5 evaluation networks stacked / 1", f"<= {STACK_TARGET}x", f"{ratio:.2f}x",
                      None if check.dry else ratio <= STACK_TARGET)]
    return {"status": "pass" if ok else "fail", "lines": lines, "data": data, "targets": targets,
            "summary": f"stacked = sequential ({sci(diff)}); 5 stacked in {ratio:.2f}x one"}


def step_compile(check: Check) -> dict:

    from tesla_podd import compiling

    modes = _compile_modes(compose(["debug=smoke"]))

    real_backend = compiling.compile_backend
    if check.dry:  # inductor on a CPU takes minutes: the dry run walks the same path with the eager backend
        compiling.compile_backend = lambda device: "eager"
        modes = modes[:1]
    try:
        return _compare_compiled(check, modes)
    finally:
        compiling.compile_backend = real_backend


def _compare_compiled(check: Check, modes: list[str | None]) -> dict:
    arms = [("eager", ["algorithm.compile=false"])] + [
        (f"compiled ({m})" if m else "compiled", ["algorithm.compile=true"] + ([f"algorithm.compile_mode={m}"]
                                                                               if m else [])) for m in modes]
    data, lines, ends, failed = {}, [], time.monotonic() + check.budget("compile"), False
    for name, extra in arms:
        left = min(ends - time.monotonic(), check.left())
        if left < 20 and not check.dry:
            lines.append(f"- {name}: not run (the step's time was up; rerun with GPU_CHECK_STEPS=compile)")
            continue
        rec = {"times": []}

        def on_iteration(it, call, algo, rec=rec):
            synced(check.device)
            t = time.perf_counter()
            out = call()
            synced(check.device)
            rec["times"].append(round(time.perf_counter() - t, 3))
            if len(rec["times"]) == 1:  # the first iteration: the same draws in every arm
                rec["grad"] = algo.synset.param_groups()["images"][0].grad.detach().double().cpu().clone()
            return out

        try:
            with alarm(left):
                probe_run(check, cifar10_ipc10(check, check.size(2, 3)) + extra, on_iteration)
        except StepTimeout:
            lines.append(f"- {name}: ran past the step's time after {len(rec['times'])} iterations (compiling?)")
            continue
        except Exception as exc:  # noqa: BLE001  (one arm's failure is reported; the other arms still run)
            lines.append(f"- {name}: FAILED, {first_line(exc)}")
            failed = True
            continue
        warm = rec["times"][1:] or rec["times"]
        data[name] = {"first_s": rec["times"][0], "sec_per_iter": round(sorted(warm)[len(warm) // 2], 3),
                      "grad": rec.get("grad")}
    eager = data.get("eager", {})
    out_lines, ok = [], not failed
    for name, rec in data.items():
        err = (None if name == "eager" or rec["grad"] is None or eager.get("grad") is None
               else rel_err(rec["grad"], eager["grad"]))
        rec["rel_err_vs_eager"] = err
        speed = eager["sec_per_iter"] / rec["sec_per_iter"] if eager and rec["sec_per_iter"] else None
        rec["speedup"] = None if speed is None else round(speed, 2)
        ok &= err is None or err < 1e-2
        out_lines.append(f"- {name}: first iteration {rec['first_s']} s, then {rec['sec_per_iter']} s "
                         f"({rec['speedup']}x eager)" + ("" if err is None else f"; dL/dX vs eager {sci(err)}"))
    for rec in data.values():
        rec.pop("grad", None)
    if check.dry:
        out_lines.append("- dry run: torch.compile with the eager backend (no inductor), one mode")
    best = max((r["speedup"] for n, r in data.items() if n != "eager" and r["speedup"]), default=None)
    return {"status": "pass" if ok else "fail", "lines": lines + out_lines, "data": data,
            "summary": f"compiled agrees with eager; best {best}x eager" if ok else
            "a compiled arm failed or differs from eager"}


def _compile_modes(cfg) -> list[str | None]:
    """torch.compile's default mode, and CUDA graphs (reduce-overhead) where the config has algorithm.compile_mode
    (max-autotune's search does not fit the check's minutes: `scripts/bench_speed.py` can time it)."""
    if "compile_mode" not in cfg.algorithm:
        return [None]
    return ["default", "reduce-overhead"]


def step_bench(check: Check) -> dict:
    out, files, lines, targets, data = check.out, {}, [], [], {}
    scripts, png = REPO / "scripts", check.tmp / "bench_png"
    runs = {}  # TESLA Table 5's settings first: the headline figures, should the deadline come
    for name, extra in (("cifar100", ["--classes", "100", "--num-images", "100"]),
                        ("imagenet64", ["--classes", "1000", "--num-images", "1000", "--image-size", "64",
                                        "--depth", "4", "--modes", "tesla"])):
        if check.dry:
            extra = ["--num-images", "4", "--width", "8", "--image-size", "16", "--syn-steps", "1", "--modes", "tesla"]
        runs[f"memory_{name}"] = [sys.executable, str(scripts / "bench_memory.py"), "--device", check.device,
                                  "--batch-syn", str(4 if check.dry else 100), "--iters", check.size("1", "2"),
                                  "--warmup", check.size("0", "1"), "--syn-steps", "50", "--modes", "unrolled,tesla",
                                  "--json", str(out / f"bench_memory_{name}.json"), "--png", str(png / f"{name}.png"),
                                  *extra]
        if check.dry:
            break  # one memory table is enough to walk the path
    runs["speed"] = [sys.executable, str(scripts / "bench_speed.py"), "--device", check.device, "--threads", "0",
                     "--modes", "unrolled,tesla,exact", "--expert", "" if check.dry else "fp32",
                     "--accuracy-models", "", "--json", str(out / "bench_speed.json"), "--png", str(png / "s.png"),
                     *check.size(["--matching", "1x1", "--modes", "tesla", "--eval-k", "", "--iters", "1"],
                                 ["--matching", "10x30", "--eval-k", "1,5", "--eval-epochs", "100", "--iters", "3",
                                  "--warmup", "1", "--expert-steps", "5"])]
    if check.dry:  # tiny points, mostly Python start-up: both scripts at once
        with ThreadPoolExecutor(max_workers=len(runs)) as pool:
            done = dict(zip(runs, pool.map(lambda cmd: run_proc(cmd, check.budget("bench")), runs.values())))
    else:  # one after another: timings
        done = {}
        for name, cmd in runs.items():
            left = check.budget("bench") if not done else check.left()
            if left < 15:
                lines.append(f"- {name}: not run (deadline)")
                continue
            done[name] = run_proc(cmd, left)
    for name, r in done.items():
        files[name] = r
        cmd = runs[name]
        tables = r["output"][r["output"].find("Matching (") if name == "speed" else r["output"].find("Peak memory"):]
        lines += [f"### {name} ({r['seconds']} s, rc {r['rc']})", "", *tables.split("Ratios:")[0].strip().splitlines(),
                  ""]
        try:
            data[name] = json.loads(Path(cmd[cmd.index("--json") + 1]).read_text())
        except (OSError, ValueError):
            lines.append(f"- {name} failed: {tail(r['output'])}")
    for name, spec in TABLE5.items():
        rows = data.get(f"memory_{name}", {}).get("points", [])
        tesla = next((p for p in rows if p.get("grad_mode") == "tesla" and p.get("sec_per_iter")), None)
        if tesla and not check.dry:
            sec, gb = tesla["sec_per_iter"], tesla["peak_mem_mb"] / 1024
            targets.append(target(f"TESLA {name}, 50 steps, batch 100: seconds/iteration",
                                  f"<= {spec['target_sec']} (A6000: {spec['a6000_sec']})", f"{sec:.2f}",
                                  sec <= spec["target_sec"]))
            targets.append(target(f"TESLA {name}: peak GPU memory", f"<= {spec['a6000_gb']} GB (A6000)", f"{gb:.2f} GB",
                                  gb <= spec["a6000_gb"]))
    ok = all(r["rc"] == 0 for r in files.values()) and len(data) == len(files)
    ratios = data.get("speed", {}).get("ratios", {})
    summary = ", ".join(f"{k} {v}" for k, v in ratios.items() if "over_unrolled_sec" in k) or f"{len(data)} tables"
    return {"status": "pass" if ok else "fail", "summary": summary, "lines": lines, "targets": targets,
            "data": {k: {"ratios": v.get("ratios"), "meta": v.get("meta")} for k, v in data.items()}}


STEP_FUNCS = {"env": step_env, "pytest": step_pytest, "smoke": step_smoke, "numerics": step_numerics,
              "syncs": step_syncs, "eval": step_eval, "compile": step_compile, "bench": step_bench}
SUBPROCESS_STEPS = ("pytest", "smoke", "bench")  # these time out through their subprocesses, not an alarm
SELF_TIMED = ("compile",)  # an alarm per part, so a slow compile keeps the parts measured before it


def run_step(check: Check, name: str) -> dict:
    budget = check.budget(name)
    if budget < (1 if check.dry else 10):
        return {"status": "skip", "seconds": 0, "summary": f"not run: the {check.deadline:.0f} s deadline was "
                                                           f"reached; rerun with GPU_CHECK_STEPS={name}"}
    t, cpu = time.monotonic(), cpu_seconds()
    try:
        if name in SUBPROCESS_STEPS + SELF_TIMED:
            res = STEP_FUNCS[name](check)
        else:
            with alarm(budget):
                res = STEP_FUNCS[name](check)
    except StepTimeout as exc:
        res = {"status": "timeout", "summary": f"{exc}; rerun with GPU_CHECK_STEPS={name}"}
    except Exception as exc:  # noqa: BLE001  (a broken step is reported; the others still run)
        res = {"status": "error", "summary": first_line(exc),
               "lines": ["```", *traceback.format_exc().strip().splitlines()[-15:], "```"]}
    res["seconds"] = round(time.monotonic() - t, 1)
    res["cpu_seconds"] = round(cpu_seconds() - cpu, 1)  # this process and its finished children
    return res


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "gpu", help="report folder")
    p.add_argument("--deadline", type=float, default=float(os.environ.get("GPU_CHECK_DEADLINE", 480)),
                   help="seconds for the whole check (env GPU_CHECK_DEADLINE; default 480 = 8 min)")
    p.add_argument("--steps", default=os.environ.get("GPU_CHECK_STEPS", ""),
                   help=f"comma-separated steps to (re)run, merged into the existing report (env GPU_CHECK_STEPS; "
                        f"default all: {','.join(STEPS)})")
    p.add_argument("--dry-run", action="store_true", help="every step on the CPU at tiny sizes (no CUDA needed)")
    args = p.parse_args()
    chosen = [s.strip() for s in args.steps.split(",") if s.strip()] or list(STEPS)
    unknown = [s for s in chosen if s not in STEPS]
    if unknown:
        print(f"Error: GPU_CHECK_STEPS / --steps names {', '.join(unknown)}; the steps are {', '.join(STEPS)}.",
              file=sys.stderr)
        return 2
    os.environ.setdefault("WANDB_MODE", "disabled")
    if "CUBLAS_WORKSPACE_CONFIG" not in os.environ:  # before cuBLAS starts: the numerics step runs deterministic=true
        OWN_ENV["CUBLAS_WORKSPACE_CONFIG"] = os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    if args.dry_run:  # tiny CPU work, often on a busy machine: one thread per process (as the test suite)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    check = Check(out=args.out, dry=args.dry_run, deadline=args.deadline, steps=chosen)
    old = check.out / "gpu_check.json"
    merge = bool(args.steps) and old.exists()
    check.report = json.loads(old.read_text()) if merge else {"steps": {}}
    check.report["meta"] = {"dry_run": check.dry, "deadline_s": check.deadline, "git": git_sha(),
                            "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                            "steps_run": chosen, "merged_into_previous": merge}
    try:
        return run_steps(check, chosen)
    finally:
        shutil.rmtree(check.tmp, ignore_errors=True)  # smoke runs, probe buffers


def run_steps(check: Check, chosen: list[str]) -> int:
    failed = False
    for name in ["env"] + [s for s in chosen if s != "env"]:  # the gate always runs
        print(f"[gpu_check] {name} ...", flush=True)
        res = run_step(check, name)
        stop = res.pop("stop", False)
        check.report["steps"][name] = res
        save(check)
        print(f"[gpu_check] {name}: {res['status']} in {res['seconds']} s — {res.get('summary', '')}", flush=True)
        failed |= res["status"] in ("fail", "error", "timeout")
        if stop:
            print(f"\nError: {res['summary']}", file=sys.stderr)
            return 2
    print(f"\nwrote {check.out / 'gpu_check.md'} and gpu_check.json "
          f"({round(time.monotonic() - check.start)} s)")
    md = markdown(check.report)  # the steps and targets tables: the end of the output is what a remote run returns
    print(md[:md.find("\n## ", md.find("## Targets") + 1)] if "\n## " in md else md)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
