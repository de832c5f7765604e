#!/usr/bin/env python
"""Peak memory and seconds per iteration of trajectory matching vs syn_steps, per grad_mode.

The setting of TESLA Tables 4/5 by default: ConvNetD3 (width 128, instance norm), 32x32 images,
100 synthetic images, batch_syn 100, DSA on. Each (mode, syn_steps) point runs in a fresh
subprocess so peaks don't leak between points: peak RSS high-water mark on CPU,
torch.cuda.max_memory_allocated on CUDA. Prints a table like TESLA's Table 4, writes JSON
and a plot like its Figure 2.

    python scripts/bench_memory.py --device cpu --syn-steps 1,10,20,50,100 --json outputs/bench/cpu.json \
        --png outputs/bench/cpu.png
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def median(xs: list[float]) -> float:
    """The median (of an even count: the mean of the two middle values)."""
    return statistics.median(xs)


def device_meta(device: str) -> dict:
    """What a timing depends on beyond the code: the torch build and, on CUDA, the GPU, its driver, compute
    capability, CUDA and cuDNN versions and the TF32 / cuDNN-benchmark switches (as a run's meta.json records them;
    bench_speed and gpu_check use it too)."""
    import tesla_podd  # noqa: F401, I001  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)
    import torch  # noqa: I001

    from tesla_podd.numerics import device_info, numerics_state

    meta = {"device": device, "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpus": os.cpu_count()}
    cuda = str(device).startswith("cuda") and torch.cuda.is_available()
    return {**meta, **device_info(torch.device(device if cuda else "cpu")), **(numerics_state() if cuda else {})}


def time_calls(fn, warmup: int, iters: int) -> tuple[float, float]:
    """Median wall and CPU seconds of `iters` calls of fn after `warmup` untimed ones (bench_speed uses it too)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(iters):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return median(wall), median(cpu)


def measure(args) -> dict:
    """One point, in this process: build the setting, warm up, time `--iters` iterations."""
    import tesla_podd  # noqa: F401, I001  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)
    import torch  # noqa: I001

    from tesla_podd.algorithms.base import PositiveScalar
    from tesla_podd.algorithms.matching import MATCHERS, StepPlan, Student
    from tesla_podd.data.augment import DSA
    from tesla_podd.models import ConvNet, FlatModel
    from tesla_podd.synset.pixels import PixelSet

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    flat = FlatModel(ConvNet(3, args.classes, args.image_size, width=args.width, depth=args.depth).to(dev))
    theta0 = flat.flatten().to(dev)
    target = theta0 + 0.01 * torch.randn(theta0.shape, generator=g).to(dev)
    images = torch.randn(args.num_images, 3, args.image_size, args.image_size, generator=g).to(dev)
    labels = (torch.arange(args.num_images) % args.classes).to(dev)
    synset = PixelSet(images, labels, args.classes)
    aug = DSA()
    lanes = torch.get_num_threads() if args.point_mode == "tesla_lanes" else 1  # algorithm.lanes=auto on CPU
    student = Student(flat, synset, aug, lanes=lanes)
    matcher = MATCHERS["tesla" if args.point_mode == "tesla_lanes" else args.point_mode]
    lr = PositiveScalar(0.01, device=dev)
    batch = args.batch_syn or args.num_images

    def plans():
        out = []
        for _ in range(args.point_steps):
            idx = torch.randperm(args.num_images, generator=g)[:batch].to(dev)
            out.append(StepPlan(idx, aug.sample(batch, (args.image_size, args.image_size), g)))
        return out

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def one_iter():
        synset.images.grad = None
        lr.log.grad = None
        matcher(student, plans(), theta0, target, lr)
        sync()

    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    wall, cpu = time_calls(one_iter, args.warmup, args.iters)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        loop = peak
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
        loop = peak - rss_start
    return {"grad_mode": args.point_mode, "syn_steps": args.point_steps, "peak_mem_mb": round(peak, 1),
            "loop_mem_mb": round(loop, 1), "sec_per_iter": round(wall, 4),
            "cpu_sec_per_iter": round(cpu, 4), "device": str(dev),
            "num_images": args.num_images, "batch_syn": batch, "width": args.width, "depth": args.depth}


