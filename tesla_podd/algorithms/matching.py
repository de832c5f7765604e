"""The trajectory-matching loss and its gradient, three ways (ALGORITHMS.md sections 2-4).

A student starts at an expert checkpoint theta_0 and takes N steps on the synthetic set,
    g_i = grad_theta CE(f(theta_i; A(X[B_i]; w_i)), y_i),   theta_{i+1} = theta_i - alpha g_i,
and L = |theta_N - theta*|^2 / |theta_0 - theta*|^2. The mini-batches B_i, augmentation parameters
w_i and labels y_i are drawn once per iteration (`StepPlan`), so every pass replays them exactly.

- unrolled: autograd through all N steps (MTT; memory linear in N).
- tesla:    TESLA's two passes, one step's graph alive at a time; equals autograd through the
            unrolled loop with every theta_i detached inside g_i (drops the Hessian terms). Pass 2's
            steps are independent given theta_i, so `lanes` contiguous chunks of them can run side by
            side on CPU threads (algorithm.lanes; pass 1 keeps theta at each chunk's first step, and
            shares each of its steps' batches among the lanes).
- exact:    an adjoint (reverse) pass with stored parameter vectors, one step's graph alive at a
            time; equals full MTT backprop. Keeps every k-th theta_i and recomputes the rest.

Each function fills `.grad` of the synthetic set's learnable tensors and of the learnable lr,
and returns the loss. Gradients reach pixels or a poster alike through `synset.sample`."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from ..compiling import CompiledOrEager
from ..data.augment import AugParams
from ..lanes import side_by_side_threads
from ..models import FlatModel
from ..synset.base import soft_cross_entropy
from ..transfer import to_device_all
from .base import PositiveScalar, learnable_tensors

GRAD_MODES = ("unrolled", "tesla", "exact")


@dataclass
class StepPlan:
    idx: torch.Tensor  # synthetic-set indices of this step's mini-batch
    aug: AugParams  # this step's augmentation parameters
    y: torch.Tensor | None = None  # labels overriding the set's own (TESLA's soft labels), no grad


def plans_to_device(plans: list[StepPlan], device) -> list[StepPlan]:
    """An iteration's plans (drawn on the CPU) on the device in one pinned, non-blocking copy per dtype: the
    students index and augment with device tensors, so no step waits for the GPU (transfer.py)."""
    tensors = [t for p in plans for t in (p.idx, *p.aug.tensors(), *([] if p.y is None else [p.y]))]
    moved = iter(to_device_all(tensors, device))
    out = []
    for p in plans:
        idx = next(moved)
        aug = p.aug.with_tensors([next(moved) for _ in p.aug.tensors()])
        out.append(StepPlan(idx, aug, None if p.y is None else next(moved)))
    return out


class Student:
    """The student's loss at one step, rebuilt identically in every pass.

    `compiled=True` (algorithm.compile) runs each step's gradient (forward passes) and each step's
    vector-Jacobian product (backward passes) as torch.compile'd torch.func functions of (theta, x, y, v):
    the double backward becomes one traced graph that inductor fuses (~1.8x per pass-2 step on CPU). The
    synthetic batch (sampling, augmentation) stays eager, so gradients reach pixels or posters as before.

    `lanes > 1` (TESLA) runs pass 2 in that many chunks of steps on threads, and each pass-1 step's batch in that
    many parts: compiled functions are built GIL-free (inductor's C++ wrapper), and `lane_students` gives each
    further lane its own copy of the network."""

    def __init__(self, flat_model, synset, augment, compiled: bool = False, lanes: int = 1,
                 compile_mode: str = "default"):
        self.flat, self.synset, self.augment = flat_model, synset, augment
        self.compiled, self.lanes, self.compile_mode = bool(compiled), int(lanes), str(compile_mode)
        self._fns: dict[tuple, object] = {}
        self._copies: list[Student] = []
        self._warm_splits: set[tuple[int, ...]] = set()  # pass-1 batch splits whose compiled graphs exist

    @classmethod
    def running(cls, flat_model, synset, augment, execution) -> Student:
        """The student of a run's `Execution` (execution.py: eager, compiled, CUDA graphs, lanes)."""
        return cls(flat_model, synset, augment, compiled=execution.compiled, lanes=execution.lanes,
                   compile_mode=execution.compile_mode)

    def lane_students(self, n: int) -> list[Student]:
        """n students for n threads. functional_call swaps the module's parameters while it runs, so eager
        lanes each need their own module; compiled lanes share the compiled functions (their graphs take theta
        as an input and touch no module state)."""
        if self.compiled:
            return [self] * n
        while len(self._copies) < n - 1:
            self._copies.append(Student(FlatModel(copy.deepcopy(self.flat.module)), self.synset, self.augment))
        return [self, *self._copies[: n - 1]]

    def threads_ready(self) -> bool:
        """Whether the lanes may run at once: eager autograd is thread-safe; compiled functions are once compiled
        (never compile from two threads at once, and never run eager torch.func in threads: its transform
        levels are process-wide)."""
        if not self.compiled:
            return True
        return any(k[0] == "vjp" for k in self._fns) and all(f.state == "compiled" for f in self._fns.values())

    def run_chunks(self, work, chunks: list) -> list:
        """`work(chunk)` for every chunk: one chunk runs as it is; several run on the lanes, one intra-op thread
        each either way (the same arithmetic), side by side once that is safe (threads_ready)."""
        if len(chunks) == 1:
            return [work(chunks[0])]
        return side_by_side_threads(work, chunks, len(chunks) if self.threads_ready() else 1)

    def batch(self, plan: StepPlan):
        b = self.synset.sample(plan.idx)
        return self.augment.apply(b.x, plan.aug), (b.y if plan.y is None else plan.y)

    def loss(self, theta: torch.Tensor, plan: StepPlan) -> torch.Tensor:
        x, y = self.batch(plan)
        return soft_cross_entropy(self.flat(theta, x), y)

    def grad_no_graph(self, theta: torch.Tensor, plan: StepPlan) -> torch.Tensor:
        """g_i with no graph to the synthetic set (forward passes of TESLA/exact); on all lanes when lanes > 1."""
        with torch.no_grad():
            x, y = self.batch(plan)
        x, y = x.detach(), y.detach()
        if self.lanes > 1 and x.shape[0] > 1:
            return self._grad_in_parts(theta, x, y)
        return self._batch_grad(theta, x, y)

    def _batch_grad(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.compiled:
            return self._compiled(("grad", False, False), theta.detach(), _compiled_layout(x), y)
        th = theta.detach().requires_grad_(True)
        return torch.autograd.grad(soft_cross_entropy(self.flat(th, x), y), th)[0]

    def _grad_in_parts(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """TESLA's pass 1 is sequential in the steps, so its lanes share each step instead: the batch is cut into
        `lanes` contiguous parts whose mean-loss gradients, weighted by their sizes, add up to the batch's (equal up
        to rounding). The parts run side by side, one intra-op thread each: a 10-image step keeps two threads only
        ~70% busy. A split seen for the first time runs its parts one after another (it compiles)."""
        n = x.shape[0]
        parts = min(self.lanes, n)
        bounds = _contiguous_bounds(n, parts)
        sizes = tuple(hi - lo for lo, hi in zip(bounds[:-1], bounds[1:]))
        students = self.lane_students(parts)

        def part_grad(k: int) -> torch.Tensor:
            lo, hi = bounds[k], bounds[k + 1]
            return students[k]._batch_grad(theta, x[lo:hi], y[lo:hi]) * (sizes[k] / n)

        ready = self.threads_ready() and (not self.compiled or sizes in self._warm_splits)
        grads = side_by_side_threads(part_grad, list(range(parts)), parts if ready else 1)
        self._warm_splits.add(sizes)
        return torch.stack(grads).sum(0)

    def grad_with_graph(self, theta: torch.Tensor, plan: StepPlan):
        """(theta_i as a fresh leaf, g_i with create_graph) for the backward passes."""
        th = theta.detach().requires_grad_(True)
        g = torch.autograd.grad(self.loss(th, plan), th, create_graph=True)[0]
        return th, g

    def vjp(self, theta: torch.Tensor, plan: StepPlan, v: torch.Tensor, leaves: list[torch.Tensor],
            wrt_theta: bool = False):
        """One backward-pass step: g_i, d<g_i, v>/dtheta_i (when wrt_theta) and d<g_i, v>/d(each leaf)."""
        v = v.detach()
        if not self.compiled:
            th, g = self.grad_with_graph(theta, plan)
            grads = torch.autograd.grad((g * v).sum(), ([th] if wrt_theta else []) + leaves, allow_unused=True)
            return g.detach(), (grads[0] if wrt_theta else None), list(grads[1:] if wrt_theta else grads)
        x, y = self.batch(plan)  # eager, with the graph to the leaves
        diff_y = y.is_floating_point() and y.requires_grad
        g, d_theta, d_x, d_y = self._compiled(("vjp", wrt_theta, diff_y), theta.detach(),
                                              _compiled_layout(x.detach()), y.detach(), v)
        outs, douts = ([x, y], [d_x, d_y]) if diff_y else ([x], [d_x])
        return g, d_theta, list(torch.autograd.grad(outs, leaves, douts, allow_unused=True))

    def _compiled(self, key: tuple, *args):
        fn = self._fn(*key)
        out = fn(*args)
        if fn.state == "eager":  # compiling failed (warned once): plain autograd from here on, which lanes can thread
            self.compiled = False
        return out

    def _fn(self, kind: str, wrt_theta: bool, diff_y: bool):
        key = (kind, wrt_theta, diff_y)
        if key not in self._fns:
            device = next(iter(self.flat.module.parameters())).device
            self._fns[key] = CompiledOrEager(_step_function(self.flat, kind, wrt_theta, diff_y), device,
                                             f"the student step's {'gradient' if kind == 'grad' else 'VJP'}",
                                             gil_free=self.lanes > 1, mode=self.compile_mode)
        return self._fns[key]


def _contiguous_bounds(n: int, parts: int) -> list[int]:
    """Start of each of `parts` near-equal contiguous pieces of range(n), then n (pass-2 chunks, pass-1 batch parts)."""
    return [round(k * n / parts) for k in range(parts + 1)]


def _compiled_layout(x: torch.Tensor) -> torch.Tensor:
    """The batch as compiled CPU steps take it: channels-last images. Inductor runs the convolutions channels-last
    anyway, and a 3-channel NCHW input made the first one ~3x slower than the rest of its layer (one compiled
    IPC-1 step: 66 -> 55 ms at 1 thread, pass 2's VJP 164 -> 145 ms). Only the layout changes: that step's gradient
    came out bit-identical."""
    if x.dim() == 4 and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _step_function(flat, kind: str, wrt_theta: bool, diff_y: bool):
    """A pure function of (theta, x, y[, v]) for torch.compile: the step's gradient, or its VJP."""

    def loss(th, x, y):
        return soft_cross_entropy(flat(th, x), y)

    if kind == "grad":
        return torch.func.grad(loss)

    def inner(th, x, y, v):
        g = torch.func.grad(loss)(th, x, y)
        return (g * v).sum(), g

    argnums = tuple(i for i, on in ((0, wrt_theta), (1, True), (2, diff_y)) if on)

    def step_vjp(th, x, y, v):
        grads, g = torch.func.grad(inner, argnums=argnums, has_aux=True)(th, x, y, v)
        d = dict(zip(argnums, grads))
        return g, d.get(0), d[1], d.get(2)

    return step_vjp


def _add_grad(t: torch.Tensor, g: torch.Tensor | None) -> None:
    if g is not None:
        t.grad = g.detach().clone() if t.grad is None else t.grad + g.detach()


def match_unrolled(student: Student, plans: list[StepPlan], theta0, target, lr: PositiveScalar) -> float:
    alpha = lr.value  # keeps the graph to log(alpha)
    theta = theta0.detach().requires_grad_(True)
    start = theta
    for plan in plans:
        g = torch.autograd.grad(student.loss(theta, plan), theta, create_graph=True)[0]
        theta = theta - alpha * g
    loss = ((theta - target) ** 2).sum() / ((start.detach() - target) ** 2).sum()
    leaves = learnable_tensors(student.synset) + [lr.log]
    torch.autograd.backward(loss, inputs=[t for t in leaves if t.requires_grad])
    return loss.item()


def match_tesla(student: Student, plans: list[StepPlan], theta0, target, lr: PositiveScalar) -> float:
    alpha = lr.value.detach()
    leaves = learnable_tensors(student.synset)
    n_chunks = max(1, min(student.lanes, len(plans)))  # pass-2 chunks: the student's lanes
    bounds = _contiguous_bounds(len(plans), n_chunks)
    # Pass 1, no graph: theta_N and G = sum_i g_i; theta at each pass-2 chunk's first step.
    theta, grad_sum, chunk_starts = theta0.detach().clone(), torch.zeros_like(theta0), []
    for i, plan in enumerate(plans):
        if i in bounds[:-1]:
            chunk_starts.append(theta)
        g = student.grad_no_graph(theta, plan)
        grad_sum += g
        theta = theta - alpha * g
    denom = ((theta0 - target) ** 2).sum()
    resid = (theta - target).detach()
    loss = (resid**2).sum() / denom
    # Pass 2: dL/dX[B_i] = (2/D) (theta_N - theta*)^T (-alpha dg_i/dX), one step's graph at a time per chunk;
    # theta_i is recomputed on the way (same ops, same values) instead of stored.
    coef = -2.0 * alpha / denom

    def pass2(chunk) -> list[torch.Tensor | None]:
        lo, hi, theta, stud = chunk
        total: list[torch.Tensor | None] = [None] * len(leaves)
        for plan in plans[lo:hi]:
            g, _, grads = stud.vjp(theta, plan, resid, leaves)
            total = [t if gl is None else coef * gl if t is None else t + coef * gl for t, gl in zip(total, grads)]
            theta = theta - alpha * g
        return total

    chunks = list(zip(bounds[:-1], bounds[1:], chunk_starts, student.lane_students(n_chunks)))
    for total in student.run_chunks(pass2, chunks):
        for leaf, t in zip(leaves, total):
            _add_grad(leaf, t)
    lr.accumulate_grad(-2.0 / denom * (resid * grad_sum).sum())
    return loss.item()


def match_exact(student: Student, plans: list[StepPlan], theta0, target, lr: PositiveScalar,
                keep_every: int = 0) -> float:
    alpha = lr.value.detach()
    leaves = learnable_tensors(student.synset)
    n = len(plans)
    k = keep_every if keep_every > 0 else max(1, math.isqrt(max(1, n - 1)) + 1)  # ~sqrt(N): memory N/k + k vectors
    # Forward, no graph: keep theta_i for i = 0, k, 2k, ...
    kept, theta = {}, theta0.detach().clone()
    for i, plan in enumerate(plans):
        if i % k == 0:
            kept[i] = theta
        theta = theta - alpha * student.grad_no_graph(theta, plan)
    denom = ((theta0 - target) ** 2).sum()
    lam = (2.0 * (theta - target) / denom).detach()  # dL/dtheta_N
    loss = ((theta - target) ** 2).sum() / denom
    d_alpha = torch.zeros((), dtype=theta0.dtype, device=theta0.device)
    # Reverse, block by block: recompute the block's thetas, then one vector-Jacobian product per step:
    # dL/dX += -alpha (dg_i/dX)^T lam,  dL/dalpha += -<g_i, lam>,  lam <- lam - alpha H_i lam.
    for start in reversed(range(0, n, k)):
        block = [kept.pop(start)]
        for i in range(start, min(start + k, n) - 1):
            block.append(block[-1] - alpha * student.grad_no_graph(block[-1], plans[i]))
        for i in reversed(range(start, min(start + k, n))):
            g, d_theta, grads = student.vjp(block[i - start], plans[i], lam, leaves, wrt_theta=True)
            for leaf, gl in zip(leaves, grads):
                _add_grad(leaf, None if gl is None else -alpha * gl)
            d_alpha = d_alpha - (g * lam).sum()
            lam = lam - alpha * d_theta.detach()
    lr.accumulate_grad(d_alpha)
    return loss.item()


MATCHERS = {"unrolled": match_unrolled, "tesla": match_tesla, "exact": match_exact}
