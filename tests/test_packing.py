"""Bit-plane packing: ``PackedLayout`` against an independent bit-by-bit packer, and the kernels'
machine-code activation packing against ``PackedLayout.pack`` (bytes, OR of inputs, row sums)."""

from __future__ import annotations

import platform

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bitsearch as bs
from bitsearch.numerics import LAYOUTS, PackedLayout

IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")
needs_x86 = pytest.mark.skipif(not IS_X86_64, reason="runs x86-64 machine code")


def slow_pack(
    values: np.ndarray, planes: int, k: int, block_bits: int, layout: str, nibble_split: bool = False
) -> np.ndarray:
    """Bit by bit, from the layout's definition alone (no numpy bit tricks).

    A (plane, block) unit is the block's bytes; with ``nibble_split`` it is the low nibble of every
    byte followed by the high nibble of every byte (so bit t of element-byte j lands in byte j,
    bit t, for t < 4, and in byte block_bytes + j, bit t - 4, for t >= 4)."""
    block_bytes = block_bits // 8
    unit = block_bytes * (2 if nibble_split else 1)
    blocks = -(-k // block_bits)
    out = np.zeros((values.shape[0], planes * blocks * unit), np.uint8)
    for r in range(values.shape[0]):
        for i in range(k):
            b, within = divmod(i, block_bits)
            byte_in_block, bit = divmod(within, 8)
            if nibble_split and bit >= 4:
                byte_in_block, bit = byte_in_block + block_bytes, bit - 4
            for p in range(planes):
                if (int(values[r, i]) >> p) & 1:
                    if layout == "plane_major":  # row = [plane][block][unit]
                        off = (p * blocks + b) * unit + byte_in_block
                    else:  # row = [block][plane][unit]
                        off = (b * planes + p) * unit + byte_in_block
                    out[r, off] |= 1 << bit
    return out


layouts = st.builds(
    PackedLayout,
    planes=st.integers(1, 8),
    k=st.integers(1, 700),
    block_bits=st.sampled_from([64, 256]),
    layout=st.sampled_from(LAYOUTS),
    nibble_split=st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(lay=layouts, rows=st.integers(1, 4), data=st.data())
def test_round_trip(lay: PackedLayout, rows: int, data: st.DataObject) -> None:
    seed = data.draw(st.integers(0, 2**32 - 1))
    values = np.random.default_rng(seed).integers(0, 1 << lay.planes, (rows, lay.k), dtype=np.uint8)
    packed = lay.pack(values)
    assert packed.dtype == np.uint8
    assert packed.shape == (rows, lay.row_bytes)
    assert lay.row_bytes == lay.planes * lay.blocks * lay.block_bytes * (2 if lay.nibble_split else 1)
    assert lay.blocks * lay.block_bits >= lay.k > (lay.blocks - 1) * lay.block_bits
    np.testing.assert_array_equal(lay.unpack(packed), values)


@settings(max_examples=60, deadline=None)
@given(lay=layouts.filter(lambda lay: lay.k <= 300), rows=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_matches_bit_by_bit_definition(lay: PackedLayout, rows: int, seed: int) -> None:
    values = np.random.default_rng(seed).integers(0, 1 << lay.planes, (rows, lay.k), dtype=np.uint8)
    expected = slow_pack(values, lay.planes, lay.k, lay.block_bits, lay.layout, lay.nibble_split)
    np.testing.assert_array_equal(lay.pack(values), expected)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("block_bits", [64, 256])
def test_strides(layout: str, block_bits: int) -> None:
    lay = PackedLayout(planes=3, k=block_bits * 2 + 20, block_bits=block_bits, layout=layout)
    bb = block_bits // 8
    assert lay.blocks == 3
    if layout == "plane_major":
        assert (lay.plane_stride, lay.block_stride) == (3 * bb, bb)
    else:
        assert (lay.plane_stride, lay.block_stride) == (bb, 3 * bb)
    # Plane p, block b starts at p * plane_stride + b * block_stride: set one element per (p, b).
    values = np.zeros((1, lay.k), np.uint8)
    for b in range(3):
        values[0, b * block_bits + 9] = 0b101  # planes 0 and 2 of element 9 of block b
    packed = lay.pack(values)[0]
    nonzero = set(np.flatnonzero(packed).tolist())
    expected = {p * lay.plane_stride + b * lay.block_stride + 1 for b in range(3) for p in (0, 2)}
    assert nonzero == expected
    for off in expected:
        assert packed[off] == 1 << 1  # element 9 = byte 1, bit 1


def test_little_endian_bit_order() -> None:
    lay = PackedLayout(planes=1, k=64, block_bits=64)
    for i in range(64):
        values = np.zeros((1, 64), np.uint8)
        values[0, i] = 1
        packed = lay.pack(values)[0]
        expected = np.zeros(8, np.uint8)
        expected[i // 8] = 1 << (i % 8)  # bit t of byte j holds element 8j + t
        np.testing.assert_array_equal(packed, expected)
    values = np.array([[1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1] + [0] * 53], np.uint8)
    assert lay.pack(values)[0, :2].tolist() == [0b0000_0001, 0b0000_0110]


def test_planes_hold_bits_of_the_value() -> None:
    lay = PackedLayout(planes=8, k=8, block_bits=64, layout="plane_major")
    values = np.array([[0, 1, 2, 3, 128, 255, 0x55, 0xAA]], np.uint8)
    packed = lay.pack(values)[0].reshape(8, 8)  # [plane][byte]; one block of 8 bytes
    for p in range(8):
        expected_byte = sum(((int(v) >> p) & 1) << i for i, v in enumerate(values[0]))
        assert packed[p, 0] == expected_byte
        assert (packed[p, 1:] == 0).all()


def test_nibble_split_hand_computed() -> None:
    lay = PackedLayout(planes=1, k=64, block_bits=64, nibble_split=True)
    values = np.zeros((1, 64), np.uint8)
    values[0, [0, 5, 7, 8, 63]] = 1  # byte 0 = 0b1010_0001, byte 1 = 0b0000_0001, byte 7 = 0x80
    packed = lay.pack(values)[0]
    assert packed.shape == (16,)
    low = [0x1, 0x1, 0, 0, 0, 0, 0, 0]
    high = [0xA, 0, 0, 0, 0, 0, 0, 0x8]
    expected = [*low, *high]
    assert packed.tolist() == expected
    assert lay.unpack(packed[None]).tolist() == values.tolist()


@pytest.mark.parametrize("nibble_split", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("block_bits", [64, 256])
@pytest.mark.parametrize("k", [1, 7, 63, 64, 65, 255, 257])
def test_zero_padding(layout: str, block_bits: int, k: int, nibble_split: bool) -> None:
    planes = 3
    lay = PackedLayout(planes=planes, k=k, block_bits=block_bits, layout=layout,
                       nibble_split=nibble_split)
    packed = lay.pack(np.full((2, k), 7, np.uint8))
    # exactly k one-bits per plane, everything else zero
    assert int(np.unpackbits(packed, axis=-1).sum()) == 2 * planes * k
    for p in range(planes):
        bits = []
        for b in range(lay.blocks):
            start = p * lay.plane_stride + b * lay.block_stride
            unit = packed[0, start : start + lay.unit_bytes]
            if nibble_split:
                assert not (unit & 0xF0).any(), "split units hold nibbles only"
                unit = unit[: lay.block_bytes] | (unit[lay.block_bytes :] << 4)
            bits.append(np.unpackbits(unit, bitorder="little"))
        plane_bits = np.concatenate(bits)
        assert plane_bits[:k].all() and not plane_bits[k:].any()


def test_bad_layout_arguments() -> None:
    with pytest.raises(ValueError, match="block_bits"):
        PackedLayout(planes=1, k=8, block_bits=96)  # (128 is a NEON Q register now)
    with pytest.raises(ValueError, match="layout"):
        PackedLayout(planes=1, k=8, layout="column_major")  # type: ignore[arg-type]


# ---- the machine-code packing of the kernels -----------------------------------------------------
def run_pack(kern: bs.Kernel, x: np.ndarray, lo: int = 0, hi: int | None = None):
    wl = kern.workload
    hi = wl.m if hi is None else hi
    pack = kern.loaded()["pack"]
    xx = kern.prepare_x(x)
    xp = np.full((wl.m, kern.operands.x_layout.row_bytes), 0xA5, np.uint8)
    rs = np.full(wl.m, -12345, np.int32)
    seen = pack(xx.ctypes.data, xp.ctypes.data, rs.ctypes.data, lo, hi)
    return seen, xp, rs


PACK_CASES = [
    (k, abits, popcount, layout, split)
    for k in (1, 5, 31, 32, 33, 63, 64, 65, 95, 200, 255, 256, 257, 300, 513, 1000)
    for abits, popcount, layout, split in (
        (1, "lut", "plane_major", False),
        (2, "scalar", "interleaved", False),
        (3, "csa", "interleaved", False),
        (8, "lut", "interleaved", False),
        (8, "scalar", "plane_major", False),
        (5, "scalar", "interleaved", False),
        (4, "lut", "plane_major", False),
        (3, "lut", "interleaved", True),
        (8, "lut", "plane_major", True),
    )
]


@needs_x86
@pytest.mark.parametrize(("k", "abits", "popcount", "layout", "split"), PACK_CASES)
def test_machine_pack_matches_packed_layout(
    k: int, abits: int, popcount: str, layout: str, split: bool
) -> None:
    m = 3
    wl = bs.Dense(m, 2, k, abits=abits, wbits=1, mode="unipolar")
    kern = bs.build(wl, bs.Schedule(mr=1, nr=1, popcount=popcount, layout=layout, nibble_split=split))
    block_bits = 64 if popcount == "scalar" else 256
    assert kern.operands.x_layout == PackedLayout(abits, k, block_bits, layout, nibble_split=split)
    rng = np.random.default_rng(k * 10 + abits)
    x = rng.integers(0, 1 << abits, (m, k), dtype=np.uint8)
    x[1] = (1 << abits) - 1  # one all-maximal row
    seen, xp, rs = run_pack(kern, x)
    np.testing.assert_array_equal(xp, kern.operands.x_layout.pack(x))
    assert seen == int(np.bitwise_or.reduce(x, axis=None))
    np.testing.assert_array_equal(rs, x.astype(np.int64).sum(axis=1))


@needs_x86
@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 600),
    abits=st.integers(1, 8),
    popcount=st.sampled_from(["lut", "scalar", "lut_split"]),
    layout=st.sampled_from(LAYOUTS),
    mode=st.sampled_from(bs.MODES),
    seed=st.integers(0, 2**32 - 1),
)
def test_machine_pack_sweep(k, abits, popcount, layout, mode, seed) -> None:
    m = 4
    wl = bs.Dense(m, 1, k, abits=abits, wbits=1, mode=mode)
    split = popcount == "lut_split"
    kern = bs.build(wl, bs.Schedule(mr=1, nr=1, popcount="lut" if split else popcount,
                                    layout=layout, nibble_split=split))
    assert kern.operands.x_layout.nibble_split == split
    x = np.random.default_rng(seed).integers(0, 1 << abits, (m, k), dtype=np.uint8)
    seen, xp, rs = run_pack(kern, x)
    np.testing.assert_array_equal(xp, kern.operands.x_layout.pack(x))
    np.testing.assert_array_equal(kern.operands.x_layout.unpack(xp), x)
    assert seen == int(np.bitwise_or.reduce(x, axis=None))
    if mode == "unipolar":
        np.testing.assert_array_equal(rs, x.astype(np.int64).sum(axis=1))


@needs_x86
@pytest.mark.parametrize("k", [3, 40, 64, 300])
def test_machine_pack_returns_or_of_out_of_range_bytes(k: int) -> None:
    """Values above the bit width are reported through the returned OR, from any position."""
    wl = bs.Dense(3, 1, k, abits=2, wbits=1, mode="and")
    for popcount, split in (("lut", False), ("scalar", False), ("lut", True)):
        kern = bs.build(wl, bs.Schedule(mr=1, nr=1, popcount=popcount, nibble_split=split))
        for pos in {0, k // 2, k - 1}:
            for bad in (4, 0x40, 0x80, 0xFF):
                x = np.ones((3, k), np.uint8)
                x[2, pos] = bad
                seen, xp, _ = run_pack(kern, x)
                assert seen == 1 | bad, (popcount, pos, bad)
                # the low planes are still packed faithfully
                np.testing.assert_array_equal(xp, kern.operands.x_layout.pack(x & 3))


@needs_x86
def test_machine_pack_row_range() -> None:
    """pack(lo, hi) writes rows lo..hi-1 of xp and rowsum and nothing else."""
    k, m = 100, 6
    wl = bs.Dense(m, 1, k, abits=3, wbits=1, mode="unipolar")
    kern = bs.build(wl, bs.Schedule(mr=1, nr=1, popcount="lut"))
    x = np.random.default_rng(0).integers(0, 8, (m, k), dtype=np.uint8)
    x[4, 7] = 7
    x[0, 0] = 0xFF  # out of range, but outside the packed rows: must not be read
    seen, xp, rs = run_pack(kern, x, 2, 5)
    assert seen == int(np.bitwise_or.reduce(x[2:5], axis=None))
    np.testing.assert_array_equal(xp[2:5], kern.operands.x_layout.pack(x[2:5]))
    assert (xp[:2] == 0xA5).all() and (xp[5:] == 0xA5).all()
    np.testing.assert_array_equal(rs[2:5], x[2:5].astype(np.int64).sum(axis=1))
    assert (rs[:2] == -12345).all() and (rs[5:] == -12345).all()
    # an empty range writes nothing and reports nothing
    seen, xp, rs = run_pack(kern, x, 3, 3)
    assert seen == 0 and (xp == 0xA5).all() and (rs == -12345).all()


@needs_x86
def test_machine_pack_rowsum_of_all_maximal_8bit() -> None:
    k = 4000
    wl = bs.Dense(2, 1, k, abits=8, wbits=1, mode="unipolar")
    kern = bs.build(wl, bs.Schedule(mr=1, nr=1, popcount="scalar"))
    x = np.full((2, k), 255, np.uint8)
    seen, xp, rs = run_pack(kern, x)
    assert seen == 255
    assert rs.tolist() == [255 * k, 255 * k]
    np.testing.assert_array_equal(xp, kern.operands.x_layout.pack(x))


def test_pack_weights_uses_kernel_layout() -> None:
    wl = bs.Dense(2, 3, 70, abits=1, wbits=3, mode="and")
    for popcount, layout, split in (("scalar", "interleaved", False), ("lut", "plane_major", False),
                                    ("lut", "interleaved", True)):
        kern = bs.build(wl, bs.Schedule(mr=1, nr=1, popcount=popcount, layout=layout,
                                        nibble_split=split))
        w = np.random.default_rng(1).integers(0, 8, (3, 70), dtype=np.uint8)
        wp = kern.pack_weights(w)
        assert wp.key == kern.operands.w_layout
        block_bits = 64 if popcount == "scalar" else 256
        assert wp.key == PackedLayout(3, 70, block_bits, layout, nibble_split=split)
        np.testing.assert_array_equal(wp.data, slow_pack(w, 3, 70, block_bits, layout, split))
