"""Averaged synthetic set (distill.average_decay): an exponential moving average of the set's learnable
tensors over the distillation iterates, Polyak averaging as used for network weights.

Why: with a fresh network and a fresh real batch every meta-step (RaT-BPTT), the set's quality moves by
several points from one iterate to the next on short runs; the average of the recent iterates damps that
noise. The raw iterate keeps training; the average is what gets saved, snapshotted and evaluated."""

from __future__ import annotations

from contextlib import contextmanager

import torch


class SetAverage:
    def __init__(self, synset, decay: float):
        self.decay = float(decay)
        self.reset(synset)

    def reset(self, synset) -> None:
        """Start the average at the set as it is now."""
        # clone: on CPU a set's state_dict() aliases its parameters
        self.state = {k: v.detach().clone() for k, v in synset.state_dict().items() if torch.is_floating_point(v)}

    def update(self, synset) -> None:
        """avg <- decay * avg + (1 - decay) * current, after each optimiser step."""
        for k, v in synset.state_dict().items():
            if k in self.state:
                self.state[k].lerp_(v.detach().to(self.state[k]), 1.0 - self.decay)

    @contextmanager
    def applied(self, synset):
        """The set holds the averaged tensors inside the block and its own iterate again after it."""
        own = {k: v.detach().clone() for k, v in synset.state_dict().items()}
        synset.load_state_dict({**own, **self.state})
        try:
            yield synset
        finally:
            synset.load_state_dict(own)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "state": {k: v.clone() for k, v in self.state.items()}}

    def load_state_dict(self, saved: dict) -> None:
        self.state = {k: v.detach().clone() for k, v in saved["state"].items()}
