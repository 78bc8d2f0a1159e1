"""The container: every byte the decoder reads is in one file, damage is detected."""

from __future__ import annotations

import pytest

from volbench import container, io
from volbench.errors import CorruptFile


def test_roundtrip_and_size_counts_everything():
    header = {"codec": "x", "shape": [1, 2, 3], "nested": {"a": 1.5}}
    payload = bytes(range(256)) * 3
    data = container.pack(header, payload)
    h, p = container.unpack(data)
    assert h == header and p == payload
    # magic 8 + version 2 + hlen 4 + header + plen 8 + crc 4 + payload
    hlen = len(data) - 8 - 2 - 4 - 8 - 4 - len(payload)
    assert hlen == len(b'{"codec":"x","nested":{"a":1.5},"shape":[1,2,3]}')


@pytest.mark.parametrize("cut", [0, 5, 13, 30, -1])
def test_truncated_is_named(cut):
    data = container.pack({"codec": "x"}, b"abcdefgh" * 10)
    with pytest.raises(CorruptFile, match="vol.vbc"):
        container.unpack(data[:cut], "vol.vbc")


def test_bitflip_in_payload_detected():
    data = bytearray(container.pack({"codec": "x"}, b"\x00" * 100))
    data[-10] ^= 1
    with pytest.raises(CorruptFile, match="checksum"):
        container.unpack(bytes(data), "vol.vbc")


def test_bad_magic():
    with pytest.raises(CorruptFile, match="not a volbench"):
        container.unpack(b"NOTVOLBE" + b"\x00" * 40, "f")


def test_atomic_write_leaves_no_temp(tmp_path):
    p = tmp_path / "a" / "f.vbc"
    io.atomic_write_bytes(p, b"xyz", fsync=True)
    assert p.read_bytes() == b"xyz"
    assert sorted(x.name for x in p.parent.iterdir()) == ["f.vbc"]
    io.atomic_write_text(p, "a\r\nb")
    assert p.read_bytes() == b"a\r\nb"

    def fail(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.atomic_write(p, fail)
    assert p.read_bytes() == b"a\r\nb"
    assert sorted(x.name for x in p.parent.iterdir()) == ["f.vbc"]


def test_read_missing_file(tmp_path):
    with pytest.raises(CorruptFile, match="cannot read"):
        container.read(tmp_path / "nope.vbc")
