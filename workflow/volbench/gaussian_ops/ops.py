"""Public Gaussian operators: voxelize, rasterize_slices, axial_cameras.

Dispatch (backend_name() tells which one runs on a device):
  * float32 CUDA tensors -> the CUDA kernels of ``volbench_gpu_ext`` (gpu_ext/csrc);
  * float32 / float64 CPU tensors -> the compiled CPU backend ``volbench_cpu_ext``
    (gpu_ext/cpu, same maths header gpu_ext/csrc/gaussian_math.h, OpenMP, deterministic);
  * otherwise, or when neither extension loads, or with VOLBENCH_GAUSSIAN_BACKEND=twin (one
    warning), the PyTorch twin (torch_impl.py).
All paths compute the same function: the per-Gaussian prelude (rotation, camera transform, focus
model, culling radii) is the same torch code on every path; only the tile evaluation (the
O(voxels x Gaussians-per-tile) part) and its backward are compiled.

Conventions: world coordinates are physical units in (z, y, x) order; voxel (k, j, i) is at
origin + (k dz, j dy, i dx).  A Gaussian is (mean (N,3), log_scales (N,3) = log standard
deviations along its local axes, quats (N,4) (w,x,y,z), any norm, zero -> identity,
amplitude/opacity (N,) already activated).  S = R diag(exp(2 log_scales)) R^T.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.autograd.function import once_differentiable

from . import backend
from . import fixed as _fixed
from . import torch_impl as twin
from .torch_impl import axial_cameras as _axial_cameras

__all__ = ["voxelize", "rasterize_slices", "axial_cameras", "covariance", "uses_cuda",
           "uses_cpu_ext", "backend_name"]

covariance = twin.covariance

# (camera x Gaussian) prelude entries held at once on the CUDA path of rasterize_slices
_MAX_PAIRS = 1 << 24


def uses_cuda(t: torch.Tensor, *more: torch.Tensor) -> bool:
    """True when an operator on tensor ``t`` (and ``more``) runs the CUDA kernels: all of them
    float32 CUDA tensors on one device and the extension loaded."""
    ts = (t,) + more
    if not all(x.is_cuda and x.dtype == torch.float32 and x.device == t.device for x in ts):
        return False
    if backend.forced_twin():
        return False
    return backend.load() is not None


def uses_cpu_ext(t: torch.Tensor, *more: torch.Tensor) -> bool:
    """True when an operator on tensor ``t`` (and ``more``) runs the compiled CPU backend: all
    of them CPU tensors of one dtype, float32 or float64, and the backend loaded."""
    ts = (t,) + more
    if not all(x.device.type == "cpu" and x.dtype == t.dtype for x in ts):
        return False
    if t.dtype not in (torch.float32, torch.float64) or backend.forced_twin():
        return False
    return backend.load_cpu() is not None


def backend_name(device="cpu", dtype=torch.float32) -> str:
    """Which implementation the operators run for tensors on ``device`` (of ``dtype``):
    "cuda" (gpu_ext kernels), "cpu" (compiled CPU backend) or "twin" (PyTorch twin).  For the
    codecs' encode.json / summary.  Loads (builds) the backend on first use."""
    t = torch.empty(0, dtype=dtype, device=device)
    if uses_cuda(t):
        return "cuda"
    if uses_cpu_ext(t):
        return "cpu"
    return "twin"


# ----------------------------------------------------------------------------- autograd glue

def _ext(cpu: bool):
    return backend.load_cpu() if cpu else backend.load()


# One autograd Function per operator for both compiled backends.  Their forward/backward take
# the same tensors and geometry, except what the backward needs besides the inputs: the CUDA
# forward returns its sorted tile lists (ids, ranges) to reuse, the CPU backend rebuilds its host
# tile lists from the culling extents (half_ext / radii).

class _VoxelSplat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, A, amps, half_ext, geom, cpu):
        N = means.shape[0]
        A9 = A.reshape(N, 9).contiguous()
        means, amps, half_ext = means.contiguous(), amps.contiguous(), half_ext.contiguous()
        res = _ext(cpu).voxelize_forward(means, A9, amps, half_ext, *geom)
        if cpu:
            out, keep = res, (half_ext,)
        else:
            out, keep = res[0], tuple(res[1:])  # ids, ranges
        ctx.save_for_backward(means, A9, amps, *keep)
        ctx.geom, ctx.cpu = geom, cpu
        return out

    @staticmethod
    @once_differentiable  # the kernels' backward is not differentiable: double backward fails
    def backward(ctx, grad_out):
        gm, gA, ga = _ext(ctx.cpu).voxelize_backward(grad_out.contiguous(), *ctx.saved_tensors,
                                                     *ctx.geom)
        return gm, gA.reshape(-1, 3, 3), ga, None, None, None


class _PixelSplat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mean2d, conic, weight, radii, image_shape, pixel_size, cutoff, cpu):
        B, N = weight.shape
        H, W = (int(s) for s in image_shape)
        geom = (B, N, H, W, [float(pixel_size[0]), float(pixel_size[1])], float(cutoff))
        flat = (mean2d.reshape(B * N, 2).contiguous(), conic.reshape(B * N, 3).contiguous(),
                weight.reshape(B * N).contiguous(), radii.reshape(B * N, 2).contiguous())
        res = _ext(cpu).raster_forward(*flat, *geom)
        if cpu:
            out, keep = res, flat
        else:
            out, keep = res[0], flat[:3] + tuple(res[1:])  # ids, ranges instead of radii
        ctx.save_for_backward(*keep)
        ctx.geom, ctx.cpu = geom, cpu
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        B, N = ctx.geom[:2]
        gm, gc, gw = _ext(ctx.cpu).raster_backward(grad_out.contiguous(), *ctx.saved_tensors,
                                                   *ctx.geom)
        return (gm.reshape(B, N, 2), gc.reshape(B, N, 3), gw.reshape(B, N),
                None, None, None, None, None)


