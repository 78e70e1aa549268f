"""The schedule space: knobs, constraints and the ``Schedule`` record."""

from bitsearch.space.schedule import Schedule, default_schedule

__all__ = ["Schedule", "default_schedule"]
