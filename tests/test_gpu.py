"""The same numbers on a CUDA device as on the CPU (every test here carries the `gpu` marker: conftest skips them,
with the reason, where torch sees no CUDA device).

- float64 gradients of the three matchers (unrolled, tesla, exact) on CUDA equal the CPU's, on pixels and on a
  poster with learned labels (the problems and helpers of test_gradient_modes.py, moved to the device);
- DSA's backward on CUDA (grid_sample, cutout, flips) equals the CPU's in float64;
- K evaluation networks trained stacked equal the same networks trained one after another, on CUDA;
- every method's smoke run finishes with `device=cuda`;
- a checkpoint written on CUDA resumes in a process that sees no GPU, and every saved file loads there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_cli
from test_evaluate_batched import _nets, _proto
from test_gradient_modes import DT, leaves, rel_err, setup

from tesla_podd.algorithms.base import PositiveScalar
from tesla_podd.algorithms.matching import MATCHERS, StepPlan, Student
from tesla_podd.data.augment import DSA
from tesla_podd.evaluation.trainer import SingleLearner, StackedLearner, train_networks
from tesla_podd.seeding import generator

pytestmark = pytest.mark.gpu
METHODS = sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))


def move(obj, device: torch.device):
    """`obj` with every tensor attribute on `device`; learnable leaves stay leaves (requires_grad kept)."""
    for name, value in list(vars(obj).items()):
        if torch.is_tensor(value):
            moved = value.detach().to(device)
            setattr(obj, name, moved.requires_grad_(True) if value.requires_grad else moved)
    return obj


def problem_on(device: torch.device, soft=False, learn_labels=False, poster=False):
    """test_gradient_modes.setup's problem (drawn on the CPU, so both devices get the same one), on `device`."""
    flat, synset, aug, plans, theta0, target = setup(soft, learn_labels, poster=poster)
    flat.module.to(device)
    move(synset, device)
    plans = [StepPlan(p.idx.to(device), p.aug, None if p.y is None else p.y.to(device)) for p in plans]
    return flat, synset, aug, plans, theta0.to(device), target.to(device)


def gradients(mode: str, device: torch.device, **kw) -> tuple[float, list[torch.Tensor]]:
    """(loss, [dL/dX, dL/dalpha, dL/dlabels when learned]) of one matcher call, float64, on `device`, as CPU tensors."""
    flat, synset, aug, plans, theta0, target = problem_on(device, **kw)
    lr = PositiveScalar(0.05, device=device, dtype=DT)
    loss = MATCHERS[mode](Student(flat, synset, aug), plans, theta0, target, lr)
    images, labels = leaves(synset)
    grads = [images.grad, lr.log.grad / lr.value] + ([labels.grad] if labels is not None else [])
    return float(loss), [g.detach().cpu() for g in grads]


@pytest.mark.parametrize("poster,learn_labels,soft", [(False, False, True), (True, True, False)],
                         ids=["pixels-soft", "poster-learned"])
@pytest.mark.parametrize("mode", ["unrolled", "tesla", "exact"])
def test_matching_gradients_on_cuda_equal_the_cpu(mode, poster, learn_labels, soft):
    kw = dict(soft=soft, learn_labels=learn_labels, poster=poster)
    cpu_loss, cpu = gradients(mode, torch.device("cpu"), **kw)
    cuda_loss, cuda = gradients(mode, torch.device("cuda"), **kw)
    assert abs(cuda_loss - cpu_loss) < 1e-12 * max(1.0, abs(cpu_loss))
    assert len(cuda) == len(cpu)
    for name, a, b in zip(("images", "lr", "labels"), cuda, cpu):
        assert rel_err(a, b) < 1e-10, f"{mode}: d loss / d {name} differs between CUDA and CPU"


