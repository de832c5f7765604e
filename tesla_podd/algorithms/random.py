"""The "Random" baseline: ipc real images per class, chosen at random (seeded); nothing is optimised."""

from __future__ import annotations


class RandomBaseline:
    needs_buffer = False
    iterations = 0

    def __init__(self, acfg, synset, res):
        self.synset = synset

    def optimizers(self):
        return []

    def meta_step(self, it, gen):  # never called: zero iterations
        raise RuntimeError("the random baseline has nothing to optimise")

    def eval_lr(self):
        return None

    def final_labels(self):
        return None

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass
