"""Lowerings: how each operator is computed on each target family, one module per family of
kernels, and the registry that lists them (:mod:`bitsearch.lowerings.registry`).

Adding an arithmetic, an operator or a target family is its own files (emitter, schedule record,
lowering) plus one line in the registry.
"""

from bitsearch.lowerings.base import Lowering
from bitsearch.lowerings.registry import (
    ARITHMETICS,
    LOWERINGS,
    OPERATORS,
    SCHEDULE_TYPES,
    lowering_for,
    lowering_named,
    lowerings_for,
)
from bitsearch.lowerings.space import Space

__all__ = ["ARITHMETICS", "LOWERINGS", "OPERATORS", "SCHEDULE_TYPES", "Lowering", "Space", "lowering_for",
           "lowering_named", "lowerings_for"]
