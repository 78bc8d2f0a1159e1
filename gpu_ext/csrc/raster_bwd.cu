// Slice rasterizer backward: gradients to the 2D footprint (mean2d 2, conic 3, weight 1) of every
// (camera, Gaussian) item; warp-reduced, then atomicAdd.  torch autograd carries them on to
// means, log-scales, quaternions and opacities through the prelude (focus model / 3DGS).  Index
// products are 64-bit.
#include "common.h"

namespace vbgs {
namespace {

__global__ void __launch_bounds__(kPixThreads)
    raster_bwd_kernel(const float* __restrict__ grad_out, const float* __restrict__ mean2d,
                      const float* __restrict__ conic, const float* __restrict__ weight,
                      const int32_t* __restrict__ ids, const int64_t* __restrict__ ranges,
                      PixGeom g, float* __restrict__ g_mean2d, float* __restrict__ g_conic,
                      float* __restrict__ g_weight) {
  __shared__ float s_m[kPixThreads * 2];
  __shared__ float s_c[kPixThreads * 3];
  __shared__ float s_w[kPixThreads];
  __shared__ int s_id[kPixThreads];

  const int64_t key = blockIdx.x;
  const int64_t per_cam = static_cast<int64_t>(g.tiles[0]) * g.tiles[1];
  const int cam = static_cast<int>(key / per_cam);
  const int tile = static_cast<int>(key % per_cam);
  const int tr = tile / g.tiles[1], tc = tile % g.tiles[1];
  const int t = threadIdx.x;
  const int lane = t & 31;
  const int r = tr * kPixTile + t / kPixTile;
  const int c = tc * kPixTile + t % kPixTile;
  const bool inside = r < g.H && c < g.W;
  const float pa = r * g.ps[0], pb = c * g.ps[1];
  const float go = inside ? grad_out[(static_cast<int64_t>(cam) * g.H + r) * g.W + c] : 0.f;

  const int64_t start = ranges[2 * key], end = ranges[2 * key + 1];
  for (int64_t batch = start; batch < end; batch += kPixThreads) {
    __syncthreads();
    const int64_t j = batch + t;
    if (j < end) {
      const int64_t gi = ids[j];
      s_id[t] = static_cast<int>(gi);
      s_m[2 * t] = mean2d[2 * gi];
      s_m[2 * t + 1] = mean2d[2 * gi + 1];
      s_c[3 * t] = conic[3 * gi];
      s_c[3 * t + 1] = conic[3 * gi + 1];
      s_c[3 * t + 2] = conic[3 * gi + 2];
      s_w[t] = weight[gi];
    }
    __syncthreads();
    const int cnt = static_cast<int>(min(static_cast<int64_t>(kPixThreads), end - batch));
    for (int k = 0; k < cnt; ++k) {  // uniform over the block: every lane reaches the shuffles
      const float da = pa - s_m[2 * k], db = pb - s_m[2 * k + 1];
      const float c0 = s_c[3 * k], c1 = s_c[3 * k + 1], c2 = s_c[3 * k + 2];
      const float mraw = gm::pix_maha_raw(c0, c1, c2, da, db);
      const float m = fmaxf(mraw, 0.f);
      const bool hit = inside && go != 0.f && m <= g.c2;
      if (!__any_sync(0xffffffffu, hit)) continue;
      const float e = hit ? gm::gauss(m) : 0.f;
      float vals[6];  // exact zeros for lanes without a hit
      gm::pix_grad_terms(hit, go, e, s_w[k], c0, c1, c2, da, db, mraw, vals);
#pragma unroll
      for (int v = 0; v < 6; ++v) vals[v] = warp_sum(vals[v]);
      if (lane == 0) {
        const int64_t gi = s_id[k];
        atomicAdd(g_mean2d + 2 * gi, vals[0]);
        atomicAdd(g_mean2d + 2 * gi + 1, vals[1]);
        atomicAdd(g_conic + 3 * gi, vals[2]);
        atomicAdd(g_conic + 3 * gi + 1, vals[3]);
        atomicAdd(g_conic + 3 * gi + 2, vals[4]);
        atomicAdd(g_weight + gi, vals[5]);
      }
    }
  }
}

}  // namespace

void raster_backward(const float* grad_out, const float* mean2d, const float* conic,
                     const float* weight, const int32_t* ids, const int64_t* ranges,
                     const PixGeom& g, float* g_mean2d, float* g_conic, float* g_weight,
                     cudaStream_t stream) {
  const int64_t n_keys = static_cast<int64_t>(g.B) * g.tiles[0] * g.tiles[1];
  if (n_keys <= 0) return;
  if (n_keys > 0x7fffffffLL) throw std::runtime_error("volbench_gpu_ext: too many tiles");
  VB_LAUNCH(raster_bwd_kernel, static_cast<unsigned int>(n_keys), kPixThreads, 0, stream,
            grad_out, mean2d, conic, weight, ids, ranges, g, g_mean2d, g_conic, g_weight);
  VB_LAUNCH_CHECK();
}

}  // namespace vbgs
