"""MTT and TESLA as one Distiller: match expert trajectories with a choice of `grad_mode`.

`mtt` defaults to grad_mode=unrolled, `tesla` to grad_mode=tesla; either accepts any mode. Labels:
`synset.labels=hard` (the set's own), `teacher` (TESLA's soft labels: softmax of the expert at the
target epoch on the un-augmented images, recomputed every iteration, no gradient) or `teacher_last`
(the expert's last epoch; ablation). The learned student lr is positive by construction."""

from __future__ import annotations

import logging

import torch

from ..errors import ConfigError, check_choice, check_positive
from ..expert_store import ExpertTrajectories
from ..models import FlatModel
from ..seeding import generator
from ..transfer import to_device
from .base import PositiveScalar, learnable_tensors
from .execution import Execution
from .matching import GRAD_MODES, MATCHERS, StepPlan, Student, plans_to_device

log = logging.getLogger(__name__)
LABEL_MODES = ("hard", "teacher", "teacher_last", "learned", "poddl_fixed", "poddl_learned")


class TrajectoryMatching:
    needs_buffer = True

    def __init__(self, acfg, synset, res):
        check_choice("algorithm.grad_mode", acfg.grad_mode, GRAD_MODES)
        check_choice("synset.labels", res.label_mode, LABEL_MODES)
        for key in ("syn_steps", "expert_epochs", "max_start_epoch", "iterations"):
            check_positive(f"algorithm.{key}", acfg[key], integer=True)
        self.synset, self.device, self.augment = synset, res.device, res.augment
        self.iterations = int(acfg.iterations)
        self.mode = str(acfg.grad_mode)
        self.syn_steps = int(acfg.syn_steps)
        self.expert_epochs = int(acfg.expert_epochs)
        self.max_start_epoch = int(acfg.max_start_epoch)  # start ~ U{0..max_start_epoch-1}
        self.expert_order = str(acfg.get("expert_order", "uniform"))
        check_choice("algorithm.expert_order", self.expert_order, ("uniform", "cycle"))
        self.seed = int(res.seed)  # the cycle's per-pass orders (per-iteration draws come from the loop's generator)
        self.keep_every = int(acfg.exact_keep_every)
        self.lr_img, self.lr_lr, self.lr_label = float(acfg.lr_img), float(acfg.lr_lr), float(acfg.lr_label)
        self.momentum = float(acfg.momentum)
        self.learn_lr = bool(acfg.learn_lr)
        # The TESLA code scales its image gradient by 1/2 (`2 * torch.autograd.grad(...)` repeats a tuple instead of
        # doubling the tensor), so its lr_img acts on half the loss's gradient: 0.5 reproduces it (tesla.yaml).
        scale = acfg.get("synset_grad_scale", 1.0)
        check_positive("algorithm.synset_grad_scale", scale)
        self.synset_grad_scale = float(scale)
        # Optional ramp of that scale over the first iterations (not in the papers' code): a large first image step
        # (a late start epoch drawn first) otherwise sets the run's regime (docs/tesla-cpu-gap.md).
        warmup = acfg.get("synset_grad_warmup", 0)
        if warmup:
            check_positive("algorithm.synset_grad_warmup", warmup, integer=True)
        self.synset_grad_warmup = int(warmup or 0)
        self.labels = res.label_mode if res.label_mode in ("teacher", "teacher_last") else "own"
        # The latest target drawn is epoch (max_start_epoch - 1) + expert_epochs.
        self.experts = res.load_experts(self.max_start_epoch - 1 + self.expert_epochs)
        self.hw = tuple(res.real.image_shape[1:])
        self.flat = FlatModel(res.make_model().to(res.device))
        if self.experts[0].shape[1] != self.flat.num_params:
            raise ConfigError(f"The expert buffer has {self.experts[0].shape[1]} parameters per checkpoint but "
                              f"`model` ({res.model_name}) has {self.flat.num_params}: build a buffer for this model.")
        self.batch_syn = synset.num_items if acfg.batch_syn is None else int(acfg.batch_syn)
        if self.batch_syn > synset.num_items:
            raise ConfigError(f"`algorithm.batch_syn={self.batch_syn}` exceeds the {synset.num_items} synthetic items.")
        if acfg.compile and self.mode == "unrolled":
            raise ConfigError("`algorithm.compile=true` compiles one student step at a time, so it needs "
                              "`algorithm.grad_mode` tesla or exact, not unrolled (which keeps the graph across "
                              "all steps): set algorithm.grad_mode=exact for the same gradient as unrolled.")
        # How the student steps run (eager, compiled, CUDA graphs; lanes on CPU), chosen once for the run.
        self.execution = Execution.for_run(acfg, res.device, self.mode)
        self.student = Student.running(self.flat, synset, res.augment, self.execution)
        self.lr = PositiveScalar(float(acfg.lr_teacher), device=res.device)
        self.teacher = None  # flat parameters of the last labelling expert (for the saved soft labels)
        self._last_rows: dict[int, torch.Tensor] = {}  # labels=teacher_last with a device preload: CPU rows by expert

    # ---- optimisation -------------------------------------------------------------------------------
    def optimizers(self) -> list[torch.optim.Optimizer]:
        groups = self.synset.param_groups()
        opts = [torch.optim.SGD(groups["images"], lr=self.lr_img, momentum=self.momentum)]
        if "labels" in groups:
            opts.append(torch.optim.SGD(groups["labels"], lr=self.lr_label, momentum=self.momentum))
        if self.learn_lr:
            opts.append(self.lr.sgd(self.lr_lr, self.momentum))
        return opts

    def _plans(self, gen: torch.Generator, teacher: torch.Tensor | None) -> list[StepPlan]:
        """Mini-batches (permutation chunks, as MTT), augmentation parameters and labels per step."""
        n, plans, pool = self.synset.num_items, [], []
        for _ in range(self.syn_steps):  # every draw on the CPU, from `gen`
            if len(pool) < self.batch_syn:
                pool = torch.randperm(n, generator=gen).tolist()
            idx, pool = torch.tensor(pool[: self.batch_syn]), pool[self.batch_syn :]
            plans.append(StepPlan(idx, self.augment.sample(len(idx), self.hw, gen)))
        plans = plans_to_device(plans, self.device)  # then on the device at once: no step waits for the GPU
        if teacher is not None:
            with torch.no_grad():
                for plan in plans:
                    plan.y = torch.softmax(self.flat(teacher, self.synset.sample(plan.idx).x), dim=1)
        return plans

    def _expert_index(self, it: int, gen: torch.Generator) -> int:
        """uniform: a random expert; cycle: pass it // E visits every expert once, in an order drawn for that pass
        (a function of (seed, pass), so a resumed run walks the same order)."""
        n = len(self.experts)
        if self.expert_order == "cycle":
            order = torch.randperm(n, generator=generator(self.seed, "expert-order", it // n))
            return int(order[it % n])
        return int(torch.randint(n, (1,), generator=gen))

    def meta_step(self, it: int, gen: torch.Generator) -> dict[str, float]:
        k = self._expert_index(it, gen)
        start = int(torch.randint(self.max_start_epoch, (1,), generator=gen))
        traj = self.experts[k]
        dev = self.device
        # Rows on the device already (buffer.preload) convert there; rows from the files go over without a sync.
        theta0, target = (to_device(traj[e], dev).to(torch.float32) for e in (start, start + self.expert_epochs))
        teacher = None
        if self.labels == "teacher":
            teacher = target
        elif self.labels == "teacher_last":
            teacher = self._last_epoch(k)
        self.teacher = teacher
        plans = self._plans(gen, teacher)
        extra = {"keep_every": self.keep_every} if self.mode == "exact" else {}
        loss = MATCHERS[self.mode](self.student, plans, theta0, target, self.lr, **extra)
        scale = self.grad_scale_at(it)
        if scale != 1.0:  # the synthetic set's gradient only; the learned lr's is the loss's own
            for t in learnable_tensors(self.synset):
                if t.grad is not None:
                    t.grad.mul_(scale)
        if not self.learn_lr:
            self.lr.log.grad = None
        images = self.synset.param_groups()["images"]
        with torch.no_grad():  # one transfer for both figures
            grad_norm = torch.sqrt(sum((t.grad ** 2).sum() for t in images if t.grad is not None))
            image_norm = self.synset.materialize().x.flatten(1).norm(dim=1).mean()  # before this iteration's step
            grad_norm, image_norm = torch.stack([grad_norm, image_norm]).tolist()
        return {"loss": loss, "syn_lr": self.lr.value.item(), "start_epoch": float(start), "expert": float(k),
                "grad_norm": grad_norm, "image_norm": image_norm}

    def grad_scale_at(self, it: int) -> float:
        """`synset_grad_scale`, ramped linearly from 1/W of it at iteration 0 to all of it at W-1 when
        `synset_grad_warmup` = W > 0."""
        if self.synset_grad_warmup <= 1:
            return self.synset_grad_scale
        return self.synset_grad_scale * min(1.0, (it + 1) / self.synset_grad_warmup)

    def _last_epoch(self, k: int) -> torch.Tensor:
        """Expert k's last stored epoch (labels=teacher_last), read from its file: a device preload keeps only
        the epochs the matching reaches."""
        traj = self.experts[k]
        files = getattr(self.experts, "files", None)
        if files is not None and traj.device.type != "cpu":
            if k not in self._last_rows:  # read each expert's file once, not every iteration
                self._last_rows[k] = ExpertTrajectories([files[k]])[0][-1]
            return to_device(self._last_rows[k], self.device).to(torch.float32)
        return to_device(traj[-1], self.device).to(torch.float32)

    # ---- results ------------------------------------------------------------------------------------
    def eval_lr(self) -> float:
        return float(self.lr.value.item())

    def final_labels(self) -> torch.Tensor | None:
        """TESLA's soft labels from the last iteration's labelling expert (what the student last saw)."""
        if self.teacher is None:
            return None
        with torch.no_grad():
            return torch.softmax(self.flat(self.teacher, self.synset.materialize().x), dim=1)

    def state_dict(self) -> dict:
        return {"log_lr": self.lr.log.detach().cpu(), "teacher": None if self.teacher is None else self.teacher.cpu()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.lr.log.copy_(state["log_lr"])
        t = state["teacher"]
        self.teacher = None if t is None else t.to(self.device)
