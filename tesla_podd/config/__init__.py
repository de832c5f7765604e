"""The typed config schema and the one validation that runs before any stage (`validate_config`)."""

from .validate import validate_config

__all__ = ["validate_config"]
