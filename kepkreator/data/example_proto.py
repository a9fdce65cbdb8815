"""``tf.train.Example`` bytes without TensorFlow: the runtime writes and reads TFRecords on a
Keras-on-JAX install too. Only what the dataset uses (bytes and int64 lists) is encoded; the
bytes equal TensorFlow's ``SerializeToString(deterministic=True)`` (map keys sorted), which a
test checks against TensorFlow itself where it is installed.
"""
from __future__ import annotations

_LEN, _VARINT = 2, 0


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64s are ten-byte two's complement, as protobuf has it
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def encode_example(features: dict[str, bytes | int]) -> bytes:
    """Example{features{feature: {name: bytes_list[value] or int64_list[value]}}}."""
    entries = b""
    for name in sorted(features):
        value = features[name]
        if isinstance(value, (bytes, bytearray)):
            feature = _field(1, _field(1, bytes(value)))                       # bytes_list
        else:
            feature = _field(3, _field(1, _varint(int(value))))                # int64_list, packed
        entries += _field(1, _field(1, name.encode()) + _field(2, feature))
    return _field(1, entries)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes):
    """(field number, wire type, value) of a message: bytes for LEN fields, int for varints."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(data, pos)
        elif wire == _LEN:
            size, pos = _read_varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            value, pos = data[pos:pos + size], pos + size
        elif wire in (1, 5):  # fixed64 / fixed32 (a float_list's values): skipped
            width = 8 if wire == 1 else 4
            value, pos = data[pos:pos + width], pos + width
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _feature_values(feature: bytes) -> list:
    for number, _, body in _fields(feature):
        if number == 1:    # bytes_list
            return [v for n, _, v in _fields(body) if n == 1]
        if number == 3:    # int64_list: packed, or one varint per value
            values = []
            for n, wire, v in _fields(body):
                if n != 1:
                    continue
                if wire == _VARINT:
                    values.append(_signed(v))
                else:
                    pos = 0
                    while pos < len(v):
                        item, pos = _read_varint(v, pos)
                        values.append(_signed(item))
            return values
    return []


def decode_example(record: bytes) -> dict[str, list]:
    """{name: values} of the bytes and int64 features of one serialised Example."""
    out = {}
    for number, _, features in _fields(record):
        if number != 1:
            continue
        for entry_number, _, entry in _fields(features):
            if entry_number != 1:
                continue
            key, value = "", b""
            for n, _, v in _fields(entry):
                if n == 1:
                    key = v.decode()
                elif n == 2:
                    value = v
            out[key] = _feature_values(value)
    return out
