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

from .common import covariance_to_params, quat_to_rotmat


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
