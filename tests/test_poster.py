"""PosterSet (PoDD): differentiable patches, labels, state, file extras, initialisation and pictures."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tesla_podd.data.preprocess import Preprocessor
from tesla_podd.data.real import RealData
from tesla_podd.data.zca import ZCA
from tesla_podd.pictures import poster_to_pixels, save_poster_picture
from tesla_podd.synset.poster import PosterSet
from tesla_podd.synset.poster_init import blend_cells, cell_bounds, init_poster
from tesla_podd.synset.poster_layout import coverage

HW = (8, 8)


def make_poster(labels="poddl_fixed", hw=(12, 21), grid=(1, 3), patches=(3, 5), order=(2, 0, 1), seed=0,
                dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    poster = torch.randn(3, *hw, generator=g, dtype=dtype)
    return PosterSet(poster, HW, grid, patches, list(order), num_classes=3, labels=labels)


def fake_real(num_classes=3, per_class=4, hw=HW, value_per_class=False) -> RealData:
    g = torch.Generator().manual_seed(1)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    if value_per_class:  # class c is the constant image 40·(c+1)
        x = (40 * (y + 1)).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, *hw).contiguous()
    else:
        x = torch.randint(0, 256, (len(y), 3, *hw), generator=g, dtype=torch.uint8)
    return RealData("fake", x, y, x[:2], y[:2], [f"class{c}" for c in range(num_classes)], (0.5,) * 3, (0.25,) * 3)


def test_sample_gradient_is_the_coverage_count():
    ps = make_poster()
    ps.sample(torch.arange(ps.num_items)).x.sum().backward()
    cov = coverage(ps.poster_hw, ps.corners, HW).double()
    assert cov.min() >= 1, "the default corners cover every pixel"
    for c in range(3):
        assert torch.equal(ps.poster.grad[c], cov)


def test_sample_crops_the_right_windows_and_materialize_is_detached():
    ps = make_poster()
    idx = torch.tensor([0, 7, 14])
    b = ps.sample(idx)
    assert b.x.shape == (3, 3, *HW)
    for k, i in enumerate(idx):
        y0, x0 = ps.corners[i].tolist()
        assert torch.equal(b.x[k], ps.poster[:, y0:y0 + 8, x0:x0 + 8])
    full = ps.materialize()
    assert full.x.shape[0] == ps.num_items == 15 and not full.x.requires_grad and not full.y.requires_grad
    assert torch.equal(full.x[idx], b.x.detach())


@pytest.mark.parametrize("labels", ["poddl_fixed", "poddl_learned"])
def test_soft_labels_sum_to_one(labels):
    ps = make_poster(labels)
    if labels == "poddl_learned":
        with torch.no_grad():  # a learned grid after some steps: any non-negative values
            ps.Y.mul_(torch.rand(ps.Y.shape, generator=torch.Generator().manual_seed(3), dtype=ps.Y.dtype) + 0.1)
            ps.Y.add_(0.05)
    y = ps.materialize().y
    assert y.shape == (15, 3) and y.dtype == torch.float64
    torch.testing.assert_close(y.sum(1), torch.ones(15, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (y >= 0).all()


def test_fixed_hard_and_learned_labels_agree_at_init():
    # 10-pixel class cells: some 8-pixel windows lie inside one cell, others straddle two.
    fixed, hard, learned = (make_poster(lab, hw=(12, 30)).materialize().y
                            for lab in ("poddl_fixed", "hard", "poddl_learned"))
    assert torch.equal(hard, fixed.argmax(1)) and hard.dtype == torch.int64
    # A patch inside one cell is one-hot of that cell's class (order [2, 0, 1]: the first cell is class 2).
    assert fixed[0].tolist() == [0.0, 0.0, 1.0] and learned[0].tolist() == [0.0, 0.0, 1.0]
    # The learned labels pool the one-hot grid: a patch over two cells mixes both, in proportion.
    assert ((learned > 0).sum(1) >= 1).all() and ((learned > 0).sum(1) == 2).any()


def test_learned_labels_get_gradients_and_project_clamps():
    ps = make_poster("poddl_learned")
    assert set(ps.param_groups()) == {"images", "labels"}
    b = ps.sample(torch.arange(ps.num_items))
    (b.y * torch.arange(3.0, dtype=torch.float64)).sum().backward()
    assert ps.Y.grad is not None and ps.Y.grad.abs().sum() > 0
    with torch.no_grad():
        ps.Y[0, 0, 0] = -1.0
    ps.project_()
    assert ps.Y.min() == 0.0
    assert set(make_poster("poddl_fixed").param_groups()) == {"images"}


def test_state_dict_round_trip():
    a, b = make_poster("poddl_learned", seed=0), make_poster("poddl_learned", seed=1)
    with torch.no_grad():
        a.Y.mul_(0.5)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.poster, b.poster) and torch.equal(a.Y, b.Y)
    assert torch.equal(a.materialize().y, b.materialize().y)
    assert b.poster.requires_grad and b.poster.is_leaf


def test_file_extra_reports_effective_ipc():
    # CIFAR-10's reference poster at IPC 0.9: 60 x 153 pixels = 0.896 IPC, 16 x 6 patches.
    g = torch.Generator().manual_seed(0)
    ps = PosterSet(torch.randn(3, 60, 153, generator=g), (32, 32), (2, 5), (6, 16), list(range(10)), 10)
    extra = ps.file_extra()
    assert extra["effective_ipc"] == pytest.approx(60 * 153 / (10 * 32 * 32)) and extra["effective_ipc"] <= 0.9
    assert extra["num_patches"] == 96 and extra["poster_hw"] == [60, 153] and extra["class_grid"] == [2, 5]
    assert torch.equal(extra["poster"], ps.poster.detach()) and extra["corners"].shape == (96, 2)


def test_build_from_config_sizes_the_poster_from_ipc():
    from omegaconf import OmegaConf

    real = fake_real(num_classes=10, per_class=2, hw=(32, 32))
    s = OmegaConf.create({"init": "noise", "labels": "poddl_learned", "label_layout": "pooled",
                          "class_num_y": None, "class_num_x": None,
                          "poster_height": None, "poster_width": None, "patch_num_y": None, "patch_num_x": None})
    ps = PosterSet.build(real, Preprocessor(real.mean, real.std), s, 0.9, lambda grid: list(range(10)),
                         torch.Generator().manual_seed(0), "cpu")
    assert ps.poster_hw == (60, 153) and ps.class_grid == (2, 5) and ps.num_items == 96
    assert ps.poster.std().item() == pytest.approx(1.0, abs=0.05), "the paper's N(0,1) init"


def test_blend_cells_paints_each_class_in_its_cell_and_mixes_at_borders():
    per_class = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 8, 8)  # class c: the constant c
    out = blend_cells(per_class, (8, 30), (1, 3), [2, 0, 1], margin=2)
    cols = cell_bounds(30, 3)
    assert cols == [(0, 10), (10, 20), (20, 30)]
    assert out[:, :, 4].eq(2).all() and out[:, :, 15].eq(0).all() and out[:, :, 25].eq(1).all()
    # At the border of cells 0 (class 2) and 1 (class 0) both classes contribute.
    assert 0 < out[0, 0, 9] < 2 and 0 < out[0, 0, 10] < 2


def test_real_init_shows_each_class_and_gaussian_has_class_means():
    real = fake_real(value_per_class=True)
    pre = Preprocessor(real.mean, real.std)
    g = torch.Generator().manual_seed(0)
    poster = init_poster("real", real, pre, (8, 30), (1, 3), [2, 0, 1], g)
    expected = pre(real.train_x[[8, 0, 4]])[:, :, 0, 0]  # classes 2, 0, 1 in cell order
    for k, col in enumerate((4, 15, 25)):
        torch.testing.assert_close(poster[:, 4, col], expected[k])
    gauss = init_poster("gaussian", real, pre, (8, 30), (1, 3), [2, 0, 1], g)
    torch.testing.assert_close(gauss[:, 4, 4], expected[0], atol=1e-5, rtol=0)  # constant class: std 0
    unit = init_poster("unit_noise", real, pre, (8, 30), (1, 3), [2, 0, 1], g)
    assert unit.std().item() == pytest.approx((3 * 8 * 8) ** -0.5, rel=0.15)


def test_picture_is_written_with_the_class_grid(tmp_path):
    ps = make_poster(hw=(16, 30))
    real = fake_real()
    out = save_poster_picture(ps, tmp_path / "poster.png", Preprocessor(real.mean, real.std), real.class_names)
    img = Image.open(out).convert("RGB")
    scale = 8  # small posters are upscaled (nearest), at most 8x
    assert img.size == (30 * scale, 16 * scale)
    x_border = cell_bounds(30, 3)[1][0] * scale
    column = [img.getpixel((x_border, y)) for y in range(img.size[1])]
    assert all(p == (255, 255, 255) for p in column), "a white line at each class-cell border"


def test_poster_pixels_undo_zca_tile_by_tile():
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(40, 3, *HW, generator=g)
    pre = Preprocessor((0.5,) * 3, (0.25,) * 3, ZCA.fit(imgs, kind="kornia", eps=0.1))
    left, right = pre.zca.transform(imgs[:2])
    poster = torch.cat([left, right], dim=2)  # [3, 8, 16]: two whitened images side by side
    pixels = poster_to_pixels(poster, pre, HW)
    torch.testing.assert_close(pixels, torch.cat([imgs[0], imgs[1]], dim=2), atol=1e-4, rtol=0)


def test_reference_init_has_unit_l2_per_class_area():
    """init=reference (PoDD src/base.py): Gaussian class areas projected to unit L2, cross-faded where they
    overlap. Areas tiling the poster exactly keep norm 1; the README's 153x60 CIFAR-10 poster is ~0.018/pixel."""
    from tesla_podd.synset.poster_init import fade_weights, reference_poster

    g = torch.Generator().manual_seed(0)
    tiled = reference_poster(3, (32, 32), (64, 160), (2, 5), g)
    norms = tiled.reshape(3, 2, 32, 5, 32).permute(1, 3, 0, 2, 4).reshape(10, -1).norm(dim=1)
    assert torch.allclose(norms, torch.ones(10), atol=1e-5)
    poster = reference_poster(3, (32, 32), (60, 153), (2, 5), g)
    assert poster.shape == (3, 60, 153) and abs(float(poster.std()) - 3072 ** -0.5) < 0.003
    w = fade_weights(153, 32, 5)  # corners 0, 30, 60, 91, 121: overlaps of 2, 2, 1, 2 pixels
    assert torch.allclose(w.sum(0), torch.ones(153))
    assert w[0, 30:32].tolist() == [1.0, 0.0] and w[2, 91].item() == 1.0 and w[3, 91].item() == 0.0
    real = RealData("t", torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1]),
                    torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.tensor([0]), ["a", "b"], (0.5,) * 3, (0.5,) * 3)
    p = init_poster("reference", real, None, (32, 60), (1, 2), [1, 0], torch.Generator().manual_seed(1))
    # two unit areas overlapping by 4 columns (weights 1, 2/3, 1/3, 0 and complements): E|p|^2 = (56 + 28/9) / 32
    assert p.shape == (3, 32, 60) and abs(float(p.norm()) - ((56 + 28 / 9) / 32) ** 0.5) < 0.1
