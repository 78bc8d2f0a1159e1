// Compositing slice rasterizer forward (seed 004 eqs. 1-2, the splat stage of
// workflow/volbench/gaussian_ops/composite.py).  Tile boxes of the (slice, rank) items from the
// cutoff ellipses of their pairs; one block per (slice, 16x16 tile) and chunk of <= 8 value
// channels (grid.y), one thread per pixel; the tile's list (in compositing order) streamed
// front to back through shared memory in batches of 256, as 3DGS does, without early
// termination.  Every thread saves where its backward starts: t_save = T after the entry that
// took T below kTMin (n_live = that entry's position + 1), else T_final (n_live = list length).
// Index products are 64-bit (up to 2^31 - 1 (slice, Gaussian) pairs).
#include "common.h"

namespace vbgs {
namespace {

__global__ void composite_boxes_kernel(const float* __restrict__ m2,
                                       const float* __restrict__ conic,
                                       const int64_t* __restrict__ order, CompGeom g,
                                       int* __restrict__ boxes, int64_t* __restrict__ key_base) {
  const int64_t n = static_cast<int64_t>(g.B) * g.N;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int b = static_cast<int>(i / g.N);
  const int64_t gi = order[i];
  const int lim[2] = {g.H - 1, g.W - 1};
  bool ok = gi >= 0 && gi < g.N;
  int lo[2] = {1, 1}, hi[2] = {0, 0};
  if (ok) {
    const int64_t p = static_cast<int64_t>(b) * g.N + gi;  // the pair (b, gi)
    float h[2];
    const int kind = gm::comp_extent(conic[3 * p], conic[3 * p + 1], conic[3 * p + 2], g.c2,
                                     &h[0], &h[1]);
    ok = kind != 0;
    for (int a = 0; a < 2; ++a) {
      const float c = m2[2 * p + a];
      int plo = 1, phi = 0;
      if (kind == 2) {  // unbounded: every pixel (a non-finite centre still has no term)
        ok = ok && isfinite(c);
        plo = 0;
        phi = lim[a];
      } else if (kind == 1) {
        ok = gm::axis_range(c / g.ps[a], h[a] / g.ps[a], 1.f, lim[a], &plo, &phi) && ok;
      }
      lo[a] = ok ? plo / kPixTile : 1;
      hi[a] = ok ? phi / kPixTile : 0;
    }
  }
  int* bx = boxes + 6 * i;
  bx[0] = 0;
  bx[1] = ok ? 0 : -1;
  bx[2] = ok ? lo[0] : 1;
  bx[3] = ok ? hi[0] : 0;
  bx[4] = ok ? lo[1] : 1;
  bx[5] = ok ? hi[1] : 0;
  key_base[i] = static_cast<int64_t>(b) * g.tiles[0] * g.tiles[1];
}

template <int FC>
__global__ void __launch_bounds__(kPixThreads)
    composite_fwd_kernel(const float* __restrict__ m2, const float* __restrict__ conic,
                         const float* __restrict__ wpeak, const int64_t* __restrict__ order,
                         const float* __restrict__ values, const int32_t* __restrict__ ids,
                         const int64_t* __restrict__ ranges, CompGeom g, float* __restrict__ out,
                         float* __restrict__ alpha, float* __restrict__ t_save,
                         int32_t* __restrict__ n_live) {
  __shared__ float s_m[kPixThreads * 2];
  __shared__ float s_c[kPixThreads * 3];
  __shared__ float s_w[kPixThreads];
  __shared__ float s_v[kPixThreads * FC];

  const int64_t key = blockIdx.x;
  const int f0 = static_cast<int>(blockIdx.y) * FC;  // first channel of this block
  const int nf = min(FC, g.F - f0);                    // its channels (0 when F = 0)
  const int64_t per_slice = static_cast<int64_t>(g.tiles[0]) * g.tiles[1];
  const int b = static_cast<int>(key / per_slice);
  const int tile = static_cast<int>(key % per_slice);
  const int tr = tile / g.tiles[1], tc = tile % g.tiles[1];
  const int t = threadIdx.x;
  const int r = tr * kPixTile + t / kPixTile;
  const int c = tc * kPixTile + t % kPixTile;
  const bool inside = r < g.H && c < g.W;
  const float pa = r * g.ps[0], pb = c * g.ps[1];
  const int64_t slice0 = static_cast<int64_t>(b) * g.N;

  const int64_t start = ranges[2 * key], end = ranges[2 * key + 1];
  float acc[FC];
#pragma unroll
  for (int f = 0; f < FC; ++f) acc[f] = 0.f;
  float T = 1.f, asum = 0.f, t_stop = 1.f;
  int live = static_cast<int>(end - start);
  bool stopped = false;
  for (int64_t batch = start; batch < end; batch += kPixThreads) {
    __syncthreads();  // the previous batch is consumed
    const int64_t j = batch + t;
    if (j < end) {
      const int64_t gi = order[ids[j]];
      const int64_t p = slice0 + gi;
      s_m[2 * t] = m2[2 * p];
      s_m[2 * t + 1] = m2[2 * p + 1];
      s_c[3 * t] = conic[3 * p];
      s_c[3 * t + 1] = conic[3 * p + 1];
      s_c[3 * t + 2] = conic[3 * p + 2];
      s_w[t] = wpeak[p];
#pragma unroll
      for (int f = 0; f < FC; ++f)
        s_v[FC * t + f] = f < nf ? values[gi * g.F + f0 + f] : 0.f;
    }
    __syncthreads();
    const int cnt = static_cast<int>(min(static_cast<int64_t>(kPixThreads), end - batch));
    for (int k = 0; k < cnt; ++k) {
      const float d0 = pa - s_m[2 * k], d1 = pb - s_m[2 * k + 1];
      const float q = gm::comp_maha(s_c[3 * k], s_c[3 * k + 1], s_c[3 * k + 2], d0, d1);
      if (!(isfinite(q) && q <= g.c2)) continue;
      float om;
      bool clamped;
      const float w = gm::comp_weight(s_w[k], gm::gauss(fmaxf(q, 0.f)), &om, &clamped);
      const float tw = g.additive ? w : w * T;
#pragma unroll
      for (int f = 0; f < FC; ++f) acc[f] += tw * s_v[FC * k + f];
      if (g.additive) {
        asum += w;
      } else {
        T *= om;
        if (!stopped && T < static_cast<float>(gm::kTMin)) {
          stopped = true;
          live = static_cast<int>(batch - start) + k + 1;
          t_stop = T;
        }
      }
    }
  }
  if (!inside) return;
  const int64_t plane = static_cast<int64_t>(g.H) * g.W;
  const int64_t in_plane = static_cast<int64_t>(r) * g.W + c;
#pragma unroll
  for (int f = 0; f < FC; ++f)
    if (f < nf) out[(static_cast<int64_t>(b) * g.F + f0 + f) * plane + in_plane] = acc[f];
  const int64_t pix = b * plane + in_plane;
  if (blockIdx.y == 0) {
    alpha[pix] = g.additive ? asum : 1.f - T;
    t_save[pix] = g.additive ? 1.f : (stopped ? t_stop : T);
    n_live[pix] = live;
  }
}

template <int FC>
void launch_fwd(const float* m2, const float* conic, const float* wpeak, const int64_t* order,
                const float* values, const int32_t* ids, const int64_t* ranges, const CompGeom& g,
                float* out, float* alpha, float* t_save, int32_t* n_live, int64_t n_keys,
                cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned int>(n_keys), static_cast<unsigned int>(comp_chunks(g.F)));
  VB_LAUNCH(composite_fwd_kernel<FC>, grid, kPixThreads, 0, stream, m2, conic, wpeak, order,
            values, ids, ranges, g, out, alpha, t_save, n_live);
  VB_LAUNCH_CHECK();
}

}  // namespace

