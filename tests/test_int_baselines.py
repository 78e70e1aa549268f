"""The int16 / int8 GEMM baselines (``IntDense`` + ``IntSchedule``) agree bit for bit with
``bs.reference``.

The sweep draws shapes 1..13 (off the tile grid), K with tails of every kind (not a multiple of the
dword step, of 32 bytes, or of the K block), both dtypes and schedules from the whole space, and
checks each kernel on random and extreme inputs: int16 all -32768 (every VPMADDWD pair is 2^31 and
wraps, so y wraps modulo 2^32), all 32767, min times max; int8 x = 127 with w = -128 and 127 (the
VPMADDUBSW saturation bound). Raw entry points run on guarded buffers, with 1 and 2 threads.
"""

from __future__ import annotations

import json
import platform

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import bitsearch as bs
import bitsearch.workloads.int_dense as workloads_module
from bitsearch.numerics.int_packing import IntPanelLayout, IntRowLayout
from bitsearch.space.int_schedule import IntSchedule, default_int_schedule
from bitsearch.workloads import IntDense

needs_x86 = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="runs x86-64 machine code"
)

DTYPES = ("int16", "int8")
KS = [1, 2, 3, 4, 5, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 129, 255, 257, 300]
SENTINEL = -0x5A5A5A5A


def _valid(schedule: IntSchedule, workload: IntDense) -> bool:
    try:
        schedule.check(workload)
    except ValueError:
        return False
    return True


TILES = {
    (form, dtype): [
        (mr, nr) for mr in range(1, 15) for nr in range(1, 15)
        if _valid(IntSchedule(formulation=form, mr=mr, nr=nr), IntDense(1, 1, 1, dtype))
    ]
    for form in ("broadcast", "dot")
    for dtype in DTYPES
}


def test_tile_tables_are_not_degenerate() -> None:
    assert (6, 2) in TILES["broadcast", "int16"] and (6, 2) not in TILES["broadcast", "int8"]
    assert (5, 2) in TILES["broadcast", "int8"] and (13, 1) in TILES["broadcast", "int16"]
    assert (3, 3) in TILES["dot", "int16"] and (2, 5) in TILES["dot", "int8"]
    assert all(TILES.values())


