"""The schedule and workload records reject bad input with a ``ValueError`` that names the problem:
non-object JSON, wrong-typed knob values, workload dimensions the emitters cannot encode."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bitsearch as bs
from bitsearch.cli import main
from bitsearch.space import (
    ConvSchedule,
    Fp8Schedule,
    IntConvSchedule,
    IntSchedule,
    NeonSchedule,
    Schedule,
    default_int_schedule,
)
from bitsearch.workloads import Conv2d, Dense, Fp8Dense, IntConv2d, IntDense

RECORDS = (Schedule, NeonSchedule, IntSchedule, IntConvSchedule, ConvSchedule, Fp8Schedule)


# ---- 1. JSON / dict input ------------------------------------------------------------------------
@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.__name__)
@pytest.mark.parametrize("text", ["[1]", "[]", "1", "2.5", "null", "true", '"mr"', '["mr", 2]'])
def test_from_json_rejects_non_objects(record, text) -> None:
    with pytest.raises(ValueError, match=rf"^{record.KIND} must be a JSON object") as info:
        record.from_json(text)
    assert type(json.loads(text)).__name__ in str(info.value)  # names what was given


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.__name__)
@pytest.mark.parametrize("data", [[1], [("mr", 2)], "mr", 3, None, 1.5, ("mr",), {"mr"}],
                         ids=repr)
def test_from_dict_rejects_non_dicts(record, data) -> None:
    with pytest.raises(ValueError, match=rf"^{record.KIND} must be a JSON object") as info:
        record.from_dict(data)
    assert type(data).__name__ in str(info.value)


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.__name__)
@pytest.mark.parametrize("text", ["{bad", "", "{'mr': 2}", '{"mr": 2,}', "[1", b"{\xff}", b"\xff\xfe\x00"])
def test_from_json_invalid_json_names_the_record(record, text) -> None:
    with pytest.raises(ValueError, match=rf"^{record.KIND} is not valid JSON: "):
        record.from_json(text)


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.__name__)
def test_from_json_rejects_non_text(record) -> None:
    with pytest.raises(ValueError, match=rf"^{record.KIND} must be JSON text, got int"):
        record.from_json(12)  # type: ignore[arg-type]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.__name__)
def test_from_dict_non_string_keys_are_unknown_knobs(record) -> None:
    with pytest.raises(ValueError, match=rf"^unknown {record.KIND} knobs: 1, None"):
        record.from_dict({1: 2, None: 3})


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.__name__)
def test_from_json_still_round_trips(record) -> None:
    default = record()
    assert record.from_json(default.to_json()) == default
    assert record.from_json(default.to_json().encode()) == default
    assert record.from_dict({}) == default


# ---- 2. knob values of the wrong type --------------------------------------------------------------
# (record, target, workload, a valid schedule to vary one knob of)
def _cases() -> list[tuple[str, str, object, object]]:
    dense, int_dense = Dense(8, 8, 256, abits=2, wbits=1), IntDense(8, 8, 64)
    conv = Conv2d(h=6, w=6, cin=16, cout=8, kernel=3)
    int_conv = IntConv2d(h=6, w=6, cin=16, cout=8, kernel=3)
    fp8 = Fp8Dense(4, 16, 64)
    return [
        ("Schedule-avx2", "x86_64-avx2", dense, Schedule()),
        ("Schedule-avx512", "x86_64-avx512", dense, Schedule(popcount="vpopcnt", acc_bits=64)),
        ("NeonSchedule", "aarch64-cortex-a53", dense, NeonSchedule()),
        ("IntSchedule", "x86_64-avx2", int_dense, IntSchedule()),
        ("IntSchedule-neon", "aarch64-cortex-a53", int_dense,
         default_int_schedule(int_dense, "aarch64-cortex-a53")),
        ("IntConvSchedule", "x86_64-avx2", int_conv, IntConvSchedule()),
        ("ConvSchedule-im2col", "x86_64-avx2", conv, ConvSchedule()),
        ("ConvSchedule-implicit", "x86_64-avx2", conv,
         ConvSchedule(lowering="implicit", loop_order="nm", row_block=2)),
        ("Fp8Schedule", "x86_64-avx2", fp8, Fp8Schedule()),
        ("Fp8Schedule-avx512", "x86_64-avx512", fp8, Fp8Schedule(decode="pack")),
    ]


CASES = _cases()
CASE_IDS = [case[0] for case in CASES]

# Values of every type a knob could be given by mistake, the near misses first: integral floats
# (16.0 == 16), bools (True == 1), ints where a bool is expected, numpy scalars, numeric strings.
WRONG_VALUES = st.one_of(
    st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 256]).map(float),
    st.booleans(),
    st.integers(-2, 300),
    st.sampled_from([0, 1, 2, 4, 8]).map(np.int64),
    st.sampled_from([True, False]).map(np.bool_),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["2", "lut", "mn", "dot", "pack", "implicit", "addp", "true", ""]),
    st.text(max_size=6),
    st.none(),
    st.lists(st.integers(0, 4), max_size=2),
    st.tuples(st.integers(0, 4)),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.binary(max_size=3),
    st.complex_numbers(max_magnitude=4),
)


@pytest.mark.parametrize(("name", "target", "workload", "base"), CASES, ids=CASE_IDS)
def test_base_schedules_are_valid(name, target, workload, base) -> None:
    base.check(workload, target)


@pytest.mark.parametrize(("name", "target", "workload", "base"), CASES, ids=CASE_IDS)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_wrong_typed_knob_values_are_value_errors(name, target, workload, base, data) -> None:
    knob = data.draw(st.sampled_from([f.name for f in dataclasses.fields(base)]), label="knob")
    value = data.draw(WRONG_VALUES.filter(lambda v: type(v) is not type(getattr(base, knob))),
                      label="value")
    schedule = dataclasses.replace(base, **{knob: value})
    with pytest.raises(ValueError, match=rf"\b{knob}\b"):
        schedule.check(workload, target)


# The ones that used to pass the checks (and crash an emitter) or raise TypeError, by name.
@pytest.mark.parametrize(
    ("case", "knob", "value"),
    [
        ("IntSchedule", "k_unroll", 2.0),
        ("IntSchedule", "k_unroll", True),
        ("IntSchedule", "formulation", ["dot"]),
        ("IntSchedule", "kc", 32.0),
        ("IntSchedule", "mr", np.int64(2)),
        ("IntSchedule-neon", "k_unroll", 4.0),
        ("IntSchedule-neon", "kc", 0.0),
        ("IntSchedule-neon", "kc", False),
        ("IntSchedule-neon", "formulation", np.str_("dot")),
        ("IntConvSchedule", "kc", 0.0),
        ("IntConvSchedule", "kc", False),
        ("IntConvSchedule", "k_unroll", 2.0),
        ("ConvSchedule-im2col", "popcount", ["lut"]),
        ("ConvSchedule-im2col", "lowering", ["im2col"]),
        ("ConvSchedule-implicit", "row_block", 2.0),
        ("ConvSchedule-implicit", "row_block", True),
        ("Fp8Schedule", "k_unroll", 2.0),
        ("Fp8Schedule", "k_unroll", True),
        ("Fp8Schedule", "decode", ["pack"]),
        ("Fp8Schedule", "kc", 16.0),
        ("NeonSchedule", "short_k", 1),
        ("NeonSchedule", "vector_bits", 128.0),
        ("Schedule-avx2", "nibble_split", 0),
        ("Schedule-avx2", "acc_bits", 8.0),
        ("Schedule-avx2", "nc", False),
    ],
    ids=repr,
)
def test_known_wrong_typed_knob_values(case, knob, value) -> None:
    _, target, workload, base = CASES[CASE_IDS.index(case)]
    with pytest.raises(ValueError, match=rf"\b{knob}\b"):
        dataclasses.replace(base, **{knob: value}).check(workload, target)


def test_float_knob_is_a_build_error_naming_it(capsys) -> None:
    code = main(["measure", "int-dense", "--m", "4", "--n", "4", "--k", "64",
                 "--schedule", '{"k_unroll": 2.0}'])
    out = capsys.readouterr().out
    assert code != 0
    assert "INVALID_SCHEDULE" in out and "schedule.k_unroll must be one of" in out, out
    assert "TypeError" not in out, out


# ---- 3. workload dimensions the x86-64 emitters cannot encode ---------------------------------------
LIMIT = re.compile(r"^(\w+)=(\d+) exceeds the largest supported \1 \((\d+)\) of this shape and schedule: "
                   r".* signed 32-bit immediates and displacements \(at most 2147483647\)$")


def _limit(exc: pytest.ExceptionInfo, name: str, value: int) -> int:
    match = LIMIT.match(str(exc.value))
    assert match, str(exc.value)
    assert match[1] == name and int(match[2]) == value, str(exc.value)
    return int(match[3])


# (workload, schedule, target, the dimension to blame): each limit found in an emitter; the
# dimension named is the largest one that could bring the workload within the limits by itself.
LIMIT_CASES = [
    # int16 GEMM: a tile of 6 x rows of 2k bytes (and the packed x buffer, m x rows).
    pytest.param(IntDense(2, 2, 3_000_000_000), None, "x86_64-avx2", "k", id="int16-k"),
    pytest.param(IntDense(2, 2, 3_000_000_000), IntSchedule(formulation="dot", mr=1, nr=1),
                 "x86_64-avx2", "k", id="int16-dot-k"),
    pytest.param(IntDense(2**24, 2, 64), None, "x86_64-avx2", "m", id="int16-m"),
    pytest.param(IntDense(2, 2**24, 64), None, "x86_64-avx2", "n", id="int16-n"),
    pytest.param(IntDense(2**26, 3, 3, dtype="int8"), None, "x86_64-avx2", "m", id="int8-m"),
    # bit-serial GEMM: y tile rows of 4n bytes; 8 packed x rows of k/4 bytes (nibble split).
    pytest.param(Dense(2, 2**29, 64), None, "x86_64-avx2", "n", id="dense-n"),
    pytest.param(Dense(1, 2**32 - 1, 64), Schedule(mr=1, nr=2, popcount="scalar", loop_order="mn"),
                 "x86_64-avx2", "n", id="dense-n-imul"),  # used to build, IMUL by -1 instead of n
    pytest.param(Dense(2, 2, 2**31 - 1), Schedule(mr=4, nr=1, nibble_split=True), "x86_64-avx2", "k",
                 id="dense-k"),
    pytest.param(Dense(2, 2**28, 64), Schedule(mr=3, nr=3, popcount="vpopcnt", acc_bits=64),
                 "x86_64-avx512", "n", id="dense-avx512-n"),
    # FP8 GEMM: decoded FP32 x rows, weight panels.
    pytest.param(Fp8Dense(2, 2, 2**28), None, "x86_64-avx2", "k", id="fp8-k"),
    pytest.param(Fp8Dense(2, 2**26, 64), None, "x86_64-avx512", "n", id="fp8-avx512-n"),
    # convolutions: the raw x, the packed image, y.
    pytest.param(Conv2d(h=2**16, w=2**10, cin=3, cout=8, kernel=3), None, "x86_64-avx2", "h", id="conv-h"),
    pytest.param(Conv2d(h=8, w=8, cin=16, cout=2**26, kernel=1), None, "x86_64-avx2", "cout",
                 id="conv-cout"),
    pytest.param(IntConv2d(h=8, w=8, cin=16, cout=2**26, kernel=1), None, "x86_64-avx2", "cout",
                 id="int-conv-cout"),
    pytest.param(IntConv2d(h=64, w=2**20, cin=16, cout=8, kernel=3, batch=2), None, "x86_64-avx2",
                 "w", id="int-conv-w"),
]


def _default(workload: object, target: str) -> object:
    from bitsearch.build import default_schedule_of

    return default_schedule_of(workload, target)


@pytest.mark.parametrize(("workload", "schedule", "target", "dim"), LIMIT_CASES)
def test_dimension_limits_name_the_dimension(workload, schedule, target, dim) -> None:
    schedule = schedule or _default(workload, target)
    value = getattr(workload, dim)
    with pytest.raises(ValueError) as info:
        bs.build(workload, schedule, target)
    limit = _limit(info, dim, value)
    assert 1 <= limit < value
    # the limit is the largest value the checks accept, and the emitter builds it
    at = dataclasses.replace(workload, **{dim: limit})
    assert "\n" in bs.build(at, schedule, target).listing
    with pytest.raises(ValueError, match=rf"^{dim}={limit + 1} exceeds the largest supported {dim} "):
        schedule.check(dataclasses.replace(workload, **{dim: limit + 1}), target)
    with pytest.raises(ValueError, match=LIMIT):  # bs.measure and tuning report it alike
        bs.build(dataclasses.replace(workload, **{dim: limit + 1}), schedule, target)


@pytest.mark.parametrize(("workload", "schedule"), [
    (IntDense(2, 2, 3_000_000_000), None),
    (Dense(2, 2**33, 64), NeonSchedule()),
    (IntDense(2**33, 2, 64), None),
])
def test_neon_emitters_have_no_32_bit_limits(workload, schedule) -> None:
    """The NEON emitters materialise 64-bit constants (MOVZ/MOVK): no such limit there."""
    schedule = schedule or _default(workload, "aarch64-cortex-a53")
    schedule.check(workload, "aarch64-cortex-a53")


# Sizes around the limits, every knob: a schedule the checks accept always builds (no emitter
# error such as "can not be encoded as imm32"), and one they reject names what is too large.
DIMS = st.one_of(st.integers(1, 300), st.integers(2**20, 2**34).map(lambda v: v - v % 7 + 1))


@pytest.mark.parametrize("kind", ["dense", "int", "fp8"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_accepted_sizes_build_rejected_ones_are_named(kind, data) -> None:
    target = data.draw(st.sampled_from(["x86_64-avx2", "x86_64-avx512"]), label="target")
    m, n, k = (data.draw(DIMS, label=d) for d in "mnk")
    if kind == "dense":
        bits = data.draw(st.sampled_from([(1, 1), (2, 1), (2, 2)]), label="bits")
        k = min(k, (2**31 - 1) // ((2 ** bits[0] - 1) * (2 ** bits[1] - 1)))
        workload = Dense(m, n, k, abits=bits[0], wbits=bits[1])
        popcounts = ["lut", "csa", "scalar"] + (["vpopcnt"] if target == "x86_64-avx512" else [])
        schedule = Schedule(mr=data.draw(st.integers(1, 8)), nr=data.draw(st.integers(1, 12)),
                            popcount=data.draw(st.sampled_from(popcounts)), acc_bits=64,
                            layout=data.draw(st.sampled_from(["plane_major", "interleaved"])),
                            loop_order=data.draw(st.sampled_from(["mn", "nm"])))
    elif kind == "int":
        dtype = data.draw(st.sampled_from(["int16", "int8"]), label="dtype")
        workload = IntDense(m, n, min(k, 132104) if dtype == "int8" else k, dtype=dtype)
        schedule = IntSchedule(formulation=data.draw(st.sampled_from(["broadcast", "dot"])),
                               mr=data.draw(st.integers(1, 6)), nr=data.draw(st.integers(1, 4)),
                               kc=data.draw(st.sampled_from([0, 256])))
    else:
        workload = Fp8Dense(m, n, k, wfmt=data.draw(st.sampled_from(["e5m2", "e4m3"])))
        schedule = Fp8Schedule(decode=data.draw(st.sampled_from(["kernel", "pack"])),
                               mr=data.draw(st.integers(1, 4)), nr=data.draw(st.integers(1, 3)),
                               kc=data.draw(st.sampled_from([0, 256])))
    try:
        schedule.check(workload, target)
    except ValueError as exc:
        if "32-bit" in str(exc):
            assert LIMIT.match(str(exc)) or " is too large for this schedule: " in str(exc), str(exc)
        return
    bs.build(workload, schedule, target)


def test_cli_names_k_and_its_limit(capsys) -> None:
    code = main(["measure", "int-dense", "--m", "2", "--n", "2", "--k", "3000000000"])
    out, err = capsys.readouterr()
    assert code == 1 and not err, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert "INVALID_SCHEDULE" in lines[0], out
    assert re.search(r"k=3000000000 exceeds the largest supported k \(\d+\)", lines[0]), out
    assert "imm32" not in out
