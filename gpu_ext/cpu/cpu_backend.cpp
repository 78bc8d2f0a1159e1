// volbench_cpu_ext: the compiled CPU backend of the Gaussian operators (no nvcc, no CUDA).
//
// Same per-voxel / per-pixel maths as the CUDA kernels (gpu_ext/csrc/gaussian_math.h), same
// function as the PyTorch twin; float32 and float64 (templated on the scalar type).
//
// Deterministic by construction, whatever the ROI, the slab/camera chunking or the thread count:
//  * forward: the tile grid (8^3 voxels, 16x16 pixels) is anchored to the volume origin
//    (voxel coordinates are global indices times the spacing, means relative to the volume
//    origin); the tile lists are built on the host by a stable counting sort, so every voxel /
//    pixel sums its terms in ascending Gaussian id into a tile-local accumulator; OpenMP runs
//    over tiles (dynamic schedule), one thread owns a tile's outputs;
//  * backward: gather formulation, OpenMP over Gaussians (items): every Gaussian sums its
//    gradient terms over the voxels / pixels of its cutoff box in raster order, in double, into
//    its own row, so no two threads write the same gradient and no reduction across threads is
//    needed (the per-thread buffers of a scatter formulation reduce to one row per Gaussian).
//  A voxel / pixel outside a Gaussian's conservative cutoff box gets no term from it (the CUDA
//  kernels evaluate whole tiles; the two differ at most where float rounding puts a point right
//  on the cutoff boundary, as between any two evaluation orders).
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "gaussian_math.h"

