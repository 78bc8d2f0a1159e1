"""Shared helpers of the Gaussian training: the operators, intensity scaling, geometry.

The rotation of a quaternion is gaussian_ops.torch_impl.quat_to_rotmat (one definition for the
operators, the decoders and training)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import CodecUnavailable, VolbenchError
from ..torchenv import import_torch


def ops_or_raise(codec: str):
    """The Gaussian operators (volbench.gaussian_ops.ops), or CodecUnavailable."""
    import_torch(codec)
    try:
        from ..gaussian_ops import ops
    except ImportError as exc:  # pragma: no cover
        raise CodecUnavailable(
            f"codec {codec}: the Gaussian operators (volbench.gaussian_ops.ops) cannot be imported ({exc})"
        ) from None
    return ops


# -- intensity scaling -------------------------------------------------------------------------
def intensity_range(volume: np.ndarray) -> tuple[float, float]:
    vmin = float(np.min(volume))
    vmax = float(np.max(volume))
    if not (math.isfinite(vmin) and math.isfinite(vmax)):
        raise VolbenchError("volume holds NaN or infinite values; the Gaussian codecs need finite voxels")
    return vmin, vmax


def normalise(volume: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    scale = (vmax - vmin) or 1.0
    return ((volume.astype(np.float64) - vmin) / scale).astype(np.float32)


def denormalise(values: np.ndarray, vmin: float, vmax: float, dtype: np.dtype) -> np.ndarray:
    """Map [0, 1] back to the original range and dtype (integers rounded and clipped)."""
    dtype = np.dtype(dtype)
    scale = (vmax - vmin) or 1.0
    out = values.astype(np.float64) * scale + vmin
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(dtype)


# -- geometry -----------------------------------------------------------------------------------
def rotmat_to_quat(R):
    """(N,3,3) proper rotations -> (N,4) unit quaternions (w,x,y,z) with w >= 0 (Shepperd's method)."""
    import torch

    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = torch.stack(
        [
            torch.stack([1 + tr, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                         m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                         1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                         1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
        ],
        dim=-2,
    )  # (..., 4 candidates, 4)
    diag = torch.stack([tr, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1)
    best = diag.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(q[..., :1] < 0, -q, q)


def covariance_to_params(S):
    """Symmetric positive-definite (N,3,3) -> (log_scales, unit quats) with S = R diag(s^2) R^T."""
    import torch

    S = 0.5 * (S + S.transpose(-1, -2))
    evals, evecs = torch.linalg.eigh(S.double())
    det = torch.linalg.det(evecs)
    evecs = evecs * torch.where(det < 0, -1.0, 1.0).to(evecs.dtype)[..., None, None]  # proper rotation
    log_scales = 0.5 * evals.clamp_min(1e-30).log()
    return log_scales.to(S.dtype), rotmat_to_quat(evecs).to(S.dtype)
