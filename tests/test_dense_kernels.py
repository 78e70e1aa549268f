"""Built x86-64 AVX2 dense kernels agree bit for bit with ``bs.reference``.

The sweep draws workloads (m, n not multiples of the tile; K not a multiple of 64/256), bit widths,
modes and schedules from the whole space, and checks every kernel on random, all-maximal (the
accumulator bound), all-zero and alternating max/0 inputs, with 1 and 2 threads, packed and raw
weights, and through the raw machine-code entry points surrounded by guard bytes (no write outside
the output rows a call was given).
"""

from __future__ import annotations

import platform

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import bitsearch as bs

pytestmark = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="runs x86-64 machine code"
)

KS = [1, 7, 31, 32, 33, 63, 64, 65, 200, 255, 256, 257, 513, 1000]
BITS = [1, 2, 3, 4, 8]
POPCOUNTS = ["lut", "scalar", "csa"]
ACC_BITS = [8, 16, 32, 64]
SENTINEL = 0x5A


def _valid(schedule: bs.Schedule, workload: bs.Dense) -> bool:
    try:
        schedule.check(workload)
    except ValueError:
        return False
    return True


# Register tiles the register files allow, per (popcount, acc_bits): drawing from these keeps
# almost every example valid while still reaching the largest tiles.
_TINY = bs.Dense(1, 1, 1)
TILES = {
    (pc, acc, split): [
        (mr, nr)
        for mr in range(1, 9)
        for nr in range(1, 17)
        if _valid(bs.Schedule(mr=mr, nr=nr, popcount=pc, acc_bits=acc, nibble_split=split), _TINY)
    ]
    for pc in POPCOUNTS
    for acc in ACC_BITS
    for split in ((False, True) if pc == "lut" else (False,))
}


def test_tile_tables_are_not_degenerate() -> None:
    # The sweep below relies on these; if the check rejected everything it would test nothing.
    assert (1, 1) in TILES["lut", 8, False]
    assert (2, 3) in TILES["lut", 8, True]
    assert (2, 3) in TILES["scalar", 64, False]
    assert (2, 2) in TILES["csa", 8, False]
    assert max(mr * nr for mr, nr in TILES["lut", 8, False]) >= 8
    assert all(TILES.values())


@st.composite
def schedules(draw: st.DrawFn) -> bs.Schedule:
    popcount = draw(st.sampled_from(POPCOUNTS))
    acc_bits = draw(st.sampled_from(ACC_BITS))
    split = draw(st.booleans()) if popcount == "lut" else False
    mr, nr = draw(st.sampled_from(TILES[popcount, acc_bits, split]))
    return bs.Schedule(
        mr=mr,
        nr=nr,
        k_unroll=draw(st.sampled_from([1, 2, 4, 8])),
        popcount=popcount,
        acc_bits=acc_bits,
        layout=draw(st.sampled_from(["plane_major", "interleaved"])),
        nibble_split=split,
        loop_order=draw(st.sampled_from(["mn", "nm"])),
        nc=draw(st.sampled_from([0, 1, 2, 3])),
    )


@st.composite
def workloads(draw: st.DrawFn, mode: str | None = None) -> bs.Dense:
    return bs.Dense(
        m=draw(st.integers(1, 13)),
        n=draw(st.integers(1, 13)),
        k=draw(st.sampled_from([*KS, 8200])),
        abits=draw(st.sampled_from(BITS)),
        wbits=draw(st.sampled_from(BITS)),
        mode=mode or draw(st.sampled_from(bs.MODES)),
    )


