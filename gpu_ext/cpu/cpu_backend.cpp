// volbench_cpu_ext: the compiled CPU backend of the Gaussian operators (no nvcc, no CUDA).
//
// Same per-voxel / per-pixel maths as the CUDA kernels (gpu_ext/csrc/gaussian_math.h), same
// function as the PyTorch twin; float32 and float64 (templated on the scalar type).
//
// Deterministic by construction, whatever the ROI, the slab/camera chunking or the thread count:
//  * forward: the tiles are output rows, a z plane of the voxel grid / an image row of a slice
//    (voxel coordinates are global indices times the spacing, means relative to the volume
//    origin); the tile lists are built on the host by a stable counting sort, so every voxel /
//    pixel sums its terms in ascending Gaussian id; OpenMP runs over tiles (dynamic schedule),
//    one thread owns a tile's outputs; each Gaussian is evaluated on the chord of each row
//    (chord()), in branch-free loops the compiler vectorises (exp_neg_half);
//  * backward: gather formulation, OpenMP over Gaussians (items): every Gaussian sums its
//    gradient terms over the voxels / pixels of its cutoff box in raster order, in double, into
//    its own row, so no two threads write the same gradient and no reduction across threads is
//    needed (the per-thread buffers of a scatter formulation reduce to one row per Gaussian).
//  A voxel / pixel outside a Gaussian's conservative cutoff box gets no term from it (the CUDA
//  kernels evaluate whole tiles; the two differ at most where float rounding puts a point right
//  on the cutoff boundary, as between any two evaluation orders), and the float32 exp is a
//  polynomial within 1e-7 of the correctly rounded one (the kernels use __expf).
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gaussian_math.h"
#include "cpu_composite.h"  // the compositing splat stage (cpu_composite.cpp)

