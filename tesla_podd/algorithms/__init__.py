"""Algorithm registry: `algorithm.name` -> a function (cfg, ctx) -> (synset, learned lr or None, info)."""

from .random import distill_random

ALGORITHMS = {"random": distill_random}
