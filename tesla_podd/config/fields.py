"""Field helpers for the typed schema: a default plus the allowed range, kept beside the key.

`num(default, gt=0)` reads "a number greater than 0"; the validator (`checks.py`) enforces the bounds
and words the error from them, so the range of a key is written once, here."""

from __future__ import annotations

from dataclasses import MISSING, field

REQUIRED = MISSING  # a key every config option must spell out (no silent default)


def num(default=REQUIRED, *, gt=None, ge=None, lt=None, le=None, off_zero: bool = False):
    """A numeric key with bounds; off_zero: 0 is allowed and means "off" (intervals)."""
    bounds = {k: v for k, v in {"gt": gt, "ge": ge, "lt": lt, "le": le}.items() if v is not None}
    return field(default=default, metadata={"bounds": bounds, "off_zero": off_zero})


def positive(default=REQUIRED):
    return num(default, gt=0)


def interval(default=REQUIRED):
    """Iterations/epochs between events: a whole number >= 0, where 0 switches the event off."""
    return num(default, ge=0, off_zero=True)


def fraction(default=REQUIRED, *, closed_high: bool = False):
    """A number in [0, 1) (or [0, 1] with closed_high)."""
    return num(default, ge=0, le=1) if closed_high else num(default, ge=0, lt=1)


def required():
    return field(default=REQUIRED)


def listed(default_factory=list):
    return field(default_factory=default_factory)


def one_of(default=REQUIRED, *, source):
    """A string key whose allowed values come from a registry (a tuple, or a zero-argument callable
    returning the registry, read lazily so that a new model/dataset registers itself in one place)."""
    return field(default=default, metadata={"choices": source})