namespace {

constexpr int kVoxTile = 8;
constexpr int kPixTile = 16;

// exp(-m / 2) for the CPU loops, branch-free so that the compiler vectorises the pixel / voxel
// loops: float: Cody-Waite reduction by ln 2 (rounding by the 1.5 * 2^23 trick), a degree-7
// Taylor polynomial on |r| <= ln2 / 2 (truncation < 5e-9 relative, below float's 6e-8), the
// power of two assembled in the exponent bits; m is clamped to [0, 40] first (the callers use
// only m <= cutoff^2, the clamp keeps the bits finite elsewhere). Deterministic (basic
// operations only). double: std::exp (the float64 path serves gradcheck and references).
inline float exp_neg_half(float m) {
  const float mp = m > 0.0f ? m : 0.0f;  // selects, not branches: the loops stay vectorisable
  const float x = -0.5f * (mp < 40.0f ? mp : 40.0f);
  const float magic = 12582912.0f;  // 1.5 * 2^23
  const float t = x * 1.44269504088896341f + magic;
  const float n = t - magic;  // round(x / ln 2)
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
inline double exp_neg_half(double m) { return std::exp(-0.5 * m); }

void check_input(const torch::Tensor& t, const char* name, int64_t cols, at::ScalarType dt) {
  TORCH_CHECK(t.device().is_cpu(), "volbench_cpu_ext: ", name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dt, "volbench_cpu_ext: ", name, " must have dtype ", dt);
  TORCH_CHECK(t.is_contiguous(), "volbench_cpu_ext: ", name, " must be contiguous");
  if (cols > 0) {
    TORCH_CHECK(t.dim() == 2 && t.size(1) == cols, "volbench_cpu_ext: ", name, " must be (N, ",
                cols, ")");
  } else {
    TORCH_CHECK(t.dim() == 1, "volbench_cpu_ext: ", name, " must be (N,)");
  }
}

int n_threads() { return std::max(1, at::get_num_threads()); }

// Stable counting sort of (key, item) pairs: items ascending within every key.
// boxes: n x 6 inclusive tile boxes (z0,z1,y0,y1,x0,x1; empty when any hi < lo), key of tile
// (z,y,x) = base[i] + ((z - zo) * ty + (y - yo)) * tx + (x - xo) with (zo,yo,xo) the first tile.
struct TileLists {
  std::vector<int64_t> start;  // n_keys + 1
  std::vector<int32_t> ids;
};

TileLists build_lists(const std::vector<int>& boxes, const std::vector<int64_t>& base, int64_t n,
                      int64_t n_keys, int zo, int yo, int xo, int ty, int tx) {
  TileLists L;
  L.start.assign(n_keys + 1, 0);
  auto each = [&](int64_t i, auto&& f) {
    const int* b = boxes.data() + 6 * i;
    if (b[1] < b[0] || b[3] < b[2] || b[5] < b[4]) return;
    for (int z = b[0]; z <= b[1]; ++z)
      for (int y = b[2]; y <= b[3]; ++y)
        for (int x = b[4]; x <= b[5]; ++x)
          f(base[i] + (static_cast<int64_t>(z - zo) * ty + (y - yo)) * tx + (x - xo));
  };
  for (int64_t i = 0; i < n; ++i) each(i, [&](int64_t k) { ++L.start[k + 1]; });
  for (int64_t k = 0; k < n_keys; ++k) L.start[k + 1] += L.start[k];
  L.ids.resize(static_cast<size_t>(L.start[n_keys]));
  std::vector<int64_t> pos(L.start.begin(), L.start.end() - 1);
  for (int64_t i = 0; i < n; ++i)
    each(i, [&](int64_t k) { L.ids[pos[k]++] = static_cast<int32_t>(i); });
  return L;
}

// ------------------------------------------------------------------ voxelizer
template <typename T>
struct VoxCtx {
  T sp[3];
  int off[3];     // ROI offset in global voxel indices
  int shape[3];   // ROI shape
  T c2;
  int64_t n;
  std::vector<T> mu;    // n x 3, mean - volume origin (taken in double)
  std::vector<int> vb;  // n x 6, inclusive global voxel box within the ROI (empty: hi < lo)
};

template <typename T>
VoxCtx<T> vox_ctx(const torch::Tensor& means, const torch::Tensor& half_ext,
                  const std::vector<double>& origin, const std::vector<double>& spacing,
                  const std::vector<int64_t>& offset, const std::vector<int64_t>& shape,
                  double cutoff) {
  TORCH_CHECK(origin.size() == 3 && spacing.size() == 3 && offset.size() == 3 &&
                  shape.size() == 3,
              "volbench_cpu_ext: origin, spacing, offset and shape need 3 entries");
  VoxCtx<T> c;
  for (int a = 0; a < 3; ++a) {
    TORCH_CHECK(spacing[a] > 0, "volbench_cpu_ext: spacing must be > 0");
    TORCH_CHECK(offset[a] >= 0 && shape[a] >= 0 && offset[a] + shape[a] < (1LL << 30),
                "volbench_cpu_ext: bad ROI");
    c.sp[a] = static_cast<T>(spacing[a]);
    c.off[a] = static_cast<int>(offset[a]);
    c.shape[a] = static_cast<int>(shape[a]);
  }
  c.c2 = static_cast<T>(cutoff * cutoff);
  c.n = means.size(0);
  c.mu.resize(3 * c.n);
  c.vb.resize(6 * c.n);
  const T* m = means.data_ptr<T>();
  const T* h = half_ext.data_ptr<T>();
  at::parallel_for(0, c.n, 1024, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      bool ok = true;
      for (int a = 0; a < 3; ++a) {
        const T mu = static_cast<T>(static_cast<double>(m[3 * i + a]) - origin[a]);
        c.mu[3 * i + a] = mu;
        int lo, hi;
        // global range (clamped to the ROI's far end), then clamped to the ROI's near end
        ok = vbgs::gm::axis_range(mu, h[3 * i + a], c.sp[a], c.off[a] + c.shape[a] - 1, &lo,
                                  &hi) && ok;
        lo = std::max(lo, c.off[a]);
        c.vb[6 * i + 2 * a] = ok ? lo : 1;
        c.vb[6 * i + 2 * a + 1] = ok && lo <= hi ? hi : 0;
        ok = ok && lo <= hi;
      }
      if (!ok)
        for (int a = 0; a < 3; ++a) c.vb[6 * i + 2 * a] = 1, c.vb[6 * i + 2 * a + 1] = 0;
    }
  });
  return c;
}

