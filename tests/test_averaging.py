"""distill.average_decay: the saved set is an EMA of the set's iterates; training itself is unchanged."""

from __future__ import annotations

import pytest
import torch
from conftest import run_killed_then_resumed

from tesla_podd.stages.averaging import SetAverage
from tesla_podd.synset.file import SynsetFile
from tesla_podd.synset.pixels import PixelSet
from tesla_podd.train import run


def test_average_is_the_recursive_ema_and_applied_restores_the_iterate():
    images = torch.zeros(2, 1, 2, 2)
    labels = torch.eye(2)
    s = PixelSet(images, labels, 2, learn_labels=True)
    avg = SetAverage(s, 0.5)
    expected = torch.zeros(2, 1, 2, 2)
    for value in (1.0, 3.0, -2.0):
        with torch.no_grad():
            s.images.fill_(value)
        avg.update(s)
        expected = 0.5 * expected + 0.5 * value
    assert torch.equal(avg.state["images"], expected) and expected[0, 0, 0, 0] == pytest.approx(-0.125)
    with avg.applied(s):
        assert torch.equal(s.images.detach(), expected)
        inside = s.materialize().x
    assert torch.equal(inside, expected)  # a copy taken inside the block keeps the average
    assert torch.all(s.images.detach() == -2.0)  # the iterate is back
    fresh = SetAverage(s, 0.5)
    fresh.load_state_dict(avg.state_dict())
    assert torch.equal(fresh.state["images"], expected)
    fresh.reset(s)  # a resume from a checkpoint written without an average starts it at the resumed set
    assert torch.all(fresh.state["images"] == -2.0)


def test_averaged_run_saves_the_average_leaves_training_unchanged_and_resumes_exactly(smoke_cfg, tmp_path,
                                                                                       monkeypatch):
    """The raw last iterate (synset_last.pt) equals a run without averaging; synset.pt differs from it; a run
    killed after its iteration-2 checkpoint and resumed saves the same average as the uninterrupted run."""
    common = ("method=rat_bptt", "stages=[distill]", "distill.eval_every=0", "synset.labels=learned",
              "distill.checkpoint_every=2")  # 4 iterations
    run(smoke_cfg(*common), run_dir=tmp_path / "plain")
    run(smoke_cfg(*common, "distill.average_decay=0.5"), run_dir=tmp_path / "avg")
    plain = SynsetFile.load(tmp_path / "plain" / "synset.pt")
    last = SynsetFile.load(tmp_path / "avg" / "synset_last.pt")
    averaged = SynsetFile.load(tmp_path / "avg" / "synset.pt")
    assert torch.equal(plain.images, last.images) and torch.equal(plain.labels, last.labels)
    assert not torch.allclose(averaged.images, last.images)
    assert not (tmp_path / "plain" / "synset_last.pt").exists()

    run_killed_then_resumed(smoke_cfg, (*common, "distill.average_decay=0.5"), tmp_path / "killed", monkeypatch, at=2)
    resumed = SynsetFile.load(tmp_path / "killed" / "synset.pt")
    assert torch.equal(averaged.images, resumed.images) and torch.equal(averaged.labels, resumed.labels)


def test_averaged_poster_is_what_synset_pt_holds(smoke_cfg, tmp_path):
    """A poster's saved tensor (extra["poster"]) and its patches are the average, not the last iterate."""
    run(smoke_cfg("method=podd", "stages=[distill]", "distill.eval_every=0", "distill.average_decay=0.5"),
        run_dir=tmp_path)
    averaged = SynsetFile.load(tmp_path / "synset.pt")
    last = SynsetFile.load(tmp_path / "synset_last.pt")
    assert not torch.allclose(averaged.extra["poster"], last.extra["poster"])
    assert not torch.allclose(averaged.images, last.images)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert torch.equal(ckpt["average"]["state"]["poster"], averaged.extra["poster"])
