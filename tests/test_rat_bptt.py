"""RaT-BPTT: the truncated meta-gradient against an independent unrolled reference (float64), the hand
Adam against torch's, gradient clipping, smoke runs of method=rat_bptt / method=podd, and resume."""

from __future__ import annotations

import functools
import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import CONF, compose_cfg, run_killed_then_resumed

from tesla_podd.algorithms import AlgorithmResources, build_algorithm, model_factory
from tesla_podd.algorithms.base import learnable_tensors
from tesla_podd.algorithms.rat_bptt import RatBPTT, adam_update, reference_steps_per_epoch
from tesla_podd.data.augment import DSA
from tesla_podd.data.preprocess import Preprocessor, build_preprocessor
from tesla_podd.data.real import RealData, load_real
from tesla_podd.models import FlatModel, build_model
from tesla_podd.seeding import generator
from tesla_podd.synset import build_synset
from tesla_podd.synset.file import SynsetFile
from tesla_podd.synset.pixels import PixelSet
from tesla_podd.synset.poster import PosterSet
from tesla_podd.train import run

N_CLASSES, HW = 3, (8, 8)


def tiny_ctx() -> SimpleNamespace:
    g = torch.Generator().manual_seed(5)
    y = torch.arange(N_CLASSES).repeat_interleave(10)
    x = torch.randint(0, 256, (len(y), 3, *HW), generator=g, dtype=torch.uint8)
    real = RealData("tiny", x, y, x[:3], y[:3], ["a", "b", "c"], (0.5,) * 3, (0.25,) * 3)
    return SimpleNamespace(real=real, preprocess=Preprocessor(real.mean, real.std), device=torch.device("cpu"))


def tiny_synset(kind: str):
    g = torch.Generator().manual_seed(7)
    if kind.startswith("pixels"):
        images = torch.randn(6, 3, *HW, generator=g, dtype=torch.float64)
        labels = torch.arange(N_CLASSES).repeat_interleave(2)
        learn = kind == "pixels_learned"
        if learn:
            labels = F.one_hot(labels, N_CLASSES)
        return PixelSet(images, labels, N_CLASSES, learn_labels=learn)
    labels = "poddl_learned" if kind == "poster_learned" else "poddl_fixed"
    poster = torch.randn(3, 12, 22, generator=g, dtype=torch.float64)
    return PosterSet(poster, HW, (1, 3), (3, 5), [1, 2, 0], N_CLASSES, labels=labels)


@functools.cache
def tiny_cfg(*overrides: str):
    """Composed once per override set (composing costs ~1 s); nothing below mutates it."""
    return compose_cfg("debug=smoke", "method=rat_bptt", "model.width=4", "algorithm.window=3",
                       "algorithm.total_window=7", "algorithm.min_window=5", "algorithm.batch_syn=4",
                       "algorithm.batch_real=12", *overrides)


def tiny_algo(kind: str, *overrides: str):
    cfg = tiny_cfg(*overrides)
    synset = tiny_synset(kind)
    ctx = tiny_ctx()
    res = AlgorithmResources(real=ctx.real, preprocess=ctx.preprocess, device=ctx.device, seed=int(cfg.seed),
                             make_model=model_factory(cfg.model, ctx.real))
    return RatBPTT(cfg.algorithm, synset, res), synset, cfg


