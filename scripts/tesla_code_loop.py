#!/usr/bin/env python
"""The TESLA code's distillation loop, transcribed on our network and DSA: a check of our distill stage.

It follows that code's procedure and its random streams: one global generator for the mini-batches and
augmentations, the expert files walked in a shuffled order (reshuffled after each pass), the start epoch from
numpy, plain SGD (momentum 0.5) on the images and on the student lr itself, and the image gradient without the
factor 2 (as `2 * torch.autograd.grad(...)` leaves it). Everything else is the CPU preset's
(`experiment=tesla_cifar10_ipc1_cpu`). `--draws ours` takes each iteration's draws from the distill stage's
generator instead, so the two loops can be compared on identical draws. It writes the set in the MTT layout
(images.pt, labels.pt, lr.pt) and a summary JSON; the eval stage scores it as any imported set:

    python scripts/tesla_code_loop.py OUT --buffers /path/to/reference_buffers --init /path/to/images_zca_0.pt \\
        --zca-from <a run's synset.pt with the same ZCA> --seed 0
    python -m tesla_podd.train experiment=tesla_cifar10_ipc1_cpu stages=[eval] eval.synset_format=mtt \\
        eval.synset_path=OUT ...   # the run's data options (train_indices, val_size)

docs/tesla-cpu-gap.md reports what it gave beside the distill stage on the same inputs."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tesla_podd import api  # noqa: E402
from tesla_podd.data.augment import build_augment  # noqa: E402
from tesla_podd.models import FlatModel, build_model  # noqa: E402
from tesla_podd.seeding import generator  # noqa: E402
from tesla_podd.synset.file import SynsetFile  # noqa: E402


def load_experts(folder: Path) -> list[torch.Tensor]:
    files = sorted(folder.glob("replay_buffer_*.pt"), key=lambda f: int(f.stem.rsplit("_", 1)[1]))
    return [torch.stack([torch.cat([p.reshape(-1) for p in snap]) for snap in traj])
            for f in files for traj in torch.load(f, map_location="cpu")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--buffers", type=Path, required=True, help="folder of replay_buffer_<n>.pt (one expert each)")
    ap.add_argument("--init", type=Path, required=True, help="initial images, [0, 1] pixels, class-major")
    ap.add_argument("--zca-from", type=Path, required=True, help="a synset.pt whose preprocessing (ZCA) to use")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--draws", choices=("code", "ours"), default="code",
                    help="code: the TESLA code's random streams; ours: the distill stage's (a uniform expert, the "
                         "start epoch, then each step's permutation and augmentation, from generator(seed, "
                         "'distill', it))")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)
    cfg = api.compose("experiment=tesla_cifar10_ipc1_cpu")
    a = cfg.algorithm
    experts = load_experts(args.buffers)
    zca = SynsetFile.load(args.zca_from).preprocess.zca
    x = zca.transform(torch.load(args.init, map_location="cpu").float()).detach().requires_grad_(True)
    n_img = x.shape[0]
    y = torch.arange(n_img) * cfg.dataset.num_classes // n_img  # class-major
    flat = FlatModel(build_model(cfg.model, 3, cfg.dataset.num_classes, x.shape[-1]))
    aug = build_augment(**cfg.augment)
    lr = torch.tensor(float(a.lr_teacher), requires_grad=True)
    opt_x = torch.optim.SGD([x], lr=float(a.lr_img), momentum=float(a.momentum))
    opt_lr = torch.optim.SGD([lr], lr=float(a.lr_lr), momentum=float(a.momentum))
    ce = torch.nn.functional.cross_entropy
    order, pos, t0 = list(range(len(experts))), 0, time.time()
    random.shuffle(order)
    for it in range(int(a.iterations)):
        if args.draws == "ours":  # the distill stage's draws, in its order (TrajectoryMatching.meta_step)
            gen = generator(args.seed, "distill", it)
            traj = experts[int(torch.randint(len(experts), (1,), generator=gen))]
            start = int(torch.randint(int(a.max_start_epoch), (1,), generator=gen))
        else:
            gen = torch.default_generator
            traj = experts[order[pos]]
            pos += 1
            if pos == len(order):  # a pass over the files ends: reshuffle
                pos = 0
                random.shuffle(order)
            start = np.random.randint(0, int(a.max_start_epoch))
        theta0, target = traj[start], traj[start + int(a.expert_epochs)]
        dist = ((theta0 - target) ** 2).sum()
        alpha = lr.item()
        # Pass 1: the student's steps without a graph to the images, keeping each step's batch and augmentation.
        thetas, grad_sum, steps = [theta0], torch.zeros_like(theta0), []
        for _ in range(int(a.syn_steps)):
            idx = torch.randperm(n_img, generator=gen)
            draw = aug.sample(n_img, tuple(x.shape[-2:]), gen)
            steps.append((idx, draw))
            th = thetas[-1].detach().requires_grad_(True)
            g = torch.autograd.grad(ce(flat(th, aug.apply(x.detach()[idx], draw)), y[idx]), th)[0]
            grad_sum += g
            thetas.append(thetas[-1] - alpha * g)
        # Pass 2: d(v . g_i / D)/dX with v = alpha (theta* - theta_0) + alpha^2 G, no factor 2.
        v = alpha * (target - theta0) + alpha**2 * grad_sum
        x_grad = torch.zeros_like(x)
        for theta_i, (idx, draw) in zip(thetas, steps):
            th = theta_i.detach().requires_grad_(True)
            g_i = torch.autograd.grad(ce(flat(th, aug.apply(x[idx], draw)), y[idx]), th, create_graph=True)[0]
            x_grad += torch.autograd.grad((v * g_i).sum() / dist, x)[0]
        loss = ((theta0 - lr * grad_sum - target) ** 2).sum() / dist
        lr.grad = torch.autograd.grad(loss, lr)[0]
        x.grad = x_grad
        opt_x.step()
        opt_lr.step()
        if it % 10 == 0:
            print(f"iteration {it}: loss {loss.item():.4f}, lr {lr.item():.6f}, "
                  f"image norm {x.detach().flatten(1).norm(dim=1).mean():.1f}, {time.time() - t0:.0f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(x.detach().clone(), args.out / "images.pt")
    torch.save(y.clone(), args.out / "labels.pt")
    torch.save(torch.tensor(lr.item()), args.out / "lr.pt")
    summary = {"seed": args.seed, "draws": args.draws, "iterations": int(a.iterations), "lr": lr.item(),
               "image_norm": x.detach().flatten(1).norm(dim=1).mean().item(), "wall_s": time.time() - t0}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
