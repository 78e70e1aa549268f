"""Every bad input raises ``ValueError`` with a message that names the problem."""

from __future__ import annotations

import dataclasses
import json
import platform

import numpy as np
import pytest

import bitsearch as bs

needs_x86 = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="runs x86-64 machine code"
)

WL = bs.Dense(5, 3, 70, abits=2, wbits=3, mode="unipolar")


@pytest.fixture(scope="module")
def kern() -> bs.Kernel:
    return bs.build(WL, bs.Schedule(mr=2, nr=2, popcount="lut"))


@pytest.fixture(scope="module")
def good() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (
        rng.integers(0, 4, WL.x_shape, dtype=np.uint8),
        rng.integers(0, 8, WL.w_shape, dtype=np.uint8),
    )


# ---- operands ----------------------------------------------------------------------------------
@needs_x86
def test_good_inputs_work(kern, good) -> None:
    x, w = good
    np.testing.assert_array_equal(kern(x, w), bs.reference(WL, x, w))


@needs_x86
@pytest.mark.parametrize("shape", [(5, 69), (5, 71), (4, 70), (6, 70), (70, 5), (5, 70, 1), (350,)])
def test_wrong_x_shape(kern, good, shape) -> None:
    x = np.zeros(shape, np.uint8)
    with pytest.raises(ValueError, match=r"x must have shape \(5, 70\)"):
        kern(x, good[1])
    with pytest.raises(ValueError, match=r"x must have shape \(5, 70\)"):
        bs.reference(WL, x, good[1])


@needs_x86
@pytest.mark.parametrize("shape", [(3, 69), (2, 70), (4, 70), (70, 3), (3, 70, 1)])
def test_wrong_w_shape(kern, good, shape) -> None:
    w = np.zeros(shape, np.uint8)
    for call in (lambda: kern(good[0], w), lambda: kern.pack_weights(w),
                 lambda: bs.reference(WL, good[0], w)):
        with pytest.raises(ValueError, match=r"w must have shape \(3, 70\)"):
            call()


@needs_x86
@pytest.mark.parametrize("dtype", [np.int32, np.int8, np.uint16, np.float32, np.float64, bool])
def test_wrong_dtype(kern, good, dtype) -> None:
    x, w = good
    with pytest.raises(ValueError, match="x must have dtype uint8"):
        kern(x.astype(dtype), w)
    with pytest.raises(ValueError, match="w must have dtype uint8"):
        kern(x, w.astype(dtype))
    with pytest.raises(ValueError, match="w must have dtype uint8"):
        kern.pack_weights(w.astype(dtype))
    with pytest.raises(ValueError, match="x must have dtype uint8"):
        bs.reference(WL, x.astype(dtype), w)


@needs_x86
def test_not_an_array(kern, good) -> None:
    x, w = good
    with pytest.raises(ValueError, match="x must be a numpy array"):
        kern(x.tolist(), w)
    with pytest.raises(ValueError, match="w must be a numpy array"):
        kern(x, w.tolist())


@needs_x86
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(("row", "col"), [(0, 0), (4, 69), (2, 35), (4, 0)])
@pytest.mark.parametrize("bad", [4, 7, 128, 255])
def test_x_out_of_range_detected_by_packing(kern, good, threads, row, col, bad) -> None:
    x, w = good
    x = x.copy()
    x[row, col] = bad
    with pytest.raises(ValueError, match="x holds values out of range for 2-bit activations"):
        kern(x, w, threads=threads)
    with pytest.raises(ValueError, match=r"x holds .*out of range for 2-bit"):
        bs.reference(WL, x, w)


@needs_x86
@pytest.mark.parametrize(
    ("abits", "k", "bad"), [(1, 1, 2), (1, 5, 3), (3, 40, 8), (7, 300, 128), (4, 257, 16)]
)
def test_x_out_of_range_other_widths(abits, k, bad) -> None:
    wl = bs.Dense(2, 2, k, abits=abits, wbits=1, mode="and")
    for schedule in (bs.Schedule(mr=1, nr=1, popcount="scalar"), bs.Schedule(mr=2, nr=2)):
        kern = bs.build(wl, schedule)
        x = np.zeros(wl.x_shape, np.uint8)
        w = np.ones(wl.w_shape, np.uint8)
        kern(x, w)  # in range: fine
        x[1, k - 1] = bad
        with pytest.raises(ValueError, match=f"out of range for {abits}-bit activations"):
            kern(x, w)


