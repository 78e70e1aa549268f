"""The x86_64-avx512 target: VPOPCNTQ kernels, exact where the CPU has AVX-512 VPOPCNTDQ, and a
clear error (never a crash of the caller) where it does not."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bitsearch as bs
from bitsearch.measure import measure
from bitsearch.runners import ErrorClass, LocalRunner
from bitsearch.targets import missing_features

TARGET = "x86_64-avx512"
HAS_AVX512 = not missing_features(TARGET)
needs_avx512 = pytest.mark.skipif(not HAS_AVX512, reason="this CPU lacks AVX-512 VPOPCNTDQ")


@st.composite
def cases(draw: st.DrawFn) -> tuple[bs.Dense, bs.Schedule]:
    wl = bs.Dense(draw(st.integers(1, 13)), draw(st.integers(1, 13)),
                  draw(st.sampled_from([1, 63, 64, 65, 511, 512, 513, 1000, 1536, 4100])),
                  abits=draw(st.sampled_from([1, 2, 3, 8])), wbits=draw(st.sampled_from([1, 2, 4])),
                  mode=draw(st.sampled_from(bs.MODES)))
    mr = draw(st.integers(1, 4))
    nr = draw(st.integers(1, max(1, (14 - mr) // mr)))
    schedule = bs.Schedule(mr=mr, nr=nr, popcount="vpopcnt", k_unroll=draw(st.sampled_from([1, 2, 4])),
                           layout=draw(st.sampled_from(["plane_major", "interleaved"])),
                           loop_order=draw(st.sampled_from(["mn", "nm"])), nc=draw(st.sampled_from([0, 2])))
    return wl, schedule


@needs_avx512
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.integers(0, 2**32 - 1))
def test_vpopcnt_kernels_are_exact(case: tuple[bs.Dense, bs.Schedule], seed: int) -> None:
    wl, schedule = case
    kern = bs.build(wl, schedule, TARGET)
    rng = np.random.default_rng(seed)
    for x, w in (
        (rng.integers(0, wl.amax + 1, wl.x_shape, dtype=np.uint8), rng.integers(0, wl.wmax + 1, wl.w_shape,
                                                                                dtype=np.uint8)),
        (np.full(wl.x_shape, wl.amax, np.uint8), np.full(wl.w_shape, wl.wmax, np.uint8)),
    ):
        want = bs.reference(wl, x, w)
        np.testing.assert_array_equal(kern(x, kern.pack_weights(w)), want)
        np.testing.assert_array_equal(kern(x, w, threads=2), want)


def test_space_of_the_avx512_target_offers_vpopcnt() -> None:
    wl = bs.Dense(64, 64, 512)
    assert "vpopcnt" in next(k for k in bs.Space(wl, target=TARGET).knobs if k.name == "popcount").choices
    assert "vpopcnt" not in next(k for k in bs.Space(wl).knobs if k.name == "popcount").choices
    schedules = [s for s in bs.Space(wl, target=TARGET, fixed={"popcount": "vpopcnt"}).enumerate()]
    assert schedules and all(s.popcount == "vpopcnt" and s.acc_bits == 64 for s in schedules)


@needs_avx512
def test_vpopcnt_measured_in_the_harness() -> None:
    res = measure(bs.Dense(40, 24, 700, abits=2, wbits=1, mode="bipolar"),
                  bs.Schedule(mr=2, nr=3, popcount="vpopcnt"), target=TARGET,
                  runner=LocalRunner(min_time=0.002))
    assert res.error is ErrorClass.NONE, res.message


@pytest.mark.skipif(HAS_AVX512, reason="this CPU has AVX-512 VPOPCNTDQ")
def test_without_avx512_calls_fail_cleanly() -> None:
    wl = bs.Dense(8, 8, 512)
    kern = bs.build(wl, bs.Schedule(mr=1, nr=2, popcount="vpopcnt"), TARGET)  # building is fine
    with pytest.raises(RuntimeError, match="cannot run x86_64-avx512"):
        kern(np.zeros(wl.x_shape, np.uint8), np.zeros(wl.w_shape, np.uint8))
    res = measure(wl, kern.schedule, target=TARGET, runner=LocalRunner(min_time=0.002))
    assert res.error is ErrorClass.RUNTIME_ERROR  # SIGILL in the harness, not in the caller
