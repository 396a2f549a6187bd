"""The Python SDK against the shared test vectors (sdk/testdata/, written from the engine's
codecs): valid frames decode to exactly their records and encode back byte for byte, every
malformed frame is an error, and write-many frames encode byte for byte."""

import json
import pathlib
import sys

import pytest

SDK = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SDK))

from sluice_sdk.frame import FrameError, decode_records, encode_record, encode_write  # noqa: E402

TESTDATA = SDK.parent / "testdata"


def vectors(name: str) -> dict:
    return json.loads((TESTDATA / name).read_text())


def unhex(text):
    return None if text is None else bytes.fromhex(text)


RECORDS = vectors("records-frames.json")
WRITES = vectors("write-many.json")


@pytest.mark.parametrize("case", RECORDS["valid"], ids=lambda c: c["name"])
def test_valid_records_frames_decode_and_encode_byte_for_byte(case):
    frame = bytes.fromhex(case["frame"])
    decoded = list(decode_records(frame, int(case["base_offset"]), case["count"]))
    expected = case["records"]
    assert len(decoded) == len(expected)
    encoded = bytearray()
    for record, want in zip(decoded, expected):
        assert record.offset == int(want["offset"])
        assert record.timestamp == int(want["timestamp"])
        assert record.key == unhex(want["key"])
        assert record.value == unhex(want["value"])
        assert record.headers == [(name, bytes.fromhex(value)) for name, value in want["headers"]]
        encode_record(encoded, record.timestamp, record.key, record.value, record.headers)
    assert bytes(encoded) == frame


@pytest.mark.parametrize("case", RECORDS["malformed"], ids=lambda c: c["name"])
def test_malformed_records_frames_are_errors(case):
    frame = bytes.fromhex(case["frame"])
    with pytest.raises(FrameError):
        list(decode_records(frame, int(case["base_offset"]), case["count"]))


@pytest.mark.parametrize("case", WRITES["valid"], ids=lambda c: c["name"])
def test_write_many_frames_encode_byte_for_byte(case):
    encoded = bytearray()
    for write in case["writes"]:
        encode_write(encoded, bytes.fromhex(write["key"]), unhex(write["value"]))
    assert bytes(encoded) == bytes.fromhex(case["frame"])


@pytest.mark.parametrize("case", RECORDS["valid"], ids=lambda c: c["name"])
def test_emit_buffers_the_same_bytes_as_the_encoder(case):
    """`emit.send` encodes the usual record inline: byte for byte what encode_record writes
    for an emitted record (timestamp 0), whatever the key, value and headers."""
    from sluice_sdk import emit

    sent = []

    class RawEmit:
        def send_frame(self, topic, count, records):
            sent.append((topic, count, records))

    emit._raw = RawEmit()
    expected = bytearray()
    for want in case["records"]:
        key, value = unhex(want["key"]), unhex(want["value"])
        headers = [(name, bytes.fromhex(v)) for name, v in want["headers"]]
        emit.send("out", value, key=key, headers=headers)
        encode_record(expected, 0, key, value, headers)
    emit._flush()
    if case["records"]:
        assert sent == [("out", len(case["records"]), bytes(expected))]
    else:
        assert sent == []