// The chord of a row: the index range [*lo, *hi] (within [lo0, hi0]) where the quadratic
// m(t) = qc + 2 qb t + qa t^2 (qc = |a|^2, qa = |b|^2 for y = a + t b) can be <= c2, widened by
// one index on each side; the callers still test m <= c2 at every point with the same arithmetic
// as before, so the chord only skips points that are far outside the cutoff ellipsoid.
// Returns false when the row has no such point. Computed in double from row-invariant values.
inline bool chord(double qa, double qb, double qc, double c2, int lo0, int hi0, int* lo, int* hi) {
  if (lo0 > hi0) return false;
  if (!(qa > 0.0) || !std::isfinite(qa) || !std::isfinite(qb) || !std::isfinite(qc)) {
    *lo = lo0, *hi = hi0;  // degenerate: test every point
    return true;
  }
  const double disc = qb * qb - qa * (qc - c2);
  const double tol = 1e-6 * (qb * qb + std::fabs(qa * (qc - c2))) + 1e-12;
  if (disc < -tol) return false;
  const double r = std::sqrt(std::max(disc, 0.0));
  const double tlo = std::floor((-qb - r) / qa) - 1.0, thi = std::ceil((-qb + r) / qa) + 1.0;
  *lo = tlo > lo0 ? static_cast<int>(std::min<double>(tlo, hi0 + 1.0)) : lo0;
  *hi = thi < hi0 ? static_cast<int>(std::max<double>(thi, lo0 - 1.0)) : hi0;
  return *lo <= *hi;
}

// Voxel row (z, y) of Gaussian Ak: the chord of x within [x0, x1] (global voxel indices).
template <typename T>
inline bool vox_row(const T* Ak, T dz, T dy, T mux, T spx, T c2, int x0, int x1, int* lo,
                    int* hi) {
  double a[3], b[3];
  for (int r = 0; r < 3; ++r) {
    a[r] = double(Ak[3 * r]) * dz + double(Ak[3 * r + 1]) * dy - double(Ak[3 * r + 2]) * mux;
    b[r] = double(Ak[3 * r + 2]) * spx;
  }
  const double qa = b[0] * b[0] + b[1] * b[1] + b[2] * b[2];
  const double qb = a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const double qc = a[0] * a[0] + a[1] * a[1] + a[2] * a[2];
  return chord(qa, qb, qc, double(c2), x0, x1, lo, hi);
}

// Forward: OpenMP over the ROI's z planes; a plane's voxels sum the Gaussians whose box meets
// the plane in ascending id (a stable counting sort by plane), so every voxel adds its terms in
// the same order whatever the ROI, chunking or thread count.
template <typename T>
void vox_forward_impl(const VoxCtx<T>& c, const T* A, const T* amps, T* out) {
  const int64_t n = c.n;
  std::vector<int> boxes(6 * n);
  std::vector<int64_t> base(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    const int* b = c.vb.data() + 6 * i;
    const bool ok = b[1] >= b[0] && b[3] >= b[2] && b[5] >= b[4];
    int* o = boxes.data() + 6 * i;
    o[0] = ok ? b[0] - c.off[0] : 1, o[1] = ok ? b[1] - c.off[0] : 0;
    o[2] = 0, o[3] = 0, o[4] = 0, o[5] = 0;
  }
  const TileLists L = build_lists(boxes, base, n, c.shape[0], 0, 0, 0, 1, 1);
  const int64_t sy = c.shape[2], sz = static_cast<int64_t>(c.shape[1]) * c.shape[2];

#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads())
  for (int64_t kz = 0; kz < c.shape[0]; ++kz) {
    const int z = static_cast<int>(kz) + c.off[0];
    T* plane = out + kz * sz;
    for (int64_t j = L.start[kz]; j < L.start[kz + 1]; ++j) {
      const int64_t i = L.ids[j];
      const int* b = c.vb.data() + 6 * i;
      // locals: the output rows cannot alias them, so the x loop vectorises
      T Ak[9];
      for (int k = 0; k < 9; ++k) Ak[k] = A[9 * i + k];
      const T amp = amps[i], c2 = c.c2, spx = c.sp[2];
      const T mu0 = c.mu[3 * i], mu1 = c.mu[3 * i + 1], mu2 = c.mu[3 * i + 2];
      const T dz = z * c.sp[0] - mu0;
      const int y0 = b[2], y1 = b[3], x0 = b[4], x1 = b[5];
      for (int y = y0; y <= y1; ++y) {
        const T dy = y * c.sp[1] - mu1;
        int lo, hi;
        if (!vox_row(Ak, dz, dy, mu2, spx, c2, x0, x1, &lo, &hi)) continue;
        T* __restrict__ row = plane + (y - c.off[1]) * sy - c.off[2];
        for (int x = lo; x <= hi; ++x) {
          T yv[3];
          const T m = vbgs::gm::vox_maha(Ak, dz, dy, x * spx - mu2, yv);
          row[x] += amp * exp_neg_half(m) * static_cast<T>(m <= c2);
        }
      }
    }
  }
}

