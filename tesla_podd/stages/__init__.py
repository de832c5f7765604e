"""Stage registry: `stages=[buffer, distill, eval]` runs these in order."""

from .buffer import run_buffer
from .distill import run_distill
from .evaluate import run_eval

STAGES = {"buffer": run_buffer, "distill": run_distill, "eval": run_eval}