namespace {

constexpr int kVoxTile = 8;
constexpr int kPixTile = 16;

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

template <typename T>
void vox_forward_impl(const VoxCtx<T>& c, const T* A, const T* amps, T* out) {
  const int64_t n = c.n;
  int t0[3], nt[3];
  for (int a = 0; a < 3; ++a) {
    t0[a] = c.off[a] / kVoxTile;
    nt[a] = (c.off[a] + c.shape[a] - 1) / kVoxTile - t0[a] + 1;
  }
  const int64_t n_keys = static_cast<int64_t>(nt[0]) * nt[1] * nt[2];
  std::vector<int> boxes(6 * n);
  std::vector<int64_t> base(n, 0);
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < 6; ++k) boxes[6 * i + k] = c.vb[6 * i + k] / kVoxTile;
  for (int64_t i = 0; i < n; ++i)  // keep empty boxes empty after the division
    if (c.vb[6 * i + 1] < c.vb[6 * i]) boxes[6 * i] = 1, boxes[6 * i + 1] = 0;
  const TileLists L = build_lists(boxes, base, n, n_keys, t0[0], t0[1], t0[2], nt[1], nt[2]);
  const int64_t sy = c.shape[2], sz = static_cast<int64_t>(c.shape[1]) * c.shape[2];

#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads())
  for (int64_t key = 0; key < n_keys; ++key) {
    const int tz = static_cast<int>(key / (static_cast<int64_t>(nt[1]) * nt[2])) + t0[0];
    const int ty = static_cast<int>((key / nt[2]) % nt[1]) + t0[1];
    const int tx = static_cast<int>(key % nt[2]) + t0[2];
    // the tile's voxels within the ROI, global indices
    const int z0 = std::max(tz * kVoxTile, c.off[0]);
    const int z1 = std::min(tz * kVoxTile + kVoxTile, c.off[0] + c.shape[0]) - 1;
    const int y0 = std::max(ty * kVoxTile, c.off[1]);
    const int y1 = std::min(ty * kVoxTile + kVoxTile, c.off[1] + c.shape[1]) - 1;
    const int x0 = std::max(tx * kVoxTile, c.off[2]);
    const int x1 = std::min(tx * kVoxTile + kVoxTile, c.off[2] + c.shape[2]) - 1;
    T acc[kVoxTile * kVoxTile * kVoxTile] = {};
    for (int64_t j = L.start[key]; j < L.start[key + 1]; ++j) {
      const int64_t i = L.ids[j];
      const int* b = c.vb.data() + 6 * i;
      const T* Ak = A + 9 * i;
      const T amp = amps[i];
      const T* mu = c.mu.data() + 3 * i;
      const int bz0 = std::max(z0, b[0]), bz1 = std::min(z1, b[1]);
      const int by0 = std::max(y0, b[2]), by1 = std::min(y1, b[3]);
      const int bx0 = std::max(x0, b[4]), bx1 = std::min(x1, b[5]);
      for (int z = bz0; z <= bz1; ++z) {
        const T dz = z * c.sp[0] - mu[0];
        for (int y = by0; y <= by1; ++y) {
          const T dy = y * c.sp[1] - mu[1];
          T* row = acc + ((z - tz * kVoxTile) * kVoxTile + (y - ty * kVoxTile)) * kVoxTile -
                   tx * kVoxTile;
          for (int x = bx0; x <= bx1; ++x) {
            T yv[3];
            const T m = vbgs::gm::vox_maha(Ak, dz, dy, x * c.sp[2] - mu[2], yv);
            if (m <= c.c2) row[x] += amp * vbgs::gm::gauss(m);
          }
        }
      }
    }
    for (int z = z0; z <= z1; ++z)
      for (int y = y0; y <= y1; ++y)
        for (int x = x0; x <= x1; ++x)
          out[(z - c.off[0]) * sz + (y - c.off[1]) * sy + (x - c.off[2])] =
              acc[((z - tz * kVoxTile) * kVoxTile + (y - ty * kVoxTile)) * kVoxTile +
                  (x - tx * kVoxTile)];
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
        const T* gro = go_all + (z - c.off[0]) * sz + (y - c.off[1]) * sy - c.off[2];
        for (int x = b[4]; x <= b[5]; ++x) {
          const T go = gro[x];
          const T d[3] = {dz, dy, x * c.sp[2] - mu[2]};
          T yv[3];
          const T m = vbgs::gm::vox_maha(Ak, d[0], d[1], d[2], yv);
          if (!(go != T(0) && m <= c.c2)) continue;
          T vals[13];
          vbgs::gm::vox_grad_terms(true, go, vbgs::gm::gauss(m), amp, Ak, yv, d, vals);
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

template <typename T>
void pix_forward_impl(const PixCtx<T>& c, const T* mean2d, const T* conic, const T* weight,
                      T* out) {
  const int64_t n = c.B * c.N;
  const int tr_n = static_cast<int>((c.H + kPixTile - 1) / kPixTile);
  const int tc_n = static_cast<int>((c.W + kPixTile - 1) / kPixTile);
  const int64_t per_cam = static_cast<int64_t>(tr_n) * tc_n;
  const int64_t n_keys = c.B * per_cam;
  std::vector<int> boxes(6 * n);
  std::vector<int64_t> base(n);
  for (int64_t i = 0; i < n; ++i) {
    const int* p = c.pb.data() + 4 * i;
    const bool ok = p[0] <= p[1] && p[2] <= p[3];
    int* b = boxes.data() + 6 * i;
    b[0] = 0, b[1] = ok ? 0 : -1;
    b[2] = ok ? p[0] / kPixTile : 1, b[3] = ok ? p[1] / kPixTile : 0;
    b[4] = ok ? p[2] / kPixTile : 1, b[5] = ok ? p[3] / kPixTile : 0;
    base[i] = (i / c.N) * per_cam;
  }
  const TileLists L = build_lists(boxes, base, n, n_keys, 0, 0, 0, tr_n, tc_n);

#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads())
  for (int64_t key = 0; key < n_keys; ++key) {
    const int64_t cam = key / per_cam;
    const int tile = static_cast<int>(key % per_cam);
    const int tr = tile / tc_n, tc = tile % tc_n;
    const int r0 = tr * kPixTile, r1 = static_cast<int>(std::min<int64_t>(r0 + kPixTile, c.H)) - 1;
    const int q0 = tc * kPixTile, q1 = static_cast<int>(std::min<int64_t>(q0 + kPixTile, c.W)) - 1;
    T acc[kPixTile * kPixTile] = {};
    for (int64_t j = L.start[key]; j < L.start[key + 1]; ++j) {
      const int64_t i = L.ids[j];
      const int* p = c.pb.data() + 4 * i;
      const T ma = mean2d[2 * i], mb = mean2d[2 * i + 1];
      const T c0 = conic[3 * i], c1 = conic[3 * i + 1], c2 = conic[3 * i + 2];
      const T w = weight[i];
      const int br0 = std::max(r0, p[0]), br1 = std::min(r1, p[1]);
      const int bq0 = std::max(q0, p[2]), bq1 = std::min(q1, p[3]);
      for (int r = br0; r <= br1; ++r) {
        const T da = r * c.ps[0] - ma;
        T* row = acc + (r - r0) * kPixTile - q0;
        for (int q = bq0; q <= bq1; ++q) {
          const T db = q * c.ps[1] - mb;
          const T m = std::max(vbgs::gm::pix_maha_raw(c0, c1, c2, da, db), T(0));
          if (m <= c.c2) row[q] += w * vbgs::gm::gauss(m);
        }
      }
    }
    for (int r = r0; r <= r1; ++r)
      for (int q = q0; q <= q1; ++q)
        out[(cam * c.H + r) * c.W + q] = acc[(r - r0) * kPixTile + (q - q0)];
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
      const T* gro = go_all + (cam * c.H + r) * c.W;
      for (int q = p[2]; q <= p[3]; ++q) {
        const T go = gro[q];
        const T db = q * c.ps[1] - mb;
        const T mraw = vbgs::gm::pix_maha_raw(c0, c1, c2, da, db);
        const T m = std::max(mraw, T(0));
        if (!(go != T(0) && m <= c.c2)) continue;
        T vals[6];
        vbgs::gm::pix_grad_terms(true, go, vbgs::gm::gauss(m), w, c0, c1, c2, da, db, mraw,
                                 vals);
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
  m.doc() = "volbench CPU backend of the Gaussian operators (voxelizer, slice rasterizer)";
  m.def("voxelize_forward", &voxelize_forward,
        "(means, A(N,9), amps, half_ext, origin, spacing, roi_offset, roi_shape, cutoff) -> out");
  m.def("voxelize_backward", &voxelize_backward,
        "(grad_out, means, A, amps, half_ext, origin, spacing, roi_offset, roi_shape, cutoff) "
        "-> (g_means, g_A, g_amps)");
  m.def("raster_forward", &raster_forward,
        "(mean2d, conic, weight, radii, B, N, H, W, pixel_size, cutoff) -> out");
  m.def("raster_backward", &raster_backward,
        "(grad_out, mean2d, conic, weight, radii, B, N, H, W, pixel_size, cutoff) -> grads");
  m.attr("VOXEL_TILE") = kVoxTile;
  m.attr("PIXEL_TILE") = kPixTile;
}