def available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def run_point(args, mode: str, steps: int) -> dict:
    # --device last: the device this run settled on (cpu when CUDA was asked for but is missing)
    cmd = [sys.executable, __file__, "--_point", mode, str(steps), *sys.argv[1:], "--device", args.device]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        reason = "killed (out of memory?)" if out.returncode < 0 else out.stderr.strip().splitlines()[-1][:200]
        return {"grad_mode": mode, "syn_steps": steps, "peak_mem_mb": None, "sec_per_iter": None,
                "device": args.device, "error": reason}
    return json.loads(out.stdout.strip().splitlines()[-1])


def projected_mb(rows: list[dict], mode: str, steps: int) -> float | None:
    """Linear extrapolation of a mode's peak from its two largest measured points."""
    pts = sorted((r["syn_steps"], r["peak_mem_mb"]) for r in rows if r["grad_mode"] == mode and r.get("peak_mem_mb"))
    if len(pts) < 2:
        return None
    (s1, m1), (s2, m2) = pts[-2], pts[-1]
    return m2 + (m2 - m1) / max(1, s2 - s1) * (steps - s2)


def table(rows: list[dict], steps: list[int], modes: list[str]) -> str:
    def cell(mode, s, key, fmt):
        r = next((r for r in rows if r["grad_mode"] == mode and r["syn_steps"] == s), None)
        if r is None or r.get(key) is None:
            return "oom/skip" if r is not None else "-"
        return fmt.format(r[key])

    head = "| grad_mode | " + " | ".join(f"N={s}" for s in steps) + " |"
    sep = "|---|" + "---|" * len(steps)
    lines = ["Peak memory (MB)", head, sep]
    lines += [f"| {m} | " + " | ".join(cell(m, s, "peak_mem_mb", "{:.0f}") for s in steps) + " |" for m in modes]
    lines += ["", "Seconds per iteration (median wall clock)", head, sep]
    lines += [f"| {m} | " + " | ".join(cell(m, s, "sec_per_iter", "{:.3f}") for s in steps) + " |" for m in modes]
    lines += ["", "CPU seconds per iteration (median; robust on a shared machine)", head, sep]
    lines += [f"| {m} | " + " | ".join(cell(m, s, "cpu_sec_per_iter", "{:.3f}") for s in steps) + " |" for m in modes]
    return "\n".join(lines)


def ratios(rows: list[dict]) -> dict:
    def get(mode, s, key):
        r = next((r for r in rows if r["grad_mode"] == mode and r["syn_steps"] == s), None)
        return None if r is None else r.get(key)

    out = {}
    steps = sorted({r["syn_steps"] for r in rows})
    lo, hi = steps[0], steps[-1]
    for m in ("tesla", "exact"):
        a, b = get(m, hi, "peak_mem_mb"), get(m, lo, "peak_mem_mb")
        if a and b:
            out[f"{m}_peak_N{hi}_over_N{lo}"] = round(a / b, 3)
    lanes_from = min((s for s in steps if s > 1), default=None)  # with N >= lanes every lane holds one step graph
    a, b = get("tesla_lanes", hi, "peak_mem_mb"), get("tesla_lanes", lanes_from, "peak_mem_mb")
    if a and b and hi > lanes_from:
        out[f"tesla_lanes_peak_N{hi}_over_N{lanes_from}"] = round(a / b, 3)
    a, b = get("tesla_lanes", hi, "peak_mem_mb"), get("tesla", hi, "peak_mem_mb")
    if a and b:
        out[f"tesla_lanes_over_tesla_peak_N{hi}"] = round(a / b, 3)
    measured = [s for s in steps if get("unrolled", s, "peak_mem_mb")]
    mid = 50 if 50 in measured else (max(measured) if measured else None)
    if mid and get("unrolled", mid, "peak_mem_mb") and get("tesla", mid, "peak_mem_mb"):
        ratio = get("unrolled", mid, "peak_mem_mb") / get("tesla", mid, "peak_mem_mb")
        out[f"unrolled_over_tesla_peak_N{mid}"] = round(ratio, 2)
    for m in ("tesla", "exact"):
        for key, tag in (("sec_per_iter", "time"), ("cpu_sec_per_iter", "cpu_time")):
            rs = [get(m, s, key) / get("unrolled", s, key) for s in steps
                  if get(m, s, key) and get("unrolled", s, key) and s > 1]
            if rs:
                out[f"{m}_{tag}_over_unrolled_max"] = round(max(rs), 3)
                out[f"{m}_{tag}_over_unrolled_mean"] = round(sum(rs) / len(rs), 3)
    return out


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None (with a hint) when matplotlib is missing
    (bench_speed uses it too)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG (pip install matplotlib)")
        return None
    return plt


