"""The schedule space: knobs, constraints and the ``Schedule`` record."""

from bitsearch.space.schedule import Schedule, default_schedule
from bitsearch.space.space import Knob, Space, SpaceSize

__all__ = ["Knob", "Schedule", "Space", "SpaceSize", "default_schedule"]
