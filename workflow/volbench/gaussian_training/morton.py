"""Morton (Z-order) codes of 3D integer coordinates, up to 21 bits per axis."""

from __future__ import annotations

import numpy as np

MAX_BITS = 21


def _spread(v: np.ndarray) -> np.ndarray:
    """Insert two zero bits between the low 21 bits of v (uint64)."""
    v = v.astype(np.uint64) & np.uint64(0x1FFFFF)
    v = (v | (v << np.uint64(32))) & np.uint64(0x1F00000000FFFF)
    v = (v | (v << np.uint64(16))) & np.uint64(0x1F0000FF0000FF)
    v = (v | (v << np.uint64(8))) & np.uint64(0x100F00F00F00F00F)
    v = (v | (v << np.uint64(4))) & np.uint64(0x10C30C30C30C30C3)
    v = (v | (v << np.uint64(2))) & np.uint64(0x1249249249249249)
    return v


def _compact(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.uint64) & np.uint64(0x1249249249249249)
    v = (v ^ (v >> np.uint64(2))) & np.uint64(0x10C30C30C30C30C3)
    v = (v ^ (v >> np.uint64(4))) & np.uint64(0x100F00F00F00F00F)
    v = (v ^ (v >> np.uint64(8))) & np.uint64(0x1F0000FF0000FF)
    v = (v ^ (v >> np.uint64(16))) & np.uint64(0x1F00000000FFFF)
    v = (v ^ (v >> np.uint64(32))) & np.uint64(0x1FFFFF)
    return v


def encode(ijk: np.ndarray) -> np.ndarray:
    """(N,3) non-negative integers < 2**21 -> (N,) uint64 codes; axis 0 is the most significant bit."""
    ijk = np.asarray(ijk)
    if ijk.ndim != 2 or ijk.shape[1] != 3:
        raise ValueError("morton.encode expects an (N, 3) array")
    if ijk.size and (ijk.min() < 0 or ijk.max() >= 1 << MAX_BITS):
        raise ValueError(f"morton.encode: coordinates must lie in [0, 2**{MAX_BITS})")
    return (_spread(ijk[:, 0]) << np.uint64(2)) | (_spread(ijk[:, 1]) << np.uint64(1)) | _spread(ijk[:, 2])


def decode(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.uint64)
    return np.stack([_compact(codes >> np.uint64(2)), _compact(codes >> np.uint64(1)), _compact(codes)], axis=1).astype(np.int64)


def order(ijk: np.ndarray) -> np.ndarray:
    """The permutation that sorts points by Morton code (stable, so ties keep their order)."""
    return np.argsort(encode(ijk), kind="stable")
