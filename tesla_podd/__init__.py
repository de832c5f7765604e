"""tesla-podd: dataset distillation (MTT, TESLA, RaT-BPTT, PoDD) behind one Hydra entrypoint."""

import os

# OpenMP threads that spin while waiting (libgomp's default) lose 5x wall time when the cores are
# shared with other processes (measured: 2 threads, busy 2-core machine, TESLA IPC 1: 40 s -> 8 s per
# 10 steps). Sleeping waits cost little on idle cores. Read once when torch loads, so set it before
# `import torch`; a value in the environment wins (OMP_WAIT_POLICY=ACTIVE restores spinning).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# After the OpenMP setting; not under tesla_podd.config, whose import loads the whole schema.
from .resolvers import register as _register_resolvers  # noqa: E402

_register_resolvers()
