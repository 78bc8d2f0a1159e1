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

}  // namespace gm
}  // namespace vbgs
