"""The schedule and workload records reject bad input with a ``ValueError`` that names the problem:
non-object JSON, wrong-typed knob values, workload dimensions the emitters cannot encode."""

from __future__ import annotations

import json

import pytest

from bitsearch.space import (
    ConvSchedule,
    Fp8Schedule,
    IntConvSchedule,
    IntSchedule,
    NeonSchedule,
    Schedule,
)

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