void composite_tile_boxes(const float* m2, const float* conic, const int64_t* order,
                          const CompGeom& g, int* boxes, int64_t* key_base, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(g.B) * g.N;
  if (n <= 0) return;
  VB_LAUNCH(composite_boxes_kernel, blocks_for(n, 256), 256, 0, stream, m2, conic, order, g,
            boxes, key_base);
  VB_LAUNCH_CHECK();
}

void composite_forward(const float* m2, const float* conic, const float* wpeak,
                       const int64_t* order, const float* values, const int32_t* ids,
                       const int64_t* ranges, const CompGeom& g, float* out, float* alpha,
                       float* t_save, int32_t* n_live, cudaStream_t stream) {
  const int64_t n_keys = static_cast<int64_t>(g.B) * g.tiles[0] * g.tiles[1];
  if (n_keys <= 0) return;
  if (n_keys > 0x7fffffffLL) throw std::runtime_error("volbench_gpu_ext: too many tiles");
  switch (comp_chunk(g.F)) {
    case 1:
      launch_fwd<1>(m2, conic, wpeak, order, values, ids, ranges, g, out, alpha, t_save, n_live,
                    n_keys, stream);
      break;
    case 4:
      launch_fwd<4>(m2, conic, wpeak, order, values, ids, ranges, g, out, alpha, t_save, n_live,
                    n_keys, stream);
      break;
    default:
      launch_fwd<kCompMaxChunk>(m2, conic, wpeak, order, values, ids, ranges, g, out, alpha,
                                t_save, n_live, n_keys, stream);
  }
}

}  // namespace vbgs
