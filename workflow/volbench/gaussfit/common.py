"""Shared helpers of the Gaussian codecs: device, seeding, presets, intensity scaling, geometry."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..errors import CodecUnavailable, VolbenchError


def torch_or_raise(codec: str):
    """Import torch, or raise CodecUnavailable naming what to install."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise CodecUnavailable(
            f"codec {codec}: PyTorch is not importable ({exc}); install torch (see requirements.txt)"
        ) from None
    return torch


def ops_or_raise(codec: str):
    """The Gaussian operators (volbench.gaussians.ops)."""
    torch_or_raise(codec)
    try:
        from ..gaussians import ops
    except ImportError as exc:  # pragma: no cover
        raise CodecUnavailable(
            f"codec {codec}: the Gaussian operators (volbench.gaussians.ops) cannot be imported ({exc})"
        ) from None
    return ops


def resolve_device(device: str | None):
    """'auto' -> CUDA when available else CPU; 'cuda' without a GPU is a clear error."""
    import torch

    dev = (device or "auto").strip().lower()
    if dev == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise VolbenchError(f"device {device!r} requested but torch sees no CUDA device; use device: auto or cpu")
    try:
        return torch.device(dev)
    except RuntimeError:
        raise VolbenchError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None


def seed_everything(seed: int, device) -> Any:
    """Seed torch (and its CUDA RNG); return a numpy Generator for the host-side choices."""
    import torch

    torch.manual_seed(int(seed))
    if device.type == "cuda":
        torch.cuda.manual_seed_all(int(seed))
    return np.random.default_rng(int(seed))


def set_threads(threads: int) -> None:
    import torch

    if threads and threads > 0:
        torch.set_num_threads(int(threads))


def merge_preset(codec: str, presets: dict[str, dict[str, Any]], params: dict[str, Any],
                 explicit: set[str]) -> dict[str, Any]:
    """Values of the chosen preset, overridden by parameters the user gave explicitly."""
    name = params.get("preset", "demo")
    if name not in presets:
        raise VolbenchError(f"codec {codec}: unknown preset {name!r}; choose one of {sorted(presets)}")
    out = dict(params)
    for key, value in presets[name].items():
        if key not in explicit:
            out[key] = value
    return out


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


def psnr01(pred, target) -> float:
    """PSNR of tensors on the [0, 1] scale (peak 1)."""
    mse = float(((pred - target) ** 2).mean())
    return float("inf") if mse <= 0 else 10.0 * math.log10(1.0 / mse)


# -- geometry -----------------------------------------------------------------------------------
def quat_to_rotmat(q):
    """(N,4) (w,x,y,z) -> (N,3,3), as 3DGS build_rotation (normalises; zero quaternion -> identity)."""
    import torch

    norm = q.norm(dim=-1, keepdim=True)
    q = torch.where(norm > 0, q / norm.clamp_min(1e-12), torch.tensor([1.0, 0, 0, 0], dtype=q.dtype, device=q.device))
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))


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


def covariance(log_scales, quats):
    """S = R diag(exp(2 log_scales)) R^T, (N,3,3)."""
    R = quat_to_rotmat(quats)
    return R @ (R.transpose(-1, -2) * (2 * log_scales).exp()[..., :, None])


def covariance_to_params(S):
    """Symmetric positive-definite (N,3,3) -> (log_scales, unit quats) with S = R diag(s^2) R^T."""
    import torch

    S = 0.5 * (S + S.transpose(-1, -2))
    evals, evecs = torch.linalg.eigh(S.double())
    det = torch.linalg.det(evecs)
    evecs = evecs * torch.where(det < 0, -1.0, 1.0).to(evecs.dtype)[..., None, None]  # proper rotation
    log_scales = 0.5 * evals.clamp_min(1e-30).log()
    return log_scales.to(S.dtype), rotmat_to_quat(evecs).to(S.dtype)


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default
