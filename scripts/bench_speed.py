#!/usr/bin/env python
"""Speed of the three expensive parts: trajectory matching, evaluation, expert training.

Each point runs in a fresh subprocess (as bench_memory.py), so thread pools, allocator caches and
oneDNN kernels never leak between points. Points:
- matching: seconds per distillation iteration (student unroll + meta-gradient) per grad mode,
  syn_steps and IPC; ConvNetD3 width 128, 32x32, DSA, batch_syn = the whole set (issue 9's setting).
  `baseline` rows rerun `tesla` as the code was before the speed work (OpenMP threads spinning,
  nn.AvgPool2d), side by side in the same run, so a busy machine affects both alike;
  `tesla_avgpool2d` rows change only the pooling back (the OpenMP setting kept).
- evaluation: seconds to train K = 1, 5, 8 ConvNets on an IPC-1 set, side by side (`eval.lanes`: one thread
  each, --threads lanes), stacked (one batched network)
  and one after another (tesla_podd.evaluation.bench).
- expert: seconds per CIFAR-10-sized epoch (50 000 images, batch 256) measured over a few SGD steps,
  fp32 vs channels-last vs bf16 autocast vs torch.compile (inductor), and `baseline` (fp32 as before
  issue 9: OpenMP threads spinning, nn.AvgPool2d). The compiled variant's first, untimed step compiles.
- accuracy: seconds to measure 10 000 test images per architecture and chunk size (evaluation networks'
  accuracy measurements; tesla_podd.evaluation.trainer.accuracies chunks by 32 on CPU).
Prints tables, writes JSON and a PNG.

    python scripts/bench_speed.py --device cpu --threads 2 --json docs/bench/speed_cpu.json \
        --png docs/bench/speed_cpu.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench_memory import device_meta, median, pyplot, time_calls  # scripts/ is on sys.path when run as a script


def _use_torch_avgpool(module) -> None:
    """Swap our strided-add 2x2 pooling back to nn.AvgPool2d (the `baseline` rows)."""
    from torch import nn

    from tesla_podd.models.pooling import AvgPool2x2

    for name, child in module.named_children():
        if isinstance(child, AvgPool2x2):
            setattr(module, name, nn.AvgPool2d(2, 2))
        else:
            _use_torch_avgpool(child)


def measure_matching(args, mode: str, steps: int, ipc: int) -> dict:
    import torch

    from tesla_podd.algorithms.base import PositiveScalar
    from tesla_podd.algorithms.matching import MATCHERS, StepPlan, Student
    from tesla_podd.data.augment import DSA
    from tesla_podd.models import ConvNet, FlatModel
    from tesla_podd.synset.pixels import PixelSet

    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = ConvNet(3, 10, 32, width=128, depth=3)
    baseline = mode in ("baseline", "tesla_avgpool2d")
    if baseline:
        _use_torch_avgpool(net)
    flat = FlatModel(net.to(dev))
    theta0 = flat.flatten().to(dev)
    target = theta0 + 0.01 * torch.randn(theta0.shape, generator=g).to(dev)
    n = 10 * ipc
    synset = PixelSet(torch.randn(n, 3, 32, 32, generator=g).to(dev), (torch.arange(n) % 10).to(dev), 10)
    aug, lr = DSA(), PositiveScalar(0.01, device=dev)
    lanes = torch.get_num_threads() if mode.endswith("_lanes") else 1  # algorithm.lanes=auto on CPU (tesla)
    compiled = mode.removesuffix("_lanes").endswith("_compiled")  # algorithm.compile=true
    student = Student(flat, synset, aug, compiled=compiled, lanes=lanes)
    name = "tesla" if baseline else mode.removesuffix("_lanes").removesuffix("_compiled")
    matcher = MATCHERS[name]

    def one_iter():
        plans = [StepPlan(torch.randperm(n, generator=g).to(dev), aug.sample(n, (32, 32), g)) for _ in range(steps)]
        synset.images.grad, lr.log.grad = None, None
        matcher(student, plans, theta0, target, lr)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    extra = {"lanes": lanes}
    if compiled:  # the first iteration compiles (cached on disk for later runs): reported, never timed as a step
        t = time.perf_counter()
        one_iter()
        extra["first_iter_sec"] = round(time.perf_counter() - t, 1)
    wall, cpu = time_calls(one_iter, args.warmup, args.iters)
    return {"sec_per_iter": round(wall, 3), "cpu_sec_per_iter": round(cpu, 3), **extra}


def measure_evaluation(args, k: int, how: str) -> dict:
    import torch

    from tesla_podd.evaluation.bench import evaluation_seconds

    lanes = torch.get_num_threads() if how == "lanes" else 1
    sec = evaluation_seconds(k, ipc=1, epochs=args.eval_epochs, batched=how == "batched", device=args.device,
                             lanes=lanes)
    return {"seconds": round(sec, 2), "epochs": args.eval_epochs}


def measure_expert(args, variant: str) -> dict:
    import torch
    import torch.nn.functional as F

    from tesla_podd.classifier import autocast, fast_forward
    from tesla_podd.data.augment import DSA
    from tesla_podd.models import ConvNet

    dev = torch.device(args.device)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = ConvNet(3, 10, 32).to(dev)
    if variant == "baseline":
        _use_torch_avgpool(model)  # the expert step as before issue 9: nn.AvgPool2d (and spinning OpenMP threads)
    x, y = torch.randn(256, 3, 32, 32).to(dev), torch.randint(0, 10, (256,)).to(dev)
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    forward = fast_forward(model, compile=variant == "compiled")  # inductor: the first (untimed) step compiles
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    amp = "bf16" if variant == "bf16" else "none"
    aug = DSA()

    def step():
        xb = aug(x, g)
        if variant == "channels_last":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(amp, dev):
            loss = F.cross_entropy(forward(xb).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    step()
    times = []
    for _ in range(args.expert_steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    per_step = median(times)
    return {"sec_per_step": round(per_step, 3), "sec_per_epoch": round(per_step * 50000 / 256, 1)}


def measure_accuracy(args, arch: str, chunk: int) -> dict:
    import torch

    from tesla_podd.models import build_model

    dev = torch.device(args.device)
    torch.manual_seed(0)
    net = build_model(arch, 3, 10, 32).to(dev).eval()
    x = torch.randn(args.accuracy_images, 3, 32, 32).to(dev)

    @torch.no_grad()
    def run():
        for i in range(0, x.shape[0], chunk):
            net(x[i : i + chunk]).argmax(-1)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    sec, _ = time_calls(run, warmup=1, iters=2)
    return {"sec_per_10k_images": round(sec * 10000 / x.shape[0], 1)}


def measure(args, kind: str, spec: list[str]) -> dict:
    import tesla_podd  # noqa: F401, I001  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)
    import torch  # noqa: I001

    if args.threads:
        torch.set_num_threads(args.threads)
    args.warmup = warmup_for(args.device, args.warmup)
    if kind == "matching":
        mode, steps, ipc = spec[0], int(spec[1]), int(spec[2])
        return {"kind": kind, "grad_mode": mode, "syn_steps": steps, "ipc": ipc,
                **measure_matching(args, mode, steps, ipc)}
    if kind == "evaluation":
        k, how = int(spec[0]), spec[1]
        return {"kind": kind, "num_models": k, "batched": how == "batched", "trained": how,
                **measure_evaluation(args, k, how)}
    if kind == "accuracy":
        return {"kind": kind, "model": spec[0], "chunk": int(spec[1]), **measure_accuracy(args, spec[0], int(spec[1]))}
    return {"kind": kind, "variant": spec[0], **measure_expert(args, spec[0])}


def run_point(args, kind: str, spec: list[str]) -> dict:
    env = dict(os.environ)
    if spec and spec[0] == "baseline":
        env["OMP_WAIT_POLICY"] = "ACTIVE"  # the OpenMP behaviour before tesla_podd set PASSIVE
    # --device last: the device this run settled on (cpu when CUDA was asked for but is missing)
    cmd = [sys.executable, __file__, "--_point", kind, *spec, *sys.argv[1:], "--device", args.device]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["?"])[-1][:200]
        return {"kind": kind, "spec": spec, "error": tail}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _find(rows, **kw):
    """The point matching kw. A point measured more than once (a mode repeated in --modes, interleaved with the
    others) gives the mean of each figure over its repeats, so the ratios use every repeat, not the first."""
    hits = [r for r in rows if all(r.get(k) == v for k, v in kw.items()) and "error" not in r]
    if len(hits) < 2:
        return hits[0] if hits else None
    merged = {**hits[0], "repeats": len(hits)}
    for k, v in hits[0].items():
        if isinstance(v, float) and all(isinstance(h.get(k), float) for h in hits):
            merged[k] = sum(h[k] for h in hits) / len(hits)
    return merged


def summarize(rows: list[dict]) -> dict:
    """The issue-9 goals as ratios measured in this run."""
    out = {}
    for steps, ipc in {(r["syn_steps"], r["ipc"]) for r in rows if r["kind"] == "matching" and "error" not in r}:
        tag = f"ipc{ipc}_n{steps}"
        def _mode(m, steps=steps, ipc=ipc):
            return _find(rows, kind="matching", grad_mode=m, syn_steps=steps, ipc=ipc)

        base, tesla, unr, exact, pool, tc, ec = (
            _mode(m) for m in ("baseline", "tesla", "unrolled", "exact", "tesla_avgpool2d", "tesla_compiled",
                               "exact_compiled"))
        for key in ("sec_per_iter", "cpu_sec_per_iter"):
            if pool and tesla:
                out[f"avgpool2d_over_strided_pool_{key}_{tag}"] = round(pool[key] / tesla[key], 2)
            if base and tesla:
                out[f"baseline_over_tesla_{key}_{tag}"] = round(base[key] / tesla[key], 2)
            if unr and tesla:
                out[f"tesla_over_unrolled_{key}_{tag}"] = round(tesla[key] / unr[key], 2)
            if unr and exact:
                out[f"exact_over_unrolled_{key}_{tag}"] = round(exact[key] / unr[key], 2)
            # A faster variant against the mode it speeds up, the baseline (issue 9: >= 1.5x faster than tesla
            # before the speed work) and unrolled: (ratio-name stem, its speed-up's name, variant, the slower mode).
            variants = (("tesla_compiled", "tesla_speedup_compiled", tc, tesla),
                        ("exact_compiled", "exact_speedup_compiled", ec, exact),
                        ("tesla_lanes", "tesla_lanes_speedup_over_one_lane", _mode("tesla_lanes"), tesla),
                        ("tesla_compiled_lanes", "tesla_compiled_lanes_speedup_over_one_lane",
                         _mode("tesla_compiled_lanes"), tc))
            for stem, speedup, fast, slow in variants:
                if fast and slow:
                    out[f"{speedup}_{key}_{tag}"] = round(slow[key] / fast[key], 2)
                if fast and base:
                    out[f"baseline_over_{stem}_{key}_{tag}"] = round(base[key] / fast[key], 2)
                if fast and unr:
                    out[f"{stem}_over_unrolled_{key}_{tag}"] = round(fast[key] / unr[key], 2)
    one = _find(rows, kind="evaluation", num_models=1, trained="sequential")
    for k in (5, 8):
        for how in ("batched", "sequential", "lanes"):
            r = _find(rows, kind="evaluation", num_models=k, trained=how)
            if one and r:
                out[f"eval_K{k}_{how}_over_K1"] = round(r["seconds"] / one["seconds"], 2)
    fp32 = _find(rows, kind="expert", variant="fp32")
    base = _find(rows, kind="expert", variant="baseline")
    if base and fp32:
        out["expert_speedup_fp32_over_baseline"] = round(base["sec_per_step"] / fp32["sec_per_step"], 2)
    for v in ("channels_last", "bf16", "compiled"):
        r = _find(rows, kind="expert", variant=v)
        if fp32 and r:
            out[f"expert_speedup_{v}_over_fp32"] = round(fp32["sec_per_step"] / r["sec_per_step"], 2)
        if base and r:  # issue 9's goal: >= 1.5x faster than the expert step before the speed work
            out[f"expert_speedup_{v}_over_baseline"] = round(base["sec_per_step"] / r["sec_per_step"], 2)
    for arch in {r["model"] for r in rows if r["kind"] == "accuracy"}:
        small, big = (_find(rows, kind="accuracy", model=arch, chunk=c) for c in (32, 256))
        if small and big:
            ratio = big["sec_per_10k_images"] / small["sec_per_10k_images"]
            out[f"accuracy_{arch}_chunk256_over_chunk32"] = round(ratio, 2)
    return dict(sorted(out.items()))


def tables(rows: list[dict]) -> str:
    lines = ["Matching (median seconds per iteration)", "| IPC | syn_steps | grad_mode | s/iter | CPU s/iter |",
             "|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "matching" and "error" not in r:
            lines.append(f"| {r['ipc']} | {r['syn_steps']} | {r['grad_mode']} | {r['sec_per_iter']:.2f} | "
                         f"{r['cpu_sec_per_iter']:.2f} |")
    lines += ["", "Evaluation (seconds to train K ConvNets on IPC 1)", "| K | trained | seconds |", "|---|---|---|"]
    lines += [f"| {r['num_models']} | {r.get('trained', r['batched'])} | {r['seconds']:.1f} |" for r in rows
              if r["kind"] == "evaluation" and "error" not in r]
    lines += ["", "Expert training (batch 256, CIFAR-10 epoch = 196 steps)", "| variant | s/step | s/epoch |",
              "|---|---|---|"]
    lines += [f"| {r['variant']} | {r['sec_per_step']:.2f} | {r['sec_per_epoch']:.0f} |" for r in rows
              if r["kind"] == "expert" and "error" not in r]
    lines += ["", "Accuracy measurement (seconds per 10 000 images)", "| model | chunk | seconds |", "|---|---|---|"]
    lines += [f"| {r['model']} | {r['chunk']} | {r['sec_per_10k_images']:.1f} |" for r in rows
              if r["kind"] == "accuracy" and "error" not in r]
    errors = [r for r in rows if "error" in r]
    if errors:
        lines += ["", "Failed points:"] + [f"- {r['kind']} {r.get('spec')}: {r['error']}" for r in errors]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """One panel per kind of point that this run measured (matching, evaluation, experts)."""
    plt = pyplot()
    if plt is None:
        return
    ok = [r for r in rows if "error" not in r]
    match, ev, ex = ([r for r in ok if r["kind"] == k] for k in ("matching", "evaluation", "expert"))
    panels = [(draw, data) for draw, data in ((_plot_matching, match), (_plot_evaluation, ev), (_plot_experts, ex))
              if data]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.7 * len(panels), 4), squeeze=False)
    for ax, (draw, data) in zip(axes[0], panels):
        draw(ax, data)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _plot_matching(ax, match: list[dict]) -> None:
    settings = sorted({(r["ipc"], r["syn_steps"]) for r in match})
    order = ("baseline", "tesla_avgpool2d", "unrolled", "tesla", "exact", "tesla_compiled", "exact_compiled",
             "tesla_lanes", "tesla_compiled_lanes")
    modes = [m for m in order if any(r["grad_mode"] == m for r in match)]
    width = 0.8 / max(1, len(modes))
    for j, m in enumerate(modes):
        vals = [(_find(match, grad_mode=m, ipc=i, syn_steps=s) or {}).get("sec_per_iter", 0) for i, s in settings]
        ax.bar([i + j * width for i in range(len(settings))], vals, width, label=m)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(settings))], [f"IPC {i}, N={s}" for i, s in settings])
    ax.set(ylabel="seconds / iteration", title="Matching")


def _plot_evaluation(ax, ev: list[dict]) -> None:
    for how, label in (("sequential", "one after another"), ("lanes", "side by side"), ("batched", "stacked")):
        pts = sorted((r["num_models"], r["seconds"]) for r in ev if r.get("trained") == how or r["num_models"] == 1)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    ax.set(xlabel="networks K", ylabel="seconds", title="Evaluation (IPC 1)")


def _plot_experts(ax, ex: list[dict]) -> None:
    ax.bar([r["variant"] for r in ex], [r["sec_per_epoch"] for r in ex])
    ax.set(ylabel="seconds / CIFAR-10 epoch", title="Expert training")


def warmup_for(device: str, warmup: int | None) -> int:
    """Untimed iterations before the timed ones: as asked on CPU (default 0), at least 1 on CUDA."""
    if str(device).startswith("cuda"):
        return max(1, warmup or 0)
    return warmup or 0


def points(args) -> list[tuple[str, list[str]]]:
    """The (kind, spec) points to measure. Lanes are CPU threads: on CUDA their rows are left out."""
    cuda = str(args.device).startswith("cuda")
    out = []
    for setting in (s for s in args.matching.split(",") if s):
        ipc, steps = setting.split("x")
        for mode in args.modes.split(","):
            if not (cuda and mode.endswith("_lanes")):
                out.append(("matching", [mode, steps, ipc]))
    for k in (int(k) for k in args.eval_k.split(",") if k):
        out.append(("evaluation", [str(k), "sequential"]))
        if k > 1:
            out += ([] if cuda else [("evaluation", [str(k), "lanes"])]) + [("evaluation", [str(k), "batched"])]
    out += [("expert", [v]) for v in args.expert.split(",") if v]
    out += [("accuracy", [m, c]) for m in args.accuracy_models.split(",") if m
            for c in args.accuracy_chunks.split(",") if c]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: torch's default)")
    p.add_argument("--matching", default="1x50,10x10", help="IPCxSYN_STEPS settings, comma-separated")
    p.add_argument("--modes", default="baseline,tesla_avgpool2d,unrolled,tesla,tesla_lanes,exact",
                   help="grad modes; `baseline` = tesla as before the speed work; `tesla_avgpool2d` = only its "
                        "pooling; also `tesla_compiled,exact_compiled` = algorithm.compile=true (1-2 min of "
                        "compiling each, reported apart; not in the default set, to keep `make bench` short); "
                        "`tesla_lanes,tesla_compiled_lanes` = tesla on lanes (algorithm.lanes = --threads)")
    p.add_argument("--iters", type=int, default=2, help="timed matching iterations per point (median)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed matching iterations first (default 0 on CPU; on CUDA at least 1: the first "
                        "iteration loads kernels and picks cuDNN algorithms)")
    p.add_argument("--eval-k", default="1,5,8", help="numbers of evaluation networks ('' to skip)")
    p.add_argument("--eval-epochs", type=int, default=30, help="epochs per evaluation network")
    p.add_argument("--expert", default="baseline,fp32,channels_last,bf16,compiled",
                   help="expert variants ('' to skip); `baseline` = fp32 with spinning OpenMP threads (before)")
    p.add_argument("--expert-steps", type=int, default=3, help="timed SGD steps per expert variant")
    p.add_argument("--accuracy-models", default="convnet,resnet18", help="architectures ('' to skip)")
    p.add_argument("--accuracy-chunks", default="32,256", help="images per forward when measuring accuracy")
    p.add_argument("--accuracy-images", type=int, default=512, help="images timed per accuracy point")
    p.add_argument("--json", type=Path, default=Path("outputs/bench/speed.json"))
    p.add_argument("--png", type=Path, default=Path("outputs/bench/speed.png"))
    p.add_argument("--_point", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._point:
        print(json.dumps(measure(args, args._point[0], args._point[1:])))
        return
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: measuring on cpu")
        args.device = "cpu"
    args.warmup = warmup_for(args.device, args.warmup)
    rows, start = [], time.perf_counter()
    for kind, spec in points(args):
        r = run_point(args, kind, spec)
        rows.append(r)
        print(f"{kind:10s} {' '.join(spec):22s} {json.dumps({k: v for k, v in r.items() if k not in ('kind',)})}",
              flush=True)
    print()
    print(tables(rows))
    summary = summarize(rows)
    print("\nRatios:", json.dumps(summary, indent=1))
    meta = {"argv": sys.argv, "threads": args.threads, **device_meta(args.device), "warmup": args.warmup,
            "iters": args.iters, "load_avg_at_end": os.getloadavg(),
            "total_seconds": round(time.perf_counter() - start, 1),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"points": rows, "ratios": summary, "meta": meta}, indent=1) + "\n")
    plot(rows, args.png)
    print(f"\nwrote {args.json}" + (f" and {args.png}" if args.png.exists() else ""))


if __name__ == "__main__":
    main()
