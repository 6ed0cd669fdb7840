"""Content hash (SHA-256 of the exact bytes) and CID syntax checks."""

from __future__ import annotations

import pytest

from fleml_node.storage import (
    HashMismatch,
    InvalidCid,
    check_cid,
    content_hash,
    parse_hash,
    to_hex,
    verify_hash,
)

ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_content_hash_is_sha256_of_the_exact_bytes() -> None:
    assert content_hash(b"abc") == bytes.fromhex(ABC_SHA256)
    assert len(content_hash(b"")) == 32
    assert content_hash(b"abc ") != content_hash(b"abc")


def test_parse_hash_accepts_raw_and_hex_forms() -> None:
    raw = bytes.fromhex(ABC_SHA256)
    assert parse_hash(raw) == raw
    assert parse_hash(ABC_SHA256) == raw
    assert parse_hash("0x" + ABC_SHA256.upper()) == raw
    assert to_hex(raw) == "0x" + ABC_SHA256


@pytest.mark.parametrize("bad", [b"\x00" * 31, "0x1234", "zz" * 32, ABC_SHA256 + "00"])
def test_parse_hash_rejects_wrong_lengths_and_non_hex(bad: bytes | str) -> None:
    with pytest.raises(ValueError, match="content hash"):
        parse_hash(bad)


def test_verify_hash_reports_both_hashes_on_mismatch() -> None:
    expected = content_hash(b"original")
    assert verify_hash(b"original", to_hex(expected)) == expected
    with pytest.raises(HashMismatch) as info:
        verify_hash(b"tampered", expected, source="bafkreitest")
    assert info.value.expected == expected
    assert info.value.actual == content_hash(b"tampered")
    message = str(info.value)
    assert expected.hex() in message and content_hash(b"tampered").hex() in message
    assert "bafkreitest" in message


def test_check_cid_accepts_cidv1_base32_only() -> None:
    cid = "bafkreif2pall7dybz7vecqka3zo24irdwabwdi4wc55jznaq75q7eaavvu"
    assert check_cid(cid) == cid
    for bad in [
        "QmTkzDwWqPbnAh5YiV5VwcTLnGdwSNsNTn2aDxdXBFca7D",  # CIDv0
        "BAFKREIF2PALL7DYBZ7VECQKA3ZO24IRDWABWDI4WC55JZNAQ75Q7EAAVVU",  # upper-case base32
        "bafkrei/../../etc/passwd",
        "bafkrei\n",
        "",
    ]:
        with pytest.raises(InvalidCid):
            check_cid(bad)
