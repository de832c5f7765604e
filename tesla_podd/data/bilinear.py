"""Bilinear sampling of an affine grid with a deterministic backward (DSA's scale/rotate under `deterministic`).

`F.grid_sample`'s CUDA backward scatters each output gradient into its four source pixels with atomic adds, whose
order (and so the float rounding) changes from run to run; torch refuses it under deterministic algorithms. Here
the forward is the same interpolation, written as a gather of the four corners times their weights (a gather has
no reduction: deterministic), and the backward is its transpose as a matmul: grad_x[b] = grad_out[b] @ M[b], with
M[b][p, q] = the weight of source pixel q in output pixel p (at most four non-zeros per row). Matmuls reduce in a
fixed order, so the result is the same on every run. M is dense, [H*W, H*W] per image: 4 MB for a 32 x 32
float32 image, 64 MB at 64 x 64; it is built for a few images at a time (at most ~256 MB), never for the whole
batch. The cost is the matmul, ~H*W times the work of the scatter: fine on a GPU at 32 px, noticeable at 64 px.
The backward is itself made of differentiable ops, so graphs built through it (create_graph) work as well."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CHUNK_BYTES = 256 * 2**20  # the dense interpolation matrices built at once in the backward pass


def corner_weights(grid: torch.Tensor, h: int, w: int, align_corners: bool):
    """Flat source indices [N, P, 4] (nw, ne, sw, se) and weights [N, P, 4] of bilinear sampling at `grid`
    ([N, Ho, Wo, 2] in [-1, 1], as F.grid_sample), zero padding: a corner off the image gets weight 0 (and index 0)."""
    gx, gy = grid[..., 0].flatten(1), grid[..., 1].flatten(1)
    if align_corners:  # grid_sample's source-index formulas, so the weights round as it does
        ix, iy = (gx + 1) / 2 * (w - 1), (gy + 1) / 2 * (h - 1)
    else:
        ix, iy = ((gx + 1) * w - 1) / 2, ((gy + 1) * h - 1) / 2
    x0, y0 = torch.floor(ix), torch.floor(iy)
    x1, y1 = x0 + 1, y0 + 1
    wx = (x1 - ix, ix - x0)  # weights of columns x0, x1
    wy = (y1 - iy, iy - y0)  # weights of rows y0, y1
    idx, wts = [], []
    for yy, wyy in ((y0, wy[0]), (y1, wy[1])):
        for xx, wxx in ((x0, wx[0]), (x1, wx[1])):
            inside = (xx >= 0) & (xx <= w - 1) & (yy >= 0) & (yy <= h - 1)
            idx.append(torch.where(inside, yy * w + xx, torch.zeros_like(xx)).long())
            wts.append(torch.where(inside, wyy * wxx, torch.zeros_like(wxx)))
    return torch.stack(idx, -1), torch.stack(wts, -1)


def _transposed(grad: torch.Tensor, idx: torch.Tensor, wts: torch.Tensor, hw_in: int) -> torch.Tensor:
    """grad [N, C, P] -> [N, C, hw_in]: grad @ M, M built a few images at a time (see the module docstring)."""
    n, _, p = grad.shape
    per_image = p * hw_in * grad.element_size()
    step = max(1, _CHUNK_BYTES // max(1, per_image))
    cols = torch.arange(hw_in, device=grad.device)
    parts = []
    for lo in range(0, n, step):
        i, wk = idx[lo : lo + step], wts[lo : lo + step]
        m = ((i.unsqueeze(-1) == cols).to(grad.dtype) * wk.unsqueeze(-1)).sum(2)  # [b, P, hw_in]
        parts.append(torch.bmm(grad[lo : lo + step], m))
    return torch.cat(parts)


class _Bilinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, idx: torch.Tensor, wts: torch.Tensor) -> torch.Tensor:
        n, c, hw = x.shape
        p = idx.shape[1]
        corners = x.gather(2, idx.reshape(n, 1, p * 4).expand(n, c, p * 4)).view(n, c, p, 4)
        ctx.save_for_backward(idx, wts)
        ctx.hw = hw
        return (corners * wts.unsqueeze(1)).sum(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        idx, wts = ctx.saved_tensors
        return _transposed(grad, idx, wts, ctx.hw), None, None


def affine_sample(x: torch.Tensor, theta: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """F.grid_sample(x, F.affine_grid(theta, x.shape), bilinear, zeros padding) with a deterministic backward in x
    (theta gets no gradient: DSA's parameters are drawn, not learned)."""
    n, c, h, w = x.shape
    grid = F.affine_grid(theta.detach().to(x.dtype), [n, c, h, w], align_corners=align_corners)
    idx, wts = corner_weights(grid, h, w, align_corners)
    return _Bilinear.apply(x.reshape(n, c, h * w), idx, wts).view(n, c, h, w)
