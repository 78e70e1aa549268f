"""Schedules and knobs: the records a lowering searches (frozen, JSON round trip, static checks)
and the knobs that suggest them (the searchable union of a workload's lowerings is
:class:`bitsearch.Space`)."""

from bitsearch.space.conv_schedule import ConvSchedule, IntConvSchedule
from bitsearch.space.fp8_schedule import Fp8Schedule, default_fp8_schedule
from bitsearch.space.int_schedule import IntSchedule, default_int_schedule
from bitsearch.space.knobs import Knob, SpaceDef, SpaceSize
from bitsearch.space.schedule import NeonSchedule, Schedule, default_schedule

__all__ = [
    "ConvSchedule",
    "Fp8Schedule",
    "IntConvSchedule",
    "IntSchedule",
    "Knob",
    "NeonSchedule",
    "Schedule",
    "SpaceDef",
    "SpaceSize",
    "default_fp8_schedule",
    "default_int_schedule",
    "default_schedule",
]