template <typename T>
void vox_backward_impl(const VoxCtx<T>& c, const T* go_all, const T* A, const T* amps,
                       T* g_means, T* g_A, T* g_amps) {
  const int64_t sy = c.shape[2], sz = static_cast<int64_t>(c.shape[1]) * c.shape[2];
#pragma omp parallel for schedule(dynamic, 16) num_threads(n_threads())
  for (int64_t i = 0; i < c.n; ++i) {
    const int* b = c.vb.data() + 6 * i;
    double sum[13] = {};
    const T* Ak = A + 9 * i;
    const T amp = amps[i];
    const T* mu = c.mu.data() + 3 * i;
    for (int z = b[0]; z <= b[1]; ++z) {
      const T dz = z * c.sp[0] - mu[0];
      for (int y = b[2]; y <= b[3]; ++y) {
        const T dy = y * c.sp[1] - mu[1];
        int lo, hi;
        if (!vox_row(Ak, dz, dy, mu[2], c.sp[2], c.c2, b[4], b[5], &lo, &hi)) continue;
        const T* gro = go_all + (z - c.off[0]) * sz + (y - c.off[1]) * sy - c.off[2];
        for (int x = lo; x <= hi; ++x) {
          const T go = gro[x];
          const T d[3] = {dz, dy, x * c.sp[2] - mu[2]};
          T yv[3];
          const T m = vbgs::gm::vox_maha(Ak, d[0], d[1], d[2], yv);
          if (!(go != T(0) && m <= c.c2)) continue;
          T vals[13];
          vbgs::gm::vox_grad_terms(true, go, exp_neg_half(m), amp, Ak, yv, d, vals);
          for (int v = 0; v < 13; ++v) sum[v] += vals[v];
        }
      }
    }
    for (int v = 0; v < 3; ++v) g_means[3 * i + v] = static_cast<T>(sum[v]);
    for (int v = 0; v < 9; ++v) g_A[9 * i + v] = static_cast<T>(sum[3 + v]);
    g_amps[i] = static_cast<T>(sum[12]);
  }
}

void check_vox(const torch::Tensor& means, const torch::Tensor& A, const torch::Tensor& amps,
               const torch::Tensor& half_ext) {
  const auto dt = means.scalar_type();
  TORCH_CHECK(dt == torch::kFloat32 || dt == torch::kFloat64,
              "volbench_cpu_ext: float32 or float64 tensors");
  check_input(means, "means", 3, dt);
  check_input(A, "A", 9, dt);
  check_input(amps, "amps", 0, dt);
  check_input(half_ext, "half_ext", 3, dt);
  const int64_t n = means.size(0);
  TORCH_CHECK(A.size(0) == n && amps.size(0) == n && half_ext.size(0) == n,
              "volbench_cpu_ext: inconsistent numbers of Gaussians");
  TORCH_CHECK(n < (1LL << 31), "volbench_cpu_ext: too many Gaussians");
}

torch::Tensor voxelize_forward(torch::Tensor means, torch::Tensor A, torch::Tensor amps,
                               torch::Tensor half_ext, std::vector<double> origin,
                               std::vector<double> spacing, std::vector<int64_t> offset,
                               std::vector<int64_t> shape, double cutoff) {
  check_vox(means, A, amps, half_ext);
  TORCH_CHECK(shape.size() == 3, "volbench_cpu_ext: shape needs 3 entries");
  auto out = torch::zeros({shape[0], shape[1], shape[2]}, means.options());
  if (out.numel() == 0 || means.size(0) == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "voxelize_forward", [&] {
    auto c = vox_ctx<scalar_t>(means, half_ext, origin, spacing, offset, shape, cutoff);
    vox_forward_impl<scalar_t>(c, A.data_ptr<scalar_t>(), amps.data_ptr<scalar_t>(),
                               out.data_ptr<scalar_t>());
  });
  return out;
}

