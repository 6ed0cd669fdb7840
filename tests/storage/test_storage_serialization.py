"""Tensor serialization: canonical bytes, round trips and rejection of hostile payloads."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleml_node.learning.params import ParamSpec
from fleml_node.storage import (
    InvalidPayload,
    Limits,
    MalformedPayload,
    NonFiniteValues,
    PayloadTooLarge,
    SpecMismatch,
    UnsupportedDtype,
    content_hash,
    decode_tensors,
    encode_tensors,
)

Craft = Callable[..., bytes]


def header_of(data: bytes) -> dict:
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size])


def with_header(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + body


def test_round_trip_of_a_model_state_dict(model_state: dict[str, torch.Tensor]) -> None:
    data = encode_tensors(model_state, kind="model", round=4, extra={"num_samples": 600})
    payload = decode_tensors(
        data,
        expected_kind="model",
        expected_round=4,
        expected_spec=ParamSpec.from_named(model_state),
    )
    assert (payload.kind, payload.round, payload.extra) == ("model", 4, {"num_samples": 600})
    assert list(payload.tensors) == list(model_state)  # the caller's order, not alphabetical
    for name, tensor in model_state.items():
        assert payload.tensors[name].dtype == torch.float32
        assert torch.equal(payload.tensors[name], tensor)
    assert ParamSpec.from_named(payload.tensors) == ParamSpec.from_named(model_state)


def test_serialization_is_canonical(model_state: dict[str, torch.Tensor]) -> None:
    # safetensors' __metadata__ is a randomised HashMap: with several keys the bytes change
    # from call to call. FLEML keeps one key, so equal inputs give equal bytes.
    hashes = {
        content_hash(encode_tensors(model_state, kind="update", round=2, extra={"b": 1, "a": 2}))
        for _ in range(20)
    }
    assert len(hashes) == 1
    reordered_extra = encode_tensors(model_state, kind="update", round=2, extra={"a": 2, "b": 1})
    assert content_hash(reordered_extra) in hashes
    clone = {name: t.clone() for name, t in model_state.items()}
    copied = encode_tensors(clone, kind="update", round=2, extra={"a": 2, "b": 1})
    assert content_hash(copied) in hashes
    assert list(header_of(reordered_extra)["__metadata__"]) == ["fleml"]


def test_serialization_is_identical_across_processes() -> None:
    script = (
        "import torch; from fleml_node.storage import encode_tensors, content_hash;"
        "t = {'w': torch.arange(12.).reshape(3, 4), 'b': torch.ones(3)};"
        "data = encode_tensors(t, kind='model', round=1, extra={'x': 1, 'y': 2});"
        "print(content_hash(data).hex())"
    )
    other_process = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    local = encode_tensors(
        {"w": torch.arange(12.0).reshape(3, 4), "b": torch.ones(3)},
        kind="model",
        round=1,
        extra={"x": 1, "y": 2},
    )
    assert other_process == content_hash(local).hex()


def test_different_content_gives_a_different_hash(model_state: dict[str, torch.Tensor]) -> None:
    base = encode_tensors(model_state, kind="update", round=1)
    bumped = dict(model_state)
    bumped["fc.bias"] = model_state["fc.bias"] + 1e-6
    assert content_hash(encode_tensors(bumped, kind="update", round=1)) != content_hash(base)
    assert content_hash(encode_tensors(model_state, kind="update", round=2)) != content_hash(base)


def test_encoder_refuses_what_decoders_would_reject() -> None:
    with pytest.raises(UnsupportedDtype, match="float64"):
        encode_tensors({"w": torch.zeros(2, dtype=torch.float64)}, kind="model", round=0)
    with pytest.raises(NonFiniteValues, match="'w' has 1 NaN/Inf"):
        encode_tensors({"w": torch.tensor([1.0, float("nan")])}, kind="model", round=0)
    with pytest.raises(ValueError, match="kind"):
        encode_tensors({"w": torch.zeros(2)}, kind="weights", round=0)
    with pytest.raises(ValueError, match="round"):
        encode_tensors({"w": torch.zeros(2)}, kind="model", round=-1)
    with pytest.raises(PayloadTooLarge):
        encode_tensors(
            {"w": torch.zeros(1000)}, kind="model", round=0, limits=Limits(max_bytes=1000)
        )
    with pytest.raises(NonFiniteValues):
        encode_tensors({"w": torch.zeros(2)}, kind="model", round=0, extra={"loss": float("inf")})


def test_encoder_copies_tensors_that_share_storage() -> None:
    weight = torch.randn(4, 4)
    data = encode_tensors({"a": weight, "tied": weight, "view": weight[1]}, kind="model", round=0)
    tensors = decode_tensors(data).tensors
    assert torch.equal(tensors["tied"], weight) and torch.equal(tensors["view"], weight[1])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_rejected(craft: Craft, value: float) -> None:
    data = craft({"w": torch.tensor([0.0, value, 2.0]), "b": torch.zeros(2)})
    with pytest.raises(NonFiniteValues, match="tensor 'w' has 1 NaN/Inf values of 3"):
        decode_tensors(data)


def test_finite_values_whose_sum_overflows_are_accepted() -> None:
    huge = torch.full((4,), 3e38)  # float32 max is 3.4e38: the sum is inf, every value finite
    data = encode_tensors({"w": huge}, kind="update", round=0)
    assert torch.equal(decode_tensors(data).tensors["w"], huge)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.int64])
def test_dtypes_other_than_float32_are_rejected(craft: Craft, dtype: torch.dtype) -> None:
    with pytest.raises(UnsupportedDtype, match="only float32"):
        decode_tensors(craft({"w": torch.zeros(3, dtype=dtype)}))


def test_expected_spec_mismatches_name_the_difference(
    model_state: dict[str, torch.Tensor],
) -> None:
    data = encode_tensors(model_state, kind="update", round=3)
    spec = ParamSpec.from_named(model_state)
    names, shapes = spec.names, spec.shapes
    wrong_shape = ParamSpec(names, shapes[:-1] + ((9,),))  # fc.bias is the last entry
    with pytest.raises(SpecMismatch, match=r"'fc.bias' has shape \[10\], expected \[9\]"):
        decode_tensors(data, expected_spec=wrong_shape)
    with pytest.raises(SpecMismatch, match="lacks tensors"):
        decode_tensors(data, expected_spec=ParamSpec(names + ("extra.w",), shapes + ((1,),)))
    with pytest.raises(SpecMismatch, match="unexpected tensors"):
        decode_tensors(data, expected_spec=ParamSpec(names[1:], shapes[1:]))
    with pytest.raises(SpecMismatch, match="order"):
        decode_tensors(data, expected_spec=ParamSpec(names[::-1], shapes[::-1]))
    with pytest.raises(SpecMismatch, match="is a 'update', expected a 'model'"):
        decode_tensors(data, expected_kind="model")
    with pytest.raises(SpecMismatch, match="round 3, expected round 4"):
        decode_tensors(data, expected_round=4)


def test_size_caps_are_enforced_before_parsing(model_state: dict[str, torch.Tensor]) -> None:
    data = encode_tensors(model_state, kind="model", round=0)
    with pytest.raises(PayloadTooLarge, match=f"{len(data)} bytes, above the cap"):
        decode_tensors(data, limits=Limits(max_bytes=len(data) - 1))
    with pytest.raises(PayloadTooLarge, match="tensors, above the cap of 2"):
        decode_tensors(data, limits=Limits(max_tensors=2))
    # A header length of 2**63 would make a naive parser allocate; it is refused unread.
    huge = (2**63).to_bytes(8, "little") + b"{}"
    with pytest.raises(PayloadTooLarge, match="header claims 9223372036854775808 bytes"):
        decode_tensors(huge)
    with pytest.raises(PayloadTooLarge, match="header claims"):
        decode_tensors(data, limits=Limits(max_header_bytes=16))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "shorter than the 8-byte"),
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{}", "claims 16 bytes but the payload has only 2"),
        (b"\x02\x00\x00\x00\x00\x00\x00\x00[]", "not a JSON object"),
        (b"\x03\x00\x00\x00\x00\x00\x00\x00{x}", "not valid JSON"),
        (b"\x02\x00\x00\x00\x00\x00\x00\x00\xff\xfe", "not valid UTF-8"),
        (b"\x02\x00\x00\x00\x00\x00\x00\x00{}", "no tensors"),
    ],
)
def test_malformed_framing_is_rejected(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedPayload, match=reason):
        decode_tensors(data)


def test_a_pickle_is_never_loaded(model_state: dict[str, torch.Tensor]) -> None:
    buffer = io.BytesIO()
    torch.save(model_state, buffer)
    with pytest.raises(InvalidPayload):
        decode_tensors(buffer.getvalue())


def test_tampered_headers_are_rejected(model_state: dict[str, torch.Tensor]) -> None:
    data = encode_tensors(model_state, kind="model", round=0)
    size = int.from_bytes(data[:8], "little")
    header, body = header_of(data), data[8 + size :]

    def rejects(mutate: Callable[[dict], None], reason: str, body: bytes = body) -> None:
        copy = json.loads(json.dumps(header))
        mutate(copy)
        with pytest.raises(MalformedPayload, match=reason):
            decode_tensors(with_header(copy, body))

    rejects(lambda h: h["fc.bias"].update(data_offsets=[0, 40]), "overlaps or leaves a gap")
    rejects(lambda h: h["fc.bias"].update(shape=[11]), "needs 44 bytes but data_offsets span 40")
    rejects(lambda h: h["fc.bias"].update(shape=[-10]), "non-negative integers")
    rejects(lambda h: h["fc.bias"].update(extra=1), "exactly dtype, shape and data_offsets")
    rejects(lambda h: h.pop("__metadata__"), "exactly one string entry 'fleml'")
    rejects(lambda h: h["__metadata__"].update(other="x"), "exactly one string entry 'fleml'")
    rejects(lambda h: h["__metadata__"].update(fleml="{"), "FLEML metadata is not valid JSON")
    rejects(lambda h: None, "tensors cover", body=body + b"\x00" * 4)
    rejects(lambda h: None, "tensors cover", body=body[:-4])

    def edit_document(key: str, value: object) -> Callable[[dict], None]:
        def mutate(h: dict) -> None:
            doc = json.loads(h["__metadata__"]["fleml"])
            doc[key] = value
            h["__metadata__"]["fleml"] = json.dumps(doc, sort_keys=True, separators=(",", ":"))

        return mutate

    rejects(edit_document("kind", "weights"), "unknown payload kind 'weights'")
    rejects(edit_document("round", -1), "round must be a non-negative integer")
    rejects(edit_document("round", True), "round must be a non-negative integer")
    rejects(edit_document("format", 2), "unsupported FLEML format 2")
    rejects(edit_document("spec", [["fc.bias", [10]]]), "does not list the same names")
    rejects(edit_document("extra", []), "'extra' must be a JSON object")
    rejects(edit_document("unknown", 1), "exactly the fields")


def test_duplicate_header_keys_are_rejected(craft: Craft) -> None:
    data = craft({"w": torch.zeros(2)})
    size = int.from_bytes(data[:8], "little")
    text = data[8 : 8 + size].decode().rstrip()
    entry = '"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
    duplicated = text[:-1] + "," + entry + "}"
    framed = len(duplicated).to_bytes(8, "little") + duplicated.encode() + data[8 + size :]
    with pytest.raises(MalformedPayload, match="duplicate JSON key 'w'"):
        decode_tensors(framed)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes_only_ever_raise_invalid_payload(data: bytes) -> None:
    with pytest.raises(InvalidPayload):
        decode_tensors(data)


_VALID = encode_tensors(
    {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4)}, kind="update", round=1
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), max_size=4))
def test_corrupted_payloads_decode_or_raise_invalid_payload(edits: list[tuple[int, int]]) -> None:
    data = bytearray(_VALID)
    for index, value in edits:
        data[index] = value
    try:
        payload = decode_tensors(bytes(data))
    except InvalidPayload:
        return
    # Whatever survives validation keeps the decoder's promises: finite float32 tensors.
    assert payload.tensors
    for tensor in payload.tensors.values():
        assert tensor.dtype == torch.float32 and bool(torch.isfinite(tensor).all())
