"""The deterministic bilinear sampler (deterministic=true) equals grid_sample, forward and backward, in float64."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tesla_podd.data import bilinear
from tesla_podd.data.augment import DSA
from tesla_podd.data.bilinear import affine_sample


def _thetas(kind: str, n: int, g: torch.Generator) -> torch.Tensor:
    if kind == "scale":
        s = torch.rand(n, 2, generator=g, dtype=torch.float64) * (1.2 - 1 / 1.2) + 1 / 1.2
        z = torch.zeros(n, dtype=torch.float64)
        return torch.stack([torch.stack([s[:, 0], z, z], 1), torch.stack([z, s[:, 1], z], 1)], 1)
    a = (torch.rand(n, generator=g, dtype=torch.float64) * 30 - 15) * math.pi / 180
    z = torch.zeros_like(a)
    return torch.stack([torch.stack([a.cos(), -a.sin(), z], 1), torch.stack([a.sin(), a.cos(), z], 1)], 1)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("kind", ["scale", "rotate"])
def test_forward_and_backward_equal_grid_sample(kind, align_corners, monkeypatch):
    monkeypatch.setattr(bilinear, "_CHUNK_BYTES", 3 * 7 * 9 * 7 * 9 * 8)  # several chunks in the backward
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 7, 9, generator=g, dtype=torch.float64, requires_grad=True)
    theta = _thetas(kind, 5, g)
    ref = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=align_corners),
                        align_corners=align_corners)
    out = affine_sample(x, theta, align_corners)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    v = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (g_ref,) = torch.autograd.grad(ref, x, v)
    (g_out,) = torch.autograd.grad(out, x, v)
    torch.testing.assert_close(g_out, g_ref, rtol=0, atol=1e-12)


def test_backward_is_differentiable_for_graphs_built_through_it():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    theta = _thetas("rotate", 2, g)
    torch.autograd.gradcheck(lambda t: affine_sample(t, theta, True), (x,))
    torch.autograd.gradgradcheck(lambda t: affine_sample(t, theta, False) ** 2, (x,))


def test_dsa_uses_it_under_deterministic_algorithms_with_the_same_values():
    dsa = DSA(strategy="scale_rotate", mode="all")
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    params = dsa.sample(3, (8, 8), torch.Generator().manual_seed(4))
    ref = dsa.apply(x, params)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.use_deterministic_algorithms(True)
    try:
        out = dsa.apply(x, params)
        (g_out,) = torch.autograd.grad(out.square().sum(), x)
    finally:
        torch.use_deterministic_algorithms(False)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_out, g_ref, rtol=0, atol=1e-12)
