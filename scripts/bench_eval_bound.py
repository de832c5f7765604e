"""How fast can K evaluation networks train together on this CPU? A compute bound, measured.

Issue 9 asks for K = 5 ConvNets trained in <= 2x the time of one. Stacking (vmap) removes per-network fixed
costs, but not arithmetic: K networks do K times the convolutions. So if one network already runs its
arithmetic at a fraction f of the best rate this CPU reaches at all (a large fp32 matrix product), K networks
need at least K * f times the time of one, however they are batched. This script measures f:

- one evaluation training step (DSA, forward, backward, SGD) of one ConvNet on an IPC-1 / IPC-10 set, its FLOPs
  (torch.utils.flop_counter) and so its GFLOP/s; the same step for K stacked networks;
- the peak: a 2048^3 matrix product (oneDNN/MKL at their best), and for reference the same ConvNet's forward +
  backward at batch 256;
- the bound K * f and the measured stacked and one-after-another ratios;
- whole evaluations (`--epochs` epochs of the MTT protocol, IPC 1): one network, K one after another, and K side
  by side on `--threads` lanes of one intra-op thread each (`eval.lanes`, what a CPU run does by default).

    python scripts/bench_eval_bound.py --threads 1 --json docs/bench/eval_bound_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tesla_podd  # noqa: E402,F401  (thread settings before torch works)


def _time(fn, reps: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(3):  # best of 3 rounds of `reps` calls: the least disturbed figure on a shared machine
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def measure(ipc: int, k: int, reps: int) -> dict:
    import torch

    from tesla_podd.data.augment import DSA
    from tesla_podd.evaluation.trainer import SingleLearner, StackedLearner
    from tesla_podd.models import build_model
    from tesla_podd.synset.base import soft_cross_entropy

    torch.manual_seed(0)
    n = 10 * ipc
    x, y = torch.randn(n, 3, 32, 32), torch.arange(10).repeat_interleave(ipc)
    aug, gen = DSA(), torch.Generator().manual_seed(0)

    def stepper(learner):
        opt = torch.optim.SGD(learner.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

        def step():
            xs = [aug(x, gen) for _ in range(learner.num_models)]
            logits = learner.logits(xs)
            loss = sum(soft_cross_entropy(logits[i], y) for i in range(learner.num_models))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    nets = [build_model("convnet", 3, 10, 32) for _ in range(k)]
    one = stepper(SingleLearner(nets[0]))
    stacked = stepper(StackedLearner(nets))
    flops_one = _flops(one)
    t_one, t_stacked = _time(one, reps), _time(stacked, max(1, reps // k))
    return {"ipc": ipc, "batch": n, "k": k, "gflop_per_step_one": round(flops_one / 1e9, 3),
            "sec_per_step_one": round(t_one, 5), "sec_per_step_stacked": round(t_stacked, 5),
            "gflops_one": round(flops_one / t_one / 1e9, 1),
            "stacked_over_one": round(t_stacked / t_one, 2)}


def peaks(reps: int) -> dict:
    import torch
    import torch.nn.functional as F

    from tesla_podd.models import build_model

    net = build_model("convnet", 3, 10, 32)
    xb, yb = torch.randn(256, 3, 32, 32), torch.randint(0, 10, (256,))

    def big_step():
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(xb), yb).backward()

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    f_big = _flops(big_step)
    t_big, t_mm = _time(big_step, max(1, reps // 10)), _time(lambda: a @ b, max(1, reps // 10))
    return {"gflops_convnet_batch256": round(f_big / t_big / 1e9, 1),
            "gflops_matmul_2048": round(2 * 2048**3 / t_mm / 1e9, 1)}


def lanes_rows(k: int, threads: int, epochs: int) -> dict:
    from tesla_podd.evaluation.bench import evaluation_seconds

    one = evaluation_seconds(1, epochs=epochs, batched=False)
    after = evaluation_seconds(k, epochs=epochs, batched=False)
    # Side by side as the eval stage runs it (all K at once when K does not divide among the lanes), and in
    # rounds of `threads` networks (before): interleaved, 3 each, medians.
    side, rounds = [], []
    for _ in range(3):
        side.append(evaluation_seconds(k, epochs=epochs, batched=False, lanes=threads))
        rounds.append(evaluation_seconds(k, epochs=epochs, batched=False, lanes=threads, workers=threads))
    side_s, rounds_s = sorted(side)[1], sorted(rounds)[1]
    return {"epochs": epochs, "k": k, "seconds_one": round(one, 2), "seconds_one_after_another": round(after, 2),
            "seconds_side_by_side": round(side_s, 2), "seconds_side_by_side_all": [round(t, 2) for t in side],
            "seconds_in_rounds_of_threads": round(rounds_s, 2), "seconds_in_rounds_all": [round(t, 2) for t in rounds],
            "side_by_side_over_one": round(side_s / one, 2), "one_after_another_over_one": round(after / one, 2),
            "speedup_side_by_side": round(after / side_s, 2), "speedup_over_rounds": round(rounds_s / side_s, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ipcs", default="1,10")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--reps", type=int, default=20, help="timed steps per round (3 rounds, best kept)")
    p.add_argument("--epochs", type=int, default=100, help="epochs of the whole-evaluation timing (0: skip)")
    p.add_argument("--json", default="docs/bench/eval_bound_cpu.json")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    peak = peaks(args.reps)
    rows = [measure(int(i), args.k, args.reps) for i in args.ipcs.split(",")]
    practical = peak["gflops_matmul_2048"]
    for r in rows:
        r["fraction_of_peak"] = round(r["gflops_one"] / practical, 2)
        r["bound_k_over_one"] = round(args.k * r["gflops_one"] / practical, 2)  # K networks >= K * f
    print(f"threads {args.threads}; peak: 2048^3 matmul {practical} GFLOP/s (ConvNet fwd+bwd at batch 256: "
          f"{peak['gflops_convnet_batch256']} GFLOP/s)\n")
    print(f"| IPC | batch | GFLOP/step | one: s/step | one: GFLOP/s | f = one / peak | K={args.k}: bound K*f "
          f"| K={args.k} stacked / one (measured) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['ipc']} | {r['batch']} | {r['gflop_per_step_one']} | {r['sec_per_step_one']} | {r['gflops_one']} "
              f"| {r['fraction_of_peak']} | {r['bound_k_over_one']} | {r['stacked_over_one']} |")
    lanes = lanes_rows(args.k, args.threads, args.epochs) if args.epochs else None
    if lanes:
        print(f"\nIPC 1, {args.epochs} epochs: one network {lanes['seconds_one']} s; {args.k} one after another "
              f"{lanes['seconds_one_after_another']} s ({lanes['one_after_another_over_one']}x); {args.k} side by "
              f"side on {args.threads} lanes {lanes['seconds_side_by_side']} s ({lanes['side_by_side_over_one']}x one"
              f", {lanes['speedup_side_by_side']}x faster than one after another; in rounds of {args.threads}: "
              f"{lanes['seconds_in_rounds_of_threads']} s, {lanes['speedup_over_rounds']}x)")
    meta = {"argv": sys.argv, "threads": args.threads, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    out = {"rows": rows, "peak": peak, "lanes": lanes, "meta": meta}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