@needs_x86
@pytest.mark.parametrize("bad", [8, 9, 255])
def test_w_out_of_range(kern, good, bad) -> None:
    x, w = good
    w = w.copy()
    w[2, 69] = bad
    msg = f"w holds {bad}, out of range for 3-bit values"
    with pytest.raises(ValueError, match=msg):
        kern(x, w)
    with pytest.raises(ValueError, match=msg):
        kern.pack_weights(w)
    with pytest.raises(ValueError, match=msg):
        bs.reference(WL, x, w)


@needs_x86
def test_packed_weights_of_another_kernel(kern, good) -> None:
    other = bs.build(WL, bs.Schedule(mr=1, nr=1, popcount="scalar"))
    wp = other.pack_weights(good[1])
    with pytest.raises(ValueError, match="packed weights were made for"):
        kern(good[0], wp)


@needs_x86
@pytest.mark.parametrize("threads", [0, -1, 1.0, "2", None])
def test_bad_threads(kern, good, threads) -> None:
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        kern(*good, threads=threads)


# ---- workloads ---------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["abits", "wbits"])
@pytest.mark.parametrize("value", [0, 9, -1, 16, 2.0, True])
def test_bad_bit_width(field, value) -> None:
    with pytest.raises(ValueError, match=f"{field} must be an integer in 1..8"):
        bs.Dense(4, 4, 64, **{field: value})


@pytest.mark.parametrize("mode", ["xnor", "AND", "", None, "signed"])
def test_bad_mode(mode) -> None:
    with pytest.raises(ValueError, match="mode must be one of and, unipolar, bipolar"):
        bs.Dense(4, 4, 64, mode=mode)


@pytest.mark.parametrize("field", ["m", "n", "k"])
@pytest.mark.parametrize("value", [0, -1, -64, 1.5, 4.0, "4", None, False])
def test_non_positive_or_non_integer_shape(field, value) -> None:
    kwargs = {"m": 4, "n": 4, "k": 64, field: value}
    with pytest.raises(ValueError, match=f"{field} must be a positive integer"):
        bs.Dense(**kwargs)


def test_numpy_integer_shapes_accepted() -> None:
    wl = bs.Dense(np.int64(3), np.int64(2), np.int64(9))
    assert (wl.m, wl.n, wl.k) == (3, 2, 9)


def test_numpy_integer_k_cannot_bypass_int32_overflow_check() -> None:
    """Numpy integers are normalised to int: multiplied in their own type they would wrap
    (k=np.int32(40000) at 8x8 bits gave -1693967296; k=np.uint8(200) a bound of 200)."""
    with pytest.raises(ValueError, match="does not fit the int32 output"):
        bs.Dense(1, 1, np.int32(40000), abits=8, wbits=8)
    assert bs.Dense(1, 1, np.uint8(200), abits=8, wbits=8).max_abs_output == 200 * 255 * 255


@needs_x86
def test_numpy_integer_workload_builds() -> None:
    """PeachPy rejects numpy integers as operands; Dense hands it plain ints."""
    wl = bs.Dense(np.int64(2), np.int64(3), np.int64(200), abits=np.int64(2), wbits=np.int64(1))
    x = np.full((2, 200), 3, np.uint8)
    w = np.ones((3, 200), np.uint8)
    np.testing.assert_array_equal(bs.build(wl)(x, w), np.full((2, 3), 600, np.int32))


