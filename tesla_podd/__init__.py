"""tesla-podd: dataset distillation (MTT, TESLA, RaT-BPTT, PoDD) behind one Hydra entrypoint."""

__version__ = "0.1.0"