def input_patterns(wl: bs.Dense, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    even = (np.arange(wl.k) % 2 == 0)
    alt_x = np.where(even, wl.amax, 0).astype(np.uint8)
    alt_w = np.where(even, wl.wmax, 0).astype(np.uint8)
    return {
        "random": (
            rng.integers(0, wl.amax + 1, wl.x_shape, dtype=np.uint8),
            rng.integers(0, wl.wmax + 1, wl.w_shape, dtype=np.uint8),
        ),
        "max": (np.full(wl.x_shape, wl.amax, np.uint8), np.full(wl.w_shape, wl.wmax, np.uint8)),
        "zero": (np.zeros(wl.x_shape, np.uint8), np.zeros(wl.w_shape, np.uint8)),
        # alternating max/0, in phase (both max on even k) and in opposite phase
        "alternating": (np.tile(alt_x, (wl.m, 1)), np.tile(alt_w, (wl.n, 1))),
        "alternating_opposite": (np.tile(alt_x, (wl.m, 1)), np.tile(wl.wmax - alt_w, (wl.n, 1))),
        "max_x_zero_w": (np.full(wl.x_shape, wl.amax, np.uint8), np.zeros(wl.w_shape, np.uint8)),
    }


def run_guarded(kern: bs.Kernel, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Call the raw pack/gemm entry points on buffers with guard zones around every output.

    The GEMM runs first on the first row block only (rows past it must stay untouched), then on
    the others. Returns y; asserts no byte outside the outputs changed.
    """
    wl = kern.workload
    pack, gemm = kern.loaded()["pack"], kern.loaded()["gemm"]
    guard = 64
    xx = kern.prepare_x(x)
    wp = kern.pack_weights(w).data
    xp_buf = np.full(wl.m * kern.operands.x_layout.row_bytes + 2 * guard, SENTINEL, np.uint8)
    rs_buf = np.full(wl.m + 2 * guard, -0x5A5A5A5A, np.int32)
    y_buf = np.full(wl.m * wl.n + 2 * guard, -0x5A5A5A5A, np.int32)
    xp_ptr = xp_buf.ctypes.data + guard
    rs_ptr = rs_buf.ctypes.data + 4 * guard
    y_ptr = y_buf.ctypes.data + 4 * guard

    seen = pack(xx.ctypes.data, xp_ptr, rs_ptr, 0, wl.m)
    assert seen == int(np.bitwise_or.reduce(x, axis=None))
    blocks = kern.plan.phases[0].blocks(2)
    first_lo, first_hi = blocks[0]
    gemm(xp_ptr, wp.ctypes.data, y_ptr, rs_ptr, first_lo, first_hi)
    y_view = y_buf[guard : guard + wl.m * wl.n].reshape(wl.m, wl.n)
    assert (y_view[first_hi:] == -0x5A5A5A5A).all(), "gemm wrote rows outside its row range"
    for lo, hi in blocks[1:]:
        gemm(xp_ptr, wp.ctypes.data, y_ptr, rs_ptr, lo, hi)

    assert (xp_buf[:guard] == SENTINEL).all() and (xp_buf[-guard:] == SENTINEL).all(), "pack overran xp"
    assert (rs_buf[:guard] == -0x5A5A5A5A).all() and (rs_buf[-guard:] == -0x5A5A5A5A).all()
    if wl.mode == "unipolar":
        np.testing.assert_array_equal(rs_buf[guard:-guard], x.astype(np.int64).sum(axis=1))
    assert (y_buf[:guard] == -0x5A5A5A5A).all() and (y_buf[-guard:] == -0x5A5A5A5A).all(), "gemm overran y"
    return y_view.copy()


def check_kernel(kern: bs.Kernel, seed: int = 0, *, guarded: bool = True) -> None:
    wl = kern.workload
    for name, (x, w) in input_patterns(wl, seed).items():
        expected = bs.reference(wl, x, w)
        wp = kern.pack_weights(w)
        y1 = kern(x, wp, threads=1)
        assert y1.dtype == np.int32 and y1.shape == (wl.m, wl.n)
        assert np.array_equal(y1, expected), (
            f"{wl} {kern.schedule} on {name} inputs: first mismatches at "
            f"{np.argwhere(y1 != expected)[:4].tolist()}"
        )
        y2 = kern(x, wp, threads=2)
        assert np.array_equal(y2, y1), f"threads=2 differs from threads=1 on {name} inputs"
        y_raw = kern(x, w, threads=1)
        assert np.array_equal(y_raw, y1), f"raw weights differ from packed weights on {name} inputs"
        if guarded and name in ("random", "max"):
            assert np.array_equal(run_guarded(kern, x, w), expected)


# ---- the sweep ------------------------------------------------------------------------------------
# One test per mode so that pytest-xdist spreads the sweep over the workers.
@pytest.mark.parametrize("mode", bs.MODES)
@settings(max_examples=90, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data(), schedule=schedules(), seed=st.integers(0, 2**32 - 1))
def test_sweep_matches_reference(mode: str, data: st.DataObject, schedule: bs.Schedule, seed: int) -> None:
    wl = data.draw(workloads(mode=mode), label="workload")
    assume(_valid(schedule, wl))
    check_kernel(bs.build(wl, schedule), seed)


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 13),
    n=st.integers(1, 13),
    k=st.sampled_from(KS),
    abits=st.sampled_from(BITS),
    wbits=st.sampled_from(BITS),
    mode=st.sampled_from(bs.MODES),
)
def test_default_schedule_matches_reference(m, n, k, abits, wbits, mode) -> None:
    wl = bs.Dense(m, n, k, abits, wbits, mode)
    kern = bs.build(wl)
    assert kern.schedule == bs.default_schedule(wl)
    check_kernel(kern, seed=m * n * k, guarded=False)


# ---- many threads, more threads than tiles ------------------------------------------------------
@pytest.mark.parametrize("threads", [3, 4, 7, 64])
def test_more_threads_identical(threads: int) -> None:
    wl = bs.Dense(11, 9, 300, abits=3, wbits=2, mode="unipolar")
    kern = bs.build(wl, bs.Schedule(mr=2, nr=3, popcount="lut"))
    x, w = input_patterns(wl, 7)["random"]
    np.testing.assert_array_equal(kern(x, w, threads=threads), bs.reference(wl, x, w))


# ---- byte-counter windows: K past the point where 8-bit lanes would overflow ---------------------
# LUT: 31 blocks of 256 bits per window (K = 7936 is the last K without widening);
# CSA: 62 blocks (31 carry-save pairs; K = 15872 the last without widening).
@pytest.mark.parametrize(
    ("popcount", "k", "k_unroll"),
    [
        ("lut_split", 7936, 1),
        ("lut_split", 7937, 2),
        ("lut_split", 16385, 8),
        ("lut", 7936, 1),
        ("lut", 7937, 1),
        ("lut", 8200, 2),
        ("lut", 8200, 8),
        ("lut", 16385, 4),
        ("csa", 15872, 1),
        ("csa", 15873, 1),
        ("csa", 16385, 2),
        ("csa", 16385, 8),
        ("csa", 8200, 4),
    ],
)
@pytest.mark.parametrize("mode", ["and", "bipolar"])
def test_byte_counter_windows(popcount: str, k: int, k_unroll: int, mode: str) -> None:
    wl = bs.Dense(3, 5, k, abits=2, wbits=1, mode=mode)
    split = popcount == "lut_split"
    schedule = bs.Schedule(mr=2, nr=2, popcount="lut" if split else popcount, acc_bits=8,
                           k_unroll=k_unroll, nibble_split=split)
    kern = bs.build(wl, schedule)
    check_kernel(kern, seed=k)


# ---- explicit cases ------------------------------------------------------------------------------
ONE_BY_ONE = [
    bs.Schedule(mr=1, nr=1, popcount="lut"),
    bs.Schedule(mr=1, nr=1, popcount="scalar"),
    bs.Schedule(mr=1, nr=1, popcount="csa"),
    bs.Schedule(mr=1, nr=1, popcount="lut", acc_bits=64),
    bs.Schedule(mr=2, nr=4, popcount="lut", layout="interleaved"),
    bs.Schedule(mr=1, nr=2, popcount="lut", nibble_split=True, acc_bits=16),
]


@pytest.mark.parametrize("schedule", ONE_BY_ONE, ids=str)
def test_bipolar_1x1_k1_is_sign_product(schedule: bs.Schedule) -> None:
    wl = bs.Dense(1, 1, 1, abits=1, wbits=1, mode="bipolar")
    kern = bs.build(wl, schedule)
    # (2x-1)(2w-1): equal bits give +1, different bits -1
    for xv, wv, expected in ((0, 0, 1), (0, 1, -1), (1, 0, -1), (1, 1, 1)):
        y = kern(np.array([[xv]], np.uint8), np.array([[wv]], np.uint8))
        assert y.tolist() == [[expected]], (xv, wv)


@pytest.mark.parametrize("schedule", ONE_BY_ONE, ids=str)
def test_unipolar_hand_computed(schedule: bs.Schedule) -> None:
    wl = bs.Dense(2, 2, 3, abits=2, wbits=2, mode="unipolar")
    x = np.array([[1, 2, 3], [3, 0, 1]], np.uint8)
    w = np.array([[0, 1, 3], [2, 2, 2]], np.uint8)
    # weight levels 2w - 3: [[-3, -1, 3], [1, 1, 1]]
    # y00 = -3 - 2 + 9 = 4; y01 = 1 + 2 + 3 = 6; y10 = -9 + 0 + 3 = -6; y11 = 3 + 0 + 1 = 4
    expected = [[4, 6], [-6, 4]]
    assert bs.reference(wl, x, w).tolist() == expected
    assert bs.build(wl, schedule)(x, w).tolist() == expected


@pytest.mark.parametrize("schedule", ONE_BY_ONE[:3], ids=str)
def test_and_and_bipolar_hand_computed(schedule: bs.Schedule) -> None:
    x = np.array([[3, 0, 2, 1, 3]], np.uint8)
    w = np.array([[1, 1, 0, 1, 1], [0, 1, 1, 1, 0]], np.uint8)
    wl_and = bs.Dense(1, 2, 5, abits=2, wbits=1, mode="and")
    # 3+0+0+1+3 = 7; 0+0+2+1+0 = 3
    assert bs.build(wl_and, schedule)(x, w).tolist() == [[7, 3]]
    wl_bip = bs.Dense(1, 2, 5, abits=2, wbits=1, mode="bipolar")
    # x levels 2x-3: [3, -3, 1, -1, 3]; w levels 2w-1: [1, 1, -1, 1, 1] and [-1, 1, 1, 1, -1]
    # 3 - 3 - 1 - 1 + 3 = 1; -3 - 3 + 1 - 1 - 3 = -9
    assert bs.build(wl_bip, schedule)(x, w).tolist() == [[1, -9]]


BIG_K = 33025  # the largest K at 8x8 bits: 33025 * 255 * 255 = 2_147_450_625 <= 2^31 - 1


@pytest.mark.parametrize(
    "schedule",
    [
        bs.Schedule(mr=2, nr=2, popcount="lut", acc_bits=8, k_unroll=2),
        bs.Schedule(mr=1, nr=3, popcount="lut", acc_bits=32, layout="interleaved"),
        bs.Schedule(mr=2, nr=3, popcount="lut", acc_bits=8, nibble_split=True, k_unroll=4),
        bs.Schedule(mr=2, nr=1, popcount="lut", acc_bits=64, loop_order="nm"),
        bs.Schedule(mr=1, nr=2, popcount="csa", acc_bits=8, k_unroll=4),
        bs.Schedule(mr=2, nr=3, popcount="scalar", k_unroll=4),
    ],
    ids=str,
)
def test_8bit_by_8bit_big_k(schedule: bs.Schedule) -> None:
    rng = np.random.default_rng(1)
    m, n = 3, 3
    for mode in ("and", "bipolar", "unipolar"):
        wl = bs.Dense(m, n, BIG_K, abits=8, wbits=8, mode=mode)
        kern = bs.build(wl, schedule)
        x = np.full((m, BIG_K), 255, np.uint8)
        w = np.full((n, BIG_K), 255, np.uint8)
        w[1] = 0  # bipolar/unipolar: the most negative value
        x[2] = rng.integers(200, 256, BIG_K, dtype=np.uint8)
        w[2] = rng.integers(200, 256, BIG_K, dtype=np.uint8)
        expected = bs.reference(wl, x, w)
        if mode == "and":
            assert expected[0, 0] == BIG_K * 255 * 255 == 2_147_450_625
        else:
            assert expected[0, 0] == BIG_K * 255 * 255
            assert expected[0, 1] == -BIG_K * 255 * 255
        assert abs(int(expected[2, 2])) > 2**30
        got = kern(x, w)
        np.testing.assert_array_equal(got, expected, err_msg=f"{wl} {schedule}")
        np.testing.assert_array_equal(kern(x, w, threads=2), expected)


def test_random_8bit_large_result() -> None:
    wl = bs.Dense(5, 4, 20000, abits=8, wbits=8, mode="and")
    rng = np.random.default_rng(3)
    x = rng.integers(128, 256, wl.x_shape, dtype=np.uint8)
    w = rng.integers(128, 256, wl.w_shape, dtype=np.uint8)
    expected = bs.reference(wl, x, w)
    assert expected.min() > 2**29  # a genuinely large int32 result
    for schedule in (bs.default_schedule(wl), bs.Schedule(mr=1, nr=4, popcount="scalar")):
        np.testing.assert_array_equal(bs.build(wl, schedule)(x, w), expected)


def test_reference_semantics() -> None:
    # The oracle itself, against the formulas written out with Python integers.
    rng = np.random.default_rng(5)
    wl = bs.Dense(3, 4, 9, abits=3, wbits=2, mode="and")
    x = rng.integers(0, 8, wl.x_shape, dtype=np.uint8)
    w = rng.integers(0, 4, wl.w_shape, dtype=np.uint8)
    for mode in bs.MODES:
        wl = bs.Dense(3, 4, 9, abits=3, wbits=2, mode=mode)
        y = bs.reference(wl, x, w)
        assert y.dtype == np.int32
        for i in range(3):
            for j in range(4):
                xs = [int(v) for v in x[i]]
                ws = [int(v) for v in w[j]]
                if mode != "and":
                    ws = [2 * v - 3 for v in ws]
                if mode == "bipolar":
                    xs = [2 * v - 7 for v in xs]
                assert y[i, j] == sum(a * b for a, b in zip(xs, ws, strict=True))
