"""The schedule space: knobs, constraints and the ``Schedule`` record."""

from bitsearch.space.int_schedule import IntSchedule, default_int_schedule
from bitsearch.space.schedule import Schedule, default_schedule
from bitsearch.space.space import Knob, Space, SpaceSize

__all__ = [
    "IntSchedule",
    "Knob",
    "Schedule",
    "Space",
    "SpaceSize",
    "default_int_schedule",
    "default_schedule",
]
