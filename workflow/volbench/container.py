"""The one file format every codec writes.

Layout (all integers little-endian)::

    magic      8 bytes  b"VOLBENCH"
    version    u16      container format version (1)
    hlen       u32      length of the JSON header in bytes
    header     hlen     UTF-8 JSON: codec name, shape, dtype, the codec's own header
    plen       u64      length of the payload
    crc32      u32      CRC-32 of the payload
    payload    plen     the codec's bytes

The decoder reads this file and nothing else; the compressed size reported everywhere is
the byte count of this file, so the magic, the JSON header and the checksum are counted.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

from .errors import REENCODE, CorruptFile

MAGIC = b"VOLBENCH"
VERSION = 1
_FIXED = struct.Struct("<8sHI")
_PAYLOAD = struct.Struct("<QI")


def pack(header: dict[str, Any], payload: bytes) -> bytes:
    """Serialise a header and payload into the container bytes."""
    hbytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return b"".join(
        [
            _FIXED.pack(MAGIC, VERSION, len(hbytes)),
            hbytes,
            _PAYLOAD.pack(len(payload), zlib.crc32(payload) & 0xFFFFFFFF),
            payload,
        ]
    )


def unpack(data: bytes, source: str = "<bytes>") -> tuple[dict[str, Any], bytes]:
    """Parse container bytes; raise CorruptFile naming `source` on any inconsistency."""
    if len(data) < _FIXED.size or data[:8] != MAGIC:
        raise CorruptFile(f"{source}: not a volbench compressed file (bad magic); {REENCODE}")
    _, version, hlen = _FIXED.unpack_from(data, 0)
    if version != VERSION:
        raise CorruptFile(f"{source}: container version {version} is not supported (expected {VERSION})")
    off = _FIXED.size
    if len(data) < off + hlen + _PAYLOAD.size:
        raise CorruptFile(f"{source}: truncated header; {REENCODE}")
    try:
        header = json.loads(data[off : off + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFile(f"{source}: damaged header ({exc}); {REENCODE}") from None
    off += hlen
    plen, crc = _PAYLOAD.unpack_from(data, off)
    off += _PAYLOAD.size
    payload = data[off:]
    if len(payload) != plen:
        raise CorruptFile(
            f"{source}: truncated payload ({len(payload)} of {plen} bytes); {REENCODE}"
        )
    if zlib.crc32(payload) & 0xFFFFFFFF != crc:
        raise CorruptFile(f"{source}: payload checksum mismatch (damaged file); {REENCODE}")
    return header, payload


def read(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptFile(f"{path}: cannot read compressed file ({exc.strerror})") from None
    return unpack(data, str(path))
