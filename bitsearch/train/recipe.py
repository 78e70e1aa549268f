"""The training recipe: which number format and rounding each piece of FP8 mixed-precision training uses."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from bitsearch.numerics.fp8 import FORMATS

LossScaling = Literal["none", "dynamic", "enhanced"]


@dataclass(frozen=True, kw_only=True)
class FloorSchedule:
    """Step function giving the loss scale's minimum: ``milestones`` are ``(at, min_scale)`` pairs.

    ``at`` counts epochs (``unit="epoch"``, fractional epochs allowed) or optimizer steps
    (``unit="step"``); before the first milestone the floor is 1.

    >>> s = FloorSchedule(milestones=((0, 2.0**4), (10, 2.0**8)))
    >>> s.floor(epoch=3, step=500), s.floor(epoch=12, step=900)
    (16.0, 256.0)
    """

    milestones: tuple[tuple[float, float], ...] = ((0, 1.0),)
    unit: Literal["epoch", "step"] = "epoch"

    def __post_init__(self) -> None:
        if self.unit not in ("epoch", "step"):
            raise ValueError(f"unit={self.unit!r}: expected 'epoch' or 'step'")
        ats = [a for a, _ in self.milestones]
        if ats != sorted(ats) or any(s <= 0 for _, s in self.milestones):
            raise ValueError(f"milestones={self.milestones!r}: need ascending positions, positive scales")

    def floor(self, *, epoch: float, step: int) -> float:
        t = epoch if self.unit == "epoch" else step
        out = 1.0
        for at, s in self.milestones:
            if t >= at:
                out = float(s)
        return out


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How to train: formats (None = FP32), rounding, loss scaling, master weights, FP32 first/last layer.

    - ``fwd``: format of weights and activations (forward GEMM operands and outputs), rounded to nearest
      even, saturating (an activation overflow clips instead of poisoning the loss).
    - ``bwd``: format of errors (activation gradients) and weight gradients, stochastically rounded if
      ``stochastic_grads`` else nearest; never saturating, so an overflow becomes inf (E5M2) / NaN (E4M3)
      and the loss scaler skips the step.
    - ``loss_scaling``: "none" (scale 1), "dynamic" (halve on overflow and skip the step; double after
      ``growth_interval`` clean steps) or "enhanced" (dynamic, but never below ``scale_floor``).
    - ``master_fp16``: FP8 layers keep FP16 master weights, updated with stochastic rounding if
      ``stochastic_master`` else nearest.
    - ``first_last_fp32``: the first and last layer compute in FP32 (with FP32 master weights).

    >>> Recipe(fwd="e4m3", bwd="e5m2").fp8
    True
    """

    name: str = "custom"
    fwd: str | None = "e5m2"
    bwd: str | None = "e5m2"
    stochastic_grads: bool = True
    loss_scaling: LossScaling = "enhanced"
    init_scale: float = 2.0**12
    growth_interval: int = 100
    scale_floor: FloorSchedule = field(default_factory=FloorSchedule)
    master_fp16: bool = True
    stochastic_master: bool = True
    first_last_fp32: bool = True

    def __post_init__(self) -> None:
        for side in ("fwd", "bwd"):
            f = getattr(self, side)
            if f is not None and (f not in FORMATS or f == "fp16"):
                raise ValueError(f"{side}={f!r}: expected 'e5m2', 'e4m3' or None (FP32)")
        if (self.fwd is None) != (self.bwd is None):
            raise ValueError(f"fwd={self.fwd!r}, bwd={self.bwd!r}: both FP8 or both None (FP32)")
        if self.loss_scaling not in ("none", "dynamic", "enhanced"):
            raise ValueError(f"loss_scaling={self.loss_scaling!r}: expected none|dynamic|enhanced")
        if not self.init_scale > 0 or self.growth_interval < 1:
            raise ValueError(f"init_scale={self.init_scale}, growth_interval={self.growth_interval}: "
                             "need a positive scale and interval >= 1")

    @property
    def fp8(self) -> bool:
        return self.fwd is not None

    def replace(self, **changes: object) -> Recipe:
        return replace(self, **changes)


FP32 = Recipe(name="fp32", fwd=None, bwd=None, stochastic_grads=False, loss_scaling="none",
              master_fp16=False)


def fp8_recipes(floor: FloorSchedule) -> dict[str, Recipe]:
    """The recipes of the paper's comparison (full recipe and its ablations), sharing one floor schedule.

    >>> sorted(fp8_recipes(FloorSchedule()))
    ['e4m3-fwd', 'fp32', 'fp8', 'fp8-no-ls', 'fp8-no-sr']
    """
    full = Recipe(name="fp8", fwd="e5m2", bwd="e5m2", scale_floor=floor)
    return {
        "fp32": FP32,
        "fp8": full,
        "fp8-no-sr": full.replace(name="fp8-no-sr", stochastic_grads=False),
        "fp8-no-ls": full.replace(name="fp8-no-ls", loss_scaling="none"),
        "e4m3-fwd": full.replace(name="e4m3-fwd", fwd="e4m3"),
    }
