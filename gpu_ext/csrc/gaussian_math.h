// Per-voxel and per-pixel maths of the Gaussian operators, shared by the CUDA kernels
// (voxelize_*.cu, raster_*.cu; also run on the CPU by tests/gpu_ext_harness) and the compiled
// CPU backend (gpu_ext/cpu/cpu_backend.cpp): cutoff ranges of the tile/voxel boxes, the
// Mahalanobis distances, the Gaussian term and the gradient terms.  Templated on the scalar type
// (the kernels use float; the CPU backend float and double).  No torch, no CUDA runtime calls.
#pragma once

#include <cmath>

#if defined(__CUDACC__) || defined(VBGS_EMULATION)
#define VB_HD __host__ __device__ __forceinline__
#else
#define VB_HD inline
#endif

namespace vbgs {
namespace gm {

#ifndef __CUDACC__
using std::ceil;
using std::exp;
using std::floor;
using std::fmax;
using std::fmin;
using std::isfinite;
using std::sqrt;
#endif

// exp(-m / 2): the hardware __expf in device code (--use_fast_math), exp on the host
template <typename T>
VB_HD T gauss(T m) {
  return exp(T(-0.5) * m);
}
template <>
VB_HD float gauss<float>(float m) {
#ifdef __CUDA_ARCH__
  return __expf(-0.5f * m);
#else
  return exp(-0.5f * m);
#endif
}

// Conservative inclusive index range [lo, hi] of the grid points i * step, 0 <= i <= last,
// within c +- h (c, h in units of the grid's origin; step 1 when already in index units).
// Returns false (range empty) for non-finite input, h < 0 or no point in range.
template <typename T>
VB_HD bool axis_range(T c, T h, T step, int last, int* lo, int* hi) {
  const bool ok0 = isfinite(c) && isfinite(h) && h >= T(0);
  const T flo = fmax(floor((c - h) / step), T(0));
  const T fhi = fmin(ceil((c + h) / step), static_cast<T>(last));
  const bool ok = ok0 && flo <= fhi;
  *lo = ok ? static_cast<int>(flo) : 1;
  *hi = ok ? static_cast<int>(fhi) : 0;
  return ok;
}

// Voxelizer: y = A d (A row-major 3x3), returns m = |y|^2 (squared Mahalanobis distance)
template <typename T>
VB_HD T vox_maha(const T* Ak, T dz, T dy, T dx, T* y) {
  y[0] = Ak[0] * dz + Ak[1] * dy + Ak[2] * dx;
  y[1] = Ak[3] * dz + Ak[4] * dy + Ak[5] * dx;
  y[2] = Ak[6] * dz + Ak[7] * dy + Ak[8] * dx;
  return y[0] * y[0] + y[1] * y[1] + y[2] * y[2];
}

// Voxelizer gradient terms of one (voxel, Gaussian) pair: vals = dL/dmu (3), dL/dA (9,
// row-major), dL/damp (1) for upstream go, term exp e = gauss(m), amplitude amp, y = A d.
// Pairs without a hit contribute exact zeros (also when y, e or go are not finite).
template <typename T>
VB_HD void vox_grad_terms(bool hit, T go, T e, T amp, const T* Ak, const T* y, const T* d,
                          T* vals) {
  const T gamp = go * e;             // dL/damp
  const T gy_scale = -gamp * amp;    // dL/dy = -go * amp * e * y
  const T gy[3] = {hit ? gy_scale * y[0] : T(0), hit ? gy_scale * y[1] : T(0),
                   hit ? gy_scale * y[2] : T(0)};
  // dL/dmu = -A^T dL/dy
#pragma unroll
  for (int c = 0; c < 3; ++c)
    vals[c] = hit ? -(Ak[c] * gy[0] + Ak[3 + c] * gy[1] + Ak[6 + c] * gy[2]) : T(0);
  // dL/dA_rc = dL/dy_r * d_c
#pragma unroll
  for (int r = 0; r < 3; ++r)
#pragma unroll
    for (int c = 0; c < 3; ++c) vals[3 + 3 * r + c] = hit ? gy[r] * d[c] : T(0);
  vals[12] = hit ? gamp : T(0);  // a NaN/Inf dL/dV where no Gaussian reaches stays out
}

// Rasterizer: m = c00 da^2 + 2 c01 da db + c11 db^2 before the clamp at 0
template <typename T>
VB_HD T pix_maha_raw(T c0, T c1, T c2, T da, T db) {
  return c0 * da * da + T(2) * c1 * da * db + c2 * db * db;
}

// Rasterizer gradient terms of one (pixel, item) pair: vals = dL/dmean2d (2), dL/dconic (3),
// dL/dweight (1); mraw the unclamped distance (no gradient through the clamp at 0).
template <typename T>
VB_HD void pix_grad_terms(bool hit, T go, T e, T w, T c0, T c1, T c2, T da, T db, T mraw,
                          T* vals) {
  const T gw = go * e;                                            // dL/dweight
  const T gm = (hit && mraw >= T(0)) ? T(-0.5) * gw * w : T(0);   // dL/dm (clamp at 0)
  vals[0] = vals[1] = vals[2] = vals[3] = vals[4] = vals[5] = T(0);  // exact zeros without a hit
  if (hit) {
    vals[0] = -gm * T(2) * (c0 * da + c1 * db);  // dL/dmean_a = -dL/dda
    vals[1] = -gm * T(2) * (c1 * da + c2 * db);
    vals[2] = gm * da * da;                      // dL/dc00
    vals[3] = gm * T(2) * da * db;               // dL/dc01 (appears twice in m)
    vals[4] = gm * db * db;                      // dL/dc11
    vals[5] = gw;
  }
}


// ------------------------------------------------------------------ compositing splat stage
// (composite_fwd.cu / composite_bwd.cu; the contract is the one of the PyTorch twin
// workflow/volbench/gaussian_ops/composite.py): per pixel and (slice, Gaussian) pair,
// q = A d0^2 + 2 B d0 d1 + C d1^2, a term only where q is finite and <= c2,
// w = min(wpeak exp(-max(q, 0)/2), kWMax) (no gradient to q where q < 0, as the twin's
// clamp_min(0)), front to back T_{k+1} = T_k (1 - w_k).

constexpr double kWMax = 0.99;  // the 3DGS clamp: 1 - w >= 0.01, so the backward can divide
// Transmittance below which a pixel's backward stops (terms behind it change no output and no
// gradient by more than ~100 kTMin relative); a normal float, far above float's underflow.
constexpr double kTMin = 1e-30;

// Tile box of a pair: half extents (world units) of the cutoff ellipse q <= c2 of the conic
// (A, B, C), h0 = sqrt(c2 C / det), h1 = sqrt(c2 A / det), det = A C - B^2, widened by 1e-4
// relative for rounding.  Returns 1 (positive definite, finite extents), 2 (finite but not
// positive definite or extents beyond float: the set q <= c2 may be unbounded, every pixel of
// the slice must be tested), 0 (a non-finite conic: q is nowhere finite, no pixel).
template <typename T>
VB_HD int comp_extent(T A, T B, T C, T c2, T* h0, T* h1) {
  *h0 = *h1 = T(0);
  if (!(isfinite(A) && isfinite(B) && isfinite(C))) return 0;
  const T det = A * C - B * B;
  if (!(A > T(0) && C > T(0) && det > T(0))) return 2;
  *h0 = sqrt(c2 * C / det) * T(1.0001);
  *h1 = sqrt(c2 * A / det) * T(1.0001);
  return (isfinite(*h0) && isfinite(*h1)) ? 1 : 2;
}

// q(d) of the compositing stage.  In device code with a fixed rounding sequence (__fmaf_rn,
// __fmul_rn: nvcc may not contract or reorder them), so that the forward and the backward
// kernel take the same cutoff decisions and the backward's T_k = T_{k+1} / (1 - w_k) undoes
// exactly the forward's factors.
template <typename T>
VB_HD T comp_maha(T A, T B, T C, T d0, T d1) {
  return A * d0 * d0 + T(2) * B * d0 * d1 + C * d1 * d1;
}
template <>
VB_HD float comp_maha<float>(float A, float B, float C, float d0, float d1) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(__fmul_rn(A, d0), d0,
                   __fmaf_rn(__fmul_rn(__fmul_rn(2.f, B), d0), d1, __fmul_rn(__fmul_rn(C, d1), d1)));
#else
  return A * d0 * d0 + 2.f * B * d0 * d1 + C * d1 * d1;
#endif
}

// w = min(wpeak e, kWMax) with e = gauss(max(q, 0)); *om = 1 - w; *clamped: the min took kWMax (no
// gradient to wpeak and q).  Fixed rounding in device code, as comp_maha.
template <typename T>
VB_HD T comp_weight(T wpeak, T e, T* om, bool* clamped) {
  const T w = wpeak * e;
  *clamped = w > T(kWMax);
  const T wc = *clamped ? T(kWMax) : w;
  *om = T(1) - wc;
  return wc;
}
template <>
VB_HD float comp_weight<float>(float wpeak, float e, float* om, bool* clamped) {
#ifdef __CUDA_ARCH__
  const float w = __fmul_rn(wpeak, e);
#else
  const float w = wpeak * e;
#endif
  *clamped = w > static_cast<float>(kWMax);
  const float wc = *clamped ? static_cast<float>(kWMax) : w;
#ifdef __CUDA_ARCH__
  *om = __fsub_rn(1.f, wc);
#else
  *om = 1.f - wc;
#endif
  return wc;
}

// Gradient terms of one (pixel, pair) term given gw = dL/dw: vals = dL/dm2 (2), dL/dconic (3:
// A, B, C), dL/dwpeak (1); q the unclamped distance.  Exact zeros without a hit and on the
// clamped branch of the min; no gradient to q through max(q, 0) where q < 0.
template <typename T>
VB_HD void comp_grad_terms(bool hit, bool clamped, T gw, T e, T wpeak, T A, T B, T C, T d0, T d1,
                           T q, T* vals) {
  vals[0] = vals[1] = vals[2] = vals[3] = vals[4] = vals[5] = T(0);
  if (hit && !clamped) {
    const T gq = q >= T(0) ? T(-0.5) * gw * e * wpeak : T(0);  // dL/dq (w = wpeak e)
    vals[0] = -gq * T(2) * (A * d0 + B * d1);  // d = pixel - m2
    vals[1] = -gq * T(2) * (B * d0 + C * d1);
    vals[2] = gq * d0 * d0;
    vals[3] = gq * T(2) * d0 * d1;  // B appears twice in q
    vals[4] = gq * d1 * d1;
    vals[5] = gw * e;
  }
}

}  // namespace gm
}  // namespace vbgs
