"""Algorithm registry: `algorithm.name` -> class built as cls(cfg, ctx, synset) (see base.Distiller)."""

from .random import RandomBaseline
from .rat_bptt import RatBPTT
from .trajectory import TrajectoryMatching

ALGORITHMS = {"random": RandomBaseline, "mtt": TrajectoryMatching, "tesla": TrajectoryMatching, "rat_bptt": RatBPTT}


def build_algorithm(cfg, ctx, synset):
    from ..errors import check_choice

    check_choice("algorithm.name", cfg.algorithm.name, ALGORITHMS)
    return ALGORITHMS[cfg.algorithm.name](cfg, ctx, synset)
