"""ZCA whitening: kornia parity, KIP-style spectrum, inverses, batching and serialisation."""

from __future__ import annotations

import pytest
import torch
from kornia.enhance import ZCAWhitening

import tesla_podd.data.zca as zca_mod
from tesla_podd.data.zca import ZCA
from tesla_podd.errors import ConfigError


def data(n=400, c=3, h=4, w=4, seed=0, dtype=torch.float32):
    g = torch.Generator()
    g.manual_seed(seed)
    # Correlated pixels (a smooth per-image field plus noise), in [0, 1] like real images.
    base = torch.rand(n, c, 1, 1, generator=g, dtype=dtype)
    return (0.6 * base + 0.4 * torch.rand(n, c, h, w, generator=g, dtype=dtype)).clamp(0, 1)


def kip_normalise(x):
    f = x.reshape(x.shape[0], -1).double()
    f = f - f.mean(1, keepdim=True)
    return f / f.norm(dim=1, keepdim=True)


# ---------------------------------------------------------------- kornia
def test_kornia_transform_matches_kornia_forward(monkeypatch):
    x = data()
    ours = ZCA.fit(x, kind="kornia", eps=0.1)
    ref = ZCAWhitening(eps=0.1, compute_inv=True).fit(x)
    monkeypatch.setattr(zca_mod, "_CHUNK", 64)  # exercise the batching across chunk borders
    y = ours.transform(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.allclose(y, ref(x), atol=1e-5, rtol=1e-5)
    assert torch.allclose(ours.inverse(y), ref.inverse_transform(ref(x)), atol=1e-4)


def test_kornia_inverse_round_trip_and_spectrum():
    x = data(dtype=torch.float64)
    z = ZCA.fit(x, kind="kornia", eps=0.1)
    y = z.transform(x)
    assert torch.allclose(z.inverse(y), x, atol=1e-10)
    # Whitened covariance (unbiased, as kornia) = U diag(s / (s + eps)) U^T.
    f = x.reshape(x.shape[0], -1)
    f = f - f.mean(0)
    s, u = torch.linalg.eigh(f.T @ f / (f.shape[0] - 1))
    yf = y.reshape(y.shape[0], -1)
    yf = yf - yf.mean(0)
    assert torch.allclose(yf.T @ yf / (f.shape[0] - 1), (u * (s / (s + 0.1))) @ u.T, atol=1e-8)
    assert torch.allclose(yf.mean(0), torch.zeros(1, dtype=yf.dtype), atol=1e-12)


# ---------------------------------------------------------------- kip
def test_kip_whitened_spectrum():
    x = data(n=600, seed=1)
    z = ZCA.fit(x, kind="kip", reg=0.1)
    xn = kip_normalise(x)
    cov = xn.T @ xn / xn.shape[0]
    d = cov.shape[0]
    assert torch.trace(cov).item() == pytest.approx(1.0)  # unit-norm images: trace is exactly 1
    s, u = torch.linalg.eigh(cov)
    s = s.clamp_min(0)
    lam = 0.1 * torch.trace(cov) / d  # reg x mean eigenvalue
    y = z.transform(x).reshape(x.shape[0], -1).double()
    wcov = y.T @ y / y.shape[0]
    assert torch.allclose(wcov, (u * (s / (s + lam))) @ u.T, atol=1e-5)
    ev = torch.linalg.eigvalsh(wcov)
    assert torch.allclose(ev, (s / (s + lam)).sort().values, atol=1e-5)
    assert 0.99 < ev.max() < 1  # the strongest directions are whitened to ~1
    assert ev[0].abs() < 1e-6  # per-image centring removed the constant direction entirely
    assert torch.allclose(z.mean, torch.zeros(d))


def test_kip_inverse_returns_normalised_images_and_ignores_affine_changes():
    x = data(n=300, seed=2)
    z = ZCA.fit(x, kind="kip", reg=0.1)
    y = z.transform(x)
    back = z.inverse(y).reshape(x.shape[0], -1).double()
    assert torch.allclose(back, kip_normalise(x), atol=1e-5)
    # Per-image mean removal and L2 normalisation: brightness/contrast changes do not matter.
    assert torch.allclose(z.transform(0.5 * x + 0.2), y, atol=1e-5)


def test_kip_fit_is_chunk_independent(monkeypatch):
    x = data(n=300, seed=3)
    whole = ZCA.fit(x, kind="kip")
    monkeypatch.setattr(zca_mod, "_CHUNK", 37)
    chunked = ZCA.fit(x, kind="kip")
    assert torch.allclose(whole.transform_matrix, chunked.transform_matrix, atol=1e-5)
    assert whole.transform_matrix.dtype == torch.float32  # computed in float64, stored in float32


# ---------------------------------------------------------------- common
@pytest.mark.parametrize("kind", ["kornia", "kip"])
def test_state_dict_round_trip_and_gradients(kind, tmp_path):
    x = data(n=200)
    z = ZCA.fit(x, kind=kind)
    path = tmp_path / "zca.pt"
    torch.save(z.state_dict(), path)
    z2 = ZCA.from_state_dict(torch.load(path, weights_only=False))
    assert z2.kind == kind and torch.equal(z2.transform(x), z.transform(x))
    # Only the transform is stored; the reloaded inverse (recomputed in float64) equals the fitted one.
    assert "inverse" not in z.state_dict()
    y = z.transform(x)
    assert torch.allclose(z2.inverse(y), z.inverse(y), atol=1e-5)
    xs = x[:5].clone().double().requires_grad_()
    z.transform(xs).square().sum().backward()  # differentiable (synthetic images may be whitened)
    assert xs.grad is not None and torch.isfinite(xs.grad).all() and xs.grad.abs().sum() > 0


def test_bad_kind_raises_config_error():
    with pytest.raises(ConfigError, match="dataset.zca"):
        ZCA.fit(data(n=10), kind="pca")