std::vector<torch::Tensor> voxelize_backward(torch::Tensor grad_out, torch::Tensor means,
                                             torch::Tensor A, torch::Tensor amps,
                                             torch::Tensor half_ext, std::vector<double> origin,
                                             std::vector<double> spacing,
                                             std::vector<int64_t> offset,
                                             std::vector<int64_t> shape, double cutoff) {
  check_vox(means, A, amps, half_ext);
  TORCH_CHECK(shape.size() == 3 && grad_out.device().is_cpu() &&
                  grad_out.scalar_type() == means.scalar_type() && grad_out.is_contiguous() &&
                  grad_out.dim() == 3 && grad_out.size(0) == shape[0] &&
                  grad_out.size(1) == shape[1] && grad_out.size(2) == shape[2],
              "volbench_cpu_ext: grad_out must be a contiguous CPU tensor of the ROI shape");
  auto g_means = torch::zeros_like(means);
  auto g_A = torch::zeros_like(A);
  auto g_amps = torch::zeros_like(amps);
  if (grad_out.numel() == 0 || means.size(0) == 0) return {g_means, g_A, g_amps};
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "voxelize_backward", [&] {
    auto c = vox_ctx<scalar_t>(means, half_ext, origin, spacing, offset, shape, cutoff);
    vox_backward_impl<scalar_t>(c, grad_out.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
                                amps.data_ptr<scalar_t>(), g_means.data_ptr<scalar_t>(),
                                g_A.data_ptr<scalar_t>(), g_amps.data_ptr<scalar_t>());
  });
  return {g_means, g_A, g_amps};
}

// ------------------------------------------------------------------ slice rasterizer
template <typename T>
struct PixCtx {
  int64_t B, N, H, W;
  T ps[2];
  T c2;
  std::vector<int> pb;  // B*N x 4: inclusive pixel box (r0, r1, c0, c1); empty: hi < lo
};

template <typename T>
PixCtx<T> pix_ctx(const torch::Tensor& mean2d, const torch::Tensor& radii, int64_t B, int64_t N,
                  int64_t H, int64_t W, const std::vector<double>& ps, double cutoff) {
  TORCH_CHECK(ps.size() == 2 && ps[0] > 0 && ps[1] > 0,
              "volbench_cpu_ext: pixel_size must be 2 positive numbers");
  TORCH_CHECK(B >= 0 && N >= 0 && H >= 0 && W >= 0 && H < (1LL << 30) && W < (1LL << 30) &&
                  B * N < (1LL << 31),
              "volbench_cpu_ext: bad image geometry");
  PixCtx<T> c;
  c.B = B, c.N = N, c.H = H, c.W = W;
  c.ps[0] = static_cast<T>(ps[0]);
  c.ps[1] = static_cast<T>(ps[1]);
  c.c2 = static_cast<T>(cutoff * cutoff);
  const int64_t n = B * N;
  c.pb.resize(4 * n);
  const T* m = mean2d.data_ptr<T>();
  const T* r = radii.data_ptr<T>();
  const int lim[2] = {static_cast<int>(H) - 1, static_cast<int>(W) - 1};
  at::parallel_for(0, n, 1024, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      bool ok = true;
      int lo[2], hi[2];
      for (int a = 0; a < 2; ++a)
        ok = vbgs::gm::axis_range(m[2 * i + a] / c.ps[a], r[2 * i + a], T(1), lim[a], &lo[a],
                                  &hi[a]) && ok;
      for (int a = 0; a < 2; ++a) {
        c.pb[4 * i + 2 * a] = ok ? lo[a] : 1;
        c.pb[4 * i + 2 * a + 1] = ok ? hi[a] : 0;
      }
    }
  });
  return c;
}

// Pixel row r of item (ma, mb, conic): the chord of q within [q0, q1].
template <typename T>
inline bool pix_row(T c0, T c1, T c2, T da, T mb, T psb, T cut2, int q0, int q1, int* lo,
                    int* hi) {
  // m(q) = c0 da^2 + 2 c1 da db + c2 db^2, db = q psb - mb
  const double D = da, P = psb, M = mb;
  const double qa = double(c2) * P * P;
  const double qb = (double(c1) * D - double(c2) * M) * P;
  const double qc = double(c0) * D * D - 2.0 * double(c1) * D * M + double(c2) * M * M;
  return chord(qa, qb, qc, double(cut2), q0, q1, lo, hi);
}