def dsa_output_and_grad(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """DSA's output and input gradient on `device` (float64; one draw of data and parameters on the CPU)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, 16, 16, generator=g, dtype=DT)
    w = torch.randn(6, 3, 16, 16, generator=g, dtype=DT)
    aug = DSA()
    params = aug.sample(6, (16, 16), g)
    xd = x.to(device).requires_grad_(True)
    out = aug.apply(xd, params)
    (out * w.to(device)).sum().backward()
    return out.detach().cpu(), xd.grad.cpu()


def test_dsa_backward_on_cuda_equals_the_cpu():
    (out_cpu, g_cpu), (out_cuda, g_cuda) = (dsa_output_and_grad(torch.device(d)) for d in ("cpu", "cuda"))
    assert rel_err(out_cuda, out_cpu) < 1e-12
    assert rel_err(g_cuda, g_cpu) < 1e-10


def stacked_and_alone(device: torch.device, k: int = 3):
    """K networks trained one after another, then stacked, on `device` with TF32 off (stacked and single networks
    run different convolution kernels; TF32 rounding would differ between them by ~1e-3): returns
    ([(state, curve) of each alone], stacked learner, stacked curves)."""
    torch.manual_seed(1)
    x, y = torch.randn(12, 3, 16, 16).to(device), (torch.arange(12) % 4).to(device)
    test = (torch.randn(20, 3, 16, 16).to(device), (torch.arange(20) % 4).to(device))
    proto = _proto("sgd")
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            alone = []
            for i, net in enumerate(_nets(k)):
                learner = SingleLearner(net.to(device))
                curve = train_networks(learner, x, y, proto, DSA(), [generator(0, "d", i)], {"test": test}, device)
                alone.append((learner.state(), curve[0]))
            stacked = StackedLearner([n.to(device) for n in _nets(k)])
            curves = train_networks(stacked, x, y, proto, DSA(), [generator(0, "d", i) for i in range(k)],
                                    {"test": test}, device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    return alone, stacked, curves


def test_stacked_evaluation_equals_one_after_another_on_cuda():
    """As test_evaluate_batched on the CPU, on CUDA."""
    alone, stacked, curves = stacked_and_alone(torch.device("cuda"))
    for i in range(len(alone)):
        for name, p in alone[i][0].items():
            torch.testing.assert_close(stacked.state(i)[name], p, rtol=1e-4, atol=1e-5, msg=f"model {i} {name}")
        for a, b in zip(curves[i], alone[i][1]):  # accuracies in % of 20 images: at most one image may flip
            assert abs(a["test"] - b["test"]) <= 5.0 + 1e-9, f"model {i}: {a} vs {b}"


@pytest.mark.parametrize("method", METHODS)
def test_smoke_run_of_every_method_on_cuda(method, tmp_path):
    out = run_cli("debug=smoke", "device=cuda", f"method={method}", f"paths.output_root={tmp_path}/o",
                  f"hydra.run.dir={tmp_path}/r", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert str(meta["device"]).startswith("cuda"), meta
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert "eval/acc_mean" in results


def test_cuda_checkpoint_resumes_in_a_process_without_a_gpu(tmp_path):
    fast = ("debug=smoke", "method=rat_bptt", "stages=[distill]", "distill.eval_every=0", "distill.image_every=0",
            "distill.checkpoint_every=1", f"paths.output_root={tmp_path}/o", f"hydra.run.dir={tmp_path}/r")
    out = run_cli(*fast, "device=cuda", "algorithm.iterations=2", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    cpu_only = {"CUDA_VISIBLE_DEVICES": ""}
    out = run_cli(*fast, "device=cpu", "algorithm.iterations=3", "resume=true", timeout=600, env_extra=cpu_only)
    assert out.returncode == 0, out.stderr[-3000:]
    saved = sorted(str(p) for p in Path(tmp_path / "r").rglob("*.pt"))
    assert saved, "the run saved no .pt file"
    # A plain torch.load of every saved file, no map_location, where no GPU exists; prints the checkpoint's iteration.
    probe = ("import sys, torch\nassert not torch.cuda.is_available()\n"
             "loaded = {p: torch.load(p, weights_only=False) for p in sys.argv[1:]}\n"
             "print(max(int(v['iteration']) for p, v in loaded.items() if p.endswith('last.pt')))")
    done = subprocess.run([sys.executable, "-c", probe, *saved], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **cpu_only})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "3", "the resumed run did not reach iteration 3"