def reference_grads(cfg, ctx, synset, theta0, plan, detach_at: int | None, inner_optim: str, lr: float):
    """Autograd through a plain loop over all T_end inner steps, its own model, augmentation and Adam;
    with `detach_at` the parameters (and Adam moments) are cut from the graph at that step."""
    flat = FlatModel(build_model(cfg.model, 3, N_CLASSES, HW[0]).double())
    aug = DSA("flip_rotate", mode="one", align_corners=False)  # apply() replays the plan's ops
    theta, m, v = theta0.clone().requires_grad_(True), torch.zeros_like(theta0), torch.zeros_like(theta0)
    for t in range(plan.t_end):
        if t == detach_at:
            theta, m, v = theta.detach().requires_grad_(True), m.detach(), v.detach()
        b = synset.sample(plan.syn_idx[t])
        logits = flat(theta, aug.apply(b.x, plan.syn_aug[t]))
        if b.y.dtype == torch.int64:
            loss = F.cross_entropy(logits, b.y)
        else:
            loss = -(b.y * logits.log_softmax(1)).sum(1).mean()
        (g,) = torch.autograd.grad(loss, theta, create_graph=True)
        if inner_optim == "sgd":
            theta = theta - lr * g
        else:
            m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
            # clamp: the conv biases before instance norm get exactly zero gradient, and sqrt'(0) = inf
            v_hat = (v / (1 - 0.999 ** (t + 1))).clamp_min(1e-300)
            theta = theta - lr * (m / (1 - 0.9 ** (t + 1))) / (v_hat.sqrt() + 1e-8)
    xr = aug.apply(ctx.preprocess(ctx.real.train_x[plan.real_idx]).double(), plan.real_aug)
    meta = F.cross_entropy(flat(theta, xr), ctx.real.train_y[plan.real_idx])
    tensors = [t for group in synset.param_groups().values() for t in group]
    return torch.autograd.grad(meta, tensors)


def rel_err(a, b) -> float:
    num = sum(float((x - y).pow(2).sum()) for x, y in zip(a, b)) ** 0.5
    return num / sum(float(y.pow(2).sum()) for y in b) ** 0.5


@pytest.mark.parametrize("kind,inner_optim", [("pixels", "adam"), ("pixels_learned", "adam"), ("poster", "adam"),
                                              ("poster_learned", "adam"), ("pixels", "sgd")])
def test_truncated_meta_gradient_equals_detached_unroll(kind, inner_optim):
    lr = 0.01 if inner_optim == "adam" else 0.1  # big enough that the inner network moves
    algo, synset, cfg = tiny_algo(kind, f"algorithm.inner_optim={inner_optim}", f"algorithm.inner_lr={lr}")
    plan = algo.draw(generator(0, "test"))
    assert 5 <= plan.t_end <= 7 and len(plan.syn_idx) == plan.t_end
    theta0 = algo.init_theta(3)
    assert theta0.dtype == torch.float64
    metrics = algo.backward(theta0, plan)
    ours = [p.grad for group in synset.param_groups().values() for p in group]
    assert len(ours) == (2 if "learned" in kind else 1) and all(g is not None for g in ours)
    ctx = tiny_ctx()
    truncated = reference_grads(cfg, ctx, synset, theta0, plan, plan.t_end - 3, inner_optim, lr)
    for a, b in zip(ours, truncated):  # images (pixels or poster) and, when learned, labels
        assert rel_err([a], [b]) < 1e-10
    full = reference_grads(cfg, ctx, synset, theta0, plan, None, inner_optim, lr)
    assert rel_err(truncated, full) > 1e-3, "truncation drops real terms: it must not equal the full unroll"
    assert metrics["t_end"] == plan.t_end and metrics["loss"] > 0


def test_window_covering_everything_is_the_full_unroll():
    algo, synset, cfg = tiny_algo("poster", "algorithm.window=7", "algorithm.min_window=4", "algorithm.inner_lr=0.01")
    plan = algo.draw(generator(1, "test"))
    theta0 = algo.init_theta(0)
    algo.backward(theta0, plan)
    full = reference_grads(cfg, tiny_ctx(), synset, theta0, plan, None, "adam", 0.01)
    assert rel_err([synset.poster.grad], full) < 1e-10


def test_hand_adam_matches_torch_adam():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(50, generator=g, dtype=torch.float64)
    p = torch.zeros(50, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.05)
    theta, m, v = torch.zeros(50, dtype=torch.float64), torch.zeros(50, dtype=torch.float64), torch.zeros(50)
    v = v.double()
    for t in range(1, 21):
        opt.zero_grad()
        ((p - target) ** 3).abs().sum().backward()
        grad = p.grad.clone()
        opt.step()
        theta, m, v = adam_update(theta, grad, m, v, t, 0.05)
        torch.testing.assert_close(theta, p.detach(), rtol=1e-12, atol=1e-14)


def test_adam_meta_gradient_is_finite_where_a_parameter_never_moves():
    theta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    g = theta * torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64) + torch.tensor([1.0, 0.0, 1.0])
    new, _, _ = adam_update(theta, g, torch.zeros(3), torch.zeros(3), 1, 0.1)
    (grad,) = torch.autograd.grad(new.sum(), theta)
    assert torch.isfinite(grad).all()