// Forward: OpenMP over the image rows of every camera; a row sums the items whose box meets it
// in ascending item id (stable counting sort by row), so every pixel adds its terms in the same
// order whatever the camera chunking or thread count.
template <typename T>
void pix_forward_impl(const PixCtx<T>& c, const T* mean2d, const T* conic, const T* weight,
                      T* out) {
  const int64_t n = c.B * c.N;
  const int64_t n_keys = c.B * c.H;
  std::vector<int> boxes(6 * n);
  std::vector<int64_t> base(n);
  for (int64_t i = 0; i < n; ++i) {
    const int* p = c.pb.data() + 4 * i;
    const bool ok = p[0] <= p[1] && p[2] <= p[3];
    int* b = boxes.data() + 6 * i;
    b[0] = ok ? p[0] : 1, b[1] = ok ? p[1] : 0;
    b[2] = 0, b[3] = 0, b[4] = 0, b[5] = 0;
    base[i] = (i / c.N) * c.H;
  }
  const TileLists L = build_lists(boxes, base, n, n_keys, 0, 0, 0, 1, 1);

#pragma omp parallel for schedule(dynamic, 4) num_threads(n_threads())
  for (int64_t key = 0; key < n_keys; ++key) {
    const int r = static_cast<int>(key % c.H);
    T* __restrict__ row = out + key * c.W;
    for (int64_t j = L.start[key]; j < L.start[key + 1]; ++j) {
      const int64_t i = L.ids[j];
      const int* p = c.pb.data() + 4 * i;
      const T ma = mean2d[2 * i], mb = mean2d[2 * i + 1];
      const T c0 = conic[3 * i], c1 = conic[3 * i + 1], c2 = conic[3 * i + 2];
      const T w = weight[i], cut2 = c.c2, psb = c.ps[1];
      const T da = r * c.ps[0] - ma;
      int lo, hi;
      if (!pix_row(c0, c1, c2, da, mb, psb, cut2, p[2], p[3], &lo, &hi)) continue;
      for (int q = lo; q <= hi; ++q) {
        const T db = q * psb - mb;
        const T mr = vbgs::gm::pix_maha_raw(c0, c1, c2, da, db);
        const T m = mr > T(0) ? mr : T(0);
        row[q] += w * exp_neg_half(m) * static_cast<T>(m <= cut2);
      }
    }
  }
}

template <typename T>
void pix_backward_impl(const PixCtx<T>& c, const T* go_all, const T* mean2d, const T* conic,
                       const T* weight, T* g_mean2d, T* g_conic, T* g_weight) {
  const int64_t n = c.B * c.N;
#pragma omp parallel for schedule(dynamic, 16) num_threads(n_threads())
  for (int64_t i = 0; i < n; ++i) {
    const int* p = c.pb.data() + 4 * i;
    const int64_t cam = i / c.N;
    const T ma = mean2d[2 * i], mb = mean2d[2 * i + 1];
    const T c0 = conic[3 * i], c1 = conic[3 * i + 1], c2 = conic[3 * i + 2];
    const T w = weight[i];
    double sum[6] = {};
    for (int r = p[0]; r <= p[1]; ++r) {
      const T da = r * c.ps[0] - ma;
      int lo, hi;
      if (!pix_row(c0, c1, c2, da, mb, c.ps[1], c.c2, p[2], p[3], &lo, &hi)) continue;
      const T* gro = go_all + (cam * c.H + r) * c.W;
      for (int q = lo; q <= hi; ++q) {
        const T go = gro[q];
        const T db = q * c.ps[1] - mb;
        const T mraw = vbgs::gm::pix_maha_raw(c0, c1, c2, da, db);
        const T m = std::max(mraw, T(0));
        if (!(go != T(0) && m <= c.c2)) continue;
        T vals[6];
        vbgs::gm::pix_grad_terms(true, go, exp_neg_half(m), w, c0, c1, c2, da, db, mraw, vals);
        for (int v = 0; v < 6; ++v) sum[v] += vals[v];
      }
    }
    g_mean2d[2 * i] = static_cast<T>(sum[0]);
    g_mean2d[2 * i + 1] = static_cast<T>(sum[1]);
    for (int v = 0; v < 3; ++v) g_conic[3 * i + v] = static_cast<T>(sum[2 + v]);
    g_weight[i] = static_cast<T>(sum[5]);
  }
}

