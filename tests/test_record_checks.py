"""The schedule and workload records reject bad input with a ``ValueError`` that names the problem:
non-object JSON, wrong-typed knob values, workload dimensions the emitters cannot encode."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    assert "BUILD_ERROR" in out and "schedule.k_unroll must be one of" in out, out
    assert "TypeError" not in out, out