def test_image_gradient_clipping_follows_an_ema_of_the_norm():
    algo, synset, _ = tiny_algo("pixels")
    synset.images.grad = torch.full_like(synset.images, 1.0)
    n1 = synset.images.numel() ** 0.5
    m = algo.clip_image_grad()
    assert m["grad_norm"] == pytest.approx(n1) and algo.grad_ema == pytest.approx(n1)
    assert torch.all(synset.images.grad == 1.0), "first step: nothing to clip against"
    synset.images.grad = torch.full_like(synset.images, 10.0)  # a spike: norm 10·n1
    algo.clip_image_grad()
    ema = 0.9 * n1 + 0.1 * 10 * n1
    assert algo.grad_ema == pytest.approx(ema)
    assert synset.images.grad.norm().item() == pytest.approx(2.0 * ema), "clipped at clip_coef x EMA"
    algo2, _, _ = tiny_algo("pixels")
    algo2.load_state_dict(algo.state_dict())
    assert algo2.grad_ema == algo.grad_ema


def test_meta_step_is_seeded_by_iteration():
    a, sa, _ = tiny_algo("poster")
    b, sb, _ = tiny_algo("poster")
    ma, mb = a.meta_step(2, generator(0, "distill", 2)), b.meta_step(2, generator(0, "distill", 2))
    assert ma == mb and torch.equal(sa.poster.grad, sb.poster.grad)
    assert not torch.equal(a.init_theta(2), a.init_theta(3))


@pytest.mark.parametrize("method", ["rat_bptt", "podd"])
def test_smoke_run_writes_synset_and_eval(smoke_cfg, tmp_path, method):
    cfg = smoke_cfg(f"method={method}", "stages=[distill,eval]")
    run(cfg, run_dir=tmp_path / "run")
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["num_models"] == 2 and report["protocol"]["optimizer"] == "adam"
    syn = SynsetFile.load(tmp_path / "run" / "synset.pt")
    assert syn.lr is None and syn.meta["algorithm"] == "rat_bptt"
    assert (tmp_path / "run" / "synset.png").stat().st_size > 100
    if method == "podd":  # 4 classes of 16x16 at IPC 1: a 32x32 poster, 4x4 patches with soft labels
        assert report["num_images"] == 16 and report["poster"]["num_patches"] == 16
        assert report["poster"]["effective_ipc"] == pytest.approx(1.0) and report["meta"]["effective_ipc"] == 1.0
        assert syn.images.shape == (16, 3, 16, 16) and syn.soft_labels and syn.extra["poster"].shape == (3, 32, 32)
    else:
        assert syn.images.shape == (4, 3, 16, 16) and syn.labels.tolist() == [0, 1, 2, 3]


def test_resume_gives_the_uninterrupted_synset(smoke_cfg, tmp_path):
    common = ("method=rat_bptt", "stages=[distill]", "distill.eval_every=0", "synset.labels=learned")
    run(smoke_cfg(*common), run_dir=tmp_path / "whole")  # 4 iterations, checkpoints every 2
    run(smoke_cfg(*common, "algorithm.iterations=2"), run_dir=tmp_path / "killed")  # "killed" after 2
    run(smoke_cfg(*common, "resume=true", f"resume_dir={tmp_path / 'killed'}"), run_dir=tmp_path / "resumed")
    whole = SynsetFile.load(tmp_path / "whole" / "synset.pt")
    resumed = SynsetFile.load(tmp_path / "resumed" / "synset.pt")
    half = SynsetFile.load(tmp_path / "killed" / "synset.pt")
    assert torch.equal(whole.images, resumed.images) and torch.equal(whole.labels, resumed.labels)
    assert not torch.equal(whole.images, half.images)
    assert resumed.meta["iterations"] == 4


# RaT-BPTT-based presets (PoDD + TESLA presets need a buffer: tests/test_trajectory.py covers that algorithm).
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")
                 if p.stem.startswith(("rat_bptt_", "podd_")) and "/method: podd_tesla" not in p.read_text())


