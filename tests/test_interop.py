"""Sets that travel: importers on files written in each reference's layout, exports, the round trip through
the MTT layout (same evaluation network by network), clear errors, the Python API and its documented example."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tesla_podd.data.preprocess import Preprocessor
from tesla_podd.errors import DataError
from tesla_podd.synset.file import SynsetFile
from tesla_podd.synset.interop import export_synset, import_synset, to_model_space
from tesla_podd.train import run

REPO = Path(__file__).resolve().parents[1]
SHAPE, N_CLASSES = (3, 16, 16), 4
PRE = Preprocessor([0.5] * 3, [0.25] * 3)


def _import(path, fmt, **kw):
    return import_synset(path, fmt, preprocess=PRE, class_names=list("abcd"), dataset="fake", image_shape=SHAPE, **kw)


def _images(n=8, seed=0):
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def test_mtt_layout_hard_labels_and_learned_lr(tmp_path):
    x = _images()
    torch.save(x, tmp_path / "images_best.pt")
    torch.save(torch.arange(4).repeat_interleave(2), tmp_path / "labels_best.pt")
    torch.save(torch.tensor(0.0123, requires_grad=True), tmp_path / "syn_lr_best.pt")  # TESLA keeps a leaf
    syn = _import(tmp_path, "mtt")
    assert torch.equal(syn.images, x) and syn.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert syn.lr == pytest.approx(0.0123) and syn.meta["import_format"] == "mtt"
    assert _import(tmp_path / "images_best.pt", "mtt", lr=0.5).lr == 0.5  # an explicit lr wins


def test_datm_layout_soft_labels_and_lr(tmp_path):
    logits = torch.randn(8, N_CLASSES)
    torch.save(_images(), tmp_path / "images_best.pt")
    torch.save(logits, tmp_path / "labels_best.pt")
    torch.save(torch.tensor(0.01), tmp_path / "lr_best.pt")
    syn = _import(tmp_path, "datm", softmax_labels=True)
    assert syn.soft_labels and torch.allclose(syn.labels, torch.softmax(logits, 1)) and syn.lr == pytest.approx(0.01)


def test_rat_bptt_checkpoint_flat_rows_and_default_class_major_labels(tmp_path):
    x = _images()
    torch.save({"epoch": 3, "model_state_dict": {"module.data.weight": x.reshape(8, -1)},
                "optimizer_state_dict": {}}, tmp_path / "IPC_2.pth")
    syn = _import(tmp_path / "IPC_2.pth", "rat_bptt")
    assert torch.equal(syn.images, x) and syn.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and syn.lr is None
    soft = torch.nn.functional.one_hot(torch.arange(4).repeat_interleave(2), 4).float()
    torch.save({"model_state_dict": {"module.data.weight": x.reshape(8, -1)},
                "label_state_dict": {"module.label.weight": soft}}, tmp_path / "learned.pth")
    assert torch.equal(_import(tmp_path / "learned.pth", "rat_bptt").labels, soft)
    with pytest.raises(DataError, match="module.data.weight"):
        torch.save({"weights": x}, tmp_path / "other.pth")
        _import(tmp_path / "other.pth", "rat_bptt")


def test_podd_poster_is_cut_into_our_patches(tmp_path):
    from tesla_podd.synset.poster import PosterSet
    from tesla_podd.synset.poster_layout import default_class_grid, default_patch_grid

    poster = torch.randn(1, 3, 24, 40, generator=torch.Generator().manual_seed(1))
    torch.save(poster, tmp_path / "run_poster.pt")
    syn = _import(tmp_path, "podd")
    grid = default_class_grid(N_CLASSES)
    ours = PosterSet(poster[0], (16, 16), grid, default_patch_grid((24, 40), (16, 16), grid), list(range(4)), 4)
    want = ours.materialize()
    assert torch.equal(syn.images, want.x) and torch.allclose(syn.labels, want.y)
    assert syn.extra["poster_hw"] == [24, 40]
    with pytest.raises(DataError, match=r"PoDD labels .* reference layout"):  # a learned-label file of the wrong shape
        torch.save(torch.ones(2, 2, 4), tmp_path / "run_label.pt")
        _import(tmp_path, "podd")


@pytest.mark.parametrize("bad,match", [
    (torch.randn(8, 16, 16, 3), "channels-last"),
    (torch.randn(8, 3, 32, 32), r"\[N, 3, 16, 16\]"),
])
def test_shape_mismatches_are_named(tmp_path, bad, match):
    torch.save(bad, tmp_path / "images.pt")
    with pytest.raises(DataError, match=match):
        _import(tmp_path, "mtt")


def test_class_and_normalisation_mismatches_are_named(tmp_path):
    torch.save(_images(), tmp_path / "images.pt")
    torch.save(torch.arange(8), tmp_path / "labels.pt")  # 8 classes, dataset has 4
    with pytest.raises(DataError, match="4 classes"):
        _import(tmp_path, "mtt")
    torch.save(torch.arange(4).repeat_interleave(2), tmp_path / "labels.pt")
    real = torch.randint(0, 256, (64, *SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    torch.save(torch.rand(8, *SHAPE) * 0.02, tmp_path / "images.pt")  # far too flat for this model space
    with pytest.raises(DataError, match=r"spread \(std\).*normalise\(mean/std\)"):
        _import(tmp_path, "mtt", reference_images=real)
    real_std = float(PRE(real).std())
    drifted = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(3))
    torch.save(drifted / drifted.std() * 5 * real_std, tmp_path / "images.pt")  # a distilled set's drift: 5x
    assert _import(tmp_path, "mtt", reference_images=real).images.shape == (8, *SHAPE)
    torch.save(drifted / drifted.std() * 20 * real_std, tmp_path / "images.pt")  # 20x: a wrong scale
    with pytest.raises(DataError, match=r"spread \(std\)"):
        _import(tmp_path, "mtt", reference_images=real)
    with pytest.raises(DataError, match="not \\[0, 1\\] pixels"):
        to_model_space(_images() * 3, PRE)
    pixels = torch.rand(8, *SHAPE)
    torch.save(pixels, tmp_path / "images.pt")
    syn = _import(tmp_path, "mtt", space="pixels", reference_images=real)
    assert torch.allclose(syn.images, (pixels - 0.5) / 0.25)


def test_export_writes_mtt_folder_and_safetensors(tmp_path):
    syn = SynsetFile(images=_images(), labels=torch.arange(4).repeat_interleave(2), lr=0.02, preprocess=PRE,
                     class_names=["air plane", "b", "c", "d"], dataset="fake")
    paths = export_synset(syn, tmp_path / "out")
    out = tmp_path / "out"
    assert torch.equal(torch.load(out / "images.pt"), syn.images)
    assert torch.load(out / "labels.pt").tolist() == syn.labels.tolist() and float(torch.load(out / "lr.pt")) == 0.02
    folders = sorted(p.name for p in (out / "images").iterdir())
    assert folders == ["0_air_plane", "1_b", "2_c", "3_d"] and len(list((out / "images" / "1_b").glob("*.png"))) == 2
    from safetensors.torch import load_file

    st = load_file(paths["safetensors"])
    assert torch.equal(st["images"], syn.images) and st["lr"].item() == pytest.approx(0.02)
    back = _import(out, "mtt")  # the MTT layout reads back as it was written
    assert torch.equal(back.images, syn.images) and back.lr == pytest.approx(0.02)


def test_round_trip_through_the_mtt_layout_evaluates_network_by_network(smoke_cfg, tmp_path):
    run(smoke_cfg("method=random", "stages=[distill]"), run_dir=tmp_path / "d")
    ours = SynsetFile.load(tmp_path / "d" / "synset.pt")
    export_synset(ours, tmp_path / "mtt", formats=("mtt",))
    common = ("method=random", "stages=[eval]", "eval.epochs=3", "eval.eval_at=[]")
    run(smoke_cfg(*common, f"eval.synset_path={tmp_path / 'd' / 'synset.pt'}"), run_dir=tmp_path / "a")
    run(smoke_cfg(*common, f"eval.synset_path={tmp_path / 'mtt'}", "eval.synset_format=mtt"), run_dir=tmp_path / "b")
    a = json.loads((tmp_path / "a" / "eval.json").read_text())
    b = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert [m["final"] for m in a["models"]] == [m["final"] for m in b["models"]]
    assert b["meta"]["import_format"] == "mtt"


def test_docs_example_runs(tmp_path, monkeypatch):
    """The runnable example in docs/interop.md, executed as written (in a scratch working directory)."""
    text = (REPO / "docs" / "interop.md").read_text()
    block = re.search(r"<!-- runnable example -->\s*```python\n(.*?)```", text, re.S)
    assert block, "docs/interop.md lost its runnable example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block.group(1), "docs/interop.md", "exec"), namespace)  # noqa: S102
    report = namespace["report"]
    assert report["num_models"] == 2 and 0 <= report["mean"] <= 100
    assert (tmp_path / "exported" / "images.pt").is_file()


def test_distillation_starts_from_a_saved_set(smoke_cfg, tmp_path):
    """`synset.init_from`: the distill stage starts from a saved set (ours, or another code's through its importer)
    instead of drawing `synset.init`; a set of the wrong size is refused with the key named."""
    run(smoke_cfg("method=random", "stages=[distill]", "seed=1"), run_dir=tmp_path / "a")
    first = SynsetFile.load(tmp_path / "a" / "synset.pt")
    export_synset(first, tmp_path / "mtt", formats=("mtt",))
    run(smoke_cfg("method=random", "stages=[distill]", "seed=2", f"synset.init_from={tmp_path / 'mtt'}",
                  "synset.init_from_format=mtt"), run_dir=tmp_path / "b")
    assert torch.equal(SynsetFile.load(tmp_path / "b" / "synset.pt").images, first.images)
    run(smoke_cfg("method=random", "stages=[distill]", "seed=3"), run_dir=tmp_path / "c")  # seeds draw other images
    assert not torch.equal(SynsetFile.load(tmp_path / "c" / "synset.pt").images, first.images)
    with pytest.raises(Exception, match="synset.init_from"):
        run(smoke_cfg("method=random", "stages=[distill]", "ipc=2", f"synset.init_from={tmp_path / 'a' / 'synset.pt'}"),
            run_dir=tmp_path / "d")