def plot(rows: list[dict], modes: list[str], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for m in modes:
        pts = sorted((r["syn_steps"], r["peak_mem_mb"], r["sec_per_iter"]) for r in rows
                     if r["grad_mode"] == m and r.get("peak_mem_mb"))
        if pts:
            axes[0].plot([p[0] for p in pts], [p[1] / 1024 for p in pts], "o-", label=m)
            axes[1].plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=m)
    axes[0].set(xlabel="matching steps N (syn_steps)", ylabel="peak memory (GB)", title="Memory")
    axes[1].set(xlabel="matching steps N (syn_steps)", ylabel="seconds / iteration", title="Time")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if os.environ.get("CUDA_VISIBLE_DEVICES", "x") != "" else "cpu")
    p.add_argument("--syn-steps", default="1,10,20,50,100")
    p.add_argument("--modes", default="unrolled,tesla,exact",
                   help="grad modes; also `tesla_lanes` = tesla on lanes (algorithm.lanes = threads)")
    p.add_argument("--num-images", type=int, default=100)
    p.add_argument("--batch-syn", type=int, default=100)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--iters", type=int, default=3, help="timed iterations per point (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--mem-fraction", type=float, default=0.8, help="skip points projected above this of free RAM")
    p.add_argument("--json", type=Path, default=Path("outputs/bench/memory.json"))
    p.add_argument("--png", type=Path, default=Path("outputs/bench/memory.png"))
    p.add_argument("--_point", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._point:
        args.point_mode, args.point_steps = args._point[0], int(args._point[1])
        print(json.dumps(measure(args)))
        return
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        args.device = "cpu"
    steps = [int(s) for s in args.syn_steps.split(",")]
    modes = args.modes.split(",")
    if args.device.startswith("cuda") and any(m.endswith("_lanes") for m in modes):
        print("lanes are CPU threads: the lane modes are skipped on CUDA")
        modes = [m for m in modes if not m.endswith("_lanes")]
    rows = []
    for s in steps:
        for m in modes:
            proj = projected_mb(rows, m, s) if args.device == "cpu" else None
            if proj is not None and proj > args.mem_fraction * available_mb():
                rows.append({"grad_mode": m, "syn_steps": s, "peak_mem_mb": None, "sec_per_iter": None,
                             "device": args.device, "error": f"skipped: projected {proj / 1024:.1f} GB"})
                print(f"{m:9s} N={s:4d}  skipped (projected {proj / 1024:.1f} GB)", flush=True)
                continue
            r = run_point(args, m, s)
            rows.append(r)
            print(f"{m:9s} N={s:4d}  peak {r.get('peak_mem_mb')} MB  {r.get('sec_per_iter')} s/iter"
                  + (f"  ({r['error']})" if r.get("error") else ""), flush=True)
    print()
    print(table(rows, steps, modes))
    summary = ratios(rows)
    print("\nRatios:", json.dumps(summary, indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"argv": sys.argv, **device_meta(args.device)}
    args.json.write_text(json.dumps({"points": rows, "ratios": summary, "argv": sys.argv, "meta": meta}, indent=1)
                         + "\n")
    plot(rows, modes, args.png)
    print(f"\nwrote {args.json}" + (f" and {args.png}" if args.png.exists() else ""))


if __name__ == "__main__":
    main()