def operands(wl: IntDense, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    (xlo, xhi), (wlo, whi) = wl.x_range, wl.w_range
    full = {
        "random": (rng.integers(xlo, xhi + 1, wl.x_shape), rng.integers(wlo, whi + 1, wl.w_shape)),
        "min_min": (np.full(wl.x_shape, xlo), np.full(wl.w_shape, wlo)),
        "max_max": (np.full(wl.x_shape, xhi), np.full(wl.w_shape, whi)),
        "max_min": (np.full(wl.x_shape, xhi), np.full(wl.w_shape, wlo)),
        # extremes scattered: catches swapped rows, columns or K positions uniform inputs cannot
        "extreme_mix": (rng.choice([xlo, xhi, 0], wl.x_shape), rng.choice([wlo, whi, 0], wl.w_shape)),
    }[kind]
    return full[0].astype(wl.x_dtype), full[1].astype(wl.w_dtype)


KINDS = ("random", "min_min", "max_max", "max_min", "extreme_mix")


def run_guarded(kern: bs.Kernel, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Raw pack + gemm on buffers with guard zones; the first row block alone first (rows after it
    must stay untouched), then the others. Returns y."""
    wl = kern.workload
    pack, gemm = kern.loaded()["pack"], kern.loaded()["gemm"]
    guard = 64
    xx = kern.prepare_x(x)
    wp = kern.pack_weights(w).data
    xp_buf = np.full(wl.m * kern.operands.x_layout.row_bytes + 2 * guard, 0x5A, np.uint8)
    y_buf = np.full(wl.m * wl.n + 2 * guard, SENTINEL, np.int32)
    xp_ptr = xp_buf.ctypes.data + guard
    y_ptr = y_buf.ctypes.data + 4 * guard
    seen = pack(xx.ctypes.data, xp_ptr, 0, 0, wl.m)
    assert seen == int(np.bitwise_or.reduce(x.view(np.uint8), axis=None))
    blocks = kern.plan.phases[0].blocks(2)
    lo, hi = blocks[0]
    gemm(xp_ptr, wp.ctypes.data, y_ptr, 0, lo, hi)
    y_view = y_buf[guard : guard + wl.m * wl.n].reshape(wl.m, wl.n)
    assert (y_view[hi:] == SENTINEL).all(), "gemm wrote rows outside its row range"
    for lo, hi in blocks[1:]:
        gemm(xp_ptr, wp.ctypes.data, y_ptr, 0, lo, hi)
    assert (xp_buf[:guard] == 0x5A).all() and (xp_buf[-guard:] == 0x5A).all(), "pack overran xp"
    assert (y_buf[:guard] == SENTINEL).all() and (y_buf[-guard:] == SENTINEL).all(), "gemm overran y"
    return y_view.copy()


def check_kernel(kern: bs.Kernel, seed: int, kinds=KINDS, *, guarded: bool = True) -> None:
    wl = kern.workload
    for kind in kinds:
        x, w = operands(wl, kind, seed)
        expected = bs.reference(wl, x, w)
        wp = kern.pack_weights(w)
        y1 = kern(x, wp)
        assert y1.dtype == np.int32 and y1.shape == (wl.m, wl.n)
        assert np.array_equal(y1, expected), (
            f"{wl} {kern.schedule.to_json()} on {kind} inputs: first mismatches at "
            f"{np.argwhere(y1 != expected)[:4].tolist()}"
        )
        assert np.array_equal(kern(x, w, threads=2), expected), f"threads=2 differs on {kind}"
        if guarded and kind in ("random", "min_min"):
            assert np.array_equal(run_guarded(kern, x, w), expected)


# ---- the sweep ------------------------------------------------------------------------------------
@st.composite
def int_schedules(draw: st.DrawFn, dtype: str) -> IntSchedule:
    form = draw(st.sampled_from(["broadcast", "dot"]))
    mr, nr = draw(st.sampled_from(TILES[form, dtype]))
    return IntSchedule(
        formulation=form, mr=mr, nr=nr,
        k_unroll=draw(st.sampled_from([1, 2, 4, 8])),
        loop_order=draw(st.sampled_from(["mn", "nm"])),
        kc=draw(st.sampled_from([0, 0, 32, 64, 96, 128])),
    )


@needs_x86
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=90, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_sweep_matches_reference(dtype: str, data: st.DataObject, seed: int) -> None:
    schedule = data.draw(int_schedules(dtype), label="schedule")
    wl = IntDense(m=data.draw(st.integers(1, 13), label="m"), n=data.draw(st.integers(1, 13), label="n"),
                  k=data.draw(st.sampled_from(KS), label="k"), dtype=dtype)
    assume(_valid(schedule, wl))
    check_kernel(bs.build(wl, schedule), seed)


# Wide rows: several column panels, edge panels of every width, K blocks in a runtime loop.
@needs_x86
@pytest.mark.parametrize(
    ("dtype", "schedule", "shape"),
    [
        ("int16", IntSchedule(mr=6, nr=2, k_unroll=4, loop_order="mn", kc=64), (20, 53, 333)),
        ("int16", IntSchedule(mr=2, nr=4, k_unroll=8, loop_order="nm", kc=32), (9, 71, 260)),
        ("int16", IntSchedule(formulation="dot", mr=3, nr=3, k_unroll=2, kc=96), (14, 40, 500)),
        ("int8", IntSchedule(mr=5, nr=2, k_unroll=2, loop_order="nm", kc=128), (17, 47, 1001)),
        ("int8", IntSchedule(mr=1, nr=6, k_unroll=1, loop_order="mn", kc=32), (3, 50, 260)),
        ("int8", IntSchedule(formulation="dot", mr=2, nr=5, k_unroll=4, loop_order="mn", kc=64),
         (11, 23, 700)),
    ],
    ids=str,
)
def test_wide_and_k_blocked(dtype: str, schedule: IntSchedule, shape: tuple[int, int, int]) -> None:
    wl = IntDense(*shape, dtype=dtype)
    check_kernel(bs.build(wl, schedule), seed=sum(shape), kinds=("random", "min_min", "max_min"))


@needs_x86
@pytest.mark.parametrize("dtype", DTYPES)
def test_default_schedule(dtype: str) -> None:
    for m, n, k in ((1, 1, 1), (13, 17, 65), (7, 33, 300)):
        wl = IntDense(m, n, k, dtype)
        kern = bs.build(wl)
        assert kern.schedule == default_int_schedule(wl)
        check_kernel(kern, seed=k, kinds=("random", "max_min"), guarded=False)


# ---- exact semantics -------------------------------------------------------------------------------
@needs_x86
def test_int16_wraps_modulo_2_32() -> None:
    # Every VPMADDWD pair of -32768s is 2^31: wraps to -2^31; K=2 gives exactly that, K=4 gives 0.
    for k, expected in ((1, 2**30), (2, -(2**31)), (3, -(2**30)), (4, 0), (5, 2**30)):
        wl = IntDense(1, 1, k, "int16")
        x = np.full((1, k), -32768, np.int16)
        w = np.full((1, k), -32768, np.int16)
        assert bs.reference(wl, x, w).tolist() == [[expected]], k
        for schedule in (default_int_schedule(wl), IntSchedule(formulation="dot", mr=1, nr=1)):
            assert bs.build(wl, schedule)(x, w).tolist() == [[expected]], (k, schedule)


@needs_x86
def test_int8_extremes_and_hand_computed() -> None:
    wl = IntDense(2, 3, 5, "int8")
    x = np.array([[127, 0, 1, 2, 127], [3, 127, 127, 127, 0]], np.uint8)
    w = np.array([[-128, 5, -1, 1, -128], [127, 127, 127, 127, 127], [0, -128, 0, 0, 1]], np.int8)
    expected = [[-128 * 127 - 1 + 2 - 128 * 127, 127 * 257, 127],
                [3 * -128 + 5 * 127 - 127 + 127, 127 * 384, -128 * 127]]
    assert bs.reference(wl, x, w).tolist() == expected
    for schedule in (default_int_schedule(wl), IntSchedule(formulation="dot", mr=2, nr=3)):
        assert bs.build(wl, schedule)(x, w).tolist() == expected


@needs_x86
def test_int8_largest_k_and_many_threads() -> None:
    k = (2**31 - 1) // (127 * 128)  # the largest valid K
    wl = IntDense(3, 9, k, "int8")
    x = np.full(wl.x_shape, 127, np.uint8)
    w = np.full(wl.w_shape, -128, np.int8)
    w[1] = 127
    kern = bs.build(wl, IntSchedule(mr=2, nr=1, k_unroll=8, kc=4096))
    y = kern(x, w, threads=3)
    assert y[0, 0] == -k * 127 * 128 and y[0, 1] == k * 127 * 127
    np.testing.assert_array_equal(y, bs.reference(wl, x, w))


def test_reference_float_and_integer_paths_agree(monkeypatch) -> None:
    for dtype in DTYPES:
        wl = IntDense(4, 5, 77, dtype)
        x, w = operands(wl, "random", 4)
        fast = bs.reference(wl, x, w)
        monkeypatch.setattr(workloads_module, "FLOAT64_EXACT", 0)  # force the int64 path
        slow = bs.reference(wl, x, w)
        monkeypatch.undo()
        np.testing.assert_array_equal(fast, slow)
        exact = x.astype(object) @ w.astype(object).T  # Python integers
        wrapped = (exact + 2**31) % 2**32 - 2**31
        assert fast.tolist() == wrapped.tolist()


# ---- layouts ---------------------------------------------------------------------------------------
def test_row_layout_blocks_round_trip() -> None:
    rng = np.random.default_rng(2)
    values = rng.integers(-(2**15), 2**15, (5, 100)).astype(np.int16)
    plain = IntRowLayout(rows=5, k=100, element_bytes=2)
    blocked = IntRowLayout(rows=5, k=100, element_bytes=2, kc_bytes=64)
    assert plain.row_bytes == blocked.row_bytes == 224 and blocked.blocks == 4
    assert [blocked.block_row_bytes(b) for b in range(4)] == [64, 64, 64, 32]
    flat = blocked.pack(values).reshape(-1)
    rows = plain.pack(values)
    for b in range(4):
        width, off = blocked.block_row_bytes(b), blocked.block_offset(b)
        got = flat[off : off + 5 * width].reshape(5, width)
        np.testing.assert_array_equal(got, rows[:, 64 * b : 64 * b + width])
    assert rows[:, :200].copy().view(np.int16).tolist() == values.tolist()
    assert (rows[:, 200:] == 0).all()
    assert plain != blocked and plain == IntRowLayout(rows=5, k=100, element_bytes=2)


def test_panel_layout() -> None:
    lay = IntPanelLayout(n=21, k=5, element_bytes=1, panel=8)
    w = np.arange(21 * 5, dtype=np.int64).reshape(21, 5).astype(np.int8)
    packed = lay.pack(w)
    assert packed.shape == (21, lay.row_bytes) and lay.steps == 2
    flat = packed.reshape(-1)
    # panel 1, step 1, column 3 of the panel = w[11, 4:8] zero-padded past K = 5
    off = lay.panel_bytes + 1 * 4 * 8 + 3 * 4
    assert flat[off : off + 4].view(np.int8).tolist() == [w[11, 4], 0, 0, 0]
    # the edge panel (5 columns) is 8 wide; its padding columns are zero
    edge = flat[2 * lay.panel_bytes : 2 * lay.panel_bytes + 2 * 32].reshape(2, 8, 4)
    assert (edge[:, 5:] == 0).all()
    assert edge[0, 4].view(np.int8).tolist() == w[20, :4].tolist()
    assert (flat[lay.total_bytes :] == 0).all()


# ---- schedules ---------------------------------------------------------------------------------------
def test_schedule_json_round_trip_and_defaults() -> None:
    for s in (IntSchedule(), IntSchedule(formulation="dot", mr=2, nr=5, k_unroll=8, loop_order="mn", kc=64)):
        assert IntSchedule.from_json(s.to_json()) == s
        assert IntSchedule.from_dict(json.loads(s.to_json())) == s
        assert s.normalized() == s and hash(s) == hash(IntSchedule.from_json(s.to_json()))
    for dtype in DTYPES:
        for m, n, k in ((1, 1, 1), (1024, 1024, 1024), (3, 200, 4608)):
            wl = IntDense(m, n, k, dtype)
            default_int_schedule(wl).check(wl)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"formulation": "outer"}, "schedule.formulation must be one of"),
        ({"mr": 0}, r"schedule.mr must be an integer in 1\.\.14"),
        ({"nr": 15}, r"schedule.nr must be an integer in 1\.\.14"),
        ({"mr": 2.0}, "schedule.mr must be an integer"),
        ({"k_unroll": 3}, "schedule.k_unroll must be one of"),
        ({"loop_order": "km"}, "schedule.loop_order must be one of"),
        ({"kc": 48}, "schedule.kc must be 0 or a positive multiple of 32"),
        ({"kc": -32}, "schedule.kc must be 0 or a positive multiple of 32"),
        ({"mr": 6, "nr": 2}, "needs 17 ymm registers"),  # int8: one more for the ones
        ({"formulation": "dot", "mr": 4, "nr": 3}, "needs 19 ymm registers"),
    ],
)
def test_bad_schedules(changes: dict, message: str) -> None:
    s = IntSchedule(**changes)
    with pytest.raises(ValueError, match=message):
        s.check(IntDense(4, 4, 4, "int8"))
    with pytest.raises(ValueError, match=message):
        bs.build(IntDense(4, 4, 4, "int8"), s)


def test_schedule_unknown_knob() -> None:
    with pytest.raises(ValueError, match="unknown int schedule knobs: popcount"):
        IntSchedule.from_json('{"mr": 2, "popcount": "lut"}')


def test_wrong_schedule_type_for_workload() -> None:
    with pytest.raises(ValueError, match=r"an IntDense on x86_64-avx2 needs a bitsearch\.IntSchedule"):
        bs.build(IntDense(4, 4, 4), bs.Schedule())
    with pytest.raises(ValueError, match=r"needs a bitsearch\.Schedule, got IntSchedule"):
        bs.build(bs.Dense(4, 4, 4), IntSchedule())
    with pytest.raises(ValueError, match="computes an IntDense workload"):
        IntSchedule().check(bs.Dense(4, 4, 4))


# ---- workloads and bad operands ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"m": 0, "n": 1, "k": 1}, "m must be a positive integer"),
        ({"m": 1, "n": True, "k": 1}, "n must be a positive integer"),
        ({"m": 1, "n": 1, "k": 1.5}, "k must be a positive integer"),
        ({"m": 1, "n": 1, "k": 1, "dtype": "int4"}, "dtype must be one of int16, int8"),
        ({"m": 1, "n": 1, "k": 1, "dtype": np.int8}, "dtype must be one of"),
        ({"m": 1, "n": 1, "k": 132105, "dtype": "int8"}, "does not fit the int32 output"),
    ],
)
def test_bad_workloads(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IntDense(**kwargs)


def test_workload_protocol() -> None:
    wl = IntDense(np.int64(3), 4, 5, "int8")
    assert type(wl.m) is int and wl.macs == 60 and wl.x_shape == (3, 5) and wl.w_shape == (4, 5)
    assert wl.to_dict() == {"op": "int_dense", "m": 3, "n": 4, "k": 5, "dtype": "int8"}
    assert str(wl) == "int_dense 3x4x5 int8" and wl.max_abs_output == 5 * 127 * 128
    assert IntDense(1, 1, 3).max_abs_output == 3 * 2**30
    IntDense(1, 1, 132104, "int8")  # the largest K that fits
    wl.check_packed(0x7F)
    with pytest.raises(ValueError, match="out of range for int8 activations"):
        wl.check_packed(0x80)
    IntDense(1, 1, 1, "int16").check_packed(0xFF)


@pytest.fixture(scope="module")
def int8_kernel() -> bs.Kernel:
    return bs.build(IntDense(5, 3, 40, "int8"), IntSchedule(mr=2, nr=1))


@needs_x86
def test_bad_operands(int8_kernel: bs.Kernel) -> None:
    wl = int8_kernel.workload
    x, w = operands(wl, "random", 1)
    cases = [
        (x.astype(np.int8), w, "x must have dtype uint8"),
        (x, w.astype(np.uint8), "w must have dtype int8"),
        (x[:, :39], w, r"x must have shape \(5, 40\)"),
        (x, w[:2], r"w must have shape \(3, 40\)"),
        (x.tolist(), w, "x must be a numpy array"),
    ]
    for xx, ww, message in cases:
        for call in (lambda xx=xx, ww=ww: int8_kernel(xx, ww), lambda xx=xx, ww=ww: bs.reference(wl, xx, ww)):
            with pytest.raises(ValueError, match=message):
                call()
    big = x.copy()
    big[4, 39] = 128  # bit 7: out of the 7-bit range
    with pytest.raises(ValueError, match="out of range for int8 activations"):
        int8_kernel(big, w)
    with pytest.raises(ValueError, match="out of range for int8 activations"):
        int8_kernel(big, w, threads=2)
    with pytest.raises(ValueError, match=r"x holds 128, out of range 0\.\.127"):
        bs.reference(wl, big, w)
    int16 = IntDense(5, 3, 40, "int16")
    with pytest.raises(ValueError, match="x must have dtype int16"):
        bs.reference(int16, x, w)


@needs_x86
def test_packed_weights_of_another_layout_are_rejected(int8_kernel: bs.Kernel) -> None:
    wl = int8_kernel.workload
    other = bs.build(wl, IntSchedule(formulation="dot", mr=2, nr=1))
    x, w = operands(wl, "random", 2)
    with pytest.raises(ValueError, match="packed weights were made for"):
        int8_kernel(x, other.pack_weights(w))
    np.testing.assert_array_equal(other(x, other.pack_weights(w)), bs.reference(wl, x, w))
