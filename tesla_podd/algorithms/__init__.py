"""Algorithm registry: `algorithm.name` -> class built as cls(cfg.algorithm, synset, resources) (see base.py)."""

from .base import AlgorithmResources, model_factory
from .random import RandomBaseline
from .rat_bptt import RatBPTT
from .trajectory import TrajectoryMatching

ALGORITHMS = {"random": RandomBaseline, "mtt": TrajectoryMatching, "tesla": TrajectoryMatching, "rat_bptt": RatBPTT}


def algorithm_resources(cfg, ctx) -> AlgorithmResources:
    """The run context's share for the algorithm; expert trajectories only for those that need a buffer."""
    cls = ALGORITHMS[cfg.algorithm.name]
    load_experts = None
    if cls.needs_buffer:
        from ..expert_store import open_store

        def load_experts(epochs: int):  # epochs 0..`epochs` are reached: those are preloaded (buffer.preload)
            trajs = open_store(cfg).load_trajectories(epochs, cfg)
            return trajs.preload(str(cfg.buffer.get("preload", "auto")), ctx.device, epochs + 1)

    return AlgorithmResources(real=ctx.real, preprocess=ctx.preprocess, device=ctx.device, seed=int(cfg.seed),
                              make_model=model_factory(cfg.model, ctx.real), model_name=str(cfg.model.name),
                              augment=ctx.augment, load_experts=load_experts, label_mode=str(cfg.synset.labels))


def build_algorithm(cfg, ctx, synset):
    from ..errors import check_choice

    check_choice("algorithm.name", cfg.algorithm.name, ALGORITHMS)
    return ALGORITHMS[cfg.algorithm.name](cfg.algorithm, synset, algorithm_resources(cfg, ctx))


__all__ = ["ALGORITHMS", "AlgorithmResources", "algorithm_resources", "build_algorithm", "model_factory"]