@pytest.mark.parametrize("experiment", PRESETS)
def test_preset_builds_and_takes_a_meta_step_on_fake_data(experiment, tmp_path):
    """Every RaT-BPTT/PoDD preset (shrunk by debug=smoke) builds its synset and algorithm and steps once."""
    cfg = compose_cfg(f"experiment={experiment}", "debug=smoke", tmp=tmp_path)
    real = load_real(cfg.dataset, cfg.paths.cache_dir)
    ctx = SimpleNamespace(real=real, preprocess=build_preprocessor(cfg.dataset, real, cfg.paths.cache_dir),
                          device=torch.device("cpu"), augment=None)  # RaT-BPTT draws its own augmentation
    synset = build_synset(cfg, ctx)
    algo = build_algorithm(cfg, ctx, synset)
    metrics = algo.meta_step(0, generator(cfg.seed, "distill", 0))
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in learnable_tensors(synset))
    assert synset.num_items >= 4 and not algo.needs_buffer and cfg.eval.optimizer == "adam"


# ---- fidelity to the reference code (FIDELITY.md F2, F15) ----
def test_reference_augmentation_draws_one_of_flip_or_rotate_per_call():
    """RaT-BPTT/PoDD (no --comp_aug): each call applies ONE op, flip or rotate, to the whole batch."""
    algo, _, cfg = tiny_algo("pixels")
    assert cfg.algorithm.syn_augment.mode == cfg.algorithm.real_augment.mode == "one"
    gen = generator(0, "aug")
    for aug in (algo.syn_aug, algo.real_aug):
        drawn = [aug.sample(4, HW, gen).ops for _ in range(200)]
        assert all(len(ops) == 1 for ops in drawn)
        counts = {op: sum(ops == [op] for ops in drawn) for op in ("flip", "rotate")}
        assert sum(counts.values()) == 200 and 70 < counts["flip"] < 130  # both ops, about half each


def test_align_corners_is_per_algorithm():
    """scale/rotate: align_corners=False for RaT-BPTT/PoDD (their util.py), True for MTT/TESLA's DSA."""
    algo, _, cfg = tiny_algo("pixels")
    assert algo.syn_aug.align_corners is False and algo.real_aug.align_corners is False
    assert cfg.augment.mode == "one" and cfg.augment.align_corners is False  # evaluation augmentation
    for method, expected in (("podd", False), ("tesla", True), ("mtt", True)):
        assert compose_cfg(f"method={method}").augment.align_corners is expected
    for hw in (HW, (6, 10)):
        x = torch.randn(2, 3, *hw, dtype=torch.float64)
        params = DSA("rotate").sample(2, hw, generator(3, "rot"))
        a = params.steps[0][1]["degrees"].double() * (torch.pi / 180)
        theta = torch.stack([torch.stack([a.cos(), -a.sin(), 0 * a], 1),
                             torch.stack([a.sin(), a.cos(), 0 * a], 1)], 1)
        for corners in (True, False):
            grid = F.affine_grid(theta, list(x.shape), align_corners=corners)
            want = F.grid_sample(x, grid, align_corners=corners)
            assert torch.allclose(DSA("rotate", align_corners=corners).apply(x, params), want, atol=1e-12)
        same = torch.allclose(DSA("rotate", align_corners=True).apply(x, params),
                              DSA("rotate", align_corners=False).apply(x, params), atol=1e-10)
        # Rotation/scale about the centre are the same pixel map under both conventions on a square image;
        # only non-square images (aspect of (W-1)/(H-1) vs W/H) see the difference.
        assert same == (hw[0] == hw[1])


def test_reference_epoch_is_a_pass_over_the_real_set():
    assert reference_steps_per_epoch(50000, 5000) == 10  # RaT-BPTT / PoDD CIFAR
    assert reference_steps_per_epoch(50000, 2000) == 25  # PoDD CIFAR-100
    assert reference_steps_per_epoch(5994, 3000) == 2    # PoDD CUB (last batch kept)
    assert reference_steps_per_epoch(100000, 500) == 200  # PoDD Tiny-ImageNet


