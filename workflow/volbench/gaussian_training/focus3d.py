"""The focus rendering of a Gaussian as a 3D Gaussian of the slice position.

For axial slices (camera normal n = the z axis), seed 000's rendered value of Gaussian
(mu, S, alpha) on the slice z = z0 at in-plane point (y, x) is

    R(z0, y, x) = alpha / sqrt(det S_2d) * exp(-1/2 p^T inv(S + sigma_z^2 n n^T) p),
    p = (z0, y, x) - mu,

because the exponent q + d^T inv(S_2d) d of eqs. 7 and 10 is the Mahalanobis distance of p under
S' = S + sigma_z^2 n n^T (the covariance of the convolution with the sensitivity h), and
det S_2d = det(S) (inv(S)_zz + 1/sigma_z^2) / (1 + S_zz / sigma_z^2) does not depend on z0.
So the volume whose axial slices are the rendered slices is the mixture of Gaussians with
covariance S' and amplitude

    a = alpha * sqrt((1 + S_zz / sigma_z^2) / (det S * (inv(S)_zz + 1/sigma_z^2))).

:func:`focus_equivalent` returns (means, log-scales, quaternions, amplitudes) of that mixture,
ready for ops.voxelize (S' is re-factorised as R' diag(s'^2) R'^T by an eigen-decomposition).
"""

from __future__ import annotations

import math

import torch

from ..gaussian_ops.torch_impl import quat_to_rotmat
from .common import covariance_to_params


def focus_equivalent(means, log_scales, quats, opacity, sigma_z: float):
    if not (sigma_z > 0 and math.isfinite(sigma_z)):
        raise ValueError(f"focus_equivalent needs a finite sigma_z > 0, got {sigma_z}")
    ls = log_scales.double()
    R = quat_to_rotmat(quats.double())
    s2 = torch.exp(2 * ls)
    S = (R * s2[:, None, :]) @ R.transpose(-1, -2)
    inv_s2 = 1.0 / (sigma_z * sigma_z)
    Szz = S[:, 0, 0]
    Pzz = (R[:, 0, :] ** 2 * torch.exp(-2 * ls)).sum(-1)  # inv(S)_zz
    logdet = 2 * ls.sum(-1)
    amp = opacity.double() * torch.exp(-0.5 * (logdet + torch.log(Pzz + inv_s2) - torch.log1p(Szz * inv_s2)))
    Sp = S.clone()
    Sp[:, 0, 0] += sigma_z * sigma_z
    new_ls, new_q = covariance_to_params(Sp)
    dt = means.dtype
    return means, new_ls.to(dt), new_q.to(dt), amp.to(dt)


def focus_prepared_fixed(means, log_scales, quats, opacity, sigma_z: float, cutoff: float):
    """The mixture of :func:`focus_equivalent`, ready for gaussian_ops.fixed.splat_fixed: (A', half_ext',
    amplitudes), float64, from correctly rounded basic operations and fixed.exp_fixed only (no
    eigendecomposition, no libm), so the decoders' result does not depend on the CPU or LAPACK.

    With A = diag(1/s) R^T (A^T A = inv(S)), v = A e_z, c = 1/sigma_z^2 + |v|^2 (= inv(S)_zz +
    1/sigma_z^2), the symmetric square root of I - v v^T / c is M = I - beta v v^T with
    beta = 1 / (c (1 + t)), t = 1 / (sigma_z sqrt(c)); then A' = M A = A - beta v (A^T v)^T satisfies
    A'^T A' = inv(S) - inv(S) e e^T inv(S) / c = inv(S + sigma_z^2 e e^T) (Sherman-Morrison).
    The amplitude is alpha sqrt((1 + S_zz / sigma_z^2) / (det S * c)) (module docstring).
    """
    if not (sigma_z > 0 and math.isfinite(sigma_z)):
        raise ValueError(f"focus_prepared_fixed needs a finite sigma_z > 0, got {sigma_z}")
    from ..gaussian_ops.fixed import exp_fixed, prepare_fixed

    s = exp_fixed(log_scales)
    A, _ = prepare_fixed(means, s, quats, cutoff)
    var, det = _variances_det(quats, s)  # S_jj, det S
    inv_s2 = 1.0 / (float(sigma_z) * float(sigma_z))
    v = A[:, :, 0]  # A e_z, z being the first axis
    u = (A[:, 0, :] * v[:, 0:1] + A[:, 1, :] * v[:, 1:2]) + A[:, 2, :] * v[:, 2:3]  # A^T v
    c = inv_s2 + ((v[:, 0] * v[:, 0] + v[:, 1] * v[:, 1]) + v[:, 2] * v[:, 2])
    t = 1.0 / (float(sigma_z) * torch.sqrt(c))
    beta = 1.0 / (c * (1.0 + t))
    A2 = A - (beta[:, None] * v)[:, :, None] * u[:, None, :]
    amp = opacity.to(torch.float64) * torch.sqrt((1.0 + var[:, 0] * inv_s2) / (det * c))
    var = var + torch.tensor([float(sigma_z) ** 2, 0.0, 0.0], dtype=torch.float64, device=var.device)
    return A2, float(cutoff) * torch.sqrt(var), amp


def eq12_prepared_fixed(means, log_scales, quats, opacity, cutoff: float):
    """Seed 000 eq. 12 for GaussianPile: the stored Gaussians voxelised as they are, before the
    focus re-parameterisation (covariance S, no sigma_z), as fixed-arithmetic factors (A,
    half_ext, amplitudes) for gaussian_ops.fixed.splat_fixed.

    Amplitude convention: a = alpha * sqrt(S_zz / det S) = alpha / sqrt(det S_xy|z), the
    renderer's per-Gaussian normalisation alpha / sqrt(det S_2d) in the thin-focus limit
    sigma_z -> 0 (focus-model.md fact 3: S_2d becomes the in-plane conditional covariance
    S_xy|z, whose determinant is det S / S_zz).  So each Gaussian's peak equals its rendered peak
    at zero focus depth, and the volume is what the slices would show with an infinitely thin
    focal plane: it differs from the rendered slices (S + sigma_z^2 e_z e_z^T, focus_equivalent)
    wherever a Gaussian is thinner along z than the slice sensitivity, as in the paper (its 3D and
    2D PSNR differ).  Units: the file's world unit (the in-plane pixel, header "unit")."""
    from ..gaussian_ops.fixed import exp_fixed, prepare_fixed

    s = exp_fixed(log_scales)
    A, half_ext = prepare_fixed(means, s, quats, cutoff)
    var, det = _variances_det(quats, s)
    amp = opacity.to(torch.float64) * torch.sqrt(var[:, 0] / det)
    return A, half_ext, amp


def _variances_det(quats, s):
    """The diagonal S_jj of S = R diag(s^2) R^T and det S = (s0 s1 s2)^2, float64, from
    correctly rounded basic operations in a fixed order (the decoders' fixed arithmetic)."""
    R = quat_to_rotmat(quats.to(torch.float64))
    s2 = s * s
    RR = R * R
    var = (RR[..., 0] * s2[:, None, 0] + RR[..., 1] * s2[:, None, 1]) + RR[..., 2] * s2[:, None, 2]
    det = (s2[:, 0] * s2[:, 1]) * s2[:, 2]
    return var, det
