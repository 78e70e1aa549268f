"""Loss scaling: none, dynamic, and enhanced (dynamic with a scheduled minimum)."""

from __future__ import annotations

from bitsearch.train.recipe import FloorSchedule, LossScaling


class LossScaler:
    """Tracks the loss scale; ``update`` says whether the step's gradients may be applied.

    >>> s = LossScaler(mode="dynamic", init_scale=8.0, growth_interval=2)
    >>> s.update(found_inf=True, epoch=0, step=0), s.scale
    (False, 4.0)
    >>> [s.update(found_inf=False, epoch=0, step=i) for i in (1, 2)], s.scale
    ([True, True], 8.0)
    """

    def __init__(self, *, mode: LossScaling, init_scale: float = 2.0**12, growth_interval: int = 100,
                 floor: FloorSchedule | None = None, min_scale: float = 2.0**-24) -> None:
        if mode not in ("none", "dynamic", "enhanced"):
            raise ValueError(f"mode={mode!r}: expected none|dynamic|enhanced")
        if growth_interval < 1 or not init_scale > 0:
            raise ValueError(f"growth_interval={growth_interval}, init_scale={init_scale}: invalid")
        self.mode = mode
        self.scale = 1.0 if mode == "none" else float(init_scale)
        self.growth_interval = growth_interval
        self.floor = floor or FloorSchedule()
        self.min_scale = min_scale
        self.clean_steps = 0
        self.skipped = 0
        self.overflows = 0

    def current_floor(self, *, epoch: float, step: int) -> float:
        if self.mode == "enhanced":
            return self.floor.floor(epoch=epoch, step=step)
        return self.min_scale

    def update(self, *, found_inf: bool, epoch: float, step: int) -> bool:
        """Record one step's outcome; True if its gradients are to be applied (finite)."""
        if found_inf:
            self.overflows += 1
            self.skipped += 1
            self.clean_steps = 0
            if self.mode != "none":
                self.scale = max(self.scale / 2, self.current_floor(epoch=epoch, step=step))
            return False
        if self.mode != "none":
            self.clean_steps += 1
            if self.clean_steps >= self.growth_interval:
                self.scale *= 2
                self.clean_steps = 0
            # The floor rises with the schedule even without an overflow.
            self.scale = max(self.scale, self.current_floor(epoch=epoch, step=step))
        return True