def test_window_is_redrawn_once_per_reference_epoch():
    """window_redraw=epoch: T_end constant within an epoch (30 images / batch 12 -> 3 meta-steps), redrawn
    between epochs and the same after a resume (keyed by the epoch index); step: a draw per meta-step."""
    algo, _, _ = tiny_algo("pixels", "algorithm.window_redraw=epoch", "algorithm.min_window=3")
    assert algo.steps_per_epoch == 3
    gen = generator(0, "w")
    t = [algo.draw_t_end(gen, it) for it in range(60)]
    assert all(t[i] == t[i - i % 3] for i in range(60))
    assert len(set(t[::3])) > 1
    assert [algo.draw_t_end(generator(9, "other"), it) for it in range(60)] == t
    step, _, _ = tiny_algo("pixels", "algorithm.window_redraw=step", "algorithm.min_window=3")
    gen = generator(0, "w")
    ts = [step.draw_t_end(gen, it) for it in range(60)]
    assert any(ts[i] != ts[i - i % 3] for i in range(60))


def test_cosine_lr_schedule_scales_each_step_and_a_killed_run_resumes_exactly(smoke_cfg, tmp_path, monkeypatch):
    """distill.lr_schedule=cosine: every optimiser's lr is the configured one x lr_factor(iteration), a function
    of the iteration alone, so a run killed mid-way and resumed equals the uninterrupted one."""
    from tesla_podd.stages import checkpoint
    from tesla_podd.stages import distill as distill_stage

    common = ("method=rat_bptt", "stages=[distill]", "distill.eval_every=0", "synset.labels=learned",
              "distill.lr_schedule=cosine", "distill.checkpoint_every=2")  # 4 iterations
    run(smoke_cfg(*common), run_dir=tmp_path / "whole")
    cfg = smoke_cfg(*common)
    last = torch.load(checkpoint.checkpoint_path(tmp_path / "whole"), weights_only=False)
    assert distill_stage.lr_factor("cosine", 0, 4) == 1.0 and distill_stage.lr_factor("constant", 3, 4) == 1.0
    used = [g["lr"] for o in last["optimizers"] for g in o["param_groups"]]  # the lrs of the last step (it 3)
    assert used == pytest.approx([cfg.algorithm.lr_img * (0.5 + 0.5 * math.cos(math.pi * 3 / 4))] * len(used))

    run_killed_then_resumed(smoke_cfg, common, tmp_path / "killed", monkeypatch, at=2)
    whole = SynsetFile.load(tmp_path / "whole" / "synset.pt")
    resumed = SynsetFile.load(tmp_path / "killed" / "synset.pt")
    assert torch.equal(whole.images, resumed.images) and torch.equal(whole.labels, resumed.labels)


def test_snapshots_save_the_set_every_n_iterations_and_match_a_shorter_run(smoke_cfg, tmp_path):
    """distill.snapshot_every=2 over 4 iterations: snapshots/synset_2.pt only (the final set is synset.pt), the
    same set a 2-iteration run ends with (the per-iteration seeding does not depend on the total)."""
    common = ("method=rat_bptt", "stages=[distill]", "distill.eval_every=0", "synset.labels=learned")
    run(smoke_cfg(*common, "distill.snapshot_every=2"), run_dir=tmp_path / "four")
    assert sorted(p.name for p in (tmp_path / "four" / "snapshots").iterdir()) == ["synset_2.pt"]
    run(smoke_cfg(*common, "algorithm.iterations=2"), run_dir=tmp_path / "two")
    snap = SynsetFile.load(tmp_path / "four" / "snapshots" / "synset_2.pt")
    short = SynsetFile.load(tmp_path / "two" / "synset.pt")
    assert snap.meta["iterations"] == 2 and snap.images.shape == short.images.shape
    assert torch.equal(snap.images, short.images) and torch.equal(snap.labels, short.labels)


def test_evaluation_adam_runs_at_the_inner_lr_as_the_reference_test():
    """RaT-BPTT/PoDD test(): the evaluation network's Adam uses the distillation's inner lr (args.inner_lr)."""
    assert compose_cfg("method=rat_bptt", "algorithm.inner_lr=0.003").eval.lr == 0.003
    assert compose_cfg("experiment=podd_cifar10_ipc0.9").eval.lr == 0.001
    assert compose_cfg("method=podd", "algorithm=tesla").eval.lr == 0.001  # TESLA has no inner lr: Adam 1e-3
