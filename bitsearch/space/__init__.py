"""The schedule space: knobs, constraints and the ``Schedule`` record."""

from bitsearch.space.conv_schedule import ConvSchedule, IntConvSchedule
from bitsearch.space.fp8_schedule import Fp8Schedule, default_fp8_schedule
from bitsearch.space.int_schedule import IntSchedule, default_int_schedule
from bitsearch.space.schedule import NeonSchedule, Schedule, default_neon_schedule, default_schedule
from bitsearch.space.space import Knob, Space, SpaceSize

__all__ = [
    "ConvSchedule",
    "Fp8Schedule",
    "IntConvSchedule",
    "IntSchedule",
    "Knob",
    "NeonSchedule",
    "Schedule",
    "Space",
    "SpaceSize",
    "default_fp8_schedule",
    "default_int_schedule",
    "default_neon_schedule",
    "default_schedule",
]
