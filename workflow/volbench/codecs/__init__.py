"""Codecs: one module per codec, found by name (see base.get_codec)."""

from .base import Codec, Encoded, VolumeInfo, decode_bytes, decode_file, encode_volume, get_codec

__all__ = ["Codec", "Encoded", "VolumeInfo", "decode_bytes", "decode_file", "encode_volume", "get_codec"]