void check_pix(const torch::Tensor& mean2d, const torch::Tensor& conic,
               const torch::Tensor& weight, const torch::Tensor& radii, int64_t B, int64_t N) {
  const auto dt = mean2d.scalar_type();
  TORCH_CHECK(dt == torch::kFloat32 || dt == torch::kFloat64,
              "volbench_cpu_ext: float32 or float64 tensors");
  check_input(mean2d, "mean2d", 2, dt);
  check_input(conic, "conic", 3, dt);
  check_input(weight, "weight", 0, dt);
  check_input(radii, "radii", 2, dt);
  TORCH_CHECK(mean2d.size(0) == B * N && conic.size(0) == B * N && weight.size(0) == B * N &&
                  radii.size(0) == B * N,
              "volbench_cpu_ext: footprints must have B*N rows");
}

torch::Tensor raster_forward(torch::Tensor mean2d, torch::Tensor conic, torch::Tensor weight,
                             torch::Tensor radii, int64_t B, int64_t N, int64_t H, int64_t W,
                             std::vector<double> ps, double cutoff) {
  check_pix(mean2d, conic, weight, radii, B, N);
  auto out = torch::zeros({B, H, W}, mean2d.options());
  if (out.numel() == 0 || N == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(mean2d.scalar_type(), "raster_forward", [&] {
    auto c = pix_ctx<scalar_t>(mean2d, radii, B, N, H, W, ps, cutoff);
    pix_forward_impl<scalar_t>(c, mean2d.data_ptr<scalar_t>(), conic.data_ptr<scalar_t>(),
                               weight.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
  });
  return out;
}

std::vector<torch::Tensor> raster_backward(torch::Tensor grad_out, torch::Tensor mean2d,
                                           torch::Tensor conic, torch::Tensor weight,
                                           torch::Tensor radii, int64_t B, int64_t N, int64_t H,
                                           int64_t W, std::vector<double> ps, double cutoff) {
  check_pix(mean2d, conic, weight, radii, B, N);
  TORCH_CHECK(grad_out.device().is_cpu() && grad_out.scalar_type() == mean2d.scalar_type() &&
                  grad_out.is_contiguous() && grad_out.dim() == 3 && grad_out.size(0) == B &&
                  grad_out.size(1) == H && grad_out.size(2) == W,
              "volbench_cpu_ext: grad_out must be a contiguous CPU tensor (B, H, W)");
  auto g_mean2d = torch::zeros_like(mean2d);
  auto g_conic = torch::zeros_like(conic);
  auto g_weight = torch::zeros_like(weight);
  if (grad_out.numel() == 0 || N == 0) return {g_mean2d, g_conic, g_weight};
  AT_DISPATCH_FLOATING_TYPES(mean2d.scalar_type(), "raster_backward", [&] {
    auto c = pix_ctx<scalar_t>(mean2d, radii, B, N, H, W, ps, cutoff);
    pix_backward_impl<scalar_t>(c, grad_out.data_ptr<scalar_t>(), mean2d.data_ptr<scalar_t>(),
                                conic.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(),
                                g_mean2d.data_ptr<scalar_t>(), g_conic.data_ptr<scalar_t>(),
                                g_weight.data_ptr<scalar_t>());
  });
  return {g_mean2d, g_conic, g_weight};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "volbench CPU backend of the Gaussian operators (voxelizer, slice rasterizers)";
  m.def("voxelize_forward", &voxelize_forward,
        "(means, A(N,9), amps, half_ext, origin, spacing, roi_offset, roi_shape, cutoff) -> out");
  m.def("voxelize_backward", &voxelize_backward,
        "(grad_out, means, A, amps, half_ext, origin, spacing, roi_offset, roi_shape, cutoff) "
        "-> (g_means, g_A, g_amps)");
  m.def("raster_forward", &raster_forward,
        "(mean2d, conic, weight, radii, B, N, H, W, pixel_size, cutoff) -> out");
  m.def("raster_backward", &raster_backward,
        "(grad_out, mean2d, conic, weight, radii, B, N, H, W, pixel_size, cutoff) -> grads");
  m.def("composite_fwd", &vbcomp::composite_fwd,
        "(m2, conic, wpeak, order, values, H, W, ps_r, ps_c, cutoff, additive) "
        "-> [out, alpha, *saved]");
  m.def("composite_bwd", &vbcomp::composite_bwd,
        "(m2, conic, wpeak, order, values, H, W, ps_r, ps_c, cutoff, additive, saved, grad_out, "
        "grad_alpha) -> [g_m2, g_conic, g_wpeak, g_values]");
  m.attr("VOXEL_TILE") = kVoxTile;
  m.attr("PIXEL_TILE") = kPixTile;
}
