"""Round reports: canonical JSON out, strict validation in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleml_node.storage import (
    InvalidPayload,
    Limits,
    MalformedPayload,
    NonFiniteValues,
    PayloadTooLarge,
    content_hash,
    decode_report,
    encode_report,
)

REPORT = {
    "round": 3,
    "accepted": ["0xabc", "0xdef"],
    "scores": {"0xdef": 0.25, "0xabc": 1.5e-07},
    "note": "entropy ≥ threshold",
    "model_cid": None,
    "final": False,
}


def test_encoding_is_canonical_utf8_json() -> None:
    data = encode_report(REPORT)
    assert data == (
        '{"accepted":["0xabc","0xdef"],"final":false,"model_cid":null,'
        '"note":"entropy ≥ threshold","round":3,"scores":{"0xabc":1.5e-07,"0xdef":0.25}}'
    ).encode()
    shuffled = dict(reversed(list(REPORT.items())))
    assert content_hash(encode_report(shuffled)) == content_hash(data)


def test_round_trip() -> None:
    assert decode_report(encode_report(REPORT)) == REPORT


@pytest.mark.parametrize(
    "report",
    [{"loss": float("nan")}, {"x": [1.0, float("inf")]}, {"x": {"y": float("-inf")}}],
)
def test_encoder_rejects_non_finite_numbers(report: dict) -> None:
    with pytest.raises(NonFiniteValues, match="not a finite number"):
        encode_report(report)


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        ({1: "a"}, "non-string key"),
        ({"b": b"bytes"}, "type bytes"),
        ({"s": {1, 2}}, "type set"),
        ({"s": "\ud800"}, "not encodable as UTF-8"),
    ],
)
def test_encoder_rejects_values_json_cannot_represent(report: dict, reason: str) -> None:
    with pytest.raises(MalformedPayload, match=reason):
        encode_report(report)


@pytest.mark.parametrize(
    ("data", "error", "reason"),
    [
        (b'{"loss":NaN}', NonFiniteValues, "NaN"),
        (b'{"loss":-Infinity}', NonFiniteValues, "-Infinity"),
        (b'{"loss":1e400}', NonFiniteValues, "inf, not a finite number"),
        (b'{"a":1,"a":2}', MalformedPayload, "duplicate JSON key 'a'"),
        (b"[1,2]", MalformedPayload, "got a JSON list"),
        (b'{"b":1, "a":2}', MalformedPayload, "not canonical"),
        (b'{"b":1,"a":2}', MalformedPayload, "not canonical"),
        (b'{"a":"\\u00e9"}', MalformedPayload, "not canonical"),
        (b'{"a":1.0e0}', MalformedPayload, "not canonical"),
        (b'\xef\xbb\xbf{"a":1}', MalformedPayload, "not valid JSON"),
        (b'{"a":"\xff"}', MalformedPayload, "not valid UTF-8"),
        (b'{"a":', MalformedPayload, "not valid JSON"),
        (b'{"a":' + b"9" * 5000 + b"}", MalformedPayload, "not valid JSON"),
    ],
)
def test_decoder_rejects_hostile_reports(
    data: bytes, error: type[InvalidPayload], reason: str
) -> None:
    with pytest.raises(error, match=reason):
        decode_report(data)


def test_decoder_enforces_size_and_depth_caps() -> None:
    data = encode_report(REPORT)
    with pytest.raises(PayloadTooLarge, match="above the cap"):
        decode_report(data, limits=Limits(max_bytes=len(data) - 1))
    nested = b'{"a":' + b"[" * 40 + b"]" * 40 + b"}"
    with pytest.raises(PayloadTooLarge, match="nested deeper than 32 levels"):
        decode_report(nested)
    very_deep = b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(PayloadTooLarge, match="nested"):
        decode_report(very_deep, limits=Limits(max_bytes=1 << 20))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(), json_values, max_size=5))
def test_any_json_object_round_trips_to_identical_bytes(report: dict) -> None:
    data = encode_report(report)
    assert decode_report(data) == report
    assert encode_report(decode_report(data)) == data