# ----------------------------------------------------------------------------- operators

def voxelize(means: torch.Tensor, log_scales: torch.Tensor, quats: torch.Tensor,
             amps: torch.Tensor, shape: Sequence[int], spacing=(1.0, 1.0, 1.0),
             origin=(0.0, 0.0, 0.0), cutoff: float = 3.0, roi=None,
             deterministic: bool = False) -> torch.Tensor:
    """Sum of 3D Gaussians on a voxel grid.

    V(x) = sum_i amps_i exp(-1/2 d^T inv(S_i) d), d = x - mean_i; terms with Mahalanobis
    distance > cutoff are exactly zero.  ``roi`` = (z0, z1, y0, y1, x0, x1), a half-open
    voxel-index box: only that sub-box is evaluated and returned (decode large grids in
    z-slabs this way).  Returns (D,H,W) (or the ROI's shape) in the dtype of ``means``
    (float32 for float32 inputs).  Differentiable in means, log_scales, quats, amps.

    ``deterministic=True`` (the decoders): evaluate with fixed arithmetic (fixed.py) on any
    device: float64, not differentiable, bit-identical whatever the ROI, slab size, thread
    count or CPU.
    """
    if deterministic:
        return _fixed.voxelize_fixed(means, log_scales, quats, amps, shape, spacing, origin, cutoff, roi)
    roi_origin, sp, roi_shape = twin._roi_geometry(shape, spacing, origin, roi)
    A, half_ext = twin.prepare_3d(means, log_scales, quats, cutoff)
    if uses_cpu_ext(means, log_scales, quats, amps):
        # tile grid and coordinates anchored to the volume origin: bit-identical whatever the ROI
        z0, _, y0, _, x0, _ = twin.roi_box(shape, roi)
        geom = ([float(o) for o in origin], [float(v) for v in sp], [int(z0), int(y0), int(x0)],
                [int(v) for v in roi_shape], float(cutoff))
        return _VoxelSplat.apply(means, A, amps, half_ext, geom, True)
    if not uses_cuda(means, log_scales, quats, amps):
        return twin.splat_voxels(means, A, amps, half_ext, roi_origin, sp, roi_shape, cutoff)
    geom = (list(roi_origin), list(sp), list(roi_shape), float(cutoff))
    return _VoxelSplat.apply(means, A, amps, half_ext, geom, False)


def rasterize_slices(means: torch.Tensor, log_scales: torch.Tensor, quats: torch.Tensor,
                     opacities: torch.Tensor, cameras: torch.Tensor, image_shape,
                     pixel_size, mode: str = "focus", sigma_z: float = 1.0,
                     cutoff: float = 3.0, opacity_threshold: float = 1e-4) -> torch.Tensor:
    """Render B orthographic slices (B,H,W) additively.

    cameras: (B,3,4) world->camera [R|t]; pixel (r, c) is at a = r*pixel_size[0],
    b = c*pixel_size[1] on the plane n = 0.  mode="focus": seed 000's focus model (eqs. 6-10);
    mode="3dgs": the slice-adapted 3DGS rendering (seed 000 sec. 10, see torch_impl).
    Screen tiles 16x16; a (camera, Gaussian) pair is culled when its effective opacity
    (opacity * opacity_r, resp. opacity * attenuation) is below ``opacity_threshold``; a pixel
    beyond 2D Mahalanobis distance ``cutoff`` gets exactly zero from that Gaussian.
    Differentiable in means, log_scales, quats, opacities.
    """
    cams = cameras.to(device=means.device, dtype=means.dtype)
    cpu = uses_cpu_ext(means, log_scales, quats, opacities)
    if not cpu and not uses_cuda(means, log_scales, quats, opacities):
        return twin.rasterize_slices(means, log_scales, quats, opacities, cams, image_shape,
                                     pixel_size, mode, sigma_z, cutoff, opacity_threshold)
    B, N = cams.shape[0], means.shape[0]
    step = max(1, _MAX_PAIRS // max(1, N))
    outs = []
    for b0 in range(0, B, step):
        c = cams[b0:b0 + step]
        mu2, conic, weight, radii = twin.prepare_slices(
            means, log_scales, quats, opacities, c, mode, sigma_z, cutoff, opacity_threshold,
            pixel_size)
        outs.append(_PixelSplat.apply(mu2, conic, weight, radii, tuple(image_shape),
                                      tuple(pixel_size), float(cutoff), cpu))
    return outs[0] if len(outs) == 1 else torch.cat(outs, 0)


def axial_cameras(indices, spacing, origin=(0.0, 0.0, 0.0), dtype=torch.float32,
                  device=None) -> torch.Tensor:
    """(B,3,4) cameras of the axial slices z = origin_z + k*dz, k in ``indices``, so that pixel
    (r, c) of slice k lands on voxel (k, r, c):
    rasterize_slices(..., axial_cameras(range(D), sp), (H, W), (dy, dx)) is a (D,H,W) stack."""
    return _axial_cameras(indices, spacing, origin, dtype=dtype, device=device)