def test_int32_overflow_bound() -> None:
    # 33025 * 255 * 255 = 2_147_450_625 fits; 33026 * 255 * 255 = 2_147_515_650 does not
    assert bs.Dense(1, 1, 33025, abits=8, wbits=8).max_abs_output == 2_147_450_625
    with pytest.raises(ValueError, match=r"k=33026 at 8x8 bits can reach 2147515650.*int32"):
        bs.Dense(1, 1, 33026, abits=8, wbits=8)
    # 1-bit: K itself is the bound
    bs.Dense(1, 1, 2**31 - 1, abits=1, wbits=1, mode="bipolar")
    with pytest.raises(ValueError, match="does not fit the int32 output"):
        bs.Dense(1, 1, 2**31, abits=1, wbits=1, mode="bipolar")
    with pytest.raises(ValueError, match="does not fit the int32 output"):
        bs.Dense(1, 1, 2**31 // 3 + 1, abits=2, wbits=1, mode="unipolar")


def test_build_rejects_non_workload() -> None:
    with pytest.raises(ValueError, match=r"workload must be one of bitsearch\.Dense"):
        bs.build((4, 4, 64))  # type: ignore[arg-type]


def test_unknown_target() -> None:
    with pytest.raises(ValueError, match="unknown target 'riscv64-rvv'"):
        bs.build(WL, target="riscv64-rvv")  # (aarch64-cortex-a53 is a target now)
    with pytest.raises(ValueError, match="unknown target"):
        bs.build(WL, target="")


def test_avx512_popcount_needs_the_avx512_target() -> None:
    with pytest.raises(ValueError, match="popcount=vpopcnt is not available on target 'x86_64-avx2'"):
        bs.build(WL, bs.Schedule(popcount="vpopcnt"))


def test_build_rejects_non_schedule() -> None:
    with pytest.raises(ValueError, match=r"needs a bitsearch\.Schedule, got dict"):
        bs.build(WL, {"mr": 2, "nr": 2})  # type: ignore[arg-type]


# ---- schedules ---------------------------------------------------------------------------------
def _reject(schedule: bs.Schedule, match: str, workload: bs.Dense = WL) -> None:
    with pytest.raises(ValueError, match=match):
        schedule.check(workload)
    with pytest.raises(ValueError, match=match):
        bs.build(workload, schedule)


@pytest.mark.parametrize(
    ("schedule", "need"),
    [
        (bs.Schedule(mr=4, nr=3, popcount="lut", acc_bits=8), 12 + 4 + 4),
        (bs.Schedule(mr=1, nr=12, popcount="lut", acc_bits=8), 12 + 1 + 4),
        (bs.Schedule(mr=1, nr=11, popcount="lut", acc_bits=32), 11 + 1 + 4 + 2),
        (bs.Schedule(mr=2, nr=3, popcount="csa", acc_bits=8), 2 * 6 + 5),
        (bs.Schedule(mr=1, nr=5, popcount="csa", acc_bits=32), 2 * 5 + 5 + 2),
        (bs.Schedule(mr=8, nr=16, popcount="lut"), 128 + 8 + 4),
    ],
    ids=str,
)
def test_tile_too_large_for_ymm(schedule, need) -> None:
    assert schedule.ymm_registers() == need
    _reject(schedule, f"needs {need} ymm registers; AVX2 has 16")


@pytest.mark.parametrize(
    "schedule",
    [
        bs.Schedule(mr=1, nr=10, popcount="lut", acc_bits=8),  # 10 + 1 + 4 = 15
        bs.Schedule(mr=1, nr=11, popcount="lut", acc_bits=8),  # 16 exactly
        bs.Schedule(mr=3, nr=3, popcount="lut", acc_bits=8),  # 9 + 3 + 4 = 16
        bs.Schedule(mr=2, nr=2, popcount="csa", acc_bits=8),  # 8 + 5 = 13
        bs.Schedule(mr=1, nr=5, popcount="csa", acc_bits=64),  # 10 + 5 + 1 = 16
        bs.Schedule(mr=2, nr=3, popcount="scalar"),  # 6 GPR accumulators
        bs.Schedule(mr=6, nr=1, popcount="scalar"),
    ],
    ids=str,
)
def test_largest_tiles_accepted(schedule) -> None:
    schedule.check(WL)


@pytest.mark.parametrize("popcount", ["scalar", "csa"])
def test_nibble_split_needs_lut(popcount) -> None:
    _reject(bs.Schedule(mr=1, nr=1, popcount=popcount, nibble_split=True),
            f"schedule.nibble_split needs popcount='lut', not '{popcount}'")


def test_nibble_split_counts_two_x_registers_per_row() -> None:
    # 3x3 tile: 9 accumulators + 3 x rows + 4 = 16 fits; split doubles the x rows: 19
    bs.Schedule(mr=3, nr=3, popcount="lut").check(WL)
    _reject(bs.Schedule(mr=3, nr=3, popcount="lut", nibble_split=True), "needs 19 ymm registers")


@pytest.mark.parametrize(("mr", "nr"), [(1, 7), (7, 1), (2, 4), (3, 3), (8, 16)])
def test_scalar_tile_too_large_for_gprs(mr, nr) -> None:
    _reject(bs.Schedule(mr=mr, nr=nr, popcount="scalar"),
            f"register tile {mr}x{nr} needs {mr * nr} accumulator GPRs")


def test_acc_bits_16_too_narrow() -> None:
    # bound 65535 = 2^16 - 1 still fits 16-bit lanes; 65536 does not
    fits = bs.Dense(2, 2, 65535, abits=1, wbits=1)
    bs.Schedule(acc_bits=16).check(fits)
    too_big = bs.Dense(2, 2, 65536, abits=1, wbits=1)
    _reject(bs.Schedule(acc_bits=16), r"acc_bits=16 is too narrow: K\*\(2\^a-1\)\*\(2\^w-1\) = "
            r"65536\*1\*1 = 65536", too_big)
    big_bits = bs.Dense(2, 2, 300, abits=8, wbits=2)  # 300*255*3 = 229500
    _reject(bs.Schedule(acc_bits=16, popcount="csa", mr=1, nr=2), "acc_bits=16 is too narrow", big_bits)
    # 32 bits holds every legal workload; scalar ignores acc_bits
    bs.Schedule(acc_bits=32).check(big_bits)
    bs.Schedule(acc_bits=16, popcount="scalar", mr=1, nr=2).check(big_bits)


@pytest.mark.parametrize(
    ("knob", "value", "match"),
    [
        ("popcount", "avx512", "schedule.popcount must be one of"),
        ("popcount", "LUT", "schedule.popcount must be one of"),
        ("layout", "column_major", "schedule.layout must be one of"),
        ("loop_order", "km", "schedule.loop_order must be one of"),
        ("loop_order", "mnk", "schedule.loop_order must be one of"),
        ("k_unroll", 3, r"schedule.k_unroll must be one of \(1, 2, 4, 8\), got 3"),
        ("k_unroll", 0, "schedule.k_unroll must be one of"),
        ("k_unroll", 16, "schedule.k_unroll must be one of"),
        ("acc_bits", 12, r"schedule.acc_bits must be one of \(8, 16, 32, 64\)"),
        ("acc_bits", 128, "schedule.acc_bits must be one of"),
        ("mr", 0, r"schedule.mr must be an integer in 1..8"),
        ("mr", 9, r"schedule.mr must be an integer in 1..8"),
        ("mr", 1.0, r"schedule.mr must be an integer"),
        ("nr", 0, r"schedule.nr must be an integer in 1..16"),
        ("nr", 17, r"schedule.nr must be an integer in 1..16"),
        ("nc", -1, "schedule.nc must be a non-negative integer"),
        ("nc", 1.5, "schedule.nc must be a non-negative integer"),
        ("nibble_split", "yes", "schedule.nibble_split must be true or false"),
        ("nibble_split", 1, "schedule.nibble_split must be true or false"),
    ],
)
def test_bad_knob(knob, value, match) -> None:
    base = {"mr": 1, "nr": 1}
    base[knob] = value
    _reject(bs.Schedule(**base), match)


# ---- schedule serialisation --------------------------------------------------------------------
@pytest.mark.parametrize(
    "schedule",
    [
        bs.Schedule(),
        bs.Schedule(mr=3, nr=1, k_unroll=8, popcount="csa", acc_bits=64, layout="interleaved",
                    loop_order="nm", nc=5),
        bs.Schedule(mr=2, nr=3, popcount="scalar", acc_bits=16, nc=2),
        bs.Schedule(mr=1, nr=4, popcount="lut", nibble_split=True, layout="interleaved"),
    ],
    ids=str,
)
def test_schedule_json_round_trip(schedule) -> None:
    text = schedule.to_json()
    data = json.loads(text)
    assert set(data) == {f.name for f in dataclasses.fields(bs.Schedule)}
    assert {"mr", "nr", "k_unroll", "popcount", "acc_bits", "layout", "loop_order", "nc"} <= set(data)
    for name, value in data.items():
        assert value == getattr(schedule, name) and type(value) is type(getattr(schedule, name))
    back = bs.Schedule.from_json(text)
    assert back == schedule and hash(back) == hash(schedule)
    assert bs.Schedule.from_dict(schedule.to_dict()) == schedule
    assert bs.Schedule.from_json(json.dumps(data, indent=2)) == schedule


def test_from_dict_rejects_unknown_knobs() -> None:
    with pytest.raises(ValueError, match="unknown schedule knobs: tile"):
        bs.Schedule.from_dict({"mr": 2, "tile": 4})
    with pytest.raises(ValueError, match="unknown schedule knobs: foo, zzz"):
        bs.Schedule.from_json(json.dumps({"zzz": 1, "foo": 2, "mr": 1}))


def test_from_dict_accepts_partial() -> None:
    assert bs.Schedule.from_dict({"mr": 3}) == bs.Schedule(mr=3)


def test_schedule_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        bs.Schedule().mr = 3  # type: ignore[misc]
